"""The service against its own OpenAPI document: schemathesis over HTTP, the real Triton.

Cases come from the document the app serves (/openapi.json), so they keep to the test
settings' limits (max_tokens at most 1: each generation is one token). Runs with API keys
off and on; deterministic (a fixed seed, derandomized, no example database, no deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import CheckFunction
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from frontend.app import create_app
from frontend.settings import FrontendSettings
from launcher.triton_server import TritonServer
from tests.frontend.conftest import SERVE_TIMEOUT_S, serve, settings_for

pytestmark = pytest.mark.integration

API_KEY = "sk-conformance-test"
CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Fuzzed cases per operation. The coverage phase adds its boundary and type cases, the bulk:
# with keys off and on about 1,800 cases, nearly all refused before reaching Triton.
MAX_EXAMPLES = 12
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20240611,
        "suppress-health-check": ["all"],
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "request-timeout": 60,
    }
)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """`serve(app)` in an event loop of its own thread, for blocking clients; yields the URL."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    url: list[str] = []
    started = threading.Event()

    async def run() -> None:
        async with serve(app) as served:
            url.append(served.url)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    try:
        if not started.wait(SERVE_TIMEOUT_S):
            raise RuntimeError("the app did not start")
        yield url[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(SERVE_TIMEOUT_S * 2)
        loop.close()


def conformance_settings(*, keys_on: bool, triton_url: str = "127.0.0.1:1") -> FrontendSettings:
    """Small limits keep generations short; the document states them, so cases keep to them."""
    return settings_for(
        triton_url,
        max_tokens_limit=1,
        max_prompt_chars=200,
        api_keys=[API_KEY] if keys_on else [],
        # Every 5xx fails a case: a probe must not time out on a busy machine, making
        # /health/ready or a generation answer 503.
        health_probe_interval_s=2.0,
        health_probe_timeout_s=10.0,
    )


def document(*, keys_on: bool) -> dict[str, Any]:
    """The document the app serves at /openapi.json with these settings (no Triton needed)."""
    return create_app(conformance_settings(keys_on=keys_on)).openapi()


# Loaded at import: schemathesis parametrizes the tests by the document's operations.
KEYS_OFF = schemathesis.openapi.from_dict(document(keys_on=False), config=CONFIG)
KEYS_ON = schemathesis.openapi.from_dict(document(keys_on=True), config=CONFIG)


@dataclass(frozen=True)
class ServedApi:
    url: str
    headers: dict[str, str]  # what a legitimate caller sends
    keys_on: bool


@contextlib.contextmanager
def served_api(triton: TritonServer, *, keys_on: bool) -> Iterator[ServedApi]:
    settings = conformance_settings(keys_on=keys_on, triton_url=triton.grpc_url)
    with serve_in_thread(create_app(settings)) as url:
        headers = {"Authorization": f"Bearer {API_KEY}"} if keys_on else {}
        yield ServedApi(url, headers, keys_on)


@pytest.fixture(scope="module")
def keys_off_api(triton: TritonServer) -> Iterator[ServedApi]:
    with served_api(triton, keys_on=False) as api:
        yield api


@pytest.fixture(scope="module")
def keys_on_api(triton: TritonServer) -> Iterator[ServedApi]:
    with served_api(triton, keys_on=True) as api:
        yield api


@pytest.fixture(params=["keys_off", "keys_on"])
def api(request: pytest.FixtureRequest) -> ServedApi:
    served = request.getfixturevalue(f"{request.param}_api")
    assert isinstance(served, ServedApi)
    return served


def test_the_served_document_is_the_one_tested(api: ServedApi) -> None:
    with httpx.Client(base_url=api.url, timeout=30.0) as client:
        served = client.get("/openapi.json").json()
    assert served == (KEYS_ON if api.keys_on else KEYS_OFF).raw_schema


@KEYS_OFF.parametrize()
def test_without_keys_responses_are_what_the_document_says(
    case: Case[Any], keys_off_api: ServedApi
) -> None:
    case.call_and_validate(base_url=keys_off_api.url, checks=CHECKS)


@KEYS_ON.parametrize()
def test_with_keys_responses_are_what_the_document_says(
    case: Case[Any], keys_on_api: ServedApi
) -> None:
    case.call_and_validate(base_url=keys_on_api.url, headers=keys_on_api.headers, checks=CHECKS)


# Requests each served in full: generated cases rarely are (max_tokens defaults above 1).
# Each also with several choices and log-probabilities, whose shapes the document states.
_MESSAGES = [{"role": "user", "content": "Hi"}]
_TOOLS = {
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
    }}}],
    "tool_choice": "required",
}  # fmt: skip
_STREAMS = (False, True)
# Anthropic's messages: text, a stop sequence found, a tool call (cut short at 1 token).
_ANTHROPIC_TOOL = {"name": "f", "input_schema": {"type": "object"}}
_ANTHROPIC = [
    {"stream": stream, **extra}
    for stream in _STREAMS
    for extra in (
        {},
        {"stop_sequences": ["Hi"]},
        {"tools": [_ANTHROPIC_TOOL], "tool_choice": {"type": "any"}},
    )
]
# Text as a string and as items, and a call the grammar requires (cut at its one token).
_RESPONSES: list[tuple[Any, dict[str, Any]]] = [
    ("Hi", {}),
    ([{"role": "user", "content": "Hi"}], {}),
    ("Hi", {"tools": [{"type": "function", "name": "f"}], "tool_choice": "required"}),
]
_SERVED: dict[str, list[dict[str, Any]]] = {
    "POST /generate": [
        {"body": {"prompt": "Hi", "max_tokens": 1, "stream": stream, **extra}}
        for stream in _STREAMS
        for extra in ({}, {"logprobs": 2})
    ],
    "POST /v1/completions": [
        {"body": {"model": "gemma-3-270m", "prompt": "Hi", "max_tokens": 1, **options}}
        for stream in _STREAMS
        for options in ({"stream": stream}, {"stream": stream, "n": 2, "logprobs": 2})
    ],
    "POST /v1/chat/completions": [
        {"body": {"model": "gemma-3-270m", "messages": _MESSAGES, "stream": stream, **extra}}
        for stream in _STREAMS
        for extra in ({}, {"n": 2, "logprobs": True, "top_logprobs": 2}, _TOOLS)
    ],
    "POST /v1/responses": [
        {"body": {"model": "gemma-3-270m", "input": input_, "stream": stream, **extra}}
        for stream in _STREAMS
        for input_, extra in _RESPONSES
    ],
    "POST /v1/messages": [
        {"body": {"model": "gemma-3-270m", "messages": _MESSAGES, "max_tokens": 1, **extra}}
        for extra in _ANTHROPIC
    ],
    "POST /v1/messages/count_tokens": [{"body": {"model": "gemma-3-270m", "messages": _MESSAGES}}],
    "GET /v1/models": [{}],
    "POST /tokenize": [
        {"body": {"model": "gemma-3-270m", "prompt": "Hi", "return_token_strs": True}},
        {"body": {"messages": _MESSAGES, "return_token_strs": True}},
    ],
    "POST /detokenize": [{"body": {"model": "gemma-3-270m", "tokens": [2, 9259]}}],
    "GET /v1/models/{model_id}": [{"path_parameters": {"model_id": "gemma-3-270m"}}],
}


