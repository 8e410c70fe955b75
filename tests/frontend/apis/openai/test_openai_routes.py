"""The OpenAI API end to end: the official openai SDK against uvicorn, the real Triton.

Every request goes through the same pipeline as /generate, so the checks here are the
OpenAI side of it: objects and chunks as the SDK parses them, usage equal to what the
engine reports, the chat template applied in Triton, and errors as the SDK's types.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import openai
import pytest
import tritonclient.grpc.aio as grpcaio

from frontend.app import create_app
from frontend.auth import key_digest
from launcher.triton_server import TritonServer
from llm_stack.ensemble_client import Result, call
from llm_stack.ensemble_contract import EnsembleRequest
from llm_stack.guided_decoding import SUPPORTED_KEYWORDS
from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import GgufTokenizer
from tests.conftest import REPO_ROOT, free_port
from tests.frontend.apis.conftest import openai_sdk as sdk
from tests.frontend.conftest import ServedApp, echo_settings, sample, serve, settings_for

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
PROMPT = "The capital of France is"
CHAT = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
DEFAULT_TEMPLATE = REPO_ROOT / "model_repository" / "preprocessing" / "1" / (
    "default_chat_template.jinja"
)


@pytest.fixture
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    settings = settings_for(triton.grpc_url, max_tokens_limit=64)
    async with serve(create_app(settings)) as app:
        yield app


async def engine_result(triton: TritonServer, max_tokens: int, **inputs: Any) -> Result:
    """One greedy call to the ensemble over gRPC: a prompt, or `messages` for chat."""
    messages = inputs.pop("messages", None)
    request = EnsembleRequest(
        inputs.pop("prompt", ""),
        max_tokens,
        temperature=0.0,
        messages=None if messages is None else json.dumps(messages),
        **inputs,
    )
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    try:
        result = await call(client, request)
    finally:
        await client.close()
    assert result.error is None, result.error
    return result


# --- models -----------------------------------------------------------------------------


async def test_models_lists_the_served_model(served: ServedApp) -> None:
    client = sdk(served)
    listed = [model async for model in client.models.list()]
    assert [(m.id, m.object, m.owned_by) for m in listed] == [(MODEL, "model", "llm-stack")]
    assert listed[0].created == served.state.started_at > 0
    assert (await client.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("gpt-4o")
    assert missing.value.code == "model_not_found"
    assert missing.value.param == "model"


# --- completions --------------------------------------------------------------------------


async def test_completion_usage_is_the_engines_count(
    served: ServedApp, triton: TritonServer
) -> None:
    completion = await sdk(served).completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0
    )
    engine = await engine_result(triton, 8, prompt=PROMPT)
    assert completion.object == "text_completion"
    assert completion.model == MODEL
    assert completion.id.startswith("cmpl-")
    assert completion.created > 0
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.text == engine.text
    assert choice.text.strip()
    assert choice.finish_reason == engine.finish_reason
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == engine.num_input_tokens > 1
    assert completion.usage.completion_tokens == engine.num_output_tokens
    assert completion.usage.total_tokens == engine.num_input_tokens + engine.num_output_tokens


async def test_completion_stream_with_usage(served: ServedApp) -> None:
    client = sdk(served)
    plain = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0
    )
    stream = await client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    *texts, last, usage = chunks
    assert len(texts) >= 3  # one chunk per piece of text
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in texts)
    assert "".join(c.choices[0].text for c in texts) == plain.choices[0].text
    assert last.choices[0].finish_reason == plain.choices[0].finish_reason
    assert usage.choices == []
    assert usage.usage == plain.usage
    assert len({c.id for c in chunks}) == 1


async def test_completion_stop_string_and_list(served: ServedApp) -> None:
    client = sdk(served)
    free = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0
    )
    words = free.choices[0].text.split()
    assert len(words) >= 3, free
    for stop in (words[1], [words[1], "never-generated-xyz"]):
        stopped = await client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stop=stop
        )
        assert stopped.choices[0].finish_reason == "stop"
        assert words[1] not in stopped.choices[0].text
        assert free.choices[0].text.startswith(stopped.choices[0].text)


# --- chat ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered_chat_tokens() -> int:
    """Tokens of CHAT under the bundled template (the default model's file has none)."""
    tokenizer = GgufTokenizer(resolve_model_path("gemma3-270m"))
    assert tokenizer.chat_template is None
    system, user = CHAT
    prompt = (
        f"<bos><start_of_turn>user\n{system['content']}\n\n{user['content']}<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    return len(tokenizer.encode(prompt, add_special=False))


async def test_chat_renders_the_template_and_reports_the_engines_usage(
    served: ServedApp, triton: TritonServer, rendered_chat_tokens: int
) -> None:
    chat = await sdk(served).chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=12, temperature=0  # type: ignore[arg-type]
    )
    engine = await engine_result(triton, 12, messages=CHAT)
    assert chat.object == "chat.completion"
    assert chat.id.startswith("chatcmpl-")
    [choice] = chat.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == engine.text
    assert choice.finish_reason == engine.finish_reason
    assert chat.usage is not None
    # Triton's preprocessing rendered the bundled Gemma turn format (one BOS, no more).
    assert chat.usage.prompt_tokens == engine.num_input_tokens == rendered_chat_tokens
    assert chat.usage.completion_tokens == engine.num_output_tokens
    assert chat.usage.total_tokens == rendered_chat_tokens + engine.num_output_tokens


async def test_streamed_chat_reassembles_into_the_plain_answer(served: ServedApp) -> None:
    client = sdk(served)
    request: dict[str, Any] = {
        "model": MODEL, "messages": CHAT, "max_tokens": 16, "temperature": 0,
    }  # fmt: skip
    plain = await client.chat.completions.create(**request)
    stream = await client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    first, *pieces, last, usage = chunks
    assert first.object == "chat.completion.chunk"
    assert first.choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in pieces)
    assert all(c.choices[0].finish_reason is None for c in [first, *pieces])
    text = "".join(c.choices[0].delta.content or "" for c in [first, *pieces])
    assert text == plain.choices[0].message.content
    assert text.strip()
    assert last.choices[0].delta.content is None
    assert last.choices[0].finish_reason == plain.choices[0].finish_reason
    assert usage.choices == []
    assert usage.usage == plain.usage


