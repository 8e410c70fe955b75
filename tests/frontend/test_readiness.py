"""Readiness through the real Triton: ready means the ensemble is ready and the engine
model answers its health check, so a dead engine takes the frontend out of service even
while Triton still calls the ensemble ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from frontend.app import create_app
from launcher.triton_server import TritonServer
from tests.conftest import project_triton
from tests.frontend.conftest import serve, settings_for

pytestmark = pytest.mark.integration

# How long a test waits for readiness to change: far beyond the probe's interval.
CHANGE_BOUND_S = 60.0


async def test_ready_needs_the_engine_models_health_check(
    triton: TritonServer, caplog: pytest.LogCaptureFixture
) -> None:
    ready = settings_for(triton.grpc_url)
    async with serve(create_app(ready)) as app, app.client() as client:
        assert (await client.get("/health/ready")).status_code == 200
    # The ensemble is as ready as before; the health check goes to a model Triton lacks.
    unchecked = settings_for(triton.grpc_url, abort_model="no_such_engine")
    with caplog.at_level(logging.WARNING, logger="frontend.triton_client"):
        async with serve(create_app(unchecked)) as app, app.client() as client:
            response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["endpoints"] == {triton.grpc_url: False}
    [why] = {r.getMessage() for r in caplog.records if "out of rotation" in r.getMessage()}
    assert "no_such_engine" in why


@pytest.fixture
def doomed_triton(tmp_path: Path) -> Iterator[TritonServer]:
    """A real Triton of this test's own (the project's models), whose engine gets killed."""
    with project_triton(tmp_path) as server:
        yield server


def model_processes(server_pid: int, model: str) -> list[int]:
    """The Python backend stubs `server_pid` runs for `model` (its children naming it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        parent = re.search(r"^PPid:\s+(\d+)$", status, re.MULTILINE)
        if parent and int(parent.group(1)) == server_pid and any(
            f"/{model}/".encode() in argument for argument in arguments
        ):
            found.append(int(entry.name))
    return found


async def wait_for_status(client: httpx.AsyncClient, path: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + CHANGE_BOUND_S
    while (response := await client.get(path)).status_code != status:
        assert time.monotonic() < deadline, f"{path} never answered {status}"
        await asyncio.sleep(0.1)
    return response


async def test_a_killed_engine_takes_the_frontend_out_of_service(
    doomed_triton: TritonServer,
) -> None:
    assert doomed_triton.pid is not None
    settings = settings_for(doomed_triton.grpc_url)
    body = {"prompt": "Hello", "max_tokens": 2}
    async with serve(create_app(settings)) as app, app.client() as client:
        assert (await client.get("/health/ready")).status_code == 200
        assert (await client.post("/generate", json=body)).status_code == 200
        [engine] = model_processes(doomed_triton.pid, "tensorrt_llm")
        os.kill(engine, signal.SIGKILL)
        not_ready = await wait_for_status(client, "/health/ready", 503)
        # Triton itself still says the ensemble is ready: only the health check can tell.
        ensemble_ready_in_triton = doomed_triton.is_ready("ensemble")
        refused = await client.post("/generate", json=body)
    assert not_ready.json()["endpoints"] == {doomed_triton.grpc_url: False}
    assert refused.status_code == 503
    assert refused.json()["error"]["type"] == "model_unavailable"
    assert ensemble_ready_in_triton
