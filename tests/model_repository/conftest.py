"""The Triton models' pure helpers import each other by bare name, as Triton loads them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import GgufTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]

for _model_dir in ("tensorrt_llm/1", "preprocessing/1"):
    _path = str(REPO_ROOT / "model_repository" / _model_dir)
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture(scope="session")
def gguf_tokenizer() -> GgufTokenizer:
    """The default model's vocabulary (the preprocessing model's tokenizer)."""
    return GgufTokenizer(resolve_model_path("gemma3-270m"))

