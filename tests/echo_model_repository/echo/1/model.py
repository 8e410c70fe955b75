"""Echo model: the ensemble's request/response contract with no language model behind it.

A "token" is one whitespace-delimited word of the prompt (with its trailing space). The
completion repeats the prompt's words, at most `max_tokens` of them: finish reason
"stop" when the whole prompt was echoed or a stop word was met (the stop word is not
returned), "length" when `max_tokens` cut it short. With `stream` true every word is one
response; otherwise one response carries the whole completion.

Environment (read once at load): LLM_STACK_ECHO_TOKEN_DELAY_S, seconds between words
(default 0), so tests can keep a request in flight; LLM_STACK_ECHO_MAX_INPUT_TOKENS, the
prompt limit (default 4096), over which the request fails with INVALID_ARG like the
real preprocessing does, its errors coded as the real models code them.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from llm_stack.model_errors import ErrorCode, ModelError, error_response

_WORD = re.compile(r"\S+\s*")


def _words(prompt: str) -> list[str]:
    return _WORD.findall(prompt) or [prompt]


def _scalar(request: Any, name: str, default: Any) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return tensor.as_numpy().reshape(-1)[0]


def _strings(request: Any, name: str) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    values = tensor.as_numpy().reshape(-1)
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _response(text: str, n_in: int, n_out: int, finish: str) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=object)),
            pb_utils.Tensor("num_input_tokens", np.array([[n_in]], dtype=np.int32)),
            pb_utils.Tensor("num_output_tokens", np.array([[n_out]], dtype=np.int32)),
            pb_utils.Tensor("finish_reason", np.array([[finish.encode("utf-8")]], dtype=object)),
        ]
    )


class TritonPythonModel:
    """Decoupled echo; `execute` is a coroutine so many requests run at once."""

    def initialize(self, args: dict[str, Any]) -> None:
        self._delay = float(os.environ.get("LLM_STACK_ECHO_TOKEN_DELAY_S", "0"))
        self._max_input = int(os.environ.get("LLM_STACK_ECHO_MAX_INPUT_TOKENS", "4096"))
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute(self, requests: list[Any]) -> None:
        for request in requests:
            task = asyncio.ensure_future(self._serve(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            raw = _scalar(request, "text_input", b"")
            prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            max_tokens = int(_scalar(request, "max_tokens", 16))
            stream = bool(_scalar(request, "stream", False))
            stops = set(_strings(request, "stop_words"))
            words = _words(prompt)
            n_in = len(words)
            if n_in > self._max_input:
                message = f"prompt has {n_in} tokens, exceeds the limit of {self._max_input}"
                values = {"tokens": n_in, "limit": self._max_input}
                error = ModelError(ErrorCode.PROMPT_TOO_LONG, message, "text_input", values)
                sender.send(error_response(pb_utils, error), flags=final)
                return
            if max_tokens < 1:
                message = f"max_tokens must be >= 1, got {max_tokens}"
                error = ModelError(ErrorCode.INVALID_ARGUMENT, message, "max_tokens")
                sender.send(error_response(pb_utils, error), flags=final)
                return
            out: list[str] = []
            finish = "stop"
            for word in words:
                if word.strip() in stops:
                    break
                if len(out) == max_tokens:
                    finish = "length"
                    break
                if self._delay:
                    await asyncio.sleep(self._delay)
                if sender.is_cancelled():
                    finish = "cancelled"
                    break
                out.append(word)
                if stream:
                    sender.send(_response(word, n_in, len(out), ""))
            text = "" if stream else "".join(out)
            sender.send(_response(text, n_in, len(out), finish), flags=final)
        except Exception as exc:  # every failure must still end the request's stream
            error = pb_utils.TritonError(f"echo failed: {exc}")
            sender.send(pb_utils.InferenceResponse(error=error), flags=final)
