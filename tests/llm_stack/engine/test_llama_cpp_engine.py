"""The CPU engine on the real default model (Gemma 3 270M): batching, abort, overload, stops."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import pytest

from llm_stack.engine.base import (
    EngineOverloadedError,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
)
from llm_stack.engine.llama_cpp_engine import LlamaCppEngine
from llm_stack.tokenizer import GgufTokenizer
from tests.llm_stack.engine.conftest import engine_config, running, wait_idle

SLOTS = 4
QUEUE = 2
MAX_SEQ_LEN = 512
# llama.cpp's CPU kernels round differently for different batch shapes, so greedy runs
# agree across batch compositions only where the top two logits are well apart: these
# prompts' first 16 greedy tokens all lead by over 1.4 logits.
PROMPT_A = "1, 2, 3, 4, 5,"
PROMPT_B = "The alphabet: A, B, C,"

_ids = itertools.count()


@dataclass(frozen=True)
class Run:
    tokens: list[int]
    deltas: list[TokenDelta]

    @property
    def last(self) -> TokenDelta:
        return self.deltas[-1]


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LlamaCppEngine]:
    config = engine_config(
        max_batch_size=SLOTS, max_queue=QUEUE, kv_cache_tokens=2048, max_seq_len=MAX_SEQ_LEN
    )
    async for eng in running(config):
        yield eng


def request(
    tokenizer: GgufTokenizer,
    prompt: str,
    max_tokens: int = 12,
    min_tokens: int = 0,
    stops: tuple[tuple[int, ...], ...] = (),
    end_id: int | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"t{next(_ids)}",
        prompt_ids=tuple(tokenizer.encode(prompt, add_special=True)),
        sampling=SamplingParams(max_tokens=max_tokens, min_tokens=min_tokens, temperature=0.0),
        stop_sequences=stops,
        end_id=end_id,
    )


async def collect(engine: LlamaCppEngine, req: GenerationRequest) -> Run:
    deltas = [d async for d in engine.generate(req)]
    return Run([t for d in deltas for t in d.token_ids], deltas)


@pytest.fixture(scope="module")
async def baseline_a(engine: LlamaCppEngine, tokenizer: GgufTokenizer) -> Run:
    # min_tokens keeps end tokens out, so there are always 12 tokens to work with.
    return await collect(engine, request(tokenizer, PROMPT_A, max_tokens=12, min_tokens=12))


async def test_greedy_generation_is_deterministic(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, baseline_a: Run
) -> None:
    again = await collect(engine, request(tokenizer, PROMPT_A, max_tokens=12, min_tokens=12))
    assert again.tokens == baseline_a.tokens
    assert len(baseline_a.tokens) == 12
    n_prompt = len(tokenizer.encode(PROMPT_A, add_special=True))
    assert baseline_a.last == TokenDelta(
        baseline_a.last.token_ids, n_prompt, 12, FinishReason.LENGTH
    )
    assert not any(d.finished for d in baseline_a.deltas[:-1])
    counts = list(itertools.accumulate(len(d.token_ids) for d in baseline_a.deltas))
    assert [d.num_output_tokens for d in baseline_a.deltas] == counts


async def test_concurrent_requests_match_each_alone(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, baseline_a: Run
) -> None:
    alone_b = await collect(engine, request(tokenizer, PROMPT_B, max_tokens=12, min_tokens=12))
    a, b = await asyncio.gather(
        collect(engine, request(tokenizer, PROMPT_A, max_tokens=12, min_tokens=12)),
        collect(engine, request(tokenizer, PROMPT_B, max_tokens=12, min_tokens=12)),
    )
    assert a.tokens == baseline_a.tokens
    assert b.tokens == alone_b.tokens
    assert a.tokens != b.tokens
    assert engine.stats().peak_step_batch >= 2


async def test_a_burst_up_to_the_slot_count_is_served(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, baseline_a: Run
) -> None:
    # As many requests as there are slots, arriving together on an idle engine, all
    # get a slot: none may be refused because the (smaller) queue looked full.
    await wait_idle(engine)
    results = await asyncio.gather(
        *(
            collect(engine, request(tokenizer, PROMPT_A, max_tokens=12, min_tokens=12))
            for _ in range(SLOTS)
        ),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert all(isinstance(r, Run) and r.tokens == baseline_a.tokens for r in results)


async def test_closing_the_stream_early_aborts(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, baseline_a: Run
) -> None:
    await wait_idle(engine)
    cancelled_before = engine.stats().finished.get("cancelled", 0)
    stream = engine.generate(request(tokenizer, PROMPT_B, max_tokens=16, min_tokens=16))
    first = await anext(stream)
    assert not first.finished
    assert engine.stats().active == 1
    assert isinstance(stream, AsyncGenerator)  # closable, as the model's loop needs
    await stream.aclose()
    await wait_idle(engine)
    assert engine.stats().finished.get("cancelled", 0) == cancelled_before + 1
    # The slot's KV cells were cleared: the next sequence in it is unaffected.
    again = await collect(engine, request(tokenizer, PROMPT_A, max_tokens=12, min_tokens=12))
    assert again.tokens == baseline_a.tokens


async def test_abort_by_id_ends_the_stream_with_cancelled(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    await wait_idle(engine)
    req = request(tokenizer, PROMPT_B, max_tokens=16, min_tokens=16)
    deltas: list[TokenDelta] = []
    async for delta in engine.generate(req):
        deltas.append(delta)
        if len(deltas) == 1:
            await engine.abort(req.request_id)
    assert deltas[-1].finish_reason is FinishReason.CANCELLED
    assert deltas[-1].num_output_tokens < 16
    await wait_idle(engine)


async def test_overload_raises_before_any_delta(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    await wait_idle(engine)
    streams = []
    # Fill the slots one by one (each has its first token before the next arrives).
    for _ in range(SLOTS):
        stream = engine.generate(request(tokenizer, PROMPT_A, max_tokens=16, min_tokens=16))
        assert not (await anext(stream)).finished
        streams.append(stream)
    # Then the queue: these wait, as every slot still has many tokens to go.
    waiting = [
        engine.generate(request(tokenizer, PROMPT_B, max_tokens=16, min_tokens=16))
        for _ in range(QUEUE)
    ]
    firsts = [asyncio.ensure_future(anext(s)) for s in waiting]
    await asyncio.sleep(0)  # lets both submit
    stats = engine.stats()
    assert (stats.active, stats.waiting) == (SLOTS, QUEUE)
    with pytest.raises(EngineOverloadedError, match=f"queue is full: {QUEUE} requests waiting"):
        await anext(engine.generate(request(tokenizer, PROMPT_A, max_tokens=4)))
    # Everyone already in is served in full.
    for stream in streams:
        rest = [d async for d in stream]
        assert rest[-1].finish_reason is FinishReason.LENGTH
        assert rest[-1].num_output_tokens == 16
    for first, stream in zip(firsts, waiting, strict=True):
        deltas = [await first] + [d async for d in stream]
        assert deltas[-1].finish_reason is FinishReason.LENGTH
        assert sum(len(d.token_ids) for d in deltas) == 16
    await wait_idle(engine)


async def test_stop_sequence_from_a_greedy_run_stops_a_second_one(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, baseline_a: Run
) -> None:
    tokens = baseline_a.tokens
    stop = tuple(tokens[4:6])
    cut = next(i for i in range(len(tokens)) if tuple(tokens[i : i + 2]) == stop)
    run = await collect(
        engine, request(tokenizer, PROMPT_A, max_tokens=12, min_tokens=12, stops=(stop,))
    )
    assert run.tokens == tokens[:cut]
    assert run.last.finish_reason is FinishReason.STOP
    assert run.last.num_output_tokens == cut


async def test_end_id_ends_the_sequence_and_is_not_output(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, baseline_a: Run
) -> None:
    tokens = baseline_a.tokens
    end_id = tokens[2]
    run = await collect(engine, request(tokenizer, PROMPT_A, max_tokens=12, end_id=end_id))
    assert run.tokens == tokens[: tokens.index(end_id)]
    assert run.last.finish_reason is FinishReason.STOP


async def test_max_tokens_exact_with_min_tokens(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    req = request(tokenizer, PROMPT_B, max_tokens=8, min_tokens=8)
    run = await collect(engine, req)
    assert len(run.tokens) == 8
    assert run.last.finish_reason is FinishReason.LENGTH
    assert (run.last.num_input_tokens, run.last.num_output_tokens) == (len(req.prompt_ids), 8)


async def test_request_over_the_sequence_limit_is_invalid(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    req = request(tokenizer, PROMPT_A, max_tokens=MAX_SEQ_LEN)
    with pytest.raises(InvalidRequestError, match=f"exceeds the sequence limit of {MAX_SEQ_LEN}"):
        await anext(engine.generate(req))
    assert engine.stats().waiting == 0


async def test_penalties_change_greedy_output_and_keep_the_engine_serving(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, baseline_a: Run
) -> None:
    prompt_ids = tuple(tokenizer.encode(PROMPT_A, add_special=True))
    penalised = GenerationRequest(
        request_id=f"t{next(_ids)}",
        prompt_ids=prompt_ids,
        sampling=SamplingParams(
            max_tokens=12, min_tokens=12, temperature=0.0, repetition_penalty=1.5,
            presence_penalty=1.0, frequency_penalty=0.5,
        ),
    )  # fmt: skip
    run = await collect(engine, penalised)
    assert len(run.tokens) == 12
    assert run.tokens != baseline_a.tokens  # the counting prompt repeats ", ": penalised
    again = await collect(engine, request(tokenizer, PROMPT_A, max_tokens=12, min_tokens=12))
    assert again.tokens == baseline_a.tokens
