"""Frontend fixtures: apps served by uvicorn on free ports, echo Tritons, Redis, a clock."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import limits.aio.storage.memory
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from frontend.deps import FrontendState
from frontend.server import uvicorn_config
from frontend.settings import FrontendSettings
from launcher.triton_server import TritonPorts, TritonServer, wheel_install
from tests.conftest import REPO_ROOT, free_port

ECHO_REPOSITORY = REPO_ROOT / "tests" / "echo_model_repository"
SERVE_TIMEOUT_S = 20.0


@dataclass
class ServedApp:
    """An app served over real HTTP on loopback."""

    app: FastAPI
    url: str

    @property
    def state(self) -> FrontendState:
        state = self.app.state.frontend
        assert isinstance(state, FrontendState)
        return state

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60.0, **kwargs)

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        return await scrape(self.url)


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `url`/metrics, keyed by (name, sorted labels)."""
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        response = await client.get("/metrics")
    response.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value, 0 when absent (a labelled counter not yet touched)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[ServedApp]:
    """Run `app` under uvicorn on a free loopback port in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    async with serve_config(config) as served:
        yield served


@contextlib.asynccontextmanager
async def serve_frontend(
    settings: FrontendSettings, app: FastAPI | None = None
) -> AsyncIterator[ServedApp]:
    """Serve as `python -m frontend` does (frontend.server's uvicorn configuration: its
    connection timeouts, forwarded headers), on a free loopback port in this event loop."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    async with serve_config(uvicorn_config(settings, app)) as served:
        yield served


@contextlib.asynccontextmanager
async def serve_config(config: uvicorn.Config) -> AsyncIterator[ServedApp]:
    """Run uvicorn with `config` (an app and a loopback port) in this event loop."""
    assert isinstance(config.app, FastAPI)
    app, port = config.app, config.port
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(SERVE_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited before it started")
                await asyncio.sleep(0.02)
        yield ServedApp(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SERVE_TIMEOUT_S):
                await task
        if not task.done():
            task.cancel()


def settings_for(*urls: str, **overrides: Any) -> FrontendSettings:
    """Frontend settings for the given Triton gRPC endpoints (test-friendly timeouts)."""
    values: dict[str, Any] = {
        "triton_urls": list(urls),
        "health_probe_interval_s": 0.5,
        "health_probe_timeout_s": 1.0,
        "reconnect_backoff_max_s": 0.5,
        "request_timeout_s": 60.0,
        "rate_limit_storage_url": "memory://",
    }
    values.update(overrides)
    return FrontendSettings(**values)


def echo_settings(*urls: str, **overrides: Any) -> FrontendSettings:
    """Settings for echo Tritons: model `echo`, no engine model to send aborts to."""
    return settings_for(*urls, model_name="echo", abort_model="", **overrides)


class FakeClock:
    """Wall time that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A clock for the rate limiter and for the `limits` memory storage's windows."""
    fake = FakeClock()

    class _TimeModule:
        time = staticmethod(fake.time)

    monkeypatch.setattr(limits.aio.storage.memory, "time", _TimeModule)
    return fake


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port, for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make system-deps installs it)")
    port = free_port()
    work = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.5),
            ):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


EchoFactory = Callable[..., TritonServer]


@pytest.fixture(scope="session")
def echo_triton_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoFactory]:
    """Starts Tritons serving the echo model (seconds per word as asked); stops them all."""
    work = tmp_path_factory.mktemp("echo-triton")
    install = wheel_install(work)
    servers: list[TritonServer] = []

    def start(token_delay_s: float = 0.0) -> TritonServer:
        index = len(servers)
        server = TritonServer(
            install=install,
            model_repository=ECHO_REPOSITORY,
            ports=TritonPorts.free(),
            log_file=work / f"echo-{index}.log",
            extra_env={"LLM_STACK_ECHO_TOKEN_DELAY_S": str(token_delay_s)},
        )
        servers.append(server)
        server.start()
        server.wait_ready("echo", timeout=120)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def slow_echo(echo_triton_factory: EchoFactory) -> TritonServer:
    """An echo Triton producing one word per 50 ms, to keep requests in flight."""
    return echo_triton_factory(0.05)


@pytest.fixture(scope="session")
def fast_echo(echo_triton_factory: EchoFactory) -> TritonServer:
    """An echo Triton answering at once: exact token counts, no engine cost."""
    return echo_triton_factory(0.0)


async def wait_until(condition: Callable[[], bool], within_s: float = 30.0) -> None:
    """Poll `condition` until it holds; fail after `within_s`."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(0.01)


def sse_payloads(body: str) -> list[str]:
    """The `data:` payloads of a Server-Sent Events body, in order."""
    return [line[len("data: ") :] for line in body.split("\n") if line.startswith("data: ")]
