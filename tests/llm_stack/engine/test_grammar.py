"""The grammar cache: guides compiled once in a worker, copied per sequence, refused in time.

Most tests give the cache fake llama.cpp functions that count what lives, so that a leak
or a double free shows; the last ones use llama.cpp itself on the default model's
vocabulary.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from llm_stack.engine.base import EngineStoppedError, InvalidRequestError
from llm_stack.engine.grammar import GRAMMAR_ROOT, GrammarCache, guide_gbnf, schema_to_gbnf
from llm_stack.guided_decoding import MAX_GRAMMAR_BYTES, Guide, GuideType, schema_text
from llm_stack.llama_loader import load_model
from llm_stack.model_errors import ErrorCode
from llm_stack.model_source import resolve_model_path

_names = itertools.count()


def schema_guide(n: int) -> Guide:
    return Guide(GuideType.JSON_SCHEMA, schema_text({"enum": [n]}))


class FakeLlama:
    """Compile, clone and free that keep the set of live samplers (strings)."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.compiled: list[str] = []  # grammars compiled, in order
        self.prototypes: list[str] = []  # what each compiled to

    def compile(self, gbnf: str) -> str:
        self.compiled.append(gbnf)
        self.prototypes.append(self._new("prototype"))
        return self.prototypes[-1]

    def clone(self, sampler: str) -> str:
        assert sampler in self.live, "cloned after free"
        return self._new(f"copy of {sampler}")

    def free(self, sampler: str) -> None:
        assert sampler in self.live, "freed twice"
        self.live.remove(sampler)

    def _new(self, name: str) -> str:
        sampler = f"{name} #{next(_names)}"
        self.live.add(sampler)
        return sampler

    def cache(self, **kwargs: Any) -> GrammarCache:
        return GrammarCache(self.compile, clone=self.clone, free=self.free, **kwargs)


