"""The ensemble's wire contract, for every Triton client of this project.

Tensor names, types and shapes of the `ensemble` model's inputs and outputs (NVIDIA
tensorrtllm_backend's names), which inputs are optional, the stream request, the
engine's `stop` request and the header that makes errors carry gRPC status codes. The
frontend, `llm_stack.ensemble_client`, the benchmarks and the tests build requests and
read responses only through this module; `tests/llm_stack/test_ensemble_contract.py`
holds it to `model_repository/ensemble/config.pbtxt`.

Absent optional inputs take the engine's defaults (`llm_stack.engine.base.SamplingParams`);
the frontend's own defaults for clients (e.g. its temperature) are the frontend's rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient

ENSEMBLE_MODEL: Final = "ensemble"
# The decoupled engine step: the target of NVIDIA's `stop` request.
ENGINE_MODEL: Final = "tensorrt_llm"
# Errors come inside the stream (an error message, then the stream ends), never with
# Triton's `triton_grpc_error: true` header: with it, Triton 2.51 ends each failed stream
# through a cancellation it then reports as unexpected ("HandleCancellation called even
# when the context was not cancelled"), and after a few hundred of them tritonserver dies
# with SIGSEGV in its gRPC handler. The error's JSON code says what a status would.


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of the contract: Triton's data type, the numpy type, a list or a value."""

    datatype: str
    dtype: type[np.generic]
    is_list: bool = False
    optional: bool = True


_BYTES = TensorSpec("BYTES", np.object_)
_WORDS = TensorSpec("BYTES", np.object_, is_list=True)
_INT32 = TensorSpec("INT32", np.int32)
_UINT64 = TensorSpec("UINT64", np.uint64)
_FP32 = TensorSpec("FP32", np.float32)
_BOOL = TensorSpec("BOOL", np.bool_)


def _required(spec: TensorSpec) -> Any:
    return dataclasses.field(metadata={"tensor": dataclasses.replace(spec, optional=False)})


def _input(spec: TensorSpec) -> Any:
    return dataclasses.field(default=None, metadata={"tensor": spec})


@dataclass(frozen=True, slots=True)
class EnsembleRequest:
    """One ensemble request; each field is the input tensor of its name (None: not sent).

    With `messages` (a JSON array of {"role", "content"}), preprocessing renders the
    model's chat template and `text_input` is sent empty.
    """

    text_input: str = _required(_BYTES)
    max_tokens: int = _required(_INT32)
    stream: bool | None = _input(_BOOL)
    messages: str | None = _input(_BYTES)
    temperature: float | None = _input(_FP32)
    top_p: float | None = _input(_FP32)
    top_k: int | None = _input(_INT32)
    seed: int | None = _input(_UINT64)
    repetition_penalty: float | None = _input(_FP32)
    presence_penalty: float | None = _input(_FP32)
    frequency_penalty: float | None = _input(_FP32)
    min_tokens: int | None = _input(_INT32)
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

    def inputs(self) -> list[grpcclient.InferInput]:
        """The input tensors (batch dimension 1) of the fields that are set."""
        tensors = []
        for name, spec in INPUTS.items():
            value = getattr(self, name)
            if value is None or (spec.is_list and not value):
                continue
            tensors.append(_tensor(name, spec, value))
        return tensors


INPUTS: Final[dict[str, TensorSpec]] = {
    f.name: f.metadata["tensor"] for f in dataclasses.fields(EnsembleRequest)
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
OUTPUTS: Final[dict[str, TensorSpec]] = {
    TEXT_OUTPUT: dataclasses.replace(_WORDS, optional=False),
    NUM_INPUT_TOKENS: dataclasses.replace(_INT32, optional=False),
    NUM_OUTPUT_TOKENS: dataclasses.replace(_INT32, optional=False),
    NUM_CACHED_TOKENS: dataclasses.replace(_INT32, optional=False),
    FINISH_REASON: dataclasses.replace(_BYTES, optional=False),
}
# finish_reason's values; "" until the last response.
FINISH_STOP: Final = "stop"
FINISH_LENGTH: Final = "length"
FINISH_CANCELLED: Final = "cancelled"


@dataclass(frozen=True, slots=True)
class EnsembleResponse:
    """What one response of the ensemble carries (outputs not asked for read as empty)."""

    text: str
    num_input_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    finish_reason: str  # "" until the last response
    model_version: str
    final: bool  # Triton's last response of the request


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
    )


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
