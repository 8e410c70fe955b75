"""How the frontend ends its calls to the ensemble: each one read to its end, none cancelled.

Triton 2.51 keeps what a cancelled ensemble stream leaves behind (the stream's state when
the cancellation comes after its final response, the ensemble request when it comes
while the engine step still runs), and waits out its exit timeout for it when it stops.
So the frontend reads every call to its end, and a client that goes away has its engine
sequence stopped with a `stop` request instead: Triton then counts every ensemble
request as a success, and sends the engine no stop for a call that completed.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from frontend.app import create_app
from launcher.triton_server import TritonServer
from tests.frontend.conftest import ServedApp, serve, settings_for, wait_until

pytestmark = pytest.mark.integration

COUNTING = "Count from one to one hundred in words: one, two, three, four,"


@pytest.fixture
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    # Health checks are tensorrt_llm requests too: none while a test counts (the probe at
    # start-up comes before).
    settings = settings_for(triton.grpc_url, max_tokens_limit=64, health_probe_interval_s=300.0)
    async with serve(create_app(settings)) as app:
        yield app


def requests(triton: TritonServer, outcome: str, model: str) -> float:
    """Triton's count of `model`'s requests that ended in `outcome` (success, failure)."""
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as resp:
        body = resp.read().decode()
    names = {f"nv_inference_request_{outcome}", f"nv_inference_request_{outcome}_total"}
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name in names and sample.labels.get("model") == model
    )


def counts(triton: TritonServer) -> dict[str, float]:
    return {
        "ensemble": requests(triton, "success", "ensemble"),
        "ensemble failed": requests(triton, "failure", "ensemble"),
        "tensorrt_llm": requests(triton, "success", "tensorrt_llm"),
    }


async def test_streams_read_to_their_end_send_no_stop(
    served: ServedApp, triton: TritonServer
) -> None:
    before = counts(triton)
    request = {"prompt": COUNTING, "max_tokens": 4, "temperature": 0.0, "stream": True}
    async with served.client() as client:
        for _ in range(3):
            async with client.stream("POST", "/generate", json=request) as resp:
                assert resp.status_code == 200
                assert "data: [DONE]" in [line async for line in resp.aiter_lines()]
    # Triton counts a request once it has released it, just after its last response.
    await wait_until(lambda: counts(triton)["ensemble"] >= before["ensemble"] + 3)
    await wait_until(lambda: not served.state.pool._aborts)
    after = counts(triton)
    # One engine request for each call: no stop request went after a completed call.
    assert {k: after[k] - before[k] for k in before} == {
        "ensemble": 3,
        "ensemble failed": 0,
        "tensorrt_llm": 3,
    }


async def test_a_client_gone_mid_stream_ends_the_ensemble_request_by_a_stop(
    served: ServedApp, triton: TritonServer
) -> None:
    before = counts(triton)
    request = {"prompt": COUNTING, "max_tokens": 64, "temperature": 0.0, "stream": True}
    async with (
        served.client() as client,
        client.stream("POST", "/generate", json=request) as resp,
    ):
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "delta":
                break  # leave mid-stream: closing the response drops the connection
    # Released, and as a success: the stream was not cancelled but ended by the engine,
    # which the stop request made end the sequence.
    await wait_until(lambda: counts(triton)["ensemble"] >= before["ensemble"] + 1)
    await wait_until(lambda: not served.state.pool._aborts)
    after = counts(triton)
    assert after["ensemble"] - before["ensemble"] == 1
    assert after["ensemble failed"] - before["ensemble failed"] == 0
    assert after["tensorrt_llm"] - before["tensorrt_llm"] >= 2  # the generation, a stop


async def test_calls_refused_by_the_model_end_without_a_cancellation(
    served: ServedApp, triton: TritonServer
) -> None:
    # With the `triton_grpc_error` header, Triton 2.51 ends each failed stream through a
    # cancellation it logs as unexpected, and dies (SIGSEGV) after a few hundred of them.
    assert triton.log_file is not None
    before = triton.log_file.read_text().count("HandleCancellation")
    async with served.client() as client:
        for stream in (False, True, False, True):
            resp = await client.post(
                "/generate", json={"prompt": "word " * 3000, "max_tokens": 4, "stream": stream}
            )
            assert resp.status_code == 422
            assert resp.json()["error"]["type"] == "prompt_too_long"
        # Triton still serves.
        ok = await client.post("/generate", json={"prompt": COUNTING, "max_tokens": 2})
        assert ok.status_code == 200
    assert triton.log_file.read_text().count("HandleCancellation") == before