class BlockedConverter:
    """A converter that blocks until `go` is set, as a costly schema would."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.entered = threading.Event()
        self.returned = threading.Event()
        self.calls = 0

    def __call__(self, guide: Guide) -> str:
        self.calls += 1
        self.entered.set()
        self.go.wait()
        self.returned.set()
        return guide_gbnf(guide)


@pytest.fixture
def fake() -> FakeLlama:
    return FakeLlama()


async def test_a_prototype_is_compiled_once_and_each_sequence_gets_its_own_copy(
    fake: FakeLlama,
) -> None:
    cache = fake.cache()
    guide = schema_guide(1)
    await cache.prepare(guide, "a", 3)
    await cache.prepare(guide, "b", 2)
    assert (cache.conversions, len(fake.compiled)) == (1, 1)
    copies = [cache.take(("a", i)) for i in range(3)] + [cache.take(("b", 0))]
    assert len(set(copies)) == 4
    assert all(c.startswith("copy of prototype") for c in copies)
    assert cache.held() == 1  # b's second sequence has not taken its copy
    cache.release("b")
    cache.release("a")  # all taken: nothing left to free
    assert cache.held() == 0
    with pytest.raises(KeyError):
        cache.take(("a", 0))
    for copy in copies:
        fake.free(copy)  # the step thread's part, with each sequence
    cache.close()
    assert fake.live == set()


async def test_an_evicted_prototype_is_freed_and_its_copies_live_on(fake: FakeLlama) -> None:
    cache = fake.cache(capacity=1)
    await cache.prepare(schema_guide(1), "a", 1)
    copy = cache.take(("a", 0))
    await cache.prepare(schema_guide(2), "b", 1)  # evicts the first prototype
    first, second = fake.prototypes
    assert first not in fake.live
    assert {second, copy} <= fake.live
    cache.close()  # frees the second prototype and b's untaken copy
    assert fake.live == {copy}
    fake.free(copy)


async def test_after_close_nothing_is_held_and_guides_are_refused(fake: FakeLlama) -> None:
    cache = fake.cache()
    await cache.prepare(schema_guide(1), "a", 2)
    cache.close()
    assert fake.live == set()
    cache.release("a")  # a request ending after the engine: nothing twice
    with pytest.raises(EngineStoppedError):
        await cache.prepare(schema_guide(1), "b", 1)


async def test_a_guide_over_the_deadline_is_refused_while_its_conversion_runs(
    fake: FakeLlama,
) -> None:
    # The converter blocks until the test lets it go: the refusal cannot be a race.
    converter = BlockedConverter()
    cache = fake.cache(convert=converter, deadline_s=0.01)
    guide = schema_guide(1)
    with pytest.raises(InvalidRequestError) as caught:
        await cache.prepare(guide, "a", 2)
    assert converter.entered.is_set()
    assert not converter.returned.is_set()  # refused while the conversion still runs
    error = caught.value.model_error()
    assert (error.code, error.field) == (ErrorCode.TIMEOUT, "guided_decoding_guide")
    assert error.values == {"limit_s": 0.01}
    assert (
        error.message == "guided_decoding_guide: the schema's grammar was not ready within 0.01 s"
    )
    # The work goes on and its grammar is cached: the next request of the guide gets it.
    converter.go.set()
    cache.deadline_s = 60.0
    await cache.prepare(guide, "b", 1)
    assert (converter.calls, len(fake.compiled)) == (1, 1)
    cache.close()
    assert fake.live == set()  # the refused request's copies were never made or were freed


async def test_requests_behind_a_slow_guide_are_refused_and_their_work_dropped(
    fake: FakeLlama,
) -> None:
    converter = BlockedConverter()
    cache = fake.cache(convert=converter, deadline_s=0.01)
    with pytest.raises(InvalidRequestError):
        await cache.prepare(schema_guide(1), "a", 1)
    # Queued behind the blocked conversion: refused too, and its job never runs.
    with pytest.raises(InvalidRequestError) as caught:
        await cache.prepare(schema_guide(2), "b", 1)
    assert caught.value.code is ErrorCode.TIMEOUT
    converter.go.set()
    cache.close()
    assert converter.calls == 1
    assert fake.live == set()


async def test_a_cancelled_request_frees_what_its_job_builds(fake: FakeLlama) -> None:
    converter = BlockedConverter()
    cache = fake.cache(convert=converter, deadline_s=60.0)
    task = asyncio.create_task(cache.prepare(schema_guide(1), "a", 4))
    await asyncio.to_thread(converter.entered.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    converter.go.set()
    cache.close()  # waits for the job; its prototype is cached, then freed here
    assert len(fake.compiled) == 1
    assert fake.live == set()
    assert cache.held() == 0


async def test_an_unenforceable_guide_is_refused_once_and_remembered(fake: FakeLlama) -> None:
    cache = fake.cache()
    guide = Guide(GuideType.JSON_SCHEMA, '{"type": "string", "pattern": "no anchors"}')
    for request_id in ("a", "b"):
        with pytest.raises(InvalidRequestError) as caught:
            await cache.prepare(guide, request_id, 1)
        assert caught.value.field == "guided_decoding_guide"
        assert "cannot be enforced as a grammar" in str(caught.value)
    assert (cache.conversions, fake.compiled) == (1, [])
    assert cache.held() == 0
    cache.close()


async def test_a_grammar_over_its_size_limit_is_refused_naming_it(fake: FakeLlama) -> None:
    big = "x" * (MAX_GRAMMAR_BYTES + 1)
    cache = fake.cache(convert=lambda guide: big)
    with pytest.raises(InvalidRequestError) as caught:
        await cache.prepare(schema_guide(1), "a", 1)
    error = caught.value.model_error()
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, "guided_decoding_guide")
    assert error.values == {"value": MAX_GRAMMAR_BYTES + 1, "limit": MAX_GRAMMAR_BYTES}
    assert error.message == (
        f"guided_decoding_guide: the schema's grammar is {MAX_GRAMMAR_BYTES + 1} bytes, "
        f"over the limit of {MAX_GRAMMAR_BYTES}"
    )
    assert fake.compiled == []
    cache.close()


async def test_a_request_id_in_use_is_refused(fake: FakeLlama) -> None:
    cache = fake.cache()
    await cache.prepare(schema_guide(1), "a", 1)
    with pytest.raises(InvalidRequestError) as caught:
        await cache.prepare(schema_guide(1), "a", 1)
    assert caught.value.code is ErrorCode.DUPLICATE_REQUEST_ID
    assert cache.held() == 1  # the first request's copy, untouched
    cache.close()
    assert fake.live == set()


# -- llama.cpp itself ------------------------------------------------------------------


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


@pytest.fixture(scope="module")
def vocab() -> Iterator[tuple[Any, Any]]:
    lc, model = load_model(resolve_model_path("gemma3-270m"), vocab_only=True)
    assert model
    yield lc, lc.llama_model_get_vocab(model)
    lc.llama_model_free(model)


def allowed(lc: Any, sampler: Any, tokens: list[int]) -> list[int]:
    """Which of `tokens` the grammar sampler allows next."""
    data = np.zeros(len(tokens), dtype=_TOKEN_DATA)
    data["id"] = tokens
    array = lc.llama_token_data_array(
        data=data.ctypes.data_as(lc.llama_token_data_p),
        size=len(tokens),
        selected=-1,
        sorted=False,
    )
    lc.llama_sampler_apply(sampler, ctypes.byref(array))
    return [int(t) for t, logit in zip(data["id"], data["logit"], strict=True) if logit > -1e30]


def token_of(lc: Any, vocab: Any, text: str) -> int:
    ids = (ctypes.c_int32 * 8)()
    n = lc.llama_tokenize(vocab, text.encode(), len(text.encode()), ids, 8, False, True)
    assert n == 1, text
    return int(ids[0])


def test_a_copy_outlives_its_prototype_and_keeps_its_own_state(
    vocab: tuple[Any, Any],
) -> None:
    lc, voc = vocab
    gbnf = schema_to_gbnf({"enum": ["ab", "cd"]})
    prototype = lc.llama_sampler_init_grammar(voc, gbnf.encode(), GRAMMAR_ROOT.encode())
    assert prototype
    first = lc.llama_sampler_clone(prototype)
    second = lc.llama_sampler_clone(prototype)
    lc.llama_sampler_free(prototype)
    quote, a, c = (token_of(lc, voc, t) for t in ('"', "a", "c"))
    assert allowed(lc, first, [quote, a, c]) == [quote]
    lc.llama_sampler_accept(first, quote)
    lc.llama_sampler_accept(first, a)
    assert allowed(lc, first, [quote, a, c]) == []  # "a" wants "b" next
    assert allowed(lc, second, [quote, a, c]) == [quote]  # untouched by the first's tokens
    lc.llama_sampler_accept(second, quote)
    assert allowed(lc, second, [quote, a, c]) == [a, c]
    lc.llama_sampler_free(first)
    lc.llama_sampler_free(second)


async def test_the_cache_on_llama_cpp_frees_all_it_made(vocab: tuple[Any, Any]) -> None:
    lc, voc = vocab

    def compile_gbnf(gbnf: str) -> Any:
        return lc.llama_sampler_init_grammar(voc, gbnf.encode(), GRAMMAR_ROOT.encode())

    cache = GrammarCache(compile_gbnf, capacity=2)
    for n in range(4):  # two evictions
        await cache.prepare(schema_guide(n), f"r{n}", 2)
    sampler = cache.take(("r3", 1))
    quote = token_of(lc, voc, '"')
    three = token_of(lc, voc, "3")
    assert allowed(lc, sampler, [quote, three]) == [three]
    lc.llama_sampler_free(sampler)
    for n in range(3):
        cache.release(f"r{n}")
    cache.close()  # r3's other copy and two prototypes
    assert cache.held() == 0


def test_a_copy_masks_as_a_freshly_compiled_grammar_does(vocab: tuple[Any, Any]) -> None:
    # What each sequence compiled for itself before, step by step along a valid value.
    lc, voc = vocab
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"enum": ["yes", "no"]}},
        "required": ["a", "b"],
    }
    gbnf = schema_to_gbnf(schema)
    fresh = lc.llama_sampler_init_grammar(voc, gbnf.encode(), GRAMMAR_ROOT.encode())
    prototype = lc.llama_sampler_init_grammar(voc, gbnf.encode(), GRAMMAR_ROOT.encode())
    copy = lc.llama_sampler_clone(prototype)
    lc.llama_sampler_free(prototype)
    text = '{"a": 12, "b": "no"}'
    ids = (ctypes.c_int32 * 64)()
    n = lc.llama_tokenize(voc, text.encode(), len(text.encode()), ids, 64, False, True)
    candidates = list(range(4096))
    for token in list(ids[:n]):
        assert allowed(lc, copy, candidates) == allowed(lc, fresh, candidates)
        assert allowed(lc, copy, [token]) == [token]
        lc.llama_sampler_accept(fresh, token)
        lc.llama_sampler_accept(copy, token)
    lc.llama_sampler_free(fresh)
    lc.llama_sampler_free(copy)


def accepts(lc: Any, vocab: Any, schema: dict[str, Any], text: str) -> bool:
    """Whether the schema's grammar takes exactly `text` (one character per step)."""
    gbnf = schema_to_gbnf(schema)
    sampler = lc.llama_sampler_init_grammar(vocab, gbnf.encode(), GRAMMAR_ROOT.encode())
    assert sampler, gbnf
    try:
        for char in text:
            token = token_of(lc, vocab, char)
            if not allowed(lc, sampler, [token]):
                return False
            lc.llama_sampler_accept(sampler, token)
        # Complete: the end of generation is allowed here.
        return bool(allowed(lc, sampler, [lc.llama_vocab_eos(vocab)]))
    finally:
        lc.llama_sampler_free(sampler)