async def test_a_repeated_system_prompt_is_reported_as_cached_tokens(
    served: ServedApp, triton: TritonServer
) -> None:
    # A system prompt of several cache blocks (64 tokens each) that no other test sends.
    system = "You keep the stock list: " + ", ".join(
        f"shelf {i} has {i * 3} jars" for i in range(1, 30)
    )
    client = sdk(served)

    def chat(question: str) -> list[Any]:
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    # The system turn is kept from its second sight (of two questions), used from its third.
    await client.chat.completions.create(
        model=MODEL, messages=chat("Which shelf is in the middle?"), max_tokens=4, temperature=0
    )
    first = await client.chat.completions.create(
        model=MODEL, messages=chat("Which shelf is first?"), max_tokens=4, temperature=0
    )
    second = await client.chat.completions.create(
        model=MODEL, messages=chat("Which shelf is last?"), max_tokens=4, temperature=0
    )
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=chat("How many shelves?"),
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    *_, usage_chunk = [chunk async for chunk in stream]
    engine = await engine_result(triton, 4, messages=chat("Which shelf is last?"))
    assert first.usage is not None
    assert second.usage is not None
    assert usage_chunk.usage is not None
    cached = []
    for usage in (first.usage, second.usage, usage_chunk.usage):
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens is not None
        cached.append(usage.prompt_tokens_details.cached_tokens)
    assert cached[0] == 0
    # The shared system turn, in whole blocks; the engine says the same over gRPC.
    assert cached[1] > 0
    assert cached[1] % 64 == 0
    assert cached[2] == cached[1]
    assert engine.num_cached_tokens >= cached[1]
    assert second.usage.prompt_tokens == engine.num_input_tokens


