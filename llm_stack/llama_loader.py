"""Loading a GGUF file through llama.cpp, quietly: shared by the CPU engine and the tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_stack import llama_logging


def load_model(path: Path, *, vocab_only: bool = False) -> tuple[Any, Any]:
    """The `llama_cpp` module and the loaded model (NULL when llama.cpp cannot read the file).

    `vocab_only` reads the vocabulary and metadata but no weights.
    """
    import llama_cpp as lc

    llama_logging.install(lc)
    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.vocab_only = vocab_only
    params.progress_callback = llama_logging.silent_progress(lc)
    return lc, lc.llama_model_load_from_file(str(path).encode(), params)
