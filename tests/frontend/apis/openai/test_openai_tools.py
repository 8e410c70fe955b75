"""Tool calling on /v1/chat/completions end to end: the official openai SDK against uvicorn
and the real Triton (the default model, the hermes format).

`required` and a named function are generated under the tools' grammar, so on every try,
greedy and sampled, streamed and not, each call's arguments parse and validate against its
tool's schema; streamed deltas reassemble to the call a plain request with the same seed
gets; a conversation carrying the calls and their answers goes on; the SDK's helpers
(`pydantic_function_tool`, `chat.completions.parse`, `chat.completions.stream`) work.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, Field

from frontend.app import create_app
from launcher.triton_server import TritonServer
from llm_stack.tool_calls import LLAMA3_JSON
from tests.conftest import TEST_TOOLS
from tests.frontend.apis.conftest import openai_sdk as sdk
from tests.frontend.conftest import ServedApp, serve, settings_for

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
SCHEMAS = {tool.name: tool.parameters for tool in TEST_TOOLS}
TOOLS: Any = [tool.to_openai() for tool in TEST_TOOLS]
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
# A call to either tool, its strings at their longest, takes about 45 tokens.
MAX_TOKENS = 64
# Each case's tries, streamed and not (so 12 of each case): greedy (seeds change nothing,
# so few) and sampled.
TRIES = [(0.0, seed) for seed in range(2)] + [(0.8, seed) for seed in range(4)]
NAMED: Any = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(scope="module")
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    # Each distinct tools guide is compiled once, which takes seconds on a busy machine.
    settings = settings_for(triton.grpc_url, max_tokens_limit=128, request_timeout_s=300.0)
    async with serve(create_app(settings)) as app:
        yield app


def valid_arguments(name: str, arguments: str) -> dict[str, Any]:
    value = json.loads(arguments)
    jsonschema.validate(value, SCHEMAS[name])
    assert isinstance(value, dict)
    return value


async def streamed(client: openai.AsyncOpenAI, **request: Any) -> tuple[str, list[Any], str]:
    """A streamed request reassembled from its deltas as OpenAI's shape has them: content,
    calls (id, name, arguments) by index, the finish reason."""
    stream = await client.chat.completions.create(stream=True, **request)
    content: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    finish = ""
    async for chunk in stream:
        [choice] = chunk.choices
        content.append(choice.delta.content or "")
        for piece in choice.delta.tool_calls or ():
            if piece.index not in calls:
                # The first delta of a call has its id, type and name.
                assert piece.id is not None
                assert piece.type == "function"
                assert piece.function is not None
                assert piece.function.name
                calls[piece.index] = {"id": piece.id, "name": piece.function.name, "arguments": ""}
            else:
                assert piece.id is None
            assert piece.function is not None
            calls[piece.index]["arguments"] += piece.function.arguments or ""
        if choice.finish_reason:
            finish = choice.finish_reason
    return "".join(content), [calls[i] for i in sorted(calls)], finish


async def one_try(
    client: openai.AsyncOpenAI, stream: bool, **request: Any
) -> tuple[str | None, list[dict[str, str]], str]:
    """Content, calls and finish reason of one request, streamed or not."""
    if stream:
        text, calls, finish = await streamed(client, **request)
        return text or None, calls, finish
    completion = await client.chat.completions.create(**request)
    [choice] = completion.choices
    message = choice.message
    calls = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in message.tool_calls or ()
        if c.type == "function"
    ]
    assert len(calls) == len(message.tool_calls or ())
    return message.content, calls, choice.finish_reason


@pytest.mark.parametrize("choice", ["required", "named"])
async def test_forced_calls_validate_on_every_try(served: ServedApp, choice: str) -> None:
    client = sdk(served)
    tool_choice: Any = "required" if choice == "required" else NAMED
    results = [
        await one_try(client, stream, model=MODEL, messages=ASK, tools=TOOLS,
                      tool_choice=tool_choice, parallel_tool_calls=False, max_tokens=MAX_TOKENS,
                      temperature=temperature, seed=seed)
        for temperature, seed in TRIES
        for stream in (False, True)
    ]  # fmt: skip
    assert len(results) == 12
    for content, calls, finish in results:
        assert finish == "tool_calls", (content, calls)
        assert content is None
        [call] = calls
        assert call["id"].startswith("call_")
        if choice == "named":
            assert call["name"] == "get_time"
        valid_arguments(call["name"], call["arguments"])


async def test_streamed_deltas_reassemble_to_the_plain_answer(served: ServedApp) -> None:
    client = sdk(served)
    for tool_choice in ("required", NAMED):
        request: Any = {
            "model": MODEL, "messages": ASK, "tools": TOOLS, "tool_choice": tool_choice,
            "max_tokens": MAX_TOKENS, "temperature": 0.8, "seed": 11,
            "parallel_tool_calls": False,
        }  # fmt: skip
        plain = await client.chat.completions.create(**request)
        text, calls, finish = await streamed(client, **request)
        [choice] = plain.choices
        assert choice.message.tool_calls is not None
        assert [(c["name"], c["arguments"]) for c in calls] == [
            (c.function.name, c.function.arguments)
            for c in choice.message.tool_calls
            if c.type == "function"
        ]
        assert (text or None, finish) == (choice.message.content, choice.finish_reason)
        # The SDK's stream helper puts the same call together.
        async with client.chat.completions.stream(**request) as helper:
            final = await helper.get_final_completion()
        [helped] = final.choices
        assert helped.message.tool_calls is not None
        assert [(c.function.name, c.function.arguments) for c in helped.message.tool_calls] == [
            (c["name"], c["arguments"]) for c in calls
        ]


async def test_auto_gives_text_or_valid_calls(served: ServedApp) -> None:
    client = sdk(served)
    results = await asyncio.gather(*(
        one_try(client, stream, model=MODEL, messages=ASK, tools=TOOLS, max_tokens=MAX_TOKENS,
                temperature=temperature, seed=seed, parallel_tool_calls=False)
        for temperature, seed in TRIES
        for stream in (False, True)
    ))  # fmt: skip
    for content, calls, finish in results:
        assert content is not None or calls
        assert len(calls) <= 1
        if finish == "tool_calls":
            for call in calls:
                valid_arguments(call["name"], call["arguments"])
        else:
            # Text that ran out of tokens, or a call cut short by them.
            assert finish in ("stop", "length")
            assert finish == "length" or not calls


async def test_a_conversation_with_tool_messages_goes_on(served: ServedApp) -> None:
    client = sdk(served)
    first = await client.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice=NAMED, max_tokens=MAX_TOKENS,
        temperature=0,
    )  # fmt: skip
    message = first.choices[0].message
    assert message.tool_calls is not None
    [call] = message.tool_calls
    answer = {"role": "tool", "tool_call_id": call.id, "content": '{"time": "14:05"}'}
    # The SDK's message goes back as it came (content null beside its calls).
    conversation: Any = [*ASK, message, answer]
    for tool_choice in ("auto", "none"):
        then = await client.chat.completions.create(
            model=MODEL, messages=conversation, tools=TOOLS, tool_choice=tool_choice,
            max_tokens=32, temperature=0,
        )  # fmt: skip
        [choice] = then.choices
        assert choice.message.content or choice.message.tool_calls
        # The calls and their answer are part of the prompt.
        assert then.usage is not None
        assert first.usage is not None
        assert then.usage.prompt_tokens > first.usage.prompt_tokens + 20
        if tool_choice == "none":
            assert choice.message.tool_calls is None
            assert choice.message.content
            assert choice.finish_reason in ("stop", "length")


class GetWeather(BaseModel):
    """The weather in a city."""

    city: str = Field(max_length=12)
    unit: Literal["C", "F"]


async def test_pydantic_function_tool_and_parse(served: ServedApp) -> None:
    client = sdk(served)
    tool = openai.pydantic_function_tool(GetWeather)
    for tool_choice in ("required", {"type": "function", "function": {"name": "GetWeather"}}):
        completion = await client.chat.completions.parse(
            model=MODEL, messages=ASK, tools=[tool], tool_choice=tool_choice,  # type: ignore[arg-type]
            parallel_tool_calls=False, max_tokens=MAX_TOKENS, temperature=0.8, seed=3,
        )  # fmt: skip
        [choice] = completion.choices
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        [call] = choice.message.tool_calls
        assert call.function.name == "GetWeather"
        assert isinstance(call.function.parsed_arguments, GetWeather)
    # The parsed message goes back as it came (the SDK sends its parse results with it).
    answer = {"role": "tool", "tool_call_id": call.id, "content": "Sunny"}
    conversation: Any = [*ASK, choice.message, answer]
    then = await client.chat.completions.create(
        model=MODEL, messages=conversation, tools=[tool], tool_choice="none", max_tokens=8,
        temperature=0,
    )  # fmt: skip
    assert then.choices[0].message.content


async def test_several_choices_each_make_their_call(served: ServedApp) -> None:
    completion: ChatCompletion = await sdk(served).chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", n=3, seed=5,
        temperature=0.8, parallel_tool_calls=False, max_tokens=MAX_TOKENS,
    )  # fmt: skip
    assert [c.index for c in completion.choices] == [0, 1, 2]
    ids = set()
    for choice in completion.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        [call] = choice.message.tool_calls
        assert call.type == "function"
        valid_arguments(call.function.name, call.function.arguments)
        ids.add(call.id)
    assert len(ids) == 3


async def test_refusals_name_the_parameter(served: ServedApp) -> None:
    client = sdk(served)
    cases: list[tuple[dict[str, Any], type[openai.APIStatusError], str]] = [
        ({"tool_choice": "required"}, openai.UnprocessableEntityError, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         openai.UnprocessableEntityError, "tool_choice.function.name"),
        ({"tools": TOOLS, "stop": ["x"]}, openai.BadRequestError, "stop"),
        ({"functions": [{"name": "f"}]}, openai.BadRequestError, "functions"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, openai.BadRequestError,
         "tools[0].type"),
    ]  # fmt: skip
    for extra, error, param in cases:
        with pytest.raises(error) as caught:
            await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, **extra)
        assert caught.value.body is not None
        assert isinstance(caught.value.body, dict)
        assert caught.value.body.get("param") == param


async def test_the_tool_call_parser_setting_picks_the_format(triton: TritonServer) -> None:
    # Under required, the grammar writes the setting's format whatever the template says,
    # and the parser reads the same format back.
    settings = settings_for(
        triton.grpc_url, max_tokens_limit=128, request_timeout_s=300.0,
        tool_call_parser="llama3_json",
    )  # fmt: skip
    async with serve(create_app(settings)) as app:
        assert app.state.validator.tool_call_format is LLAMA3_JSON
        completion = await sdk(app).chat.completions.create(
            model=MODEL, messages=ASK, tools=TOOLS, tool_choice=NAMED, max_tokens=MAX_TOKENS,
            temperature=0,
        )  # fmt: skip
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_time"
    valid_arguments(call.function.name, call.function.arguments)
