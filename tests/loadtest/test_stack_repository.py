"""Triton loads the batching experiment's rewritten model repository as it loads the original."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from launcher.triton_server import (
    DEFAULT_MODEL_REPOSITORY,
    TritonPorts,
    TritonServer,
    wheel_install,
)
from loadtest.stack import without_dynamic_batching

pytestmark = pytest.mark.integration

MODELS = ("preprocessing", "postprocessing")


@pytest.fixture(scope="module")
def unbatched_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A Triton serving only `MODELS`, from the copy without dynamic batching."""
    tmp = tmp_path_factory.mktemp("unbatched")
    copy = without_dynamic_batching(DEFAULT_MODEL_REPOSITORY, tmp / "model_repository", MODELS)
    server = TritonServer(
        install=wheel_install(tmp / "triton"),
        model_repository=copy,
        ports=TritonPorts.free(),
        log_file=tmp / "triton.log",
        extra_env={"LLM_STACK_TEST": "1"},
        extra_args=["--model-control-mode=explicit", *(f"--load-model={m}" for m in MODELS)],
    )
    server.start()
    try:
        for model in MODELS:
            server.wait_ready(model, timeout=300)
        yield server
    finally:
        server.stop()


def served_config(server: TritonServer, model: str) -> dict[str, Any]:
    url = f"{server.http_url}/v2/models/{model}/config"
    with urllib.request.urlopen(url, timeout=10) as response:
        config: dict[str, Any] = json.load(response)
    return config


@pytest.mark.parametrize("model", MODELS)
def test_rewritten_config_loads_without_dynamic_batching_only(
    model: str, unbatched_triton: TritonServer, triton: TritonServer
) -> None:
    original = served_config(triton, model)
    rewritten = served_config(unbatched_triton, model)
    assert "dynamic_batching" in original
    assert "dynamic_batching" not in rewritten
    # Triton sees the same model otherwise: tensors, parameters, batch size, instances.
    assert rewritten == {k: v for k, v in original.items() if k != "dynamic_batching"}
