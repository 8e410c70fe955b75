"""The container health check asks the real Triton's engine model, over HTTP."""

from __future__ import annotations

import pytest

from launcher.triton_server import TritonServer, free_port
from llm_stack.engine_probe import engine_health, main

pytestmark = pytest.mark.integration


def test_the_engine_of_the_session_triton_is_healthy(triton: TritonServer) -> None:
    assert engine_health(triton.http_url, "tensorrt_llm", timeout_s=30.0) is None
    assert main(["--url", triton.http_url, "--timeout", "30"]) == 0


def test_a_model_that_cannot_answer_is_unhealthy(
    triton: TritonServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The ensemble has no health_check input: Triton refuses the request, as it refuses
    # every request to an engine model that is gone.
    assert main(["--url", triton.http_url, "--model", "ensemble", "--timeout", "30"]) == 1
    assert "engine ensemble cannot generate: HTTP 400" in capsys.readouterr().err


def test_a_triton_that_does_not_answer_is_unhealthy() -> None:
    reason = engine_health(f"http://127.0.0.1:{free_port()}", "tensorrt_llm", timeout_s=5.0)
    assert reason is not None
    assert reason.startswith("no answer:")
