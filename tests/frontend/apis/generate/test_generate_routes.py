"""POST /generate end to end: uvicorn on a free port, httpx, the real Triton and engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tritonclient.grpc.aio as grpcaio

from frontend.app import create_app
from launcher.triton_server import TritonServer
from llm_stack.ensemble_client import generate as ensemble_generate
from llm_stack.ensemble_client import metric_value
from tests.frontend.conftest import (
    ServedApp,
    sample,
    serve,
    settings_for,
    sse_payloads,
    wait_until,
)

pytestmark = pytest.mark.integration

PROMPT = "The capital of France is"


@pytest.fixture
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    settings = settings_for(triton.grpc_url, max_prompt_chars=100_000, max_tokens_limit=64)
    async with serve(create_app(settings)) as app:
        yield app


async def test_generate_answers_the_seed_contract(served: ServedApp) -> None:
    async with served.client() as client:
        response = await client.post(
            "/generate", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0.0}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "text", "tokens_used", "prompt_tokens", "completion_tokens", "cached_tokens",
        "finish_reason", "model_version", "request_id",
    }  # fmt: skip
    assert 0 <= body["cached_tokens"] < body["prompt_tokens"]
    assert body["text"].strip()
    assert body["prompt_tokens"] > 1
    assert 1 <= body["completion_tokens"] <= 8
    assert body["tokens_used"] == body["prompt_tokens"] + body["completion_tokens"]
    assert body["finish_reason"] in ("stop", "length")
    assert body["model_version"] == "1"
    assert body["request_id"] == response.headers["X-Request-ID"]


async def test_stream_sends_deltas_then_usage_then_done(served: ServedApp) -> None:
    request = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0.0}
    async with served.client() as client:
        plain = (await client.post("/generate", json=request)).json()
        response = await client.post("/generate", json={**request, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    deltas = [e for e in events if e["type"] == "delta"]
    done = events[-1]
    assert [e["type"] for e in events] == ["delta"] * len(deltas) + ["done"]
    assert len(deltas) >= 3  # one event per piece of text, not one blob
    assert "".join(d["text"] for d in deltas) == plain["text"]
    assert done["finish_reason"] == plain["finish_reason"]
    usage = dict(done["usage"])
    # The second call may reuse the first one's prompt from the prefix cache.
    assert 0 <= usage.pop("cached_tokens") < plain["prompt_tokens"]
    assert usage == {
        "prompt_tokens": plain["prompt_tokens"],
        "completion_tokens": plain["completion_tokens"],
        "tokens_used": plain["tokens_used"],
    }
    assert done["request_id"] == response.headers["X-Request-ID"]


async def test_stop_sequence_ends_the_completion(served: ServedApp) -> None:
    request = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0.0}
    async with served.client() as client:
        free = (await client.post("/generate", json=request)).json()
        words = free["text"].split()
        assert len(words) >= 3, free
        stopped = (await client.post("/generate", json={**request, "stop": [words[1]]})).json()
    assert stopped["finish_reason"] == "stop"
    assert words[1] not in stopped["text"]
    assert free["text"].startswith(stopped["text"])


async def test_client_request_id_is_kept_sanitised(served: ServedApp) -> None:
    async with served.client() as client:
        response = await client.post(
            "/generate",
            json={"prompt": PROMPT, "max_tokens": 2},
            headers={"X-Request-ID": "trace-42<script>"},
        )
    assert response.headers["X-Request-ID"] == "trace-42script"
    assert response.json()["request_id"] == "trace-42script"


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({"prompt": "", "max_tokens": 4}, 422, "prompt", "prompt must not be empty"),
        ({"prompt": "hi", "max_tokens": 65}, 422, "max_tokens", "max_tokens 65 is outside 1..64"),
        ({"prompt": "hi", "max_tokens": 4, "temperature": 2.5}, 422, "temperature",
         "temperature 2.5 is outside 0..2"),
        ({"prompt": "hi", "max_tokens": 4, "top_p": 0}, 422, "top_p",
         "top_p 0.0 is outside (0, 1]"),
        ({"prompt": "hi", "max_tokens": 4, "stop": ["a", "b", "c", "d", "e"]}, 422, "stop",
         "stop has 5 sequences, exceeds the 4 limit"),
        ({"prompt": "hi", "max_tokens": "4"}, 422, "max_tokens",
         "max_tokens: Input should be a valid integer, got '4'"),
        ({"max_tokens": 4}, 422, "prompt", "prompt is required"),
        ({"prompt": "hi", "colour": "red"}, 422, "colour",
         "colour: Extra inputs are not permitted"),
    ],
)  # fmt: skip
async def test_validation_errors_name_field_limit_and_value(
    served: ServedApp, body: dict[str, Any], status: int, field: str, message: str
) -> None:
    async with served.client() as client:
        response = await client.post("/generate", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error == {
        "type": "invalid_request",
        "message": message,
        "field": field,
        "request_id": response.headers["X-Request-ID"],
    }


async def test_prompt_over_the_model_token_limit_is_422(served: ServedApp) -> None:
    async with served.client() as client:
        response = await client.post("/generate", json={"prompt": "word " * 3000, "max_tokens": 4})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "prompt_too_long"
    assert error["field"] == "prompt"
    # The model's tokenizer counts; the limit is the model's (2,048 for the default).
    assert error["message"].endswith("tokens exceeds the 2,048 limit")
    assert error["message"].startswith("prompt of 3,0")


async def test_malformed_and_oversized_bodies(triton: TritonServer) -> None:
    settings = settings_for(triton.grpc_url, max_body_bytes=2048)
    async with serve(create_app(settings)) as app, app.client() as client:
        not_json = await client.post(
            "/generate", content=b'{"prompt": ', headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
        assert not_json.json()["error"]["type"] == "malformed_body"
        big = json.dumps({"prompt": "x" * 4000}).encode()
        declared = await client.post(
            "/generate", content=big, headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413
        assert declared.json()["error"]["message"] == (
            "request body of 4,014 bytes exceeds the 2,048 byte limit"
        )

        # Chunked, the limit applies as the body arrives; over it by its last piece, so
        # that the client has sent it all when the answer closes the connection (with
        # bytes still coming it would be reset, as test_connections shows on a socket).
        just_over = json.dumps({"prompt": "x" * 2040}).encode()
        assert len(just_over) - 500 < 2048 < len(just_over)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(just_over), 500):
                yield just_over[start : start + 500]

        chunked = await client.post(
            "/generate", content=chunks(), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413
        assert chunked.json()["error"]["type"] == "request_too_large"
        metrics = await app.metrics()
    assert sample(metrics, "frontend_rejected_requests_total", reason="request_too_large") == 2
    assert sample(
        metrics, "frontend_http_requests_total", route="/generate", method="POST", status="413"
    ) == 2


async def test_api_keys_when_configured(triton: TritonServer) -> None:
    settings = settings_for(triton.grpc_url, api_keys=["sk-test-key"])
    async with serve(create_app(settings)) as app, app.client() as client:
        body = {"prompt": PROMPT, "max_tokens": 2}
        missing = await client.post("/generate", json=body)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.json()["error"]["type"] == "authentication_failed"
        wrong = await client.post(
            "/generate", json=body, headers={"Authorization": "Bearer sk-test-kez"}
        )
        assert wrong.status_code == 401
        assert wrong.json()["error"]["message"] == "the API key is not valid"
        ok = await client.post(
            "/generate", json=body, headers={"Authorization": "Bearer sk-test-key"}
        )
        assert ok.status_code == 200
        # Operations endpoints stay open to probes and scrapers.
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


async def test_no_key_needed_when_auth_is_off(served: ServedApp) -> None:
    async with served.client() as client:
        response = await client.post(
            "/generate",
            json={"prompt": PROMPT, "max_tokens": 2},
            headers={"Authorization": "Bearer anything"},
        )
    assert response.status_code == 200


async def test_metrics_move_by_the_expected_amounts(served: ServedApp) -> None:
    before = await served.metrics()
    async with served.client() as client:
        plain = (await client.post("/generate", json={"prompt": PROMPT, "max_tokens": 6})).json()
        streamed = await client.post(
            "/generate", json={"prompt": PROMPT, "max_tokens": 6, "stream": True}
        )
        bad = await client.post("/generate", json={"prompt": "", "max_tokens": 6})
    assert bad.status_code == 422
    done = json.loads(sse_payloads(streamed.text)[-2])
    deltas = len(sse_payloads(streamed.text)) - 2
    after = await served.metrics()

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = {"route": "/generate"}
    assert delta("frontend_http_requests_total", method="POST", status="200", **route) == 2
    assert delta("frontend_http_requests_total", method="POST", status="422", **route) == 1
    assert delta("frontend_http_request_duration_seconds_count", **route) == 3
    assert delta("frontend_rejected_requests_total", reason="invalid_request") == 1
    assert delta("frontend_prompt_tokens_total") == (
        plain["prompt_tokens"] + done["usage"]["prompt_tokens"]
    )
    assert delta("frontend_completion_tokens_total") == (
        plain["completion_tokens"] + done["usage"]["completion_tokens"]
    )
    outcomes = [plain["finish_reason"], done["finish_reason"]]
    for outcome in set(outcomes):
        assert delta("frontend_generations_total", outcome=outcome) == outcomes.count(outcome)
    # Only the streamed request has a first token and gaps between tokens.
    assert delta("frontend_time_to_first_token_seconds_count") == 1
    assert delta("frontend_inter_token_latency_seconds_count") == deltas - 1
    assert delta("frontend_triton_calls_total", endpoint=served.state.settings.triton_urls[0]) == 2
    assert sample(after, "frontend_generations_in_flight") == 0
    endpoint = served.state.pool.endpoints[0].url
    assert sample(after, "frontend_triton_endpoint_up", endpoint=endpoint) == 1


async def test_openapi_documents_every_error(served: ServedApp) -> None:
    async with served.client() as client:
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
    responses = spec["paths"]["/generate"]["post"]["responses"]
    assert {"200", "400", "413", "422", "429", "502", "503", "504"} <= set(responses)
    assert "401" not in responses  # no keys are configured here: none is asked for
    assert responses["429"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorResponse"
    )
    assert "503" in spec["paths"]["/health/ready"]["get"]["responses"]


async def test_ready_and_live(served: ServedApp) -> None:
    async with served.client() as client:
        live = await client.get("/health/live")
        ready = await client.get("/health/ready")
    assert live.json() == {"status": "live"}
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["model"] == "ensemble"


# --- client disconnects -------------------------------------------------------------------

COUNTING = "Count from one to one hundred in words: one, two, three, four,"
LONG = 48


def engine_active(triton: TritonServer) -> float:
    return metric_value(triton.metrics_url, "nv_trt_llm_request_metrics", request_type="active")


def engine_tokens(triton: TritonServer) -> float:
    return metric_value(triton.metrics_url, "llm_engine_generated_tokens_total")


async def tokens_once_idle(triton: TritonServer, before: float) -> float:
    """Tokens generated since `before`, read once the engine has finished the sequence.

    The engine publishes its figures at most every 0.25 s while it runs and at once when
    a sequence ends, so a snapshot with new tokens and no active sequence is final.
    """
    await wait_until(lambda: engine_tokens(triton) > before and engine_active(triton) == 0)
    return engine_tokens(triton) - before


@pytest.fixture(scope="module")
async def reference_length(triton: TritonServer) -> int:
    """Greedy decoding of COUNTING runs to the full LONG tokens when nobody interrupts it.

    LONG is above the suite's usual 16 so that an abort is told apart from a natural end;
    the aborted runs stop after a few tokens, and this reference runs once.
    """
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    try:
        result = await ensemble_generate(client, COUNTING, LONG, temperature=0.0)
    finally:
        await client.close()
    assert result.error is None
    assert (result.finish_reason, result.num_output_tokens) == ("length", LONG), result
    await wait_until(lambda: engine_active(triton) == 0)
    return LONG


async def test_disconnect_mid_stream_aborts_the_engine_sequence(
    served: ServedApp, triton: TritonServer, reference_length: int
) -> None:
    before = engine_tokens(triton)
    request = {"prompt": COUNTING, "max_tokens": reference_length, "temperature": 0.0}
    async with (
        served.client() as client,
        client.stream("POST", "/generate", json={**request, "stream": True}) as resp,
    ):
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "delta":
                break  # leave mid-stream: closing the response drops the connection
    await wait_until(lambda: served.state.pool.endpoints[0].in_flight == 0)
    generated = await tokens_once_idle(triton, before)
    # Greedy decoding would have produced all of them (reference_length) had it run on.
    assert 0 < generated < reference_length
    metrics = await served.metrics()
    assert sample(metrics, "frontend_generations_total", outcome="cancelled") == 1


async def test_disconnect_mid_request_aborts_the_engine_sequence(
    served: ServedApp, triton: TritonServer, reference_length: int
) -> None:
    before = engine_tokens(triton)
    request = {"prompt": COUNTING, "max_tokens": reference_length, "temperature": 0.0}
    async with served.client() as client:
        call = asyncio.create_task(client.post("/generate", json=request))
        await wait_until(lambda: engine_active(triton) >= 1)
        call.cancel()  # the client gives up: httpx closes the connection
        with pytest.raises(asyncio.CancelledError):
            await call
    generated = await tokens_once_idle(triton, before)
    assert generated < reference_length
    metrics = await served.metrics()
    assert sample(metrics, "frontend_generations_total", outcome="cancelled") == 1
    assert sample(
        metrics, "frontend_http_requests_total", route="/generate", method="POST", status="499"
    ) == 1
