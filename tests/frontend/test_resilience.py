"""Overload, deadlines and a Triton that goes away and comes back, on echo Tritons.

The slow echo produces one word per 50 ms, which keeps a request in flight while the
test does something else; none of the assertions depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from frontend.app import create_app
from launcher.triton_server import TritonServer
from tests.frontend.conftest import (
    EchoFactory,
    ServedApp,
    echo_settings,
    sample,
    serve,
    sse_payloads,
)

pytestmark = pytest.mark.integration

WORDS = " ".join(f"w{i}" for i in range(16))  # 16 words: 16 x 50 ms on the slow echo


async def first_delta(lines: AsyncIterator[str]) -> dict[str, object]:
    async for line in lines:
        if line.startswith("data: "):
            event: dict[str, object] = json.loads(line[6:])
            return event
    raise AssertionError("the stream ended before its first event")


async def rest_of_stream(lines: AsyncIterator[str]) -> list[str]:
    return [line[6:] async for line in lines if line.startswith("data: ")]


async def test_overload_is_refused_at_once_while_admitted_requests_complete(
    slow_echo: TritonServer,
) -> None:
    settings = echo_settings(
        slow_echo.grpc_url, max_concurrent_requests=1, overload_retry_after_s=2
    )
    async with serve(create_app(settings)) as app, app.client() as client:
        request = {"prompt": WORDS, "max_tokens": 16, "stream": True}
        async with client.stream("POST", "/generate", json=request) as admitted:
            lines = admitted.aiter_lines()
            assert (await first_delta(lines))["type"] == "delta"
            refused = await client.post("/generate", json={"prompt": "x", "max_tokens": 1})
            # Answered while the admitted request is still running: no waiting in line.
            in_flight = sample(await app.metrics(), "frontend_generations_in_flight")
            rest = await rest_of_stream(lines)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "2"
        assert refused.json()["error"]["type"] == "overloaded"
        assert in_flight == 1
        assert rest[-1] == "[DONE]"
        assert json.loads(rest[-2])["usage"]["completion_tokens"] == 16
        after = await client.post("/generate", json={"prompt": "x", "max_tokens": 1})
        assert after.status_code == 200
        metrics = await app.metrics()
    assert sample(metrics, "frontend_rejected_requests_total", reason="overloaded") == 1


async def test_short_queue_is_bounded(slow_echo: TritonServer) -> None:
    settings = echo_settings(
        slow_echo.grpc_url, max_concurrent_requests=1, max_queued_requests=1, queue_timeout_s=30
    )
    async with serve(create_app(settings)) as app, app.client() as client:
        request = {"prompt": WORDS, "max_tokens": 16, "stream": True}
        async with client.stream("POST", "/generate", json=request) as admitted:
            lines = admitted.aiter_lines()
            await first_delta(lines)
            queued = asyncio.create_task(
                client.post("/generate", json={"prompt": "a b", "max_tokens": 2})
            )
            await wait_for_metric(app, "frontend_generations_queued", 1)
            refused = await client.post("/generate", json={"prompt": "x", "max_tokens": 1})
            await rest_of_stream(lines)
        assert refused.status_code == 503
        waited = await queued
        assert waited.status_code == 200
        assert waited.json()["text"] == "a b"


async def wait_for_metric(app: ServedApp, name: str, value: float, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while sample(await app.metrics(), name) != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        await asyncio.sleep(0.02)


async def test_triton_deadline_is_504_before_the_stream_and_an_error_event_after(
    slow_echo: TritonServer,
) -> None:
    settings = echo_settings(slow_echo.grpc_url, request_timeout_s=0.3)
    async with serve(create_app(settings)) as app, app.client() as client:
        plain = await client.post("/generate", json={"prompt": WORDS, "max_tokens": 16})
        streamed = await client.post(
            "/generate", json={"prompt": WORDS, "max_tokens": 16, "stream": True}
        )
        metrics = await app.metrics()
    assert plain.status_code == 504
    assert plain.json()["error"] == {
        "type": "model_timeout",
        "message": "the model server did not answer within 0.3 s",
        "request_id": plain.headers["X-Request-ID"],
    }
    # Text had been sent: the failure is the stream's last event, with no [DONE].
    assert streamed.status_code == 200
    payloads = sse_payloads(streamed.text)
    assert json.loads(payloads[0])["type"] == "delta"
    assert "[DONE]" not in payloads
    last = json.loads(payloads[-1])
    assert last["type"] == "error"
    assert last["error"]["type"] == "model_timeout"
    assert last["error"]["request_id"] == streamed.headers["X-Request-ID"]
    assert sample(metrics, "frontend_triton_errors_total", code="deadline_exceeded") == 2


async def test_triton_down_then_back_without_restarting_the_frontend(
    echo_triton_factory: EchoFactory,
) -> None:
    triton = echo_triton_factory(0.0)  # this test's own Triton: it gets stopped
    settings = echo_settings(triton.grpc_url)
    body = {"prompt": "up again", "max_tokens": 2}
    async with serve(create_app(settings)) as app, app.client() as client:
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.post("/generate", json=body)).status_code == 200

        triton.stop()
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "not_ready",
            "model": "echo",
            "endpoints": {triton.grpc_url: False},
        }
        down = await client.post("/generate", json=body)
        assert down.status_code == 503
        assert down.json()["error"]["type"] == "model_unavailable"
        assert down.headers["Retry-After"] == "1"
        assert (await client.get("/health/live")).status_code == 200

        triton.start()
        triton.wait_ready("echo", timeout=120)
        await wait_until_ready(client)
        back = await client.post("/generate", json=body)
        assert back.status_code == 200
        assert back.json()["text"] == "up again"


async def test_requests_come_back_with_triton_not_at_the_next_regular_probe(
    echo_triton_factory: EchoFactory,
) -> None:
    triton = echo_triton_factory(0.0)  # this test's own Triton: it gets stopped
    # A regular probe interval no test waits out: only the fast re-probe of an endpoint
    # out of rotation (and gRPC's short reconnect back-off) can bring requests back.
    settings = echo_settings(
        triton.grpc_url, health_probe_interval_s=300.0, health_probe_down_interval_s=0.1
    )
    body = {"prompt": "up again", "max_tokens": 2}
    async with serve(create_app(settings)) as app, app.client() as client:
        assert (await client.post("/generate", json=body)).status_code == 200
        triton.stop()
        down = await client.post("/generate", json=body)  # takes the endpoint out
        assert down.status_code == 503
        triton.start()
        triton.wait_ready("echo", timeout=120)
        # Requests only, no /health/ready: that probes by itself.
        deadline = time.monotonic() + 30
        while (back := await client.post("/generate", json=body)).status_code != 200:
            assert back.status_code == 503
            assert time.monotonic() < deadline, "requests did not come back with Triton"
            await asyncio.sleep(0.05)
        assert back.json()["text"] == "up again"


async def wait_until_ready(client: httpx.AsyncClient, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while (await client.get("/health/ready")).status_code != 200:
        assert time.monotonic() < deadline, "the frontend did not see Triton come back"
        await asyncio.sleep(0.1)
