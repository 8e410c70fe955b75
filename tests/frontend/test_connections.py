"""The server's connections, as `python -m frontend` serves them: forwarded headers
trusted only from the configured proxies, and slow clients (slowloris) cut off.

Raw sockets play the slow clients: a handful of connections, each given a generous bound
for the server to close it; the assertions are that it does, never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from frontend.app import create_app
from frontend.server import uvicorn_config
from frontend.settings import FrontendSettings
from launcher.triton_server import TritonServer
from tests.frontend.conftest import (
    FakeClock,
    ServedApp,
    echo_settings,
    serve_frontend,
    sse_payloads,
)

pytestmark = pytest.mark.integration

# How long a test waits for the server to close a connection: far beyond its timeouts.
CLOSE_BOUND_S = 15.0


async def generate_from(app: ServedApp, forwarded_for: str) -> int:
    async with app.client() as client:
        response = await client.post(
            "/generate",
            json={"prompt": "a", "max_tokens": 1},
            headers={"X-Forwarded-For": forwarded_for},
        )
    return response.status_code


async def test_forwarded_for_is_ignored_unless_its_sender_is_trusted(
    fast_echo: TritonServer, clock: FakeClock
) -> None:
    settings = echo_settings(fast_echo.grpc_url, rate_limit_rpm=1)
    app = create_app(settings, clock=clock.time)
    async with serve_frontend(settings, app) as served:
        statuses = [await generate_from(served, f"10.0.0.{i}") for i in (1, 2)]
    # One budget for 127.0.0.1, whatever address the client claims to be relaying for.
    assert statuses == [200, 429]


async def test_forwarded_for_names_the_client_behind_a_trusted_proxy(
    fast_echo: TritonServer, clock: FakeClock
) -> None:
    settings = echo_settings(
        fast_echo.grpc_url, rate_limit_rpm=1, forwarded_allow_ips=["127.0.0.1"]
    )
    app = create_app(settings, clock=clock.time)
    async with serve_frontend(settings, app) as served:
        statuses = [await generate_from(served, f"10.0.0.{i}") for i in (1, 2, 1)]
    assert statuses == [200, 200, 429]  # a budget per forwarded client


def test_forwarded_allow_ips_reach_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not uvicorn_config(FrontendSettings()).proxy_headers
    monkeypatch.setenv("LLM_FRONTEND_FORWARDED_ALLOW_IPS", "10.1.0.0/16, 10.2.0.1")
    config = uvicorn_config(FrontendSettings())
    assert config.proxy_headers
    assert config.forwarded_allow_ips == ["10.1.0.0/16", "10.2.0.1"]


@contextlib.asynccontextmanager
async def connection(
    app: ServedApp,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = app.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (fails past the bound)."""
    try:
        async with asyncio.timeout(CLOSE_BOUND_S):
            return await reader.read()
    except TimeoutError:
        raise AssertionError("the server kept the connection open") from None
    except ConnectionResetError:
        return b""


async def trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float = 0.05) -> None:
    """Send `data` a byte at a time, until done or the server hangs up."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every_s)


def slow_settings(triton: TritonServer, **overrides: object) -> FrontendSettings:
    timeouts: dict[str, object] = {"header_timeout_s": 0.5, "body_timeout_s": 0.5}
    return echo_settings(triton.grpc_url, idle_timeout_s=1, **{**timeouts, **overrides})


async def test_a_connection_that_sends_nothing_is_closed(fast_echo: TritonServer) -> None:
    async with serve_frontend(slow_settings(fast_echo)) as app, connection(app) as (reader, _):
        assert await until_closed(reader) == b""


async def test_headers_trickled_past_their_deadline_are_cut_off(fast_echo: TritonServer) -> None:
    # Each byte arrives well within any per-read timeout; the headers never complete.
    headers = b"GET /health/live HTTP/1.1\r\nHost: a\r\n" + b"X-Slow: " + b"y" * 10_000
    async with serve_frontend(slow_settings(fast_echo)) as app, connection(app) as (reader, w):
        sender = asyncio.create_task(trickle(w, headers))
        try:
            received = await until_closed(reader)
        finally:
            sender.cancel()
    assert received == b""


async def test_the_headers_of_a_second_request_have_the_same_deadline(
    fast_echo: TritonServer,
) -> None:
    first = b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n"
    async with serve_frontend(slow_settings(fast_echo)) as app, connection(app) as (reader, w):
        w.write(first)
        status = await reader.readline()
        await reader.readuntil(b"\r\n\r\n")
        sender = asyncio.create_task(trickle(w, b"GET /health/live HTTP/1.1\r\n" + b"X" * 10_000))
        try:
            rest = await until_closed(reader)
        finally:
            sender.cancel()
    assert status.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1" not in rest  # the first response's body only: no second answer


async def test_an_idle_connection_is_closed_after_a_response(fast_echo: TritonServer) -> None:
    async with serve_frontend(slow_settings(fast_echo)) as app, connection(app) as (reader, w):
        w.write(b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n")
        received = await until_closed(reader)
    assert received.startswith(b"HTTP/1.1 200")


def test_idle_timeout_reaches_uvicorn() -> None:
    assert uvicorn_config(FrontendSettings(idle_timeout_s=7)).timeout_keep_alive == 7


@pytest.mark.parametrize("stall", ["stalled", "trickled"])
async def test_a_body_past_its_deadline_gets_408_and_the_connection_closed(
    fast_echo: TritonServer, stall: str
) -> None:
    body = json.dumps({"prompt": "a b c", "max_tokens": 2}).encode()
    head = (
        b"POST /generate HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    async with serve_frontend(slow_settings(fast_echo)) as app, connection(app) as (reader, w):
        w.write(head + body[:5])
        # Trickled: a byte every 0.2 s, the whole past the deadline though never idle long.
        sender = asyncio.create_task(trickle(w, body[5:-1], 0.2 if stall == "trickled" else 0))
        try:
            received = await until_closed(reader)
        finally:
            sender.cancel()
    status, _, rest = received.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    error = json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["type"] == "request_timeout"
    assert error["message"] == "the request body did not arrive within 0.5 s"


@pytest.mark.parametrize("declared", [True, False])
async def test_a_body_over_the_limit_gets_413_and_the_connection_closed(
    fast_echo: TritonServer, declared: bool
) -> None:
    # The rest of the body keeps coming (slowly, but never idle long): the server does
    # not read on after its answer.
    length = b"Content-Length: 100000\r\n" if declared else b"Transfer-Encoding: chunked\r\n"
    head = b"POST /generate HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    first = b"" if declared else b"%x\r\n%s\r\n" % (70_000, b"x" * 70_000)
    settings = slow_settings(fast_echo, body_timeout_s=60.0)
    async with serve_frontend(settings) as app, connection(app) as (reader, w):
        w.write(head + length + b"\r\n" + first)
        sender = asyncio.create_task(trickle(w, b"x" * 10_000))
        try:
            received = await until_closed(reader)
        finally:
            sender.cancel()
    assert received.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in received.lower()


async def test_a_response_outlasting_every_timeout_completes(slow_echo: TritonServer) -> None:
    # 16 words at 50 ms each: the stream runs past the header, body and idle timeouts.
    words = " ".join(f"w{i}" for i in range(16))
    async with serve_frontend(slow_settings(slow_echo)) as app, app.client() as client:
        response = await client.post(
            "/generate", json={"prompt": words, "max_tokens": 16, "stream": True}
        )
    assert response.status_code == 200
    assert sse_payloads(response.text)[-1] == "[DONE]"
