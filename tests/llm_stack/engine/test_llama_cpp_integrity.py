"""One request cannot break the CPU engine (real default model): token ids outside the
vocabulary are refused naming their input, a failed step fails only its own requests and the
loop goes on, and `health()` says when the engine can no longer generate."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from llm_stack.engine import llama_cpp_engine
from llm_stack.engine.base import (
    EngineError,
    EngineStoppedError,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
)
from llm_stack.engine.llama_cpp_engine import LlamaCppEngine
from llm_stack.engine.scheduler import StepItem
from llm_stack.model_errors import ErrorCode
from llm_stack.tokenizer import GgufTokenizer
from tests.llm_stack.engine.conftest import engine_config, running, wait_idle

PROMPT = "1, 2, 3, 4, 5,"
OUT_OF_VOCABULARY = 999999  # the id of the finding: llama.cpp's decode refused the batch
WITHIN_S = 120  # generous bound for anything to happen on a busy 2-core machine

_ids = itertools.count()


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LlamaCppEngine]:
    # One slot: every request runs alone (greedy text cannot depend on the batch), and a
    # second request waits in the queue, outside the running one's steps.
    async for eng in running(engine_config(max_batch_size=1, max_queue=4)):
        yield eng


def request(
    tokenizer: GgufTokenizer, prompt: str = PROMPT, max_tokens: int = 8, **fields: Any
) -> GenerationRequest:
    sampling: dict[str, Any] = {"temperature": 0.0, "min_tokens": max_tokens}
    sampling.update(fields.pop("sampling", {}))
    fields.setdefault("prompt_ids", tuple(tokenizer.encode(prompt, add_special=True)))
    return GenerationRequest(
        request_id=f"i{next(_ids)}",
        sampling=SamplingParams(max_tokens=max_tokens, **sampling),
        **fields,
    )


async def tokens(engine: LlamaCppEngine, req: GenerationRequest) -> list[int]:
    async with asyncio.timeout(WITHIN_S):
        return [t async for d in engine.generate(req) for t in d.token_ids]


@pytest.fixture(scope="module")
async def baseline(engine: LlamaCppEngine, tokenizer: GgufTokenizer) -> list[int]:
    return await tokens(engine, request(tokenizer))


async def drain(stream: AsyncIterator[TokenDelta]) -> None:
    async with asyncio.timeout(WITHIN_S):
        async for _ in stream:
            pass


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll (bounded) until the engine's step thread has made `condition` true."""
    async with asyncio.timeout(WITHIN_S):
        while not condition():  # noqa: ASYNC110 - the engine offers no event for it
            await asyncio.sleep(0.01)


class FailingDecode:
    """A test double of `_Llama.decode` that raises while armed, then calls through."""

    def __init__(self, engine: LlamaCppEngine, times: int = 1) -> None:
        assert engine._llama is not None
        self.real = engine._llama.decode
        self.left = 0
        self.times = times
        self.failed_steps: list[list[str]] = []

    def arm(self) -> None:
        self.left = self.times

    def __call__(self, items: list[StepItem]) -> dict[tuple[str, int], int]:
        if self.left > 0:
            self.left -= 1
            self.failed_steps.append([item.request_id for item in items])
            raise EngineError("llama_decode failed with code -3")
        return self.real(items)


@pytest.fixture
def failing_decode(engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch) -> FailingDecode:
    double = FailingDecode(engine)
    monkeypatch.setattr(engine._llama, "decode", double)
    return double


def slot_cells(engine: LlamaCppEngine) -> dict[int, int]:
    """KV cells held by running sequences' slots (cached prefixes aside)."""
    slots = engine.config.max_batch_size
    return {seq: pos for seq, pos in engine.cell_owners().items() if seq < slots}


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("input_ids", {"prompt_ids": (2, OUT_OF_VOCABULARY)}),
        ("stop_words", {"stop_sequences": ((236764, OUT_OF_VOCABULARY),)}),
        ("bad_words", {"bad_sequences": ((OUT_OF_VOCABULARY,),)}),
        ("end_id", {"end_id": OUT_OF_VOCABULARY}),
    ],
)
async def test_an_id_outside_the_vocabulary_is_refused_and_the_engine_serves_on(
    engine: LlamaCppEngine,
    tokenizer: GgufTokenizer,
    baseline: list[int],
    field: str,
    fields: dict[str, Any],
) -> None:
    bad = request(tokenizer, **fields)
    with pytest.raises(InvalidRequestError) as info:
        await tokens(engine, bad)
    error = info.value.model_error()
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, field)
    assert error.values == {"limit": engine.vocab_size, "value": OUT_OF_VOCABULARY}
    assert engine.vocab_size == 262144  # Gemma 3's vocabulary
    assert await tokens(engine, request(tokenizer)) == baseline
    assert engine.health().ok


