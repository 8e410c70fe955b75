"""Route llama.cpp's log output into Python logging (it prints everything to stderr)."""


from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger("llama_cpp")

_GGML_LOG_LEVEL_ERROR = 4
_callback: Any = None  # must outlive every llama.cpp call that may log
_progress: Any = None


def install(lc: Any) -> None:
    """Forward errors to the `llama_cpp` logger; drop the rest (load chatter, warnings)."""
    global _callback
    if _callback is not None:
        return

    @lc.llama_log_callback  # type: ignore[untyped-decorator]
    def forward(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if level >= _GGML_LOG_LEVEL_ERROR and text:
            log.error("%s", text.decode("utf-8", errors="replace").rstrip())

    _callback = forward
    lc.llama_log_set(_callback, ctypes.c_void_p(0))


def silent_progress(lc: Any) -> Any:
    """A model-load progress callback that prints nothing (the default prints dots)."""
    global _progress
    if _progress is None:
        _progress = lc.llama_progress_callback(lambda _p, _d: True)
    return _progress
