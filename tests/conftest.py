"""Session fixtures: one real Triton on the project's model repository, on free ports."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpcclient

from launcher.triton_server import TritonPorts, TritonServer, free_port, wheel_install
from llm_stack.tool_calls import FunctionTool

# The tools the tool-calling tests offer the model, through the engine and through the
# frontend: their strings are bounded, so a call the grammar forces always ends within the
# tests' max_tokens.
TEST_TOOLS = (
    FunctionTool(
        "get_weather",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"enum": ["C", "F"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "The weather in a city",
    ),
    FunctionTool(
        "get_time",
        {
            "type": "object",
            "properties": {
                "zone": {"type": "string", "maxLength": 12},
                "hours24": {"type": "boolean"},
            },
            "required": ["zone", "hours24"],
            "additionalProperties": False,
        },
        "The time in a time zone",
    ),
)

REPO_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["free_port"]


@pytest.fixture(scope="session")
def triton_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("triton")


@contextlib.contextmanager
def project_triton(work_dir: Path) -> Iterator[TritonServer]:
    """A real Triton serving model_repository/ (CPU engine, default model), ready, on free
    ports, its backend directory and log in `work_dir`; stopped on exit."""
    server = TritonServer(
        install=wheel_install(work_dir),
        model_repository=REPO_ROOT / "model_repository",
        ports=TritonPorts.free(),
        log_file=work_dir / "triton.log",
        extra_env={"LLM_STACK_TEST": "1", **_passthrough_env()},
    )
    server.start()
    try:
        server.wait_ready("ensemble", timeout=300)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def triton(triton_work_dir: Path) -> Iterator[TritonServer]:
    """The session's real Triton (see `project_triton`)."""
    with project_triton(triton_work_dir) as server:
        yield server


@pytest.fixture
async def client(triton: TritonServer) -> AsyncIterator[grpcclient.InferenceServerClient]:
    """A gRPC client of the session's Triton."""
    c = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        yield c
    finally:
        await c.close()


def _passthrough_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("LLM_STACK_")}
