"""The ensemble's wire contract, for every Triton client of this project.

Tensor names, types and shapes of the `ensemble` model's inputs and outputs (NVIDIA
tensorrtllm_backend's names), which inputs are optional, the stream request, the
engine's `stop` request and the header that makes errors carry gRPC status codes. The
frontend, `llm_stack.ensemble_client`, the benchmarks and the tests build requests and
read responses only through this module; `tests/llm_stack/test_ensemble_contract.py`
holds it to `model_repository/ensemble/config.pbtxt`.

The sampling inputs (temperature, top_k, ...) are declared once, with their bounds and
the engine inputs they become, in `llm_stack.sampling_contract`; `EnsembleRequest` takes
them as `SamplingInputs` fields. Absent optional inputs take the engine's defaults
(`llm_stack.engine.base.SamplingParams`); the frontend's own defaults for clients (e.g.
its temperature) are the frontend's rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient

from llm_stack.sampling_contract import INT32, MAX_TOKENS, SamplingInputs, TensorSpec

ENSEMBLE_MODEL: Final = "ensemble"
# The most likeliest alternatives per token `num_top_log_probs` may ask for (OpenAI chat's
# top_logprobs limit; the engines hold requests to it too).
MAX_NUM_TOP_LOG_PROBS: Final = 20
# The decoupled engine step: the target of NVIDIA's `stop` request.
ENGINE_MODEL: Final = "tensorrt_llm"
# Errors come inside the stream (an error message, then the stream ends), never with
# Triton's `triton_grpc_error: true` header: with it, Triton 2.51 ends each failed stream
# through a cancellation it then reports as unexpected ("HandleCancellation called even
# when the context was not cancelled"), and after a few hundred of them tritonserver dies
# with SIGSEGV in its gRPC handler. The error's JSON code says what a status would.


_BYTES = TensorSpec("BYTES", np.object_)
_WORDS = TensorSpec("BYTES", np.object_, dims=(-1,))
_INT32 = INT32
_BOOL = TensorSpec("BOOL", np.bool_)


def _required(spec: TensorSpec) -> Any:
    return dataclasses.field(metadata={"tensor": dataclasses.replace(spec, optional=False)})


def _input(spec: TensorSpec) -> Any:
    return dataclasses.field(default=None, metadata={"tensor": spec})


@dataclass(frozen=True, slots=True)
class EnsembleRequest(SamplingInputs):
    """One ensemble request; each field is the input tensor of its name (None: not sent),
    the sampling inputs (keyword-only) included.

    With `messages` (a JSON array of {"role", "content"}, an assistant's `tool_calls` and
    a tool message's `tool_call_id` as OpenAI's chat has them) and `tools`, preprocessing
    renders the model's chat template and `text_input` is sent empty.
    """

    text_input: str = _required(_BYTES)
    max_tokens: int = _required(MAX_TOKENS.tensor)
    stream: bool | None = _input(_BOOL)
    messages: str | None = _input(_BYTES)
    # With `messages`: a JSON array of function tools (OpenAI's chat shape) that the chat
    # template lists (preprocessing's TOOLS).
    tools: str | None = _input(_BYTES)
    end_id: int | None = _input(_INT32)
    pad_id: int | None = _input(_INT32)
    stop_words: Sequence[str] | None = _input(_WORDS)
    bad_words: Sequence[str] | None = _input(_WORDS)
    return_num_input_tokens: bool | None = _input(_BOOL)
    return_num_output_tokens: bool | None = _input(_BOOL)
    # Structured output (TensorRT-LLM backend's names): "json" (any JSON object) or
    # "json_schema" with the schema as JSON text (llm_stack.guided_decoding).
    guided_decoding_guide_type: str | None = _input(_BYTES)
    guided_decoding_guide: str | None = _input(_BYTES)
    # Each output token's log-probability (TensorRT-LLM backend's name), and how many
    # likeliest alternatives per token (0..20) with theirs.
    return_log_probs: bool | None = _input(_BOOL)
    num_top_log_probs: int | None = _input(_INT32)  # 0..MAX_NUM_TOP_LOG_PROBS

    def inputs(self) -> list[grpcclient.InferInput]:
        """The input tensors (batch dimension 1) of the fields that are set."""
        tensors = []
        for name, spec in INPUTS.items():
            value = getattr(self, name)
            if value is None or (spec.is_list and not value):
                continue
            tensors.append(_tensor(name, spec, value))
        return tensors


# Its own inputs first, then the sampling inputs.
INPUTS: Final[dict[str, TensorSpec]] = {
    f.name: f.metadata["tensor"]
    for f in sorted(
        dataclasses.fields(EnsembleRequest),
        key=lambda f: f.name in {s.name for s in dataclasses.fields(SamplingInputs)},
    )
}


def _tensor(name: str, spec: TensorSpec, value: Any) -> grpcclient.InferInput:
    array: npt.NDArray[Any]
    if spec.datatype == "BYTES":
        items = list(value) if spec.is_list else [value]
        array = np.array([[_utf8(v) for v in items]], dtype=np.object_)
    else:
        array = np.array([[value]], dtype=spec.dtype)
    tensor = grpcclient.InferInput(name, list(array.shape), spec.datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _utf8(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


# The ensemble's outputs.
TEXT_OUTPUT: Final = "text_output"
NUM_INPUT_TOKENS: Final = "num_input_tokens"
NUM_OUTPUT_TOKENS: Final = "num_output_tokens"
NUM_CACHED_TOKENS: Final = "num_cached_tokens"  # prompt tokens reused from the prefix cache
FINISH_REASON: Final = "finish_reason"
SEQUENCE_INDEX: Final = "sequence_index"  # which of the n sequences a response belongs to
# With return_log_probs, one entry per token the response adds (empty otherwise): its
# log-probability, its text (UTF-8 bytes, maybe part of a character), and the likeliest
# alternatives' log-probabilities and texts, likeliest first.
OUTPUT_LOG_PROBS: Final = "output_log_probs"
OUTPUT_TOKENS: Final = "output_tokens"
TOP_LOG_PROBS: Final = "top_log_probs"
TOP_TOKENS: Final = "top_tokens"
OUTPUTS: Final[dict[str, TensorSpec]] = {
    TEXT_OUTPUT: dataclasses.replace(_WORDS, optional=False),
    NUM_INPUT_TOKENS: dataclasses.replace(_INT32, optional=False),
    NUM_OUTPUT_TOKENS: dataclasses.replace(_INT32, optional=False),
    NUM_CACHED_TOKENS: dataclasses.replace(_INT32, optional=False),
    FINISH_REASON: dataclasses.replace(_BYTES, optional=False),
    SEQUENCE_INDEX: dataclasses.replace(_INT32, optional=False),
    OUTPUT_LOG_PROBS: TensorSpec("FP32", np.float32, (-1,), optional=False),
    OUTPUT_TOKENS: dataclasses.replace(_WORDS, optional=False),
    TOP_LOG_PROBS: TensorSpec("FP32", np.float32, (-1, -1), optional=False),
    TOP_TOKENS: TensorSpec("BYTES", np.object_, (-1, -1), optional=False),
}
# finish_reason's values; "" until the last response.
FINISH_STOP: Final = "stop"
FINISH_LENGTH: Final = "length"
FINISH_CANCELLED: Final = "cancelled"


@dataclass(frozen=True, slots=True)
class EnsembleTokenLogprob:
    """One output token's log-probability with its text, and the likeliest alternatives
    as (text, log-probability), likeliest first. Texts are UTF-8 bytes: a token may hold
    part of a character."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


