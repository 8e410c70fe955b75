"""Several worker processes on one port (LLM_FRONTEND_WORKERS): one /metrics for all of
them, rate limits and the concurrency bound holding across them, and the settings that
could not hold refused.

The frontend runs as `python -m frontend` (its supervisor and workers are processes of
their own); which worker answered a request is read from the workers' metric files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from pydantic import ValidationError

from frontend.app import create_app
from frontend.settings import FrontendSettings
from launcher.triton_server import TritonServer
from tests.conftest import REPO_ROOT, free_port
from tests.frontend.conftest import sample, scrape, wait_until

pytestmark = pytest.mark.integration

WORKERS = 2
PROMPT = "one two three"


@dataclass
class Frontend:
    """A frontend of several workers, served by `python -m frontend`."""

    url: str
    metrics_dir: Path
    process: subprocess.Popen[bytes]

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        # No keep-alive: each request is a connection of its own, which any worker may take.
        limits = httpx.Limits(max_keepalive_connections=0)
        return httpx.AsyncClient(base_url=self.url, timeout=60.0, limits=limits, **kwargs)

    def worker_pids(self) -> set[int]:
        """The workers that have written metric files."""
        return {_pid(path) for path in self.metrics_dir.glob("*.db")}

    def answered(self, route: str = "/generate") -> dict[int, float]:
        """Requests of `route` each worker has answered, read from its own counter file."""
        counts: dict[int, float] = {}
        for path in self.metrics_dir.glob("counter_*.db"):
            for key, value, _at, _pos in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
                _family, name, labels, _help = json.loads(key)
                if name == "frontend_http_requests_total" and labels["route"] == route:
                    counts[_pid(path)] = counts.get(_pid(path), 0.0) + value
        return counts

    def live(self, name: str) -> dict[int, float]:
        """A summed live gauge's value in each worker, read from its own file."""
        values: dict[int, float] = {}
        for path in self.metrics_dir.glob("gauge_livesum_*.db"):
            for key, value, _at, _pos in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
                if json.loads(key)[1] == name:
                    values[_pid(path)] = value
        return values

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics (of whichever worker answers), as ServedApp.metrics."""
        return await scrape(self.url)


def _pid(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[-1])


def frontend_env(triton: TritonServer, port: int, **settings: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("LLM_FRONTEND_")
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        LLM_FRONTEND_HOST="127.0.0.1",
        LLM_FRONTEND_PORT=str(port),
        LLM_FRONTEND_TRITON_URLS=triton.grpc_url,
        LLM_FRONTEND_MODEL_NAME="echo",
        LLM_FRONTEND_ABORT_MODEL="",
        LLM_FRONTEND_LOG_LEVEL="warning",
        LLM_FRONTEND_WORKERS=str(WORKERS),
    )
    env.update({f"LLM_FRONTEND_{name.upper()}": value for name, value in settings.items()})
    return env


def start_frontend(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "frontend"], cwd=REPO_ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def workers(triton: TritonServer, tmp_path: Path, **settings: str) -> AsyncIterator[Frontend]:
    """The frontend with WORKERS workers, once every one of them serves."""
    port = free_port()
    metrics_dir = tmp_path / f"metrics-{port}"
    env = frontend_env(triton, port, metrics_dir=str(metrics_dir), **settings)
    log = tmp_path / f"frontend-{port}.log"
    process = start_frontend(env, log)
    frontend = Frontend(f"http://127.0.0.1:{port}", metrics_dir, process)
    try:
        # A worker writes its files as it builds its app, and takes connections once its
        # start-up is done: both, and a ready answer, before any test request.
        await wait_until(
            lambda: len(frontend.worker_pids()) == WORKERS or process.poll() is not None, 60
        )
        assert process.poll() is None, log.read_text()
        async with frontend.client() as client:
            for _ in range(WORKERS * 4):
                assert (await client.get("/health/ready")).status_code == 200
        yield frontend
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)


@dataclass
class HeldStreams:
    """Streamed generations held open (each on a connection of its own) until closed."""

    client: httpx.AsyncClient
    responses: contextlib.AsyncExitStack
    # A line reader that is collected closes its connection: each is kept here.
    readers: list[AsyncIterator[str]]

    async def start(self, body: dict[str, Any]) -> int:
        """The status; a stream answered 200 is held from its first event on."""
        response = await self.client.send(
            self.client.build_request("POST", "/generate", json=body), stream=True
        )
        await self.responses.enter_async_context(contextlib.aclosing(response))
        if response.status_code == 200:
            lines = response.aiter_lines()
            self.readers.append(lines)
            async for line in lines:
                if line.startswith("data: "):
                    break
        return response.status_code


@contextlib.asynccontextmanager
async def held_streams(frontend: Frontend) -> AsyncIterator[HeldStreams]:
    async with contextlib.AsyncExitStack() as responses, frontend.client() as client:
        yield HeldStreams(client, responses, [])


async def spread(frontend: Frontend, send: Any, rounds: int = 40) -> None:
    """Run `send` until both workers have answered some of its requests (a connection
    goes to whichever worker accepts it first)."""
    for _ in range(rounds):
        await send()
        if len(frontend.answered()) == WORKERS:
            return
    raise AssertionError(f"one worker answered every request: {frontend.answered()}")


async def test_metrics_count_the_requests_of_every_worker(
    fast_echo: TritonServer, tmp_path: Path
) -> None:
    sent = 0
    async with workers(fast_echo, tmp_path) as frontend:

        async def send() -> None:
            nonlocal sent
            async with frontend.client() as client:
                responses = await asyncio.gather(*(
                    client.post("/generate", json={"prompt": PROMPT, "max_tokens": 3})
                    for _ in range(8)
                ))  # fmt: skip
            assert [r.status_code for r in responses] == [200] * 8
            sent += 8

        await spread(frontend, send)
        # A request is counted once its response has gone out: maybe after the client has it.
        await wait_until(lambda: sum(frontend.answered().values()) == sent)
        per_worker = frontend.answered()
        samples = await frontend.metrics()
    assert len(per_worker) == WORKERS
    assert all(count > 0 for count in per_worker.values())
    assert sum(per_worker.values()) == sent
    # /metrics of one worker counts what both answered.
    route = {"route": "/generate", "method": "POST", "status": "200"}
    assert sample(samples, "frontend_http_requests_total", **route) == sent
    assert sample(samples, "frontend_completion_tokens_total") == 3 * sent
    assert sample(samples, "frontend_generations_total", outcome="stop") == sent
    durations = sample(samples, "frontend_http_request_duration_seconds_count", route="/generate")
    assert durations == sent
    # Live gauges are summed over the workers: nothing in flight but the /metrics request.
    assert sample(samples, "frontend_generations_in_flight") == 0
    assert sample(samples, "frontend_http_requests_in_flight") == 1
    assert sample(samples, "frontend_triton_endpoint_up", endpoint=fast_echo.grpc_url) == 1


async def test_requests_per_minute_hold_across_workers(
    fast_echo: TritonServer, redis_url: str, tmp_path: Path
) -> None:
    keys = [f"sk-{uuid.uuid4().hex}" for _ in range(40)]
    settings = {
        "rate_limit_rpm": "4",
        "rate_limit_storage_url": redis_url,
        "api_keys": json.dumps(keys),
    }
    async with workers(fast_echo, tmp_path, **settings) as frontend:
        # A fresh key (a fresh budget) per try, until both workers took part in one.
        for key in keys:
            before = frontend.answered()
            statuses = []
            async with frontend.client(headers={"Authorization": f"Bearer {key}"}) as client:
                for _ in range(10):
                    response = await client.post("/generate", json={"prompt": PROMPT})
                    statuses.append(response.status_code)
            await wait_until(
                lambda: sum(frontend.answered().values()) == sum(before.values()) + 10  # noqa: B023
            )
            after = frontend.answered()
            if all(after.get(pid, 0) > before.get(pid, 0) for pid in frontend.worker_pids()):
                break
        else:
            raise AssertionError("one worker answered every request of every key")
        samples = await frontend.metrics()
    # One budget in Redis: 4 requests in the minute, whichever worker answered them.
    assert statuses.count(200) == 4
    assert statuses.count(429) == 6
    assert sample(samples, "frontend_rate_limited_total", limit="requests") >= 6


async def test_the_concurrency_bound_holds_across_workers(
    slow_echo: TritonServer, tmp_path: Path
) -> None:
    # One sequence per worker; 60 words at 50 ms keep each admitted stream 3 s.
    body = {"prompt": " ".join(["word"] * 60), "max_tokens": 60, "stream": True}
    async with (
        workers(slow_echo, tmp_path, max_concurrent_requests="2") as frontend,
        held_streams(frontend) as streams,
    ):
        statuses = await asyncio.gather(*(streams.start(body) for _ in range(6)))
        samples = await frontend.metrics()
    admitted = statuses.count(200)
    assert 1 <= admitted <= 2  # each worker holds max_concurrent_requests // workers
    assert statuses.count(503) == 6 - admitted
    assert sample(samples, "frontend_generations_in_flight") == admitted
    assert sample(samples, "frontend_rejected_requests_total", reason="overloaded") == 6 - admitted


async def test_a_worker_that_dies_is_replaced_and_its_gauges_dropped(
    slow_echo: TritonServer, tmp_path: Path
) -> None:
    # 200 words at 50 ms: each stream is held 10 s unless closed.
    body = {"prompt": " ".join(["word"] * 200), "max_tokens": 200, "stream": True}
    async with (
        workers(slow_echo, tmp_path) as frontend,
        held_streams(frontend) as streams,
    ):
        # Streams are held until each worker has one in flight.
        for _ in range(40):
            assert await streams.start(body) == 200
            in_flight = frontend.live("frontend_generations_in_flight")
            if len([pid for pid, count in in_flight.items() if count > 0]) == WORKERS:
                break
        else:
            raise AssertionError("one worker took every stream")
        victim, survivor = sorted(in_flight)
        os.kill(victim, signal.SIGKILL)
        # The supervisor starts a worker in its place.
        await wait_until(lambda: len(frontend.worker_pids() - {victim}) == WORKERS, 60)
        samples = await frontend.metrics()
        # The dead worker's streams are no longer in flight anywhere; its counts stay.
        assert sample(samples, "frontend_generations_in_flight") == in_flight[survivor]
        assert victim not in frontend.live("frontend_generations_in_flight")
        assert victim in {_pid(path) for path in frontend.metrics_dir.glob("counter_*.db")}
        async with frontend.client() as client:
            replies = [
                await client.post("/generate", json={"prompt": PROMPT, "max_tokens": 3})
                for _ in range(4)
            ]
        assert [r.status_code for r in replies] == [200] * 4


def test_workers_need_a_shared_rate_limit_storage() -> None:
    with pytest.raises(ValidationError) as refused:
        FrontendSettings(workers=2, rate_limit_rpm=10, rate_limit_storage_url="memory://")
    message = str(refused.value)
    assert "workers=2" in message
    assert "rate_limit_storage_url is memory://" in message
    # Without a limit the storage is never used; with Redis the workers share it.
    assert FrontendSettings(workers=2).workers == 2
    shared = FrontendSettings(workers=2, rate_limit_rpm=10, rate_limit_storage_url="redis://r:6379")
    assert shared.rate_limit_rpm == 10


def test_the_bound_is_divided_among_the_workers() -> None:
    settings = FrontendSettings(workers=3, max_concurrent_requests=256, max_queued_requests=10)
    assert settings.worker_max_concurrent_requests == 85
    assert settings.worker_max_queued_requests == 3
    with pytest.raises(ValidationError, match="at least the number of workers"):
        FrontendSettings(workers=4, max_concurrent_requests=3)
    # The OpenAPI document states each worker's share.
    description = create_app(settings).openapi()["info"]["description"]
    assert "divided among 3 worker processes: each takes 85 sequences" in description


def test_the_process_refuses_to_start_with_memory_storage(fast_echo: TritonServer) -> None:
    env = frontend_env(fast_echo, free_port(), rate_limit_rpm="10")
    done = subprocess.run(
        [sys.executable, "-m", "frontend"], cwd=REPO_ROOT, env=env, capture_output=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert b"rate_limit_storage_url is memory://" in done.stderr
    assert b"LLM_FRONTEND_WORKERS" in done.stderr


def test_stale_metric_files_are_removed_at_start(tmp_path: Path) -> None:
    from frontend.server import worker_metrics_dir

    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"old")
    settings = FrontendSettings(workers=2, metrics_dir=directory)
    with worker_metrics_dir(settings) as used:
        assert used == directory
        assert list(directory.iterdir()) == []
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") == previous
    with worker_metrics_dir(FrontendSettings(workers=2)) as temporary:
        assert temporary.is_dir()
    assert not temporary.exists()  # a directory of its own is removed at the end

