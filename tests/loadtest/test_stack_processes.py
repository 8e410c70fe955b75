"""The load tests' frontend process dies with the benchmark that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from launcher.triton_server import TritonServer

pytestmark = pytest.mark.integration

_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from loadtest.stack import FrontendProcess
    frontend = FrontendProcess([sys.argv[1]], Path(sys.argv[2]))
    frontend.start()
    print(frontend.pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_benchmark_takes_its_frontend_with_it(
    triton: TritonServer, tmp_path: Path
) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-c", _CHILD, triton.grpc_url, str(tmp_path / "frontend.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert bench.stdout is not None
        line = bench.stdout.readline()  # after the frontend answered /health/ready
        assert line.strip().isdigit(), line
        frontend = int(line)
        assert _alive(frontend)
        bench.send_signal(signal.SIGKILL)
        bench.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _alive(frontend):
            assert time.monotonic() < deadline, "the frontend outlived its benchmark"
            time.sleep(0.1)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(timeout=10)
        if "frontend" in locals() and _alive(frontend):
            os.killpg(frontend, signal.SIGKILL)