async def test_streamed_chat_without_usage_ends_with_the_finish_chunk(served: ServedApp) -> None:
    async with served.client() as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": CHAT, "max_tokens": 4, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_chat_stop_and_max_completion_tokens(served: ServedApp) -> None:
    client = sdk(served)
    free = await client.chat.completions.create(
        model=MODEL, messages=CHAT, max_completion_tokens=16, temperature=0  # type: ignore[arg-type]
    )
    content = free.choices[0].message.content or ""
    words = content.split()
    assert len(words) >= 2, content
    stopped = await client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=16, temperature=0, stop=[words[1]]  # type: ignore[arg-type]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert content.startswith(stopped.choices[0].message.content or "")
    assert words[1] not in (stopped.choices[0].message.content or "")
    short = await client.chat.completions.create(
        model=MODEL, messages=CHAT, max_completion_tokens=2, temperature=0  # type: ignore[arg-type]
    )
    assert short.usage is not None
    assert short.usage.completion_tokens <= 2


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "changes", "param", "message"),
    [
        ("completions", {"echo": True}, "echo", "echo is not supported"),
        ("completions", {"best_of": 3}, "best_of",
         "best_of 3 is not supported: only best_of equal to n (1)"),
        ("completions", {"logit_bias": {"50256": -100}}, "logit_bias",
         "logit_bias is not supported"),
        ("completions", {"suffix": "end"}, "suffix", "suffix is not supported"),
        ("completions", {"prompt": ["a", "b"]}, "prompt",
         "a list of 2 prompts is not supported: send one per request"),
        ("completions", {"prompt": [1, 2, 3]}, "prompt",
         "prompt as token ids is not supported: send the text"),
        ("completions", {"stream_options": {"include_usage": True}}, "stream_options",
         "stream_options is only allowed with stream true"),
        ("chat", {"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type",
         "tools[0].type: tools of type 'custom' are not supported: only function"),
        ("chat", {"functions": [{"name": "f"}]}, "functions",
         "functions is deprecated and not supported: use tools"),
        ("chat", {"response_format": {"type": "json_schema", "json_schema": {
            "name": "n", "schema": {"type": "string", "pattern": "^a$"}}}},
         "response_format.json_schema.schema.pattern",
         "response_format.json_schema.schema.pattern: keyword 'pattern' is not supported; "
         f"supported: {', '.join(SUPPORTED_KEYWORDS)}, and annotations such as title and "
         "description"),
        ("chat", {"messages": [{"role": "function", "content": "x", "name": "f"}]},
         "messages[0].role",
         "messages[0].role 'function' is not supported (deprecated): use tool messages"),
    ],
)  # fmt: skip
async def test_unsupported_parameters_are_bad_requests_naming_them(
    served: ServedApp, endpoint: str, changes: dict[str, Any], param: str, message: str
) -> None:
    client = sdk(served)
    call: Awaitable[object]
    if endpoint == "completions":
        call = client.completions.create(
            **{"model": MODEL, "prompt": PROMPT, "max_tokens": 2, **changes}
        )
    else:
        call = client.chat.completions.create(
            **{"model": MODEL, "messages": CHAT, "max_tokens": 2, **changes}
        )
    with pytest.raises(openai.BadRequestError) as caught:
        await call
    error = caught.value
    assert error.status_code == 400
    assert error.body == {
        "message": message, "type": "invalid_request_error", "param": param,
        "code": "unsupported_parameter",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "param", "message"),
    [
        ({"temperature": 3}, "temperature", "temperature 3.0 is outside 0..2"),
        ({"max_tokens": 65}, "max_tokens", "max_tokens 65 is outside 1..64"),
        ({"max_completion_tokens": 0}, "max_completion_tokens",
         "max_completion_tokens 0 is outside 1..64"),
        ({"presence_penalty": -2.5}, "presence_penalty", "presence_penalty -2.5 is outside -2..2"),
        ({"messages": []}, "messages", "messages must not be empty"),
        ({"messages": [*CHAT, {"role": "assistant", "content": "Paris"}]}, "messages[2].role",
         "messages[2].role: the last message must be the user's or the system's, not the "
         "assistant's"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role",
         "messages[0].role must be one of system, user, assistant, tool, got 'narrator'"),
        ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content",
         "messages[0].content: Input should be a valid string, got 7"),
        ({"colour": "red"}, "colour", "colour: Extra inputs are not permitted"),
    ],
)  # fmt: skip
async def test_rule_violations_are_422_naming_the_parameter(
    served: ServedApp, changes: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await sdk(served).chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=2, extra_body=changes  # type: ignore[arg-type]
        )
    assert caught.value.body == {
        "message": message, "type": "invalid_request_error", "param": param,
        "code": "invalid_request",
    }  # fmt: skip


async def test_the_templates_own_refusal_comes_back_from_triton(served: ServedApp) -> None:
    two_users = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"}]
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await sdk(served).chat.completions.create(
            model=MODEL, messages=two_users, max_tokens=2  # type: ignore[arg-type]
        )
    assert caught.value.body == {
        "message": "messages: roles must alternate user/assistant/user/... after an optional "
        "first system message",
        "type": "invalid_request_error", "param": "messages", "code": "invalid_request",
    }  # fmt: skip


async def test_unknown_model_is_404(served: ServedApp) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk(served).completions.create(model="gpt-4o", prompt=PROMPT, max_tokens=2)
    assert caught.value.body == {
        "message": "the model 'gpt-4o' does not exist; this server serves 'gemma-3-270m'",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found",
    }  # fmt: skip


