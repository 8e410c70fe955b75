"""Shutdown of the real server process: requests outliving the graceful timeout end quietly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from launcher.triton_server import TritonServer
from tests.conftest import REPO_ROOT, free_port
from tests.frontend.conftest import sample

pytestmark = pytest.mark.integration

# 50 ms a word (slow_echo): a generation of this many words runs far past the timeout.
WORDS = 1000
GRACEFUL_S = 1


@dataclass(frozen=True)
class FrontendProcess:
    url: str
    log: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def frontend_process(slow_echo: TritonServer, tmp_path: Path) -> Iterator[FrontendProcess]:
    """`python -m frontend` on slow_echo with a 1 s graceful shutdown."""
    port = free_port()
    log = tmp_path / "frontend.log"
    env = {
        **os.environ,
        "LLM_FRONTEND_TRITON_URLS": slow_echo.grpc_url,
        "LLM_FRONTEND_MODEL_NAME": "echo",
        "LLM_FRONTEND_ABORT_MODEL": "",
        "LLM_FRONTEND_PORT": str(port),
        "LLM_FRONTEND_GRACEFUL_SHUTDOWN_S": str(GRACEFUL_S),
        "LLM_FRONTEND_MAX_TOKENS_LIMIT": str(WORDS),
        "LLM_FRONTEND_LOG_LEVEL": "info",
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "frontend"], cwd=REPO_ROOT, env=env, stderr=sink, stdout=sink
        )
    try:
        yield FrontendProcess(f"http://127.0.0.1:{port}", log, process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/health/ready")).status_code == 200
    except httpx.TransportError:
        return False


async def _in_flight(client: httpx.AsyncClient) -> float:
    response = await client.get("/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    return sample(samples, "frontend_generations_in_flight")


async def _stream_lines(client: httpx.AsyncClient, body: dict[str, Any]) -> AsyncIterator[str]:
    async with client.stream("POST", "/generate", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            yield line


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_requests_cut_by_shutdown_end_quietly(frontend_process: FrontendProcess) -> None:
    url, log = frontend_process.url, frontend_process.log
    prompt = "word " * WORDS
    body = {"prompt": prompt, "max_tokens": WORDS, "temperature": 0.0}
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        ready = False
        for _ in range(600):
            if ready := await _ready(client):
                break
            await asyncio.sleep(0.05)
        assert ready, log.read_text()

        plain = asyncio.create_task(client.post("/generate", json=body))
        streamed: list[str] = []
        first_delta = asyncio.Event()

        async def read_stream() -> None:
            async for line in _stream_lines(client, {**body, "stream": True}):
                streamed.append(line)
                if line.startswith("data: "):
                    first_delta.set()

        stream = asyncio.create_task(read_stream())
        await asyncio.wait_for(first_delta.wait(), 60)
        in_flight = 0.0
        for _ in range(600):
            if (in_flight := await _in_flight(client)) == 2:
                break
            await asyncio.sleep(0.05)
        assert in_flight == 2

        frontend_process.process.send_signal(signal.SIGTERM)
        refused = await plain
        await stream
    # uvicorn ends by re-raising the signal it stopped on, as a process killed by it would.
    assert await asyncio.to_thread(frontend_process.process.wait, 60) == -signal.SIGTERM

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["type"] == "shutting_down"
    assert refused.headers["Retry-After"] == "1"
    assert "data: [DONE]" not in streamed  # cut short: a client sees it did not finish

    text = log.read_text()
    assert "Exception in ASGI application" not in text
    assert "Traceback" not in text
    records = _records(log)
    access = [r for r in records if r["logger"] == "frontend.access"]
    statuses = sorted(r["status"] for r in access if r["route"] == "/generate")
    assert statuses == [200, 503]  # the stream had started; no 500 for either
    assert [r for r in records if r["level"] in ("error", "critical")] == []
    cut = [r for r in records if "cut short" in r["message"]]
    assert [r["level"] for r in cut] == ["warning", "warning"]
