"""`python -m launcher ...`: the same as the `llm-stack` command."""

import sys

from launcher.cli import main

sys.exit(main())
