"""The CPU engine's prefix cache on the real default model: same greedy output, no leaks."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from llm_stack.engine.base import FinishReason, GenerationRequest, SamplingParams, TokenDelta
from llm_stack.engine.llama_cpp_engine import LlamaCppConfig, LlamaCppEngine
from llm_stack.tokenizer import GgufTokenizer
from tests.llm_stack.engine.conftest import engine_config, running, wait_idle

BLOCK = 32
# A shared instruction block of several cache blocks, then distinct last lines whose
# greedy continuations are clear-cut (counting), so that the chunk shapes a cache hit
# changes cannot flip a near tie.
PREFIX = "Count on: " + ", ".join(str(i) for i in range(1, 60)) + ".\n"
TAILS = ("Letters: A, B, C,", "Days: Monday, Tuesday,", "Tens: 10, 20, 30,", "Months: January,")
MAX_TOKENS = 10

_ids = itertools.count()


def config(**overrides: object) -> LlamaCppConfig:
    return engine_config(**{"prefix_cache_block_tokens": BLOCK, **overrides})


@pytest.fixture(scope="module")
async def cached() -> AsyncIterator[LlamaCppEngine]:
    async for engine in running(config(enable_prefix_cache=True)):
        yield engine


@pytest.fixture(scope="module")
async def uncached() -> AsyncIterator[LlamaCppEngine]:
    async for engine in running(config(enable_prefix_cache=False)):
        yield engine


def request(tokenizer: GgufTokenizer, text: str) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"p{next(_ids)}",
        prompt_ids=tuple(tokenizer.encode(text, add_special=True)),
        sampling=SamplingParams(max_tokens=MAX_TOKENS, min_tokens=MAX_TOKENS, temperature=0.0),
    )


async def generate(engine: LlamaCppEngine, req: GenerationRequest) -> list[TokenDelta]:
    return [d async for d in engine.generate(req)]


def tokens(deltas: list[TokenDelta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


def assert_no_leaked_cells(engine: LlamaCppEngine) -> None:
    """Idle: only the cache entries hold KV cells, each exactly its own tokens."""
    stats = engine.stats()
    assert (stats.active, stats.waiting, stats.kv_reserved_tokens) == (0, 0, 0)
    entries = engine.cached_prefixes()
    assert engine.cell_owners() == {seq_id: n - 1 for seq_id, n in entries.items()}
    assert stats.prefix_cache_tokens == sum(entries.values())


@pytest.fixture(scope="module")
async def expected(uncached: LlamaCppEngine, tokenizer: GgufTokenizer) -> dict[str, list[int]]:
    """Each prompt's greedy output with the cache off, run alone."""
    out = {}
    for tail in TAILS:
        out[tail] = tokens(await generate(uncached, request(tokenizer, PREFIX + tail)))
        assert len(out[tail]) == MAX_TOKENS
    assert uncached.stats().prompt_tokens_cached == 0
    assert uncached.cell_owners() == {}
    return out


async def test_greedy_output_is_the_same_with_the_cache_on(
    cached: LlamaCppEngine, tokenizer: GgufTokenizer, expected: dict[str, list[int]]
) -> None:
    before = cached.stats()
    for i, tail in enumerate(TAILS):
        req = request(tokenizer, PREFIX + tail)
        deltas = await generate(cached, req)
        assert tokens(deltas) == expected[tail], tail
        shared = len(tokenizer.encode(PREFIX, add_special=True)) // BLOCK * BLOCK
        reused = deltas[-1].num_cached_tokens
        fresh = before.prompt_tokens_cached == before.prompt_tokens_computed == 0
        if fresh and i < 2:
            # Seen once, then twice: the shared blocks are kept from the second sight.
            assert reused == 0
        else:
            # Whole blocks of the shared part at least (a tail may extend the last one).
            assert reused >= shared - BLOCK
            assert reused % BLOCK == 0
            assert reused > 0
    after = cached.stats()
    assert after.prompt_tokens_cached > before.prompt_tokens_cached
    assert_no_leaked_cells(cached)


async def test_concurrent_hits_match_each_prompt_alone(
    cached: LlamaCppEngine, tokenizer: GgufTokenizer, expected: dict[str, list[int]]
) -> None:
    for _ in range(2):  # the prefix is cached from its second sight
        await generate(cached, request(tokenizer, PREFIX + TAILS[0]))
    runs = await asyncio.gather(
        *(generate(cached, request(tokenizer, PREFIX + tail)) for tail in TAILS)
    )
    for tail, deltas in zip(TAILS, runs, strict=True):
        assert tokens(deltas) == expected[tail], tail
        assert deltas[-1].num_cached_tokens > 0
    assert cached.stats().peak_step_batch > 1
    assert_no_leaked_cells(cached)


async def test_abort_in_the_middle_leaks_nothing_and_changes_nothing(
    cached: LlamaCppEngine, tokenizer: GgufTokenizer, expected: dict[str, list[int]]
) -> None:
    for tail in TAILS[:2]:
        req = request(tokenizer, PREFIX + tail)
        seen: list[TokenDelta] = []
        async for delta in cached.generate(req):
            seen.append(delta)
            if len(seen) == 2:
                await cached.abort(req.request_id)
        assert seen[-1].finish_reason is FinishReason.CANCELLED
        await wait_idle(cached)
        assert_no_leaked_cells(cached)
    # A consumer cancelled while it waits for the first token (in prefill, or just after).
    stream = cached.generate(request(tokenizer, PREFIX + " and a prompt cut off"))
    assert isinstance(stream, AsyncGenerator)
    first = asyncio.ensure_future(anext(stream))
    deadline = time.monotonic() + 30
    while not cached.stats().active and not first.done():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await stream.aclose()
    await wait_idle(cached)
    assert_no_leaked_cells(cached)
    for tail in TAILS:
        assert tokens(await generate(cached, request(tokenizer, PREFIX + tail))) == expected[tail]
    assert_no_leaked_cells(cached)


async def test_eviction_under_pressure_leaks_nothing(
    tokenizer: GgufTokenizer, expected: dict[str, list[int]]
) -> None:
    # Room for about two prompts' reservations and no more: each new distinct prefix
    # evicts older entries, and running sequences take cells from the cache.
    async for small in running(config(kv_cache_tokens=640, max_seq_len=320)):
        prefixes = [f"Story {n}: " + "the quick brown fox " * 12 + "\n" for n in range(5)]
        for prefix in prefixes:
            for tail in TAILS[:2]:  # twice: cached from the second sight
                await generate(small, request(tokenizer, prefix + tail))
            assert small.cached_prefixes()
            assert_no_leaked_cells(small)
            stats = small.stats()
            assert stats.prefix_cache_tokens + stats.kv_reserved_tokens <= stats.kv_cache_tokens
        runs = await asyncio.gather(
            *(generate(small, request(tokenizer, PREFIX + tail)) for tail in TAILS)
        )
        for tail, deltas in zip(TAILS, runs, strict=True):
            assert tokens(deltas) == expected[tail], tail
        assert_no_leaked_cells(small)
        assert len(small.cached_prefixes()) <= small.config.cache_slots