async def test_bearer_keys_as_the_sdk_sends_them(triton: TritonServer) -> None:
    settings = settings_for(triton.grpc_url, api_keys=["sk-test-key"], metrics_per_key=True)
    async with serve(create_app(settings)) as app:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk(app, api_key="sk-test-kez").models.list()
        assert caught.value.body == {
            "message": "the API key is not valid", "type": "authentication_error",
            "param": None, "code": "authentication_failed",
        }  # fmt: skip
        assert caught.value.response.headers["WWW-Authenticate"] == "Bearer"
        with pytest.raises(openai.AuthenticationError):
            await sdk(app, api_key="sk-test-kez").completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=1
            )
        client = sdk(app, api_key="sk-test-key")
        assert [m.id async for m in client.models.list()] == [MODEL]
        completion = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 1
        metrics = await app.metrics()
    key_id = f"key-{key_digest('sk-test-key').hex()[:8]}"
    assert sample(metrics, "frontend_completion_tokens_total", key_id=key_id) == 1


async def test_rate_limit_raises_rate_limit_error(triton: TritonServer) -> None:
    settings = settings_for(triton.grpc_url, rate_limit_rpm=1)
    async with serve(create_app(settings)) as app:
        client = sdk(app)
        await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(
                model=MODEL, messages=CHAT, max_tokens=1  # type: ignore[arg-type]
            )
    error = caught.value
    retry_after = int(error.response.headers["Retry-After"])
    assert 0 < retry_after <= 60
    assert (error.type, error.param, error.code) == ("rate_limit_error", None, "rate_limited")
    assert isinstance(error.body, dict)
    assert error.body["message"] == (
        f"rate limit of 1 requests per minute exceeded; retry in {retry_after} s"
    )


async def test_overload_is_503_with_retry_after(slow_echo: TritonServer) -> None:
    settings = echo_settings(
        slow_echo.grpc_url, max_concurrent_requests=1, overload_retry_after_s=2
    )
    words = " ".join(f"w{i}" for i in range(16))
    async with serve(create_app(settings)) as app:
        client = sdk(app)
        stream = await client.completions.create(
            model=MODEL, prompt=words, max_tokens=16, stream=True
        )
        chunks = aiter(stream)
        await anext(chunks)  # admitted and producing
        with pytest.raises(openai.InternalServerError) as caught:
            await client.completions.create(model=MODEL, prompt="x", max_tokens=1)
        rest = [chunk async for chunk in chunks]
    assert caught.value.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "2"
    assert caught.value.body == {
        "message": "the server is at capacity, retry later", "type": "server_error",
        "param": None, "code": "overloaded",
    }  # fmt: skip
    assert rest[-1].choices[0].finish_reason in ("stop", "length")


async def test_triton_unreachable_is_503() -> None:
    settings = settings_for(f"127.0.0.1:{free_port()}", health_probe_timeout_s=0.2)
    async with serve(create_app(settings)) as app:
        with pytest.raises(openai.InternalServerError) as caught:
            await sdk(app).completions.create(model=MODEL, prompt=PROMPT, max_tokens=1)
    assert caught.value.status_code == 503
    assert caught.value.code == "model_unavailable"
    assert caught.value.type == "server_error"


async def test_unknown_v1_route_answers_in_openai_shape(served: ServedApp) -> None:
    async with served.client() as client:
        response = await client.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "no such route", "type": "invalid_request_error", "param": None,
            "code": "not_found",
        }
    }  # fmt: skip


# --- one pipeline: metrics, logs, the OpenAPI document ----------------------------------


async def test_same_metrics_and_access_log_as_generate(
    served: ServedApp, caplog: pytest.LogCaptureFixture
) -> None:
    before = await served.metrics()
    with caplog.at_level(logging.INFO, logger="frontend.access"):
        chat = await sdk(served).chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=3, user="end-user-7"  # type: ignore[arg-type]
        )
    after = await served.metrics()
    assert chat.usage is not None

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert delta("frontend_http_requests_total", **route) == 1
    assert delta("frontend_prompt_tokens_total") == chat.usage.prompt_tokens
    assert delta("frontend_completion_tokens_total") == chat.usage.completion_tokens
    [record] = [r for r in caplog.records if r.name == "frontend.access"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["user"] == "end-user-7"
    assert fields["route"] == "/v1/chat/completions"
    assert fields["prompt_tokens"] == chat.usage.prompt_tokens
    assert "prompt" not in fields  # prompts stay out of the logs unless switched on


async def test_openapi_lists_the_three_routes(served: ServedApp) -> None:
    async with served.client() as client:
        spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert "get" in paths["/v1/models"]
    for route in ("/v1/completions", "/v1/chat/completions"):
        responses = paths[route]["post"]["responses"]
        assert {"200", "400", "404", "422", "429", "503"} <= set(responses)
        assert "401" not in responses  # no keys are configured here: none is asked for
        assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "OpenAIErrorResponse"
        )
        assert "text/event-stream" in responses["200"]["content"]
    chat_body = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]
    assert chat_body["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")
