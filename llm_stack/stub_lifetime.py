"""A Triton Python-backend stub that outlives its server ends itself.

The stub is a child of tritonserver. When the server dies without unloading its models
(a crash, SIGKILL), nothing tells the stub: it keeps its memory (the engine's weights and
KV cache) and, busy in a long call, may not heed SIGTERM. Its parent id changes when the
server dies (the child is re-parented), so a watcher thread compares it and exits the
process. PR_SET_PDEATHSIG is no substitute: the kernel ties it to the forking thread,
which in Triton may end long before the server does.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

DEFAULT_PERIOD_S = 1.0


def watch_parent(
    period_s: float = DEFAULT_PERIOD_S,
    on_orphaned: Callable[[], None] | None = None,
) -> threading.Thread:
    """Start a daemon thread that calls `on_orphaned` (default: exit at once) once this
    process's parent is gone, checking every `period_s`."""
    parent = os.getppid()
    action = on_orphaned or _exit_now

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(period_s):
            if os.getppid() != parent:
                log.error("the Triton server (pid %d) is gone: this model process exits", parent)
                action()
                return

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def _exit_now() -> None:
    # os._exit: no finalizers, which could block on the engine (the reason for exiting).
    os._exit(1)
