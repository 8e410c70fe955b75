"""Anthropic's Messages API end to end: the official anthropic SDK against uvicorn, the
real Triton.

The checks are the Anthropic side of the shared pipeline: the message and its stream as
the SDK reads them, usage equal to what the engine reports (count_tokens too), stop
sequences reported by name, tools, x-api-key, and errors in Anthropic's shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest
import tritonclient.grpc.aio as grpcaio

from frontend.app import create_app
from launcher.triton_server import TritonServer
from llm_stack.ensemble_client import Result, call
from llm_stack.ensemble_contract import EnsembleRequest
from tests.frontend.conftest import ServedApp, sample, serve, settings_for

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
SYSTEM = "Answer in one short sentence."
MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]
# As the bundled template gets them: the system prompt first.
CHAT = [{"role": "system", "content": SYSTEM}, *MESSAGES]
GREEDY = {"temperature": 0}  # the SDK has no temperature argument: extra_body carries it
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
KEY = "sk-anthropic-test"


@pytest.fixture
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    settings = settings_for(triton.grpc_url, max_tokens_limit=96)
    async with serve(create_app(settings)) as app:
        yield app


def sdk(app: ServedApp, api_key: str = "unused") -> anthropic.AsyncAnthropic:
    """The official client as users configure it, without its own retries."""
    return anthropic.AsyncAnthropic(base_url=app.url, api_key=api_key, max_retries=0)


async def engine_result(triton: TritonServer, max_tokens: int, messages: list[Any]) -> Result:
    """One greedy chat call to the ensemble over gRPC."""
    request = EnsembleRequest("", max_tokens, temperature=0.0, messages=json.dumps(messages))
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    try:
        result = await call(client, request)
    finally:
        await client.close()
    assert result.error is None, result.error
    return result


async def test_create_reports_the_engines_text_and_usage_and_count_tokens_agrees(
    served: ServedApp, triton: TritonServer
) -> None:
    client = sdk(served)
    message = await client.messages.create(
        model=MODEL, system=SYSTEM, messages=MESSAGES, max_tokens=12, extra_body=GREEDY
    )
    engine = await engine_result(triton, 12, CHAT)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    [block] = message.content
    assert block.type == "text"
    assert block.text == engine.text
    assert block.text.strip()
    assert message.stop_reason == {"length": "max_tokens", "stop": "end_turn"}[engine.finish_reason]
    assert message.stop_sequence is None
    assert message.usage.input_tokens == engine.num_input_tokens > 1
    assert message.usage.output_tokens == engine.num_output_tokens
    assert message.usage.cache_read_input_tokens is not None
    counted = await client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=MESSAGES)
    assert counted.input_tokens == message.usage.input_tokens
    # System as text blocks is the same prompt.
    blocks = await client.messages.count_tokens(
        model=MODEL, system=[{"type": "text", "text": SYSTEM}], messages=MESSAGES
    )
    assert blocks.input_tokens == counted.input_tokens


async def test_stream_reassembles_into_the_created_message(served: ServedApp) -> None:
    client = sdk(served)
    request: dict[str, Any] = {
        "model": MODEL, "system": SYSTEM, "messages": MESSAGES, "max_tokens": 16,
        "extra_body": GREEDY,
    }  # fmt: skip
    plain = await client.messages.create(**request)
    deltas: list[str] = []
    types: list[str] = []
    async with client.messages.stream(**request) as stream:
        async for event in stream:
            types.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
        final = await stream.get_final_message()
    assert len(deltas) >= 3
    assert "".join(deltas) == final.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == plain.stop_reason
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens
    # Anthropic's order (the SDK's stream adds its own `text` events beside the deltas).
    raw = [t for t in types if t not in ("text", "citation", "input_json", "thinking")]
    assert raw[:2] == ["message_start", "content_block_start"]
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(raw[2:-3]) == {"content_block_delta"}


async def test_raw_stream_is_named_events_ending_with_message_stop(served: ServedApp) -> None:
    async with served.client() as client:
        response = await client.post(
            "/v1/messages",
            json={"model": MODEL, "messages": MESSAGES, "max_tokens": 4, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    datas = [json.loads(f.split("\n")[1].removeprefix("data: ")) for f in frames]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-1] == "message_stop"
    assert [d["type"] for d in datas] == names
    start = datas[0]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["usage"]["input_tokens"] > 1
    delta = datas[-2]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert delta["usage"]["output_tokens"] <= 4


async def test_stop_sequences_end_the_message_and_are_named(served: ServedApp) -> None:
    client = sdk(served)
    free = await client.messages.create(
        model=MODEL, messages=MESSAGES, max_tokens=24, extra_body=GREEDY
    )
    text = free.content[0].text  # type: ignore[union-attr]
    words = text.split()
    assert len(words) >= 3, text
    stop = words[1]
    cut = text[: text.index(stop)]
    request: dict[str, Any] = {
        "model": MODEL, "messages": MESSAGES, "max_tokens": 24, "extra_body": GREEDY,
        "stop_sequences": ["never-generated-xyz", stop],
    }  # fmt: skip
    before = await served.metrics()
    stopped = await client.messages.create(**request)
    after = await served.metrics()
    assert stopped.stop_reason == "stop_sequence"
    # The API ended it (and cancelled its Triton call): a stop, not a client gone away.
    for outcome, count in (("stop", 1), ("cancelled", 0)):
        name, labels = "frontend_generations_total", {"outcome": outcome}
        assert sample(after, name, **labels) - sample(before, name, **labels) == count
    assert stopped.stop_sequence == stop
    assert [b.text for b in stopped.content] == ([cut] if cut else [])
    assert stopped.usage.cache_read_input_tokens is None  # cut off before the engine said
    async with client.messages.stream(**request) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "stop_sequence"
    assert final.stop_sequence == stop
    assert "".join(b.text for b in final.content) == cut  # type: ignore[union-attr]


async def test_max_tokens_is_the_stop_reason_when_it_runs_out(served: ServedApp) -> None:
    message = await sdk(served).messages.create(
        model=MODEL, messages=MESSAGES, max_tokens=2, extra_body=GREEDY
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2


async def test_a_named_tool_is_called_with_valid_input_and_the_answer_continues(
    served: ServedApp,
) -> None:
    client = sdk(served)
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    request: dict[str, Any] = {
        "model": MODEL, "messages": ask, "max_tokens": 96, "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"}, "extra_body": GREEDY,
    }  # fmt: skip
    message = await client.messages.create(**request)
    assert message.stop_reason == "tool_use"
    calls = [block for block in message.content if block.type == "tool_use"]
    assert len(calls) == 1
    call_block = calls[0]
    assert call_block.name == "get_weather"
    assert call_block.id.startswith("toolu_")
    jsonschema.validate(call_block.input, WEATHER["input_schema"])
    async with client.messages.stream(**request) as stream:
        final = await stream.get_final_message()
    streamed = [block for block in final.content if block.type == "tool_use"]
    assert [(b.name, b.input) for b in streamed] == [(call_block.name, call_block.input)]
    assert final.stop_reason == "tool_use"
    # The call and its result go back; the model answers in text.
    answer = await client.messages.create(
        model=MODEL,
        max_tokens=8,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            *ask,
            {"role": "assistant", "content": message.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call_block.id, "content": "Sunny"}
                ],
            },
        ],
        extra_body={**GREEDY},
    )
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert answer.usage.input_tokens > message.usage.input_tokens


async def test_a_repeated_system_prompt_is_read_from_the_prefix_cache(served: ServedApp) -> None:
    # A system prompt of several cache blocks (64 tokens each) that no other test sends.
    system = "You keep the jar list: " + ", ".join(
        f"jar {i} holds {i * 7} beans" for i in range(1, 30)
    )
    client = sdk(served)
    cached = []
    # The system turn is kept from its second sight, used from its third.
    for question in ("Which jar is first?", "Which jar is last?", "How many jars?"):
        message = await client.messages.create(
            model=MODEL,
            system=system,
            messages=[{"role": "user", "content": question}],
            max_tokens=2,
            extra_body=GREEDY,
        )
        cached.append(message.usage.cache_read_input_tokens)
    assert cached[0] == 0
    assert cached[2] is not None
    assert cached[2] > 0
    assert cached[2] % 64 == 0


async def test_x_api_key_authenticates_and_a_bad_key_is_anthropics_authentication_error(
    triton: TritonServer,
) -> None:
    settings = settings_for(triton.grpc_url, max_tokens_limit=8, api_keys=[KEY])
    async with serve(create_app(settings)) as app:
        message = await sdk(app, KEY).messages.create(model=MODEL, messages=MESSAGES, max_tokens=1)
        assert message.usage.output_tokens == 1
        counted = await sdk(app, KEY).messages.count_tokens(model=MODEL, messages=MESSAGES)
        assert counted.input_tokens == message.usage.input_tokens
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await sdk(app, "sk-wrong").messages.create(model=MODEL, messages=MESSAGES, max_tokens=1)
        assert refused.value.status_code == 401
        body = refused.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error"
        assert body["error"] == {
            "type": "authentication_error",
            "message": "the API key is not valid",
        }
        assert body["request_id"] == refused.value.response.headers["x-request-id"]
        async with httpx.AsyncClient(base_url=app.url) as raw:
            missing = await raw.post(
                "/v1/messages", json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1}
            )
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, anthropic.BadRequestError,
         "thinking is not supported (only type disabled)"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]},
         anthropic.BadRequestError,
         "messages[0].content[0]: content of type 'image' is not supported: only text, "
         "tool_use and tool_result"),
        ({"mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]},
         anthropic.BadRequestError, "mcp_servers is not supported"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
         anthropic.BadRequestError,
         "tools[0]: tools of type 'web_search_20250305' are not supported: only client tools"),
        ({"service_tier": "priority"}, anthropic.BadRequestError,
         "service_tier 'priority' is not supported (only auto or standard_only: one tier)"),
        ({"temperature": 1.5}, anthropic.UnprocessableEntityError,
         "temperature 1.5 is outside 0..1"),
        ({"stop_sequences": ["a", ""]}, anthropic.UnprocessableEntityError,
         "stop_sequences[1] must not be empty"),
        ({"messages": [*MESSAGES, {"role": "assistant", "content": "The"}]},
         anthropic.UnprocessableEntityError,
         "messages[1].role: the last message must be the user's or the system's, not the "
         "assistant's"),
        ({"model": "claude-sonnet-4-5"}, anthropic.NotFoundError,
         "the model 'claude-sonnet-4-5' does not exist; this server serves 'gemma-3-270m'"),
    ],
)  # fmt: skip
async def test_refusals_name_their_field_in_anthropics_shape(
    served: ServedApp, changes: dict[str, Any], error: type[anthropic.APIStatusError], message: str
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, **changes}
    before = await served.metrics()
    async with served.client() as client:
        response = await client.post("/v1/messages", json=body)
    answer = response.json()
    expected_type = (
        "not_found_error" if error is anthropic.NotFoundError else "invalid_request_error"
    )
    assert answer["type"] == "error"
    assert answer["error"] == {"type": expected_type, "message": message}
    status = {
        anthropic.BadRequestError: 400,
        anthropic.UnprocessableEntityError: 422,
        anthropic.NotFoundError: 404,
    }[error]
    assert response.status_code == status
    after = await served.metrics()
    labels = {"route": "/v1/messages", "method": "POST", "status": str(status)}
    assert sample(after, "frontend_http_requests_total", **labels) == (
        sample(before, "frontend_http_requests_total", **labels) + 1
    )
    # The SDK raises its type for the status (fields it does not know go as extra_body).
    with pytest.raises(error):
        await sdk(served).messages.create(
            model=MODEL, messages=MESSAGES, max_tokens=4, extra_body=changes
        )
