"""Several Triton endpoints: load spread over the ready ones, one killed mid-load, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from frontend.app import create_app
from frontend.routing import PrefixRouting, rank
from frontend.validation import ValidatedRequest
from tests.frontend.conftest import (
    EchoFactory,
    ServedApp,
    echo_settings,
    sample,
    serve,
    wait_until,
)

pytestmark = pytest.mark.integration

WORKERS = 8
PROMPT = "one two three four five six"
LONG_STREAM = {"prompt": " ".join(["word"] * 100), "max_tokens": 100}  # 2 s at 20 ms a word


@dataclass
class Outcome:
    ok: bool
    status: int
    error_type: str | None
    started_at: float


async def one_request(client: httpx.AsyncClient, stream: bool) -> Outcome:
    started = time.monotonic()
    response = await client.post(
        "/generate", json={"prompt": PROMPT, "max_tokens": 6, "stream": stream}
    )
    if response.status_code != 200:
        return Outcome(False, response.status_code, response.json()["error"]["type"], started)
    if not stream:
        return Outcome(response.json()["text"] == PROMPT, 200, None, started)
    payloads = [ln[6:] for ln in response.text.split("\n") if ln.startswith("data: ")]
    if payloads[-1] == "[DONE]":
        return Outcome(True, 200, None, started)
    return Outcome(False, 200, json.loads(payloads[-1])["error"]["type"], started)


async def next_event(lines: AsyncIterator[str]) -> dict[str, object]:
    async for line in lines:
        if line.startswith("data: "):
            event: dict[str, object] = json.loads(line[6:])
            return event
    raise AssertionError("the stream ended early")


async def last_event(lines: AsyncIterator[str]) -> str:
    payloads = [line[6:] async for line in lines if line.startswith("data: ")]
    return payloads[-1]


async def calls(app: ServedApp, url: str) -> float:
    return sample(await app.metrics(), "frontend_triton_calls_total", endpoint=url)


async def test_spread_kill_one_mid_load_and_recover(echo_triton_factory: EchoFactory) -> None:
    # 20 ms a word keeps every request a while in flight on its endpoint.
    tritons = [echo_triton_factory(0.02), echo_triton_factory(0.02)]
    survivor, victim = tritons
    # Least in flight only: every request here has the same prompt.
    settings = echo_settings(
        *(t.grpc_url for t in tritons), max_concurrent_requests=64, prefix_routing_chars=0
    )
    async with (
        serve(create_app(settings)) as app,
        app.client() as client,
        contextlib.AsyncExitStack() as stack,
    ):
        # Light load reaches both endpoints.
        warm = await asyncio.gather(*(one_request(client, i % 2 == 0) for i in range(8)))
        assert all(o.ok for o in warm)
        assert await calls(app, victim.grpc_url) > 0
        assert await calls(app, survivor.grpc_url) > 0

        # Two long streams, one per endpoint (least in flight), each past its first text.
        sentinels = [
            await stack.enter_async_context(
                client.stream("POST", "/generate", json={**LONG_STREAM, "stream": True})
            )
            for _ in range(2)
        ]
        sentinel_lines = [s.aiter_lines() for s in sentinels]
        for lines in sentinel_lines:
            assert (await next_event(lines))["type"] == "delta"

        outcomes: list[Outcome] = []
        stop = asyncio.Event()

        async def worker(index: int) -> None:
            while not stop.is_set():
                outcomes.append(await one_request(client, index % 2 == 0))

        workers = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
        await wait_until(lambda: len(outcomes) >= 2 * WORKERS)
        victim_endpoint = next(e for e in app.state.pool.endpoints if e.url == victim.grpc_url)
        # Read and kill with nothing in between: no request can start on it meanwhile.
        in_flight_at_kill = victim_endpoint.in_flight
        assert victim.pid is not None
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        await wait_until(lambda: not victim_endpoint.ready)
        out_at = time.monotonic()
        done_at_out = len(outcomes)
        await wait_until(lambda: len(outcomes) >= done_at_out + 2 * WORKERS)
        stop.set()
        await asyncio.gather(*workers)
        victim.stop()  # reaps the killed process

        # The sentinel on the killed Triton ends with an error event, the other completes.
        endings = sorted([await last_event(lines) for lines in sentinel_lines], key=str)
        assert endings[0] == "[DONE]"
        error = json.loads(endings[1])
        assert error["type"] == "error"
        assert error["error"]["type"] == "model_unavailable"

        lost = [o for o in outcomes if not o.ok]
        # Only requests that were producing text on the killed Triton may fail; requests
        # that had nothing back yet are retried on the other endpoint.
        assert len(lost) <= in_flight_at_kill, (lost, in_flight_at_kill)
        assert all(o.started_at < killed_at for o in lost)
        assert {o.error_type for o in lost} <= {"model_unavailable", "model_error"}
        assert {o.status for o in lost} <= {200, 502, 503}  # 200: an error event mid-stream
        assert all(o.ok for o in outcomes if o.started_at > out_at)

        # Back in rotation once its probe sees it ready again.
        before = await calls(app, victim.grpc_url)
        victim.start()
        victim.wait_ready("echo", timeout=120)
        await wait_until(lambda: victim_endpoint.ready)
        again = await asyncio.gather(*(one_request(client, False) for _ in range(8)))
        assert all(o.ok for o in again)
        assert await calls(app, victim.grpc_url) > before


def prefix_preferring(url: str, urls: list[str]) -> str:
    """A shared instruction block whose rendezvous rank puts `url` first."""
    for i in range(1000):
        # Longer than the routing key, as a shared instruction block is.
        prefix = f"Instructions {i}: answer in one short sentence. " * 12
        if rank(PrefixRouting().key(ValidatedRequest(prefix, 1)) or b"", urls)[0] == url:
            return prefix
    raise AssertionError("no prefix ranks this endpoint first")  # 2^-1000


async def test_shared_prefixes_stick_to_one_endpoint_and_fail_over(
    echo_triton_factory: EchoFactory,
) -> None:
    first, second = echo_triton_factory(0.0), echo_triton_factory(0.0)
    urls = [first.grpc_url, second.grpc_url]
    prefixes = {url: prefix_preferring(url, urls) for url in urls}
    settings = echo_settings(*urls, max_concurrent_requests=64)
    async with serve(create_app(settings)) as app, app.client() as client:

        async def ask(prefix: str, tail: str) -> None:
            body = {"prompt": prefix + tail, "max_tokens": 4}
            response = await client.post("/generate", json=body)
            assert response.status_code == 200, response.text

        # One at a time (no load to bound): each prefix on the endpoint it ranks first,
        # whatever the last line says.
        for i in range(6):
            for prefix in prefixes.values():
                await ask(prefix, f"Question {i}?")
        assert [await calls(app, url) for url in urls] == [6, 6]
        metrics = await app.metrics()
        assert sample(metrics, "frontend_routing_decisions_total", decision="affinity") == 12

        # The first endpoint goes away: its prefix is served by the other.
        first.stop()
        pool_endpoint = next(e for e in app.state.pool.endpoints if e.url == first.grpc_url)
        await wait_until(lambda: not pool_endpoint.ready)
        for i in range(3):
            await ask(prefixes[first.grpc_url], f"Later question {i}?")
        assert [await calls(app, url) for url in urls] == [6, 9]
        first.start()
        first.wait_ready("echo", timeout=120)
        await wait_until(lambda: pool_endpoint.ready)
        await ask(prefixes[first.grpc_url], "Back again?")
        assert [await calls(app, url) for url in urls] == [7, 9]


async def test_a_hot_prefix_overflows_past_the_load_bound(
    echo_triton_factory: EchoFactory,
) -> None:
    tritons = [echo_triton_factory(0.05), echo_triton_factory(0.05)]
    urls = [t.grpc_url for t in tritons]
    hot = prefix_preferring(urls[0], urls)
    settings = echo_settings(*urls, max_concurrent_requests=64, prefix_routing_load_factor=1.0)
    body = {"prompt": hot + " ".join(["word"] * 200), "max_tokens": 200, "stream": True}
    async with (
        serve(create_app(settings)) as app,
        app.client() as client,
        contextlib.AsyncExitStack() as stack,
    ):
        # Four long streams of one prefix, each past its first text before the next
        # starts: with a bound of the mean load, they split two and two.
        readers = []  # kept: a collected line iterator closes its stream
        for _ in range(4):
            stream = await stack.enter_async_context(client.stream("POST", "/generate", json=body))
            readers.append(stream.aiter_lines())
            assert (await next_event(readers[-1]))["type"] == "delta"
        assert [e.in_flight for e in app.state.pool.endpoints] == [2, 2]
        metrics = await app.metrics()
        assert sample(metrics, "frontend_routing_decisions_total", decision="affinity") == 2
        assert sample(metrics, "frontend_routing_decisions_total", decision="overflow") == 2
