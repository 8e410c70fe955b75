"""A process that watches its parent exits once the parent is gone, and not before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The middle process starts the watcher as its child, prints the child's pid and waits
# to be killed; the child watches the middle one and would otherwise sleep for a minute.
MIDDLE = textwrap.dedent(
    """
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
    print(child.pid, flush=True)
    time.sleep(120)
    """
)
CHILD = textwrap.dedent(
    """
    import time
    from llm_stack.stub_lifetime import watch_parent
    watch_parent(period_s=0.05)
    time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; it waits only for its (new) parent to reap it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_child_exits_when_its_parent_dies_and_not_before() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, CHILD], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert middle.stdout is not None
        child = int(middle.stdout.readline())
        time.sleep(0.5)  # several watch periods with the parent alive
        assert _alive(child)
        middle.send_signal(signal.SIGKILL)
        middle.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        middle.kill()
        middle.wait(timeout=10)
