"""The Triton release compose pins is the one whose TensorRT-LLM the GPU engine is
recorded from and checked against."""

from __future__ import annotations

import json
import re
from pathlib import Path

from llm_stack.engine.trtllm import CHECKED_VERSION

REPO = Path(__file__).resolve().parents[2]
SURFACE = REPO / "tests" / "llm_stack" / "engine" / "trtllm" / "api_surface.json"


def test_compose_pins_the_triton_release_of_the_recorded_tensorrt_llm() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    pins = re.findall(r"\$\{TRITON_VERSION:-(\d\d\.\d\d)\}", compose)
    recorded = json.loads(SURFACE.read_text())
    assert pins == [recorded["triton_release"]]
    assert recorded["tensorrt_llm_version"] == CHECKED_VERSION
    # The comment beside the pin names the same TensorRT-LLM release.
    assert f"TensorRT-LLM {CHECKED_VERSION}" in compose


def test_the_readme_names_the_pinned_release() -> None:
    readme = (REPO / "README.md").read_text()
    recorded = json.loads(SURFACE.read_text())
    assert f"tritonserver:{recorded['triton_release']}-trtllm-python-py3" in readme
    assert f"TensorRT-LLM {CHECKED_VERSION}" in readme
