"""Tool calls on the CPU engine with the real default model (Gemma 3 270M): for `required`,
a named function and `auto`, every call the model makes has arguments that parse and
validate against its tool's schema, greedy and sampled, on every try."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import jsonschema
import pytest

from llm_stack.engine.base import FinishReason, GenerationRequest, SamplingParams
from llm_stack.engine.llama_cpp_engine import LlamaCppEngine
from llm_stack.guided_decoding import Guide
from llm_stack.tokenizer import GgufTokenizer
from llm_stack.tool_calls import (
    HERMES,
    NamedTool,
    ParsedOutput,
    ToolChoice,
    parse_tool_calls,
    tool_guide,
)
from tests.conftest import TEST_TOOLS
from tests.llm_stack.engine.conftest import engine_config, running

TOOLS = TEST_TOOLS
SCHEMAS = {tool.name: tool.parameters for tool in TOOLS}
# The documented format, as the default chat template writes it for these tools.
PROMPT = (
    "<start_of_turn>user\nYou may call functions. To call one, write\n<tool_call>\n"
    '{"name": <function name>, "arguments": <arguments as a JSON object>}\n</tool_call>\n\n'
    "Functions:\n"
    + "\n".join(json.dumps(t.to_openai()) for t in TOOLS)
    + "\n\nWhat is the weather in Paris?<end_of_turn>\n<start_of_turn>model\n"
)
# A call to either tool with its longest strings takes about 45 tokens (more where the
# model escapes characters): room to finish it, where the test asks for `stop`.
MAX_TOKENS = 96
AUTO_MAX_TOKENS = 56  # auto may write text to the end: its test asks for no `stop`
# Greedy once (its output does not depend on the seed), sampled with several seeds.
CASES = ((0.0, 0), (0.8, 0), (0.8, 1), (0.8, 2))
_ids = itertools.count()


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LlamaCppEngine]:
    async for eng in running(engine_config(max_batch_size=8, max_step_tokens=256)):
        yield eng


def request(
    tokenizer: GgufTokenizer,
    guide: Guide | None,
    temperature: float,
    seed: int,
    max_tokens: int = MAX_TOKENS,
) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"t{next(_ids)}",
        prompt_ids=tuple(tokenizer.encode(PROMPT, add_special=True)),
        sampling=SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed),
        guide=guide,
    )


async def generate(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, req: GenerationRequest
) -> tuple[str, FinishReason | None]:
    deltas = [d async for d in engine.generate(req)]
    return tokenizer.decode([t for d in deltas for t in d.token_ids]), deltas[-1].finish_reason


def check_calls(parsed: ParsedOutput, text: str) -> None:
    for call in parsed.tool_calls:
        assert call.complete, text
        jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


async def outputs(
    engine: LlamaCppEngine,
    tokenizer: GgufTokenizer,
    choice: ToolChoice,
    parallel: bool,
    max_tokens: int = MAX_TOKENS,
) -> list[tuple[str, FinishReason | None, ParsedOutput]]:
    guide = tool_guide(TOOLS, choice, parallel=parallel)
    requests = [request(tokenizer, guide, t, seed, max_tokens) for t, seed in CASES]
    results = await asyncio.gather(*(generate(engine, tokenizer, r) for r in requests))
    names = [t.name for t in TOOLS]
    return [(text, end, parse_tool_calls(text, HERMES, tool_names=names)) for text, end in results]


@pytest.mark.parametrize("parallel", [False, True])
async def test_required_gives_valid_calls_only(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer, parallel: bool
) -> None:
    for text, end, parsed in await outputs(engine, tokenizer, "required", parallel):
        assert parsed.content is None, text
        if parallel:
            # The model may go on calling until max_tokens cuts the last call short.
            complete = tuple(c for c in parsed.tool_calls if c.complete)
            assert complete, text
            assert end is FinishReason.STOP or complete != parsed.tool_calls, text
            check_calls(ParsedOutput(None, complete), text)
        else:
            assert end is FinishReason.STOP, text
            assert len(parsed.tool_calls) == 1, text
            check_calls(parsed, text)


async def test_a_named_function_is_the_one_call(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    for text, end, parsed in await outputs(engine, tokenizer, NamedTool("get_time"), True):
        assert end is FinishReason.STOP, text
        assert parsed.content is None, text
        assert [c.name for c in parsed.tool_calls] == ["get_time"], text
        check_calls(parsed, text)


async def test_auto_gives_text_or_valid_calls(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    results = await outputs(engine, tokenizer, "auto", False, AUTO_MAX_TOKENS)
    for text, end, parsed in results:
        # Cut short by max_tokens, a call may be incomplete; every complete one is valid.
        complete = [c for c in parsed.tool_calls if c.complete]
        if end is FinishReason.STOP:
            assert complete == list(parsed.tool_calls), text
        check_calls(ParsedOutput(parsed.content, tuple(complete)), text)
        assert len(parsed.tool_calls) <= 1, text
        # Everything is either content or a call: nothing the parser could not place.
        assert parsed.content is not None or parsed.tool_calls, text
    # The prompt asks for the weather: the model calls at least once in these tries.
    assert any(parsed.tool_calls for _, _, parsed in results)


async def test_a_tool_guide_is_compiled_once_for_its_requests(
    engine: LlamaCppEngine, tokenizer: GgufTokenizer
) -> None:
    guide = tool_guide(TOOLS, NamedTool("get_weather"), parallel=False)
    first = engine.grammars.conversions
    for seed in range(3):
        text, _ = await generate(engine, tokenizer, request(tokenizer, guide, 0.8, seed, 3))
        assert text, text
        assert HERMES.begin("get_weather").startswith(text), text  # the call, forced
    assert engine.grammars.conversions == first + 1
    assert engine.grammars.held() == 0
