"""The CPU engine's structured outputs on the real default model (Gemma 3 270M).

Each guided sequence has its own grammar sampler inside in-flight batching; every output
that finishes with `stop` must parse and validate against its schema.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from llm_stack.engine.base import (
    EngineStoppedError,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
)
from llm_stack.engine.llama_cpp_engine import LlamaCppEngine
from llm_stack.guided_decoding import Guide, GuideType, check_schema, schema_text
from llm_stack.model_errors import ErrorCode
from llm_stack.tokenizer import GgufTokenizer
from tests.llm_stack.engine.conftest import engine_config, running, wait_idle

# Bounded strings, integers and arrays: each value is complete well within MAX_TOKENS.
NESTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "zip": {"type": "integer"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "address"],
    "additionalProperties": False,
}
ARRAY_ENUM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "colours": {
            "type": "array",
            "items": {"enum": ["red", "green", "blue"]},
            "minItems": 1,
            "maxItems": 3,
        },
        "ok": {"type": "boolean"},
    },
    "required": ["colours", "ok"],
    "additionalProperties": False,
}
NULLABLE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "label": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
        "note": {"type": "string", "maxLength": 8},
    },
    "required": ["id", "label"],
}
SCHEMAS = {"nested": NESTED, "array_enum": ARRAY_ENUM, "nullable": NULLABLE}
MAX_TOKENS = 160
SLOTS = 16
PROMPT = "Here is the record as JSON:"
FREE_PROMPT = "1, 2, 3, 4, 5,"  # greedy tokens lead by a wide margin (test_llama_cpp_engine)

_ids = itertools.count()


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LlamaCppEngine]:
    config = engine_config(max_batch_size=SLOTS, max_step_tokens=128)
    async for eng in running(config):
        yield eng


def request(
    tokenizer: GgufTokenizer,
    guide: Guide | None,
    *,
    prompt: str = PROMPT,
    temperature: float = 0.0,
    max_tokens: int = MAX_TOKENS,
    min_tokens: int = 0,
    seed: int = 7,
    repetition_penalty: float = 1.0,
) -> GenerationRequest:
    sampling = SamplingParams(
        max_tokens=max_tokens, temperature=temperature, min_tokens=min_tokens, seed=seed,
        repetition_penalty=repetition_penalty,
    )  # fmt: skip
    return GenerationRequest(
        request_id=f"g{next(_ids)}",
        prompt_ids=tuple(tokenizer.encode(prompt, add_special=True)),
        sampling=sampling,
        guide=guide,
    )


def schema_guide(schema: dict[str, Any]) -> Guide:
    check_schema(schema)
    return Guide(GuideType.JSON_SCHEMA, schema_text(schema))


async def run(engine: LlamaCppEngine, req: GenerationRequest) -> tuple[list[int], TokenDelta]:
    deltas = [d async for d in engine.generate(req)]
    return [t for d in deltas for t in d.token_ids], deltas[-1]


async def test_outputs_validate_for_every_schema_and_temperature(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    # A repetition penalty keeps state in the sampling chain: the grammar's other path.
    cases = [(name, temp, 1.0) for name in SCHEMAS for temp in (0.0, 0.8)]
    cases += [("nested", 0.0, 1.3), ("array_enum", 0.8, 1.3)]
    requests = [
        request(tokenizer, schema_guide(SCHEMAS[name]), temperature=temp, repetition_penalty=p)
        for name, temp, p in cases
    ]
    results = await asyncio.gather(*(run(engine, r) for r in requests))
    for case, (tokens, last) in zip(cases, results, strict=True):
        text = tokenizer.decode(tokens)
        assert last.finish_reason is FinishReason.STOP, (case, text)
        jsonschema.validate(json.loads(text), SCHEMAS[case[0]])


async def test_json_object_is_an_object(engine: LlamaCppEngine, tokenizer: GgufTokenizer) -> None:
    tokens, last = await run(engine, request(tokenizer, Guide(GuideType.JSON), max_tokens=64))
    if last.finish_reason is FinishReason.STOP:
        assert isinstance(json.loads(tokenizer.decode(tokens)), dict)
    else:  # an unbounded object may run past the budget; it is still one in the making
        assert tokenizer.decode(tokens).lstrip().startswith("{")


async def test_a_tight_budget_ends_with_length(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    tokens, last = await run(engine, request(tokenizer, schema_guide(NESTED), max_tokens=4))
    assert last.finish_reason is FinishReason.LENGTH
    assert len(tokens) == 4
    assert tokenizer.decode(tokens).startswith("{")


async def test_a_complete_value_stops_even_before_min_tokens(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    # min_tokens bans the end tokens; the grammar then allows nothing else after the value.
    schema = {"enum": ["yes", "no"]}
    tokens, last = await run(
        engine, request(tokenizer, schema_guide(schema), max_tokens=32, min_tokens=32)
    )
    assert last.finish_reason is FinishReason.STOP
    assert json.loads(tokenizer.decode(tokens)) in ("yes", "no")


async def test_sixteen_guided_and_free_sequences_share_steps_unaffected(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    def free(prompt: str = FREE_PROMPT) -> GenerationRequest:
        return request(tokenizer, None, prompt=prompt, max_tokens=12, min_tokens=12)

    alone, _ = await run(engine, free())
    half = SLOTS // 2
    guided = [request(tokenizer, schema_guide(ARRAY_ENUM), prompt=f"Record {i} as JSON:",
                      temperature=0.8, seed=i) for i in range(half)]  # fmt: skip
    others = [free(f"{i}, {i + 1}, {i + 2},") for i in range(half - 1)]
    results = await asyncio.gather(*(run(engine, r) for r in [free(), *others, *guided]))
    free_tokens, free_last = results[0]
    assert free_tokens == alone
    assert free_last.finish_reason is FinishReason.LENGTH
    for tokens, last in results[half:]:
        assert last.finish_reason is FinishReason.STOP
        jsonschema.validate(json.loads(tokenizer.decode(tokens)), ARRAY_ENUM)
    # Only this test runs SLOTS sequences at once: a step held all of them, both kinds.
    assert engine.stats().peak_step_batch == SLOTS


async def test_each_schema_is_converted_once(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    first = engine.grammars.conversions
    for _ in range(2):
        await run(engine, request(tokenizer, schema_guide(schema), max_tokens=2))
    assert engine.grammars.conversions == first + 1


async def test_a_guide_without_a_grammar_is_refused_before_any_token(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    # Past the schema check (a client of the engine itself): the converter cannot take it.
    guide = Guide(GuideType.JSON_SCHEMA, '{"type": "string", "pattern": "no anchors"}')
    with pytest.raises(InvalidRequestError) as caught:
        await run(engine, request(tokenizer, guide))
    assert caught.value.field == "guided_decoding_guide"
    tokens, last = await run(engine, request(tokenizer, None, prompt=FREE_PROMPT, max_tokens=2))
    assert (len(tokens), last.finish_reason) == (2, FinishReason.LENGTH)


@pytest.mark.parametrize("logprobs", [None, 3])
async def test_n_guided_sequences_each_keep_their_own_grammar(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, logprobs: int | None
) -> None:
    base = request(tokenizer, schema_guide(ARRAY_ENUM), temperature=0.9, repetition_penalty=1.1)
    req = replace(base, sampling=replace(base.sampling, n=3, logprobs=logprobs))
    outputs: dict[int, list[int]] = {}
    finishes: dict[int, FinishReason | None] = {}
    async for delta in engine.generate(req):
        outputs.setdefault(delta.index, []).extend(delta.token_ids)
        assert len(delta.logprobs) == (len(delta.token_ids) if logprobs is not None else 0)
        if delta.finished:
            finishes[delta.index] = delta.finish_reason
    assert finishes == dict.fromkeys(range(3), FinishReason.STOP)
    for tokens in outputs.values():
        jsonschema.validate(json.loads(tokenizer.decode(tokens)), ARRAY_ENUM)


async def test_greedy_output_is_the_same_from_a_new_grammar_and_a_cached_one(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    # The first request compiles the grammar, the second copies the cached prototype.
    schema = {"type": "object", "properties": {"q": {"type": "boolean"}}, "required": ["q"]}
    first = engine.grammars.conversions
    outputs = [await run(engine, request(tokenizer, schema_guide(schema))) for _ in range(2)]
    assert engine.grammars.conversions == first + 1
    (tokens, last), (again, _) = outputs
    assert last.finish_reason is FinishReason.STOP
    assert tokens == again
    jsonschema.validate(json.loads(tokenizer.decode(tokens)), schema)


async def test_no_grammar_is_left_behind_by_aborted_or_refused_requests(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    guide = schema_guide(ARRAY_ENUM)
    base = request(tokenizer, guide, temperature=0.8)
    stream = engine.generate(replace(base, sampling=replace(base.sampling, n=3)))
    await anext(stream)
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()  # aborted with its sequences running
    # Refused by the scheduler after its grammar copies were made.
    too_long = request(tokenizer, guide, max_tokens=10_000)
    with pytest.raises(InvalidRequestError) as caught:
        await run(engine, too_long)
    assert caught.value.code is ErrorCode.SEQUENCE_TOO_LONG
    await wait_idle(engine)
    assert engine.grammars.held() == 0


async def test_a_stopped_engine_frees_its_grammars_and_refuses_guides(
    tokenizer: GgufTokenizer,
) -> None:
    eng = LlamaCppEngine(engine_config())
    await eng.start()
    guide = schema_guide(NESTED)
    await run(eng, request(tokenizer, guide, max_tokens=2))
    await eng.shutdown()
    assert eng.grammars.held() == 0
    with pytest.raises(EngineStoppedError):
        await run(eng, request(tokenizer, guide, max_tokens=2))
