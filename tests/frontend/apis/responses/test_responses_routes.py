"""The Responses API end to end: the official openai SDK against uvicorn, the real Triton.

The same pipeline as chat completions, so the checks are the Responses side of it: the
response object and the typed events as the SDK reads them, text and usage equal to a
chat completion of the same conversation, structured output through `responses.parse`,
function tools, and refusals by name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from frontend.app import create_app
from launcher.triton_server import TritonServer
from tests.frontend.apis.conftest import openai_sdk as sdk
from tests.frontend.conftest import ServedApp, sample, serve, settings_for

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
INSTRUCTIONS = "Answer in one short sentence."
QUESTION = "What is the capital of France?"
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "days": {"type": "integer"}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather forecast of a city for some days.",
    "parameters": WEATHER_PARAMETERS,
    "strict": True,
}


class Capital(BaseModel):
    city: Literal["Paris", "Rome", "Madrid"]


@pytest.fixture
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    settings = settings_for(triton.grpc_url, max_tokens_limit=64)
    async with serve(create_app(settings)) as app:
        yield app


async def test_a_string_input_with_instructions_answers_as_chat_does(served: ServedApp) -> None:
    client = sdk(served)
    response = await client.responses.create(
        model=MODEL, instructions=INSTRUCTIONS, input=QUESTION, max_output_tokens=12,
        temperature=0,
    )  # fmt: skip
    chat = await client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": QUESTION},
        ],
        max_tokens=12,
        temperature=0,
    )
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.model == MODEL
    assert response.instructions == INSTRUCTIONS
    assert response.max_output_tokens == 12
    [message] = response.output
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.id.startswith("msg_")
    [part] = message.content
    assert part.type == "output_text"
    assert response.output_text == part.text == chat.choices[0].message.content
    assert response.output_text.strip()
    # Usage is the engine's count, as chat reports it for the same conversation.
    assert chat.usage is not None
    assert chat.usage.prompt_tokens_details is not None
    assert response.usage is not None
    assert response.usage.input_tokens == chat.usage.prompt_tokens > 10
    assert response.usage.output_tokens == chat.usage.completion_tokens
    assert response.usage.total_tokens == chat.usage.total_tokens
    details = response.usage.input_tokens_details
    assert details.cached_tokens == chat.usage.prompt_tokens_details.cached_tokens
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    if chat.choices[0].finish_reason == "length":
        assert response.status == message.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    else:
        assert response.status == message.status == "completed"
        assert response.incomplete_details is None


async def test_message_items_are_the_conversation(served: ServedApp) -> None:
    client = sdk(served)
    items: list[Any] = [
        {"role": "developer", "content": INSTRUCTIONS},
        {"role": "user", "content": [{"type": "input_text", "text": "Capital of Italy?"}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Rome.", "annotations": []}]},
        {"role": "user", "content": "And of Spain?"},
    ]  # fmt: skip
    response = await client.responses.create(
        model=MODEL, input=items, max_output_tokens=8, temperature=0
    )
    chat = await client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": "Capital of Italy?"},
            {"role": "assistant", "content": "Rome."},
            {"role": "user", "content": "And of Spain?"},
        ],
        max_tokens=8,
        temperature=0,
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.usage is not None
    assert chat.usage is not None
    assert response.usage.input_tokens == chat.usage.prompt_tokens


async def test_a_raw_stream_sends_openais_events_in_order(served: ServedApp) -> None:
    client = sdk(served)
    request: dict[str, Any] = {
        "model": MODEL, "input": QUESTION, "max_output_tokens": 10, "temperature": 0,
    }  # fmt: skip
    plain = await client.responses.create(**request)
    events = [event async for event in await client.responses.create(**request, stream=True)]
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        f"response.{plain.status}",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == plain.output_text
    final = events[-1].response
    assert final.output_text == plain.output_text
    assert final.usage == plain.usage
    assert final.id == events[0].response.id


async def test_the_sdks_stream_helper_gives_the_final_response(served: ServedApp) -> None:
    async with sdk(served).responses.stream(
        model=MODEL, input=QUESTION, text_format=Capital, temperature=0, max_output_tokens=32
    ) as stream:
        deltas = [
            event.delta async for event in stream if event.type == "response.output_text.delta"
        ]
        final = await stream.get_final_response()
    assert final.status == "completed"
    assert "".join(deltas) == final.output_text
    assert isinstance(final.output_parsed, Capital)
    assert final.output_parsed == Capital.model_validate_json(final.output_text)


async def test_parse_gives_the_pydantic_object(served: ServedApp) -> None:
    response = await sdk(served).responses.parse(
        model=MODEL, input=QUESTION, text_format=Capital, temperature=0.8, max_output_tokens=32
    )
    assert response.status == "completed"
    assert isinstance(response.output_parsed, Capital)
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"


async def test_json_object_gives_an_object(served: ServedApp) -> None:
    response = await sdk(served).responses.create(
        model=MODEL, input="A JSON object about Paris:", text={"format": {"type": "json_object"}},
        max_output_tokens=48, temperature=0,
    )  # fmt: skip
    if response.status == "completed":
        assert isinstance(json.loads(response.output_text), dict)
    else:
        assert response.output_text.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"background": True}, "background"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "input_image", "image_url": "https://x"}]}, "input[0].type"),
    ],
)
async def test_what_is_not_implemented_is_a_400_naming_it(
    served: ServedApp, changes: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": MODEL, "input": QUESTION, "max_output_tokens": 2}
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(served).responses.create(**{**request, **changes})
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == param
    assert body["code"] == "unsupported_parameter"
    assert body["type"] == "invalid_request_error"
    assert param in body["message"]


async def test_store_false_is_served(served: ServedApp) -> None:
    response = await sdk(served).responses.create(
        model=MODEL, input=QUESTION, max_output_tokens=2, store=False, metadata={"run": "7"}
    )
    assert response.output_text
    assert response.metadata == {"run": "7"}


@pytest.mark.parametrize(
    ("changes", "param", "message"),
    [
        ({"max_output_tokens": 65}, "max_output_tokens", "max_output_tokens 65 is outside 1..64"),
        ({"temperature": 3}, "temperature", "temperature 3.0 is outside 0..2"),
        ({"input": []}, "input", "input must not be empty"),
        ({"input": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]},
         "input[1].role",
         "input[1].role: the last message must be the user's or the system's, not the "
         "assistant's"),
    ],
)  # fmt: skip
async def test_rule_violations_are_422_naming_the_parameter(
    served: ServedApp, changes: dict[str, Any], param: str, message: str
) -> None:
    request: dict[str, Any] = {"model": MODEL, "input": QUESTION, "max_output_tokens": 2}
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await sdk(served).responses.create(**{**request, **changes})
    assert caught.value.body == {
        "message": message, "type": "invalid_request_error", "param": param,
        "code": "invalid_request",
    }  # fmt: skip


async def test_unknown_model_is_404(served: ServedApp) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk(served).responses.create(model="gpt-5", input=QUESTION)
    assert caught.value.code == "model_not_found"


# --- function tools ---------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 0.8])
async def test_a_required_call_has_arguments_valid_against_the_schema(
    served: ServedApp, temperature: float
) -> None:
    request: dict[str, Any] = {
        "model": MODEL, "input": "What will the weather be in Paris for 3 days?",
        "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False,
        "temperature": temperature, "max_output_tokens": 64,
    }  # fmt: skip
    response = await sdk(served).responses.create(**request)
    assert response.status == "completed"
    [call] = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_")
    assert call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS)
    assert response.tool_choice == "required"
    assert [tool.type for tool in response.tools] == ["function"]


async def test_a_streamed_call_reassembles_and_the_conversation_continues(
    served: ServedApp,
) -> None:
    client = sdk(served)
    request: dict[str, Any] = {
        "model": MODEL, "input": "Weather in Rome for 2 days?", "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"}, "temperature": 0,
        "max_output_tokens": 64,
    }  # fmt: skip
    plain = await client.responses.create(**request)
    async with client.responses.stream(**request) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]
    [plain_call] = [item for item in plain.output if item.type == "function_call"]
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert "".join(pieces) == call.arguments == plain_call.arguments
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == call.arguments
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS)
    # The call and its output go back as input items; the model answers in text.
    follow_up_request: dict[str, Any] = {
        "model": MODEL, "tools": [WEATHER], "tool_choice": "none", "temperature": 0,
        "max_output_tokens": 8,
        "input": [
            {"role": "user", "content": "Weather in Rome for 2 days?"},
            *plain.output,  # the previous output as it came, its call among it
            {"type": "function_call_output", "call_id": plain_call.call_id,
             "output": "Sunny, 24 C both days."},
        ],
    }  # fmt: skip
    follow_up = await client.responses.create(**follow_up_request)
    assert [item.type for item in follow_up.output] == ["message"]
    assert follow_up.output_text
    assert follow_up.usage is not None
    assert final.usage is not None
    assert follow_up.usage.input_tokens > final.usage.input_tokens


async def test_a_call_output_answering_no_call_is_422(served: ServedApp) -> None:
    request: dict[str, Any] = {
        "model": MODEL, "tools": [WEATHER],
        "input": [{"role": "user", "content": "Hi"},
                  {"type": "function_call_output", "call_id": "call_x", "output": "1"}],
    }  # fmt: skip
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await sdk(served).responses.create(**request)
    assert caught.value.body is not None
    assert caught.value.body["param"] == "input[1].call_id"  # type: ignore[index]


# --- one pipeline -------------------------------------------------------------------------


async def test_keys_metrics_and_the_document(triton: TritonServer) -> None:
    settings = settings_for(triton.grpc_url, max_tokens_limit=8, api_keys=["sk-one"])
    async with serve(create_app(settings)) as app:
        with pytest.raises(openai.AuthenticationError):
            await sdk(app, "sk-wrong").responses.create(model=MODEL, input="Hi")
        before = await app.metrics()
        response = await sdk(app, "sk-one").responses.create(
            model=MODEL, input="Hi", max_output_tokens=2
        )
        after = await app.metrics()
        async with app.client() as client:
            document = (await client.get("/openapi.json")).json()
    route = {"route": "/v1/responses", "method": "POST", "status": "200"}
    counted = sample(after, "frontend_http_requests_total", **route)
    assert counted - sample(before, "frontend_http_requests_total", **route) == 1
    assert response.usage is not None
    prompt = sample(after, "frontend_prompt_tokens_total") - sample(
        before, "frontend_prompt_tokens_total"
    )
    assert prompt == response.usage.input_tokens
    operation = document["paths"]["/v1/responses"]["post"]
    assert {"200", "400", "401", "404", "422", "429", "503"} <= set(operation["responses"])
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    request = document["components"]["schemas"]["ResponsesRequest"]["properties"]
    assert request["max_output_tokens"]["anyOf"][0]["maximum"] == 8