@dataclass(frozen=True, slots=True)
class EnsembleResponse:
    """What one response of the ensemble carries (outputs not asked for read as empty).

    Token counts and finish_reason are those of sequence `sequence_index`.
    """

    text: str
    num_input_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    finish_reason: str  # "" until the sequence's last response
    model_version: str
    final: bool  # Triton's last response of the request
    sequence_index: int = 0
    logprobs: tuple[EnsembleTokenLogprob, ...] = ()  # with return_log_probs: the tokens it adds


def parse_response(result: grpcclient.InferResult) -> EnsembleResponse:
    """Read one streamed response; an empty final response has no outputs."""
    response = result.get_response()
    text = result.as_numpy(TEXT_OUTPUT)
    return EnsembleResponse(
        text="" if text is None else "".join(_str(v) for v in text.reshape(-1)),
        num_input_tokens=int(_first(result, NUM_INPUT_TOKENS) or 0),
        num_output_tokens=int(_first(result, NUM_OUTPUT_TOKENS) or 0),
        num_cached_tokens=int(_first(result, NUM_CACHED_TOKENS) or 0),
        finish_reason=_str(_first(result, FINISH_REASON) or b""),
        model_version=response.model_version,
        final=response.parameters["triton_final_response"].bool_param,
        sequence_index=int(_first(result, SEQUENCE_INDEX) or 0),
        logprobs=_logprobs(result),
    )


