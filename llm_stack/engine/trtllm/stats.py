"""What TensorRT-LLM tells about itself: per-iteration statistics and executor health.

`LLM.get_stats_async(timeout)` yields one dict per executor iteration (the C++
`IterationStats` as JSON; some versions give the JSON text) once the LLM is built with
`enable_iter_perf_stats=True`: on the PyTorch backend nothing is collected without it.
The keys read here are recorded in tests/llm_stack/engine/trtllm/api_surface.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATS_TIMEOUT_S = 1.0  # how long one pass over the iteration-stats queue waits for more
STATS_IDLE_S = 0.5  # pause between passes, so an idle engine is not polled in a busy loop


@dataclass
class IterationFigures:
    """Per-iteration statistics of the TensorRT-LLM executor, folded into running figures."""

    seen: bool = False
    active: int = 0  # numActiveRequests of the latest iteration
    context: int = 0
    scheduled: int = 0
    steps: int = 0
    step_sequences: int = 0
    peak_step_batch: int = 0
    # kvCacheStats of the latest iteration that carried them (0: none yet)
    kv_max_blocks: int = 0
    kv_used_blocks: int = 0
    kv_tokens_per_block: int = 0

    def add(self, item: Mapping[str, Any] | str) -> None:
        """Fold one iteration (a dict, or its JSON as some versions give it)."""
        stats: Mapping[str, Any] = json.loads(item) if isinstance(item, str) else item
        batching = stats.get("inflightBatchingStats") or {}
        scheduled = int(batching.get("numScheduledRequests", 0))
        self.seen = True
        self.active = int(stats.get("numActiveRequests", 0))
        self.context = int(batching.get("numContextRequests", 0))
        self.scheduled = scheduled
        if scheduled > 0:
            self.steps += 1
            self.step_sequences += scheduled
            self.peak_step_batch = max(self.peak_step_batch, scheduled)
        kv = stats.get("kvCacheStats")
        if kv:
            self.kv_max_blocks = int(kv.get("maxNumBlocks", 0))
            self.kv_used_blocks = int(kv.get("usedNumBlocks", 0))
            self.kv_tokens_per_block = int(kv.get("tokensPerBlock", 0))


def executor_failure(llm: Any) -> str | None:
    """Why the LLM's executor cannot serve (None: as far as it tells, it can).

    `LLM.shutdown` sets `_executor` to None; the executor's `is_shutdown()` turns true after
    a fatal error or a shutdown (`check_health()` where a version has it).
    """
    if not hasattr(llm, "_executor"):
        return None  # an LLM class that tells nothing
    executor = llm._executor
    if executor is None:
        return "the TensorRT-LLM executor is shut down"
    try:
        check = getattr(executor, "check_health", None)
        is_shutdown = getattr(executor, "is_shutdown", None)
        if callable(check):
            healthy = bool(check())
        elif callable(is_shutdown):
            healthy = not is_shutdown()
        else:
            healthy = not getattr(executor, "doing_shutdown", False)
    except Exception as exc:
        return f"the TensorRT-LLM executor failed its health check: {type(exc).__name__}"
    return None if healthy else "the TensorRT-LLM executor hit a fatal error or is shutting down"
