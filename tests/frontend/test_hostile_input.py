"""Inputs no client should send: each gets a 4xx naming its field, never a 500.

A lone surrogate (JSON's "\\ud800", half of a UTF-16 pair) decodes to a Python string
that no UTF-8 encoder accepts; it is refused before any other work, and the refusal
counts against the caller's requests-per-minute budget like any request. The bodies
are sent as bytes (json.dumps escapes the surrogate), as a hostile client would.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from frontend.app import create_app
from launcher.triton_server import TritonServer
from tests.frontend.conftest import FakeClock, ServedApp, echo_settings, serve

pytestmark = pytest.mark.integration

SURROGATE = "\ud800"
CHAT = {"model": "gemma-3-270m", "messages": [{"role": "user", "content": "hi"}]}
SCHEMA = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}}


def with_schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


# (route, body, the field the refusal names)
SURROGATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("/generate", {"prompt": f"a{SURROGATE}b", "max_tokens": 2}, "prompt"),
    ("/generate", {"prompt": "a", "stop": ["x", SURROGATE], "max_tokens": 2}, "stop[1]"),
    (
        "/generate",
        {"prompt": "a", "response_format": with_schema(
            {"type": "object", "properties": {"a": {"enum": ["x", SURROGATE]}}}
        )},
        "response_format.json_schema.schema.properties.a.enum[1]",
    ),
    (
        "/generate",
        {"prompt": "a", "response_format": with_schema(
            {"type": "object", "properties": {SURROGATE: {"type": "string"}}}
        )},
        "response_format.json_schema.schema.properties",
    ),
    ("/v1/completions", {"model": "gemma-3-270m", "prompt": SURROGATE}, "prompt"),
    ("/v1/completions", {"model": "gemma-3-270m", "prompt": [SURROGATE]}, "prompt[0]"),
    ("/v1/completions", {"model": "gemma-3-270m", "prompt": "a", "stop": SURROGATE}, "stop"),
    ("/v1/completions", {"model": "gemma-3-270m", "prompt": "a", "user": SURROGATE}, "user"),
    ("/v1/completions", {"model": SURROGATE, "prompt": "a"}, "model"),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": "a" + SURROGATE}]},
        "messages[0].content",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": SURROGATE, "content": "a"}]},
        "messages[0].role",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": SURROGATE}
        ]}]},
        "messages[0].content[1].text",
    ),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a", "extra": [SURROGATE]}
        ]}]},
        "messages[0].content[0].extra[0]",
    ),
    ("/v1/chat/completions", {**CHAT, "stop": ["a", SURROGATE]}, "stop[1]"),
    ("/v1/chat/completions", {**CHAT, "tool_choice": {"type": "function", "x": SURROGATE}},
     "tool_choice.x"),
]


async def post_raw(client: httpx.AsyncClient, route: str, body: object) -> httpx.Response:
    """POST `body` as JSON text that spells surrogates as escapes (as json.dumps does)."""
    content = json.dumps(body).encode("ascii")
    return await client.post(route, content=content, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(("route", "body", "field"), SURROGATE_CASES)
async def test_a_lone_surrogate_is_refused_naming_its_field(
    fast_echo: TritonServer, route: str, body: dict[str, Any], field: str
) -> None:
    async with serve(create_app(echo_settings(fast_echo.grpc_url))) as app, app.client() as client:
        response = await post_raw(client, route, body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    named = error["param"] if route.startswith("/v1") else error["field"]
    assert named == field
    if field == "user":  # a string with a length rule: pydantic's schema check refuses it
        assert error["message"].startswith("user: Input should be a valid string")
    else:
        assert error["message"] == f"{field} is not valid Unicode text: it holds a lone surrogate"



async def test_refused_requests_count_against_the_request_budget(
    fast_echo: TritonServer, clock: FakeClock
) -> None:
    settings = echo_settings(fast_echo.grpc_url, rate_limit_rpm=2)
    async with serve(create_app(settings, clock=clock.time)) as app, app.client() as client:
        bad = {"prompt": SURROGATE, "max_tokens": 2}
        refused = [await post_raw(client, "/generate", bad) for _ in range(2)]
        good = await client.post("/generate", json={"prompt": "a b", "max_tokens": 2})
        bad_again = await post_raw(client, "/generate", bad)
    assert [r.status_code for r in refused] == [422, 422]
    # The budget of two is spent by the refusals: the next request waits, good or bad.
    assert good.status_code == 429
    assert bad_again.status_code == 429
    assert bad_again.headers["Retry-After"] == "60"


# Bodies that once produced, or might produce, a 500: each must get a 4xx.
HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("/generate", b'{"prompt": "\\udfff\\ud800", "max_tokens": 1}'),
    ("/generate", b'{"prompt": "\\ud83d\\ude00", "max_tokens": 1, "temperature": 1e999}'),
    ("/generate", b'{"prompt": "a", "max_tokens": 1e400}'),
    ("/generate", b'{"prompt": "a", "max_tokens": 99999999999999999999999999999}'),
    ("/generate", b'{"prompt": "a", "seed": -1}'),
    ("/generate", b'{"prompt": "a", "stop": [""]}'),
    ("/generate", b'{"prompt": "a", "response_format": {"type": "json_schema", "json_schema": '
     b'{"name": "s", "schema": ' + b'{"items": ' * 400 + b'{}' + b'}' * 400 + b'}}}'),
    ("/generate", b"[" * 5000 + b"]" * 5000),
    ("/generate", b'{"prompt": "a", "stop": "\xed\xa0\x80"}'),
    ("/generate", b'{"prompt": "\xff\xfe"}'),
    ("/generate", b"\x00"),
    ("/generate", b'"\\ud800"'),
    ("/generate", b'{"\\ud800": 1}'),
    ("/v1/chat/completions", b'{"model": "gemma-3-270m", "messages": [{"\\ud800": "x"}]}'),
    ("/v1/chat/completions", b'{"model": "\\ud800", "messages": []}'),
    ("/v1/completions", b'{"model": "gemma-3-270m", "prompt": [[1, 2]], "logit_bias": '
     b'{"\\ud800": 1}}'),
    ("/v1/models/%ED%A0%80", b""),
]


@pytest.mark.parametrize(("route", "content"), HOSTILE_BODIES)
async def test_no_input_gets_a_500(fast_echo: TritonServer, route: str, content: bytes) -> None:
    async with serve(create_app(echo_settings(fast_echo.grpc_url))) as app:
        status, body = await send(app, route, content)
    assert 400 <= status < 500, body
    assert "Traceback" not in body


async def send(app: ServedApp, route: str, content: bytes) -> tuple[int, str]:
    async with app.client() as client:
        if route.startswith("/v1/models"):
            response = await client.get(route)
        else:
            response = await client.post(
                route, content=content, headers={"Content-Type": "application/json"}
            )
    return response.status_code, response.text