async def test_a_decode_llama_cpp_refuses_fails_that_request_only(
    engine: LlamaCppEngine,
    tokenizer: GgufTokenizer,
    baseline: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past the vocabulary check, the id reaches llama.cpp, whose llama_decode refuses the
    # batch (non-zero return): the engine's own path for any failed decode.
    monkeypatch.setattr(llama_cpp_engine, "check_token_ids", lambda request, vocab_size: None)
    failed_before = engine.stats().failed
    bad = GenerationRequest(
        request_id="raw-oov",
        prompt_ids=(2, OUT_OF_VOCABULARY),
        sampling=SamplingParams(max_tokens=4, temperature=0.0),
    )
    with pytest.raises(EngineError, match=r"the engine step failed: .*llama_decode failed"):
        await tokens(engine, bad)
    assert engine.stats().failed == failed_before + 1
    await wait_idle(engine)
    assert slot_cells(engine) == {}
    assert await tokens(engine, request(tokenizer)) == baseline
    assert engine.health().ok


async def test_a_failed_step_fails_its_request_not_the_one_waiting(
    engine: LlamaCppEngine,
    tokenizer: GgufTokenizer,
    baseline: list[int],
    failing_decode: FailingDecode,
) -> None:
    running_req = request(tokenizer, "Once upon a time", max_tokens=200)
    stream = engine.generate(running_req)
    async with asyncio.timeout(WITHIN_S):
        await anext(stream)  # it holds the one slot now
    waiting_req = request(tokenizer)
    waiting = asyncio.ensure_future(tokens(engine, waiting_req))
    await wait_for(lambda: engine.stats().waiting == 1)  # queued: in none of its steps
    failing_decode.arm()
    with pytest.raises(EngineError):
        await drain(stream)
    assert failing_decode.failed_steps == [[running_req.request_id]]
    assert await waiting == baseline
    await wait_idle(engine)
    assert slot_cells(engine) == {}
    assert engine.health().ok


async def test_steps_failing_one_after_another_make_it_unhealthy_until_one_succeeds(
    engine: LlamaCppEngine,
    tokenizer: GgufTokenizer,
    baseline: list[int],
    failing_decode: FailingDecode,
) -> None:
    failing_decode.times = 3
    failing_decode.arm()
    for _ in range(3):
        with pytest.raises(EngineError):
            await tokens(engine, request(tokenizer))
    health = engine.health()
    assert not health.ok
    assert health.reason.startswith("the last 3 engine steps failed")
    assert "llama_decode failed with code -3" in health.reason
    # Unhealthy is a verdict for probes, not a refusal: the next request is served, and
    # its success shows the failures were not the engine's end.
    assert await tokens(engine, request(tokenizer)) == baseline
    assert engine.health().ok


async def test_temperature_below_fp32_range_is_greedy(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, baseline: list[int]
) -> None:
    tiny = request(tokenizer, sampling={"temperature": 1e-40})
    assert await tokens(engine, tiny) == baseline


async def test_a_dead_step_thread_fails_requests_in_flight_and_turns_it_unhealthy(
    tokenizer: GgufTokenizer,
) -> None:
    async for engine in running(engine_config(max_batch_size=2)):
        assert engine.health().ok
        stream = engine.generate(request(tokenizer, max_tokens=200))
        async with asyncio.timeout(WITHIN_S):
            await anext(stream)

        def broken(llama: Any) -> bool:
            raise RuntimeError("step loop broke")

        # Failures inside a step are caught by the guard; this one kills the loop itself.
        engine._guarded_step = broken  # type: ignore[method-assign]
        with pytest.raises(EngineStoppedError, match="step thread died: RuntimeError"):
            await drain(stream)
        health = engine.health()
        assert not health.ok
        assert health.reason == "the engine's step thread died: RuntimeError: step loop broke"
        with pytest.raises(EngineStoppedError) as info:
            await tokens(engine, request(tokenizer))
        assert info.value.model_error().code is ErrorCode.ENGINE_UNAVAILABLE
