"""The real CPU engine on the default model (Gemma 3 270M), for the engine tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from llm_stack.engine.llama_cpp_engine import LlamaCppConfig, LlamaCppEngine
from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import GgufTokenizer


def engine_config(**overrides: object) -> LlamaCppConfig:
    """A small engine for tests: 4 slots, 2 threads; `overrides` set any other field."""
    base: dict[str, object] = {
        "model_path": resolve_model_path("gemma3-270m"),
        "max_batch_size": 4,
        "max_queue": 8,
        "kv_cache_tokens": 4096,
        "max_seq_len": 512,
        "max_step_tokens": 64,
        "n_threads": 2,
    }
    base.update(overrides)
    return LlamaCppConfig(**base)  # type: ignore[arg-type]


async def running(config: LlamaCppConfig) -> AsyncIterator[LlamaCppEngine]:
    """A started engine, shut down when the iteration ends (for fixtures)."""
    engine = LlamaCppEngine(config)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()


async def wait_idle(engine: LlamaCppEngine, within_s: float = 30.0) -> None:
    """Aborts are applied by the step thread; wait (bounded) until it has."""
    deadline = time.monotonic() + within_s
    while engine.stats().active or engine.stats().waiting:
        assert time.monotonic() < deadline, f"engine not idle: {engine.stats()}"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def tokenizer() -> GgufTokenizer:
    return GgufTokenizer(resolve_model_path("gemma3-270m"))
