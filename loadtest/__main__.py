"""`python -m loadtest ...`: the load-test runner (see loadtest.runner)."""

import signal
import sys
from types import FrameType

from loadtest.runner import main


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # An exception, unlike the default action, lets the stacks started by the runner stop.
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _exit_on_sigterm)
sys.exit(main())
