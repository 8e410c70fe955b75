"""Pure helpers of the tensorrt_llm model: input tensors → engine request, deltas → outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from llm_stack.engine.base import (
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
)
from llm_stack.word_lists import decode_word_list

Tensors = Mapping[str, npt.NDArray[Any] | None]
T = TypeVar("T")

# Our input name → the ensemble's, so errors name what the client sent.
CLIENT_NAMES = {
    "request_output_len": "max_tokens",
    "runtime_top_k": "top_k",
    "runtime_top_p": "top_p",
    "streaming": "stream",
    "stop_words_list": "stop_words",
    "bad_words_list": "bad_words",
}


def _scalar(tensors: Tensors, name: str, cast: Callable[[Any], T], default: T) -> T:
    value = tensors.get(name)
    if value is None or value.size == 0:
        return default
    if value.size != 1:
        raise InvalidRequestError(
            f"{CLIENT_NAMES.get(name, name)} must hold one value, got shape {list(value.shape)}"
        )
    return cast(value.reshape(-1)[0].item())


def _words(tensors: Tensors, name: str) -> tuple[tuple[int, ...], ...]:
    value = tensors.get(name)
    if value is None:
        return ()
    try:
        return decode_word_list(value)
    except ValueError as exc:
        raise InvalidRequestError(f"{CLIENT_NAMES.get(name, name)}: {exc}") from None


def build_request(
    request_id: str, tensors: Tensors, max_input_len: int
) -> tuple[GenerationRequest, bool]:
    """The engine request and whether to stream; raises InvalidRequestError naming the field."""
    ids_array = tensors.get("input_ids")
    if ids_array is None:
        raise InvalidRequestError("input_ids is required")
    ids: Sequence[int] = ids_array.reshape(-1).tolist()
    length = _scalar(tensors, "input_lengths", int, len(ids))
    if not 0 < length <= len(ids):
        raise InvalidRequestError(f"input_lengths is {length}, but input_ids has {len(ids)} ids")
    ids = ids[:length]
    if len(ids) > max_input_len:
        raise InvalidRequestError(
            f"prompt has {len(ids)} tokens, exceeds the limit of {max_input_len}"
        )
    if tensors.get("request_output_len") is None:
        raise InvalidRequestError("max_tokens is required")
    max_tokens = _scalar(tensors, "request_output_len", int, 0)
    if max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be >= 1, got {max_tokens}")
    seed = tensors.get("seed")
    sampling = SamplingParams(
        max_tokens=max_tokens,
        temperature=_scalar(tensors, "temperature", float, 1.0),
        top_k=_scalar(tensors, "runtime_top_k", int, 0),
        top_p=_scalar(tensors, "runtime_top_p", float, 1.0),
        repetition_penalty=_scalar(tensors, "repetition_penalty", float, 1.0),
        presence_penalty=_scalar(tensors, "presence_penalty", float, 0.0),
        frequency_penalty=_scalar(tensors, "frequency_penalty", float, 0.0),
        min_tokens=_scalar(tensors, "min_tokens", int, 0),
        seed=_scalar(tensors, "seed", int, 0) if seed is not None else None,
    )
    end_id = _scalar(tensors, "end_id", int, -1)
    request = GenerationRequest(
        request_id=request_id,
        prompt_ids=tuple(int(t) for t in ids),
        sampling=sampling,
        stop_sequences=_words(tensors, "stop_words_list"),
        bad_sequences=_words(tensors, "bad_words_list"),
        end_id=end_id if end_id >= 0 else None,
    )
    return request, _scalar(tensors, "streaming", bool, False)


def response_arrays(
    output_ids: Sequence[int], offset: int, delta: TokenDelta
) -> dict[str, npt.NDArray[Any]]:
    """Output tensors (with the batch dim) for one response."""
    return {
        "output_ids": np.array([[list(output_ids)]], dtype=np.int32).reshape(1, 1, -1),
        "sequence_length": np.array([[len(output_ids)]], dtype=np.int32),
        "output_offset": np.array([[offset]], dtype=np.int32),
        "num_input_tokens": np.array([[delta.num_input_tokens]], dtype=np.int32),
        "num_output_tokens": np.array([[delta.num_output_tokens]], dtype=np.int32),
        "finish_reason": np.array(
            [[(delta.finish_reason.value if delta.finish_reason else "").encode()]], dtype=object
        ),
    }