def _logprobs(result: grpcclient.InferResult) -> tuple[EnsembleTokenLogprob, ...]:
    logprobs = result.as_numpy(OUTPUT_LOG_PROBS)
    if logprobs is None or logprobs.size == 0:
        return ()
    values = logprobs.reshape(-1).tolist()
    tokens = _rows(result, OUTPUT_TOKENS, 1, len(values)).reshape(-1).tolist()
    top_values = _rows(result, TOP_LOG_PROBS, 2, len(values))
    top_tokens = _rows(result, TOP_TOKENS, 2, len(values))
    return tuple(
        EnsembleTokenLogprob(
            token=_bytes(token),
            logprob=float(value),
            top=tuple(
                (_bytes(t), float(v))
                for t, v in zip(top_tokens[i].tolist(), top_values[i].tolist(), strict=True)
            ),
        )
        for i, (token, value) in enumerate(zip(tokens, values, strict=True))
    )


def _rows(result: grpcclient.InferResult, name: str, rank: int, count: int) -> Any:
    """Output `name` without its batch dimension, `count` rows of rank `rank`."""
    array = result.as_numpy(name)
    if array is None:
        raise ValueError(f"response has {OUTPUT_LOG_PROBS} but no {name}")
    shape = (count,) if rank == 1 else (count, -1 if array.size else 0)
    return array.reshape(shape)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def has_outputs(result: grpcclient.InferResult) -> bool:
    """False for the empty final response Triton sends after the last real one."""
    return len(result.get_response().outputs) > 0


def _first(result: grpcclient.InferResult, name: str) -> Any:
    array = result.as_numpy(name)
    if array is None or array.size == 0:
        return None
    return array.reshape(-1)[0]


def _str(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def stream_request(
    request: EnsembleRequest, request_id: str = "", outputs: Sequence[str] | None = None
) -> dict[str, Any]:
    """The keyword arguments of one `stream_infer` request to the ensemble.

    `outputs` limits what comes back (default: every output).
    """
    requested = None if outputs is None else [grpcclient.InferRequestedOutput(o) for o in outputs]
    return {
        "model_name": ENSEMBLE_MODEL,
        "inputs": request.inputs(),
        "outputs": requested,
        "request_id": request_id,
        "enable_empty_final_response": True,
    }


def stop_request(request_id: str) -> dict[str, Any]:
    """NVIDIA's `stop` request: aborts the engine sequence of `request_id`.

    Cancelling an ensemble stream does not reach its decoupled step in Triton 2.51.
    """
    stop = grpcclient.InferInput("stop", [1, 1], "BOOL")
    stop.set_data_from_numpy(np.array([[True]], dtype=np.bool_))
    return {
        "model_name": ENGINE_MODEL,
        "inputs": [stop],
        "request_id": request_id,
        "enable_empty_final_response": True,
    }
