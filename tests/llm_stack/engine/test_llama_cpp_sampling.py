"""The CPU engine on the real model: n sequences from one prompt, and token logprobs."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import pytest

from llm_stack.engine.base import FinishReason, GenerationRequest, SamplingParams, TokenDelta
from llm_stack.engine.llama_cpp_engine import LlamaCppEngine
from llm_stack.tokenizer import GgufTokenizer
from tests.llm_stack.engine.conftest import engine_config, running, wait_idle

PROMPT = "1, 2, 3, 4, 5,"  # greedy continuations lead by a wide margin (see the engine test)
OPEN_PROMPT = "My favourite animal is the"

_ids = itertools.count()


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LlamaCppEngine]:
    # No prefix cache: every prompt token a request needs is computed and counted.
    async for eng in running(engine_config(enable_prefix_cache=False)):
        yield eng


def request(
    tokenizer: GgufTokenizer, prompt: str, max_tokens: int = 12, **sampling: object
) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"s{next(_ids)}",
        prompt_ids=tuple(tokenizer.encode(prompt, add_special=True)),
        sampling=SamplingParams(max_tokens=max_tokens, **sampling),  # type: ignore[arg-type]
    )


async def by_index(engine: LlamaCppEngine, req: GenerationRequest) -> dict[int, list[TokenDelta]]:
    out: dict[int, list[TokenDelta]] = {}
    async for delta in engine.generate(req):
        out.setdefault(delta.index, []).append(delta)
    return out


def tokens(deltas: list[TokenDelta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


async def test_n_greedy_sequences_equal_one_and_share_one_prompt_computation(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    single = await by_index(engine, request(tokenizer, PROMPT, temperature=0.0, min_tokens=12))
    before = engine.stats()
    req = request(tokenizer, PROMPT, temperature=0.0, min_tokens=12, n=3)
    three = await by_index(engine, req)
    after = engine.stats()
    assert sorted(three) == [0, 1, 2]
    assert [tokens(three[i]) for i in range(3)] == [tokens(single[0])] * 3
    for deltas in three.values():
        assert deltas[-1].finish_reason is FinishReason.LENGTH
        assert not any(d.finished for d in deltas[:-1])
        assert deltas[-1].num_output_tokens == 12
    # The prompt was computed once for the three sequences, which generated 36 tokens.
    assert after.prompt_tokens_computed - before.prompt_tokens_computed == len(req.prompt_ids)
    assert after.generated_tokens - before.generated_tokens == 36
    assert after.finished["length"] - before.finished["length"] == 3
    assert engine.cell_owners() == {}  # every slot's cells cleared


async def test_seeded_sequences_are_reproducible_and_each_has_its_own_seed(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    def seeded() -> GenerationRequest:
        return request(tokenizer, OPEN_PROMPT, 16, temperature=1.0, seed=42, n=3, min_tokens=16)

    first = await by_index(engine, seeded())
    second = await by_index(engine, seeded())
    texts = [tokens(first[i]) for i in range(3)]
    assert texts == [tokens(second[i]) for i in range(3)]
    assert len({tuple(t) for t in texts}) == 3


async def test_greedy_logprobs_rank_the_sampled_token_first(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    out = await by_index(
        engine, request(tokenizer, PROMPT, temperature=0.0, min_tokens=12, logprobs=5)
    )
    deltas = out[0]
    for delta in deltas:
        assert len(delta.logprobs) == len(delta.token_ids)
    entries = [lp for d in deltas for lp in d.logprobs]
    assert len(entries) == 12
    for token, entry in zip(tokens(deltas), entries, strict=True):
        assert len(entry.top) == 5
        assert entry.top[0] == (token, entry.logprob)
        values = [v for _, v in entry.top]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0.0 for v in values)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6


async def test_sampled_logprobs_are_of_the_tempered_distribution(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    out = await by_index(
        engine,
        request(tokenizer, OPEN_PROMPT, 16, temperature=0.8, seed=7, logprobs=20, n=2),
    )
    for deltas in out.values():
        for token, entry in zip(
            tokens(deltas), [lp for d in deltas for lp in d.logprobs], strict=True
        ):
            assert math.isfinite(entry.logprob)
            assert entry.logprob <= 0.0
            listed = dict(entry.top)
            if token in listed:  # the same distribution gives the same figure
                assert listed[token] == pytest.approx(entry.logprob)
            else:  # drawn from outside the 20 likeliest: less likely than all of them
                assert entry.logprob <= entry.top[-1][1]


async def test_logprobs_off_send_none(engine: LlamaCppEngine, tokenizer: GgufTokenizer) -> None:
    out = await by_index(engine, request(tokenizer, PROMPT, temperature=0.0, max_tokens=4))
    assert all(d.logprobs == () for d in out[0])


async def test_leaving_early_stops_every_sequence(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    stream = cast(
        AsyncGenerator[TokenDelta, None],
        engine.generate(request(tokenizer, OPEN_PROMPT, 200, temperature=1.0, n=3)),
    )
    async for _delta in stream:
        break
    await stream.aclose()
    await wait_idle(engine)
    assert engine.cell_owners() == {}
