"""/tokenize and /detokenize end to end: uvicorn, the real Triton's preprocessing model.

A count is what generation reports as prompt_tokens for the same prompt or messages, the
ids round-trip through /detokenize, ids outside the vocabulary are refused naming them,
and the routes share the pipeline's keys, rate limits and metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from frontend.app import create_app
from launcher.triton_server import TritonServer
from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import GgufTokenizer
from tests.frontend.conftest import ServedApp, sample, serve, settings_for

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
PROMPT = "The capital of France is"
CHAT = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
# Gemma 3's vocabulary: 262,144 ids.
VOCAB_SIZE = 262_144


@pytest.fixture
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    async with serve(create_app(settings_for(triton.grpc_url, max_tokens_limit=8))) as app:
        yield app


@pytest.fixture(scope="module")
def tokenizer() -> GgufTokenizer:
    return GgufTokenizer(resolve_model_path("gemma3-270m"))


async def post(app: ServedApp, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    async with app.client() as client:
        return await client.post(path, json=body, **kwargs)


async def tokenize_ok(app: ServedApp, body: dict[str, Any]) -> dict[str, Any]:
    response = await post(app, "/tokenize", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer, dict)
    return answer


async def test_prompt_count_is_a_completions_prompt_tokens(
    served: ServedApp, tokenizer: GgufTokenizer
) -> None:
    answer = await tokenize_ok(served, {"model": MODEL, "prompt": PROMPT})
    completion = await post(
        served, "/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 1}
    )
    assert completion.status_code == 200, completion.text
    assert answer["count"] == completion.json()["usage"]["prompt_tokens"]
    # The model's own tokenizer, with its BOS: the ids the engine got.
    assert answer["tokens"] == tokenizer.encode(PROMPT)
    assert answer["count"] == len(answer["tokens"])
    assert answer["max_model_len"] == 2048  # preprocessing's max_input_len
    assert answer["token_strs"] is None


async def test_chat_count_is_a_chat_completions_prompt_tokens(served: ServedApp) -> None:
    answer = await tokenize_ok(served, {"model": MODEL, "messages": CHAT})
    chat = await post(
        served, "/v1/chat/completions", {"model": MODEL, "messages": CHAT, "max_tokens": 1}
    )
    assert chat.status_code == 200, chat.text
    assert answer["count"] == chat.json()["usage"]["prompt_tokens"]
    # The template's turns are there: more tokens than the contents alone.
    plain = await tokenize_ok(served, {"prompt": " ".join(m["content"] for m in CHAT)})
    assert answer["count"] > plain["count"]
    # As /generate reports it, too.
    generated = await post(served, "/generate", {"prompt": PROMPT, "max_tokens": 1})
    prompt = await tokenize_ok(served, {"prompt": PROMPT})
    assert prompt["count"] == generated.json()["prompt_tokens"]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


async def test_chat_with_tools_counts_what_the_template_lists(served: ServedApp) -> None:
    answer = await tokenize_ok(served, {"messages": CHAT, "tools": TOOLS})
    chat = await post(
        served,
        "/v1/chat/completions",
        {"model": MODEL, "messages": CHAT, "tools": TOOLS, "tool_choice": "none", "max_tokens": 1},
    )
    assert chat.status_code == 200, chat.text
    assert answer["count"] == chat.json()["usage"]["prompt_tokens"]
    without = await tokenize_ok(served, {"messages": CHAT})
    assert answer["count"] > without["count"]  # the template lists the tool
    # A conversation that goes on after a call and its result.
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    conversation = [
        *CHAT,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]
    answer = await tokenize_ok(served, {"messages": conversation, "tools": TOOLS})
    chat = await post(
        served,
        "/v1/chat/completions",
        {"model": MODEL, "messages": conversation, "tools": TOOLS, "max_tokens": 1},
    )
    assert chat.status_code == 200, chat.text
    assert answer["count"] == chat.json()["usage"]["prompt_tokens"]


async def test_tokenize_then_detokenize_round_trips(served: ServedApp) -> None:
    text = "Paris, ünïcödé 😀 and <start_of_turn> as text\n"
    bare = await tokenize_ok(served, {"prompt": text, "add_special_tokens": False})
    detokenized = await post(served, "/detokenize", {"model": MODEL, "tokens": bare["tokens"]})
    assert detokenized.status_code == 200, detokenized.text
    assert detokenized.json() == {"prompt": text}
    # With the BOS (the default) the control token reads as its text, and tokenizing that
    # text without added tokens gives the same ids back.
    full = await tokenize_ok(served, {"prompt": text})
    assert full["tokens"][1:] == bare["tokens"]
    assert full["count"] == bare["count"] + 1
    spelled = (await post(served, "/detokenize", {"tokens": full["tokens"]})).json()["prompt"]
    assert spelled == "<bos>" + text
    again = await tokenize_ok(served, {"prompt": spelled, "add_special_tokens": False})
    assert again["tokens"] == full["tokens"]


async def test_token_strs_are_the_vocabulary_strings(
    served: ServedApp, tokenizer: GgufTokenizer
) -> None:
    answer = await tokenize_ok(served, {"prompt": "Hello world", "return_token_strs": True})
    assert answer["token_strs"] == tokenizer.token_strings(answer["tokens"])
    assert answer["token_strs"][0] == "<bos>"
    assert "".join(answer["token_strs"][1:]) == "Hello▁world"


async def test_ids_outside_the_vocabulary_are_400_naming_them(served: ServedApp) -> None:
    for tokens, param, value in (
        ([2, -1], "tokens[1]", "-1"),
        ([VOCAB_SIZE], "tokens[0]", str(VOCAB_SIZE)),
        ([5, 6, 2**40], "tokens[2]", str(2**40)),
    ):
        response = await post(served, "/detokenize", {"tokens": tokens})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, "invalid_token_id")
        assert error["message"].startswith(f"{param}: {value} ")
    # The last id of the vocabulary is one.
    response = await post(served, "/detokenize", {"tokens": [VOCAB_SIZE - 1]})
    assert response.status_code == 200
    assert (await post(served, "/detokenize", {"tokens": []})).json() == {"prompt": ""}


async def test_what_is_not_implemented_is_refused_by_name(served: ServedApp) -> None:
    for extra, param in (
        ({"add_generation_prompt": False}, "add_generation_prompt"),
        ({"continue_final_message": True}, "continue_final_message"),
        ({"add_special_tokens": True}, "add_special_tokens"),
        ({"chat_template": "{{ messages }}"}, "chat_template"),
        ({"chat_template_kwargs": {}}, "chat_template_kwargs"),
        ({"mm_processor_kwargs": {}}, "mm_processor_kwargs"),
    ):
        response = await post(served, "/tokenize", {"messages": CHAT, **extra})
        assert response.status_code == 400, (extra, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, "unsupported_parameter")
    # Fields vLLM does not have, and a prompt with messages, are schema errors.
    response = await post(served, "/tokenize", {"prompt": PROMPT, "messages": CHAT})
    assert response.status_code == 422
    response = await post(served, "/tokenize", {"model": "other", "prompt": PROMPT})
    assert (response.status_code, response.json()["error"]["code"]) == (404, "model_not_found")


async def test_generation_rules_apply(served: ServedApp) -> None:
    response = await post(served, "/tokenize", {"prompt": ""})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "prompt"
    # A chat ending with the assistant's turn is refused as chat completions refuse it.
    chat = [*CHAT, {"role": "assistant", "content": "Paris."}]
    response = await post(served, "/tokenize", {"messages": chat})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "messages[2].role"


async def test_keys_rate_limits_and_metrics_apply(triton: TritonServer) -> None:
    settings = settings_for(triton.grpc_url, api_keys=["sk-tok"], rate_limit_rpm=2)
    async with serve(create_app(settings)) as app:
        before = await app.metrics()
        unkeyed = await post(app, "/tokenize", {"prompt": PROMPT})
        assert unkeyed.status_code == 401
        keyed = {"headers": {"Authorization": "Bearer sk-tok"}}
        first = await post(app, "/tokenize", {"prompt": PROMPT}, **keyed)
        assert first.status_code == 200
        assert first.headers["X-RateLimit-Remaining-Requests"] == "1"
        # A refused request counts too, then the budget is spent for both routes.
        refused = await post(app, "/detokenize", {"tokens": [-5]}, **keyed)
        assert refused.status_code == 400
        limited = await post(app, "/detokenize", {"tokens": [2]}, **keyed)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) > 0
        after = await app.metrics()

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = {"route": "/tokenize", "method": "POST"}
    assert delta("frontend_http_requests_total", **route, status="200") == 1
    assert delta("frontend_http_requests_total", **route, status="401") == 1
    route = {"route": "/detokenize", "method": "POST"}
    assert delta("frontend_http_requests_total", **route, status="400") == 1
    assert delta("frontend_http_requests_total", **route, status="429") == 1


async def test_a_prompt_over_the_models_limit_is_refused_naming_its_tokens(
    served: ServedApp,
) -> None:
    response = await post(served, "/tokenize", {"prompt": "a b " * 1500})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("prompt", "prompt_too_long")
    assert error["message"] == "prompt of 3,002 tokens exceeds the 2,048 limit"


async def test_without_triton_both_routes_are_503() -> None:
    async with serve(create_app(settings_for("127.0.0.1:1"))) as app:
        for path, body in (("/tokenize", {"prompt": PROMPT}), ("/detokenize", {"tokens": [2]})):
            response = await post(app, path, body)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "model_unavailable"
