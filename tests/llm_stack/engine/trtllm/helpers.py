"""Requests and a started engine on the fakes, for the TensorRT-LLM adapter's tests."""

from __future__ import annotations

import asyncio
from typing import Any

from llm_stack.engine.base import GenerationRequest, SamplingParams, TokenDelta, TokenLogprob
from llm_stack.engine.trtllm import LlmSettings, TrtLlmEngine
from llm_stack.guided_decoding import Guide
from tests.llm_stack.engine.trtllm.fakes import (
    VERSION,
    FakeGuidedDecodingParams,
    FakeLLM,
    FakeLogprob,
    FakeRequestError,
    FakeSamplingParams,
)


def make_request(
    request_id: str = "r1",
    prompt: tuple[int, ...] = (1, 2, 3),
    stops: tuple[tuple[int, ...], ...] = (),
    bad: tuple[tuple[int, ...], ...] = (),
    end_id: int | None = None,
    guide: Guide | None = None,
    **sampling: Any,
) -> GenerationRequest:
    sampling.setdefault("max_tokens", 8)
    return GenerationRequest(
        request_id=request_id,
        prompt_ids=prompt,
        sampling=SamplingParams(**sampling),
        stop_sequences=stops,
        bad_sequences=bad,
        end_id=end_id,
        guide=guide,
    )


def settings(**overrides: Any) -> LlmSettings:
    base: dict[str, Any] = {
        "model_path": "/models/tiny",
        "max_batch_size": 4,
        "max_input_len": 16,
        "max_seq_len": 32,
    }
    return LlmSettings(**{**base, **overrides})


def engine_on(llm: FakeLLM, max_queue: int = 4, **kwargs: Any) -> TrtLlmEngine:
    """An engine on `llm`, with the recorded release's parameter classes and errors."""
    limits = {k: kwargs.pop(k) for k in ("max_batch_size",) if k in kwargs}
    kwargs.setdefault("version", VERSION)
    kwargs.setdefault("sampling_params_factory", FakeSamplingParams)
    kwargs.setdefault("guided_decoding_params_factory", FakeGuidedDecodingParams)
    kwargs.setdefault("request_errors", (ValueError, FakeRequestError))
    return TrtLlmEngine(settings(**limits), max_queue, llm_factory=lambda: llm, **kwargs)


async def started(
    llm: FakeLLM, max_batch_size: int = 4, max_queue: int = 4, **kwargs: Any
) -> TrtLlmEngine:
    engine = engine_on(llm, max_queue, max_batch_size=max_batch_size, **kwargs)
    await engine.start()
    return engine


class Stream:
    """One generation as the model consumes it; `submit` gets the request into the engine."""

    def __init__(self, engine: TrtLlmEngine, request: GenerationRequest) -> None:
        self.deltas = engine.generate(request)
        self._first: asyncio.Future[TokenDelta] | None = None

    async def next(self) -> TokenDelta:
        """The next delta; a test expecting one the engine never sends fails, not hangs."""
        first, self._first = self._first, None
        async with asyncio.timeout(5):
            return await (first if first is not None else anext(self.deltas))

    async def aclose(self) -> None:
        await self.deltas.aclose()

    def cancel(self) -> None:
        if self._first is not None:
            self._first.cancel()


open_streams: list[Stream] = []


async def submit(engine: TrtLlmEngine, request: GenerationRequest) -> Stream:
    """Start a generation and return once the request is in the engine."""
    stream = Stream(engine, request)
    # generate() submits on its first step, then waits for the engine's first output.
    stream._first = asyncio.ensure_future(anext(stream.deltas))
    await asyncio.sleep(0)
    open_streams.append(stream)
    return stream


async def refused(engine: TrtLlmEngine, request: GenerationRequest) -> TokenDelta:
    """generate()'s first step, which should raise; a failure rather than a wait if not."""
    async with asyncio.timeout(5):
        return await anext(engine.generate(request))


def lp(**values: float) -> dict[int, FakeLogprob]:
    """A TokenLogprobs entry from t<id>=<logprob> pairs."""
    return {int(name[1:]): FakeLogprob(value) for name, value in values.items()}


def lps(*values: float) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(v) for v in values)