def test_without_a_key_every_keyed_operation_is_401_with_one_200(keys_on_api: ServedApi) -> None:
    keyed = [
        f"{method.upper()} {path}"
        for path, operations in KEYS_ON.raw_schema["paths"].items()
        for method, operation in operations.items()
        if operation.get("security")
    ]
    assert sorted(keyed) == sorted(_SERVED)
    for label, requests in _SERVED.items():
        operation = KEYS_ON.find_operation_by_label(label)
        assert operation is not None
        for request in requests:
            case = operation.Case(**request)
            refused = case.call(base_url=keys_on_api.url)
            assert refused.status_code == 401, (label, refused.text)
            assert refused.headers["www-authenticate"] == ["Bearer"]
            case.validate_response(refused, checks=CHECKS)
            served = case.call(base_url=keys_on_api.url, headers=keys_on_api.headers)
            assert served.status_code == 200, (label, served.text)
            case.validate_response(served, checks=CHECKS)


def test_a_wrong_method_is_405_naming_the_allowed_ones(keys_off_api: ServedApi) -> None:
    with httpx.Client(base_url=keys_off_api.url, timeout=30.0) as client:
        post_only = client.put("/generate")
        get_only = client.post("/health/live")
    assert post_only.status_code == 405
    assert post_only.headers["Allow"] == "POST"
    assert post_only.json()["error"]["type"] == "method_not_allowed"
    assert get_only.status_code == 405
    assert get_only.headers["Allow"] == "GET"