@pytest.mark.parametrize(
    ("schema", "taken", "refused"),
    [
        # The converter read the list of types first and allowed any string.
        (
            {"type": ["string", "null"], "enum": ["F", "C", None]},
            ['"F"', '"C"', "null"],
            ['"X"', '"FC"', '""'],
        ),
        # Values that are prefixes of others, shared prefixes, escapes, objects.
        (
            {"enum": [1, 12, 123, 2, 'a"b', "a\\c", "ab", {"a": 1}, None]},
            ["1", "12", "123", "2", '"a\\"b"', '"a\\\\c"', '"ab"', '{"a": 1}', "null"],
            ["13", "1234", "3", '"a"', '"a\\"', '{"a": 2}', "nul"],
        ),
        # Options that are only values are one set of values.
        (
            {"anyOf": [{"const": "ab"}, {"type": "string", "enum": ["ac", "b"]}, {"const": 7}]},
            ['"ab"', '"ac"', '"b"', "7"],
            ['"a"', '"bc"', "77"],
        ),
    ],
    ids=["type-list", "prefixes", "any-of-values"],
)
def test_values_are_enforced_exactly(
    vocab: tuple[Any, Any], schema: dict[str, Any], taken: list[str], refused: list[str]
) -> None:
    lc, voc = vocab
    for text in taken:
        assert accepts(lc, voc, schema, text), text
    for text in refused:
        assert not accepts(lc, voc, schema, text), text


def test_an_enum_is_one_alternative_per_next_character() -> None:
    # llama.cpp checks each candidate token against each alternative it could be in: one
    # per value made a 500-value enum cost 500 times a literal's check per token.
    gbnf = schema_to_gbnf({"enum": [f"value-{i:03d}" for i in range(500)]})
    root = next(line for line in gbnf.splitlines() if line.startswith("root ::= "))
    assert root.startswith('root ::= "\\"value-" (')
    assert root.count("|") == 499  # one branch point per leaf at most
