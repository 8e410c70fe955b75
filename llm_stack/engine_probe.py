"""Whether Triton's engine model can generate, for container health checks.

Triton 2.51's own readiness stays true when a Python model's engine has failed (even
when its process is killed), so orchestrators ask the engine model itself: one
`health_check` request over Triton's HTTP generate endpoint, answered at once from the
model's request loop. Standard library only, so that it runs in any image that has
this package, NVIDIA's included.

    python -m llm_stack.engine_probe [--url http://127.0.0.1:8000] [--model tensorrt_llm]

Exit status 0: the engine can generate; 1: it cannot, or did not answer in time (the
reason is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from llm_stack.ensemble_contract import ENGINE_MODEL

DEFAULT_URL = "http://127.0.0.1:8000"


def engine_health(url: str, model: str, timeout_s: float) -> str | None:
    """None when the engine answers healthy, else why not."""
    request = urllib.request.Request(  # noqa: S310 - the operator's own Triton URL
        f"{url.rstrip('/')}/v2/models/{model}/generate",
        data=json.dumps({"health_check": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            response.read()
            return None
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")
        return f"HTTP {exc.code}: {' '.join(body.split())[:300]}"
    except (urllib.error.URLError, OSError) as exc:
        return f"no answer: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton's HTTP endpoint")
    parser.add_argument("--model", default=ENGINE_MODEL, help="the engine model")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait")
    args = parser.parse_args(argv)
    reason = engine_health(args.url, args.model, args.timeout)
    if reason is not None:
        print(f"engine {args.model} cannot generate: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
