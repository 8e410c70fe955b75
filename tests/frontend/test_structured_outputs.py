"""Structured outputs end to end: the official openai SDK and /generate, the real Triton.

Every output that finishes with `stop` must parse and validate against its schema; the
schemas bound their strings so that values complete within the budgets used here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from frontend.app import create_app
from launcher.triton_server import TritonServer
from tests.frontend.conftest import ServedApp, serve, settings_for

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
MAX_TOKENS = 96
CITY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "country": {"enum": ["France", "Italy", "Spain", "Germany"]},
        "population": {"type": "integer"},
        "landmarks": {
            "type": "array",
            "items": {"type": "string", "maxLength": 12},
            "minItems": 1,
            "maxItems": 2,
        },
    },
    "required": ["city", "country", "population", "landmarks"],
    "additionalProperties": False,
}
# Any: the SDK's TypedDicts for these.
RESPONSE_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}
MESSAGES: Any = [{"role": "user", "content": "Describe Paris as JSON."}]
PROMPT = "Paris, described as JSON:"


class Landmark(BaseModel):
    name: str = Field(max_length=12)


class City(BaseModel):
    """The SDK's parse helper sends this model's strict JSON Schema, $defs and all."""

    city: str = Field(max_length=12)
    capital: bool
    landmark: Landmark
    nickname: str | None = Field(max_length=12)


@pytest.fixture(scope="module")
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    settings = settings_for(triton.grpc_url, max_tokens_limit=128)
    async with serve(create_app(settings)) as app:
        yield app


def sdk(app: ServedApp) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{app.url}/v1", api_key="unused", max_retries=0)


def valid(text: str, schema: dict[str, Any]) -> Any:
    value = json.loads(text)
    jsonschema.validate(value, schema)
    return value


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_json_schema(served: ServedApp, stream: bool) -> None:
    client = sdk(served)
    options: dict[str, Any] = {
        "model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0,
        "response_format": RESPONSE_FORMAT,
    }  # fmt: skip
    if stream:
        parts, finish = [], None
        async for chunk in await client.chat.completions.create(stream=True, **options):
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        text = "".join(parts)
    else:
        reply = await client.chat.completions.create(**options)
        text, finish = reply.choices[0].message.content or "", reply.choices[0].finish_reason
    assert finish == "stop", text
    valid(text, CITY)


@pytest.mark.parametrize("stream", [False, True])
async def test_completions_json_schema(served: ServedApp, stream: bool) -> None:
    client = sdk(served)
    options: dict[str, Any] = {
        "model": MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0.8,
        "seed": 11, "extra_body": {"response_format": RESPONSE_FORMAT},
    }  # fmt: skip
    if stream:
        parts, finish = [], None
        async for chunk in await client.completions.create(stream=True, **options):
            parts.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        text = "".join(parts)
    else:
        reply = await client.completions.create(**options)
        text, finish = reply.choices[0].text, reply.choices[0].finish_reason
    assert finish == "stop", text
    valid(text, CITY)


async def test_each_of_several_choices_is_a_value_of_the_schema(served: ServedApp) -> None:
    reply = await sdk(served).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0, n=2,
        response_format=RESPONSE_FORMAT,
    )  # fmt: skip
    assert [choice.index for choice in reply.choices] == [0, 1]
    for choice in reply.choices:
        assert choice.finish_reason == "stop", choice.message.content
        valid(choice.message.content or "", CITY)


async def test_the_sdks_parse_helper_gets_its_model(served: ServedApp) -> None:
    completion = await sdk(served).chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Rome as JSON."}],
        response_format=City,
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(choice.message.parsed, City)


async def test_json_object_is_parseable(served: ServedApp) -> None:
    # Any object may grow without end; one worked example makes this model close it.
    reply = await sdk(served).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "Is the sky blue? Answer as JSON."},
            {"role": "assistant", "content": '{"answer": "yes"}'},
            {"role": "user", "content": "Is grass green? Answer as JSON."},
        ],
        max_tokens=MAX_TOKENS,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


async def test_a_tight_budget_ends_with_length(served: ServedApp) -> None:
    reply = await sdk(served).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0,
        response_format=RESPONSE_FORMAT,
    )  # fmt: skip
    assert reply.choices[0].finish_reason == "length"
    assert (reply.choices[0].message.content or "").startswith("{")


@pytest.mark.parametrize("stream", [False, True])
async def test_generate_takes_a_response_format(served: ServedApp, stream: bool) -> None:
    body = {
        "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": stream,
        "response_format": RESPONSE_FORMAT,
    }  # fmt: skip
    async with served.client() as client:
        response = await client.post("/generate", json=body)
    assert response.status_code == 200, response.text
    if stream:
        events = [json.loads(line[6:]) for line in response.text.split("\n")
                  if line.startswith("data: {")]  # fmt: skip
        text = "".join(e["text"] for e in events if e["type"] == "delta")
        finish = events[-1]["finish_reason"]
    else:
        text, finish = response.json()["text"], response.json()["finish_reason"]
    assert finish == "stop", text
    valid(text, CITY)


async def test_generate_refuses_an_unsupported_keyword_by_name(served: ServedApp) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}}}
    body = {
        "prompt": PROMPT,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    async with served.client() as client:
        response = await client.post("/generate", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    field = "response_format.json_schema.schema.properties.n.maximum"
    assert (error["type"], error["field"]) == ("unsupported_parameter", field)
    assert error["message"].startswith(f"{field}: keyword 'maximum' is not supported")
