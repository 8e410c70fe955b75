"""A Triton Python-backend stub that outlives its server is ended.

The stub is a child of tritonserver. When the server dies without unloading its models
(a crash, SIGKILL), the stub's own check (`kill(parent, 0)`) can miss it (a server not
yet reaped still answers) or hang: a call into the stub's C++ side that waits for the
server, such as setting a custom metric, never returns and holds the GIL, so no Python
code of the stub runs again, signal handlers included. The engine's weights and KV
cache then stay in memory for good.

So the watcher is a process of its own, a small shell loop that needs nothing from the
stub: once the stub's parent is no longer the server (the kernel re-parents a child
when its parent dies), it sends the stub SIGKILL. PR_SET_PDEATHSIG is no substitute:
the kernel ties it to the forking thread, which in Triton may end before the server.
"""

from __future__ import annotations

import os
import subprocess

DEFAULT_PERIOD_S = 1.0

# $1: the stub's pid, $2: its parent's (the server), $3: seconds between checks. The
# parent id is the fourth field of /proc/PID/stat, after the command name in
# parentheses (which holds no ')' for the stub). Ends when the stub is gone.
_WATCH = r"""
while stat=$(cat "/proc/$1/stat" 2>/dev/null); do
    set -- "$1" "$2" "$3" ${stat##*) }
    [ "$5" = "$2" ] || { kill -KILL "$1" 2>/dev/null; exit 0; }
    sleep "$3"
done
"""


def watch_parent(period_s: float = DEFAULT_PERIOD_S) -> subprocess.Popen[bytes]:
    """Start the watcher that kills this process once its parent is gone."""
    return subprocess.Popen(
        ["/bin/sh", "-c", _WATCH, "stub-watch", str(os.getpid()), str(os.getppid()), str(period_s)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
