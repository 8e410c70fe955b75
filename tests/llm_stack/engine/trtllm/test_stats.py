"""The executor's iteration statistics, folded into the engine's figures; its health."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from llm_stack.engine.trtllm.stats import IterationFigures, executor_failure
from tests.llm_stack.engine.trtllm.fakes import iteration_stats


def test_iteration_figures_fold_dicts_and_json() -> None:
    figures = IterationFigures()
    figures.add(
        iteration_stats(
            batching={"numScheduledRequests": 3, "numContextRequests": 2},
            iter=0,
            numActiveRequests=3,
        )
    )
    figures.add(
        json.dumps(
            iteration_stats(
                batching={"numScheduledRequests": 4, "numContextRequests": 0},
                iter=1,
                numActiveRequests=5,
            )
        )
    )
    figures.add(iteration_stats(batching={}, iter=2, numActiveRequests=0))
    assert figures == IterationFigures(
        seen=True, active=0, context=0, scheduled=0, steps=2, step_sequences=7, peak_step_batch=4
    )


def test_kv_cache_blocks_are_the_latest_iterations() -> None:
    figures = IterationFigures()
    figures.add(
        iteration_stats(
            kv={"maxNumBlocks": 512, "usedNumBlocks": 10, "tokensPerBlock": 64, "reusedBlocks": 3}
        )
    )
    figures.add(iteration_stats(numActiveRequests=0))  # no kvCacheStats: the last stand
    assert (figures.kv_max_blocks, figures.kv_used_blocks, figures.kv_tokens_per_block) == (
        512,
        10,
        64,
    )


def test_stats_keys_the_release_lacks_are_refused_by_the_fake() -> None:
    with pytest.raises(KeyError, match="usedBlocks"):
        iteration_stats(kv={"usedBlocks": 1})


class FakeExecutor:
    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy

    def check_health(self) -> bool:
        return self.healthy


@pytest.mark.parametrize(
    ("executor", "failure"),
    [
        (FakeExecutor(True), None),
        (FakeExecutor(False), "the TensorRT-LLM executor hit a fatal error or is shutting down"),
        (None, "the TensorRT-LLM executor is shut down"),
        (types.SimpleNamespace(doing_shutdown=True), "the TensorRT-LLM executor hit a fatal"),
        (types.SimpleNamespace(is_shutdown=lambda: False), None),
    ],
)
def test_the_executor_tells_whether_it_can_serve(executor: Any, failure: str | None) -> None:
    llm = types.SimpleNamespace(_executor=executor)
    found = executor_failure(llm)
    assert found == failure or (
        failure is not None and found is not None and found.startswith(failure)
    )
