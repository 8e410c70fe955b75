"""An asyncio gRPC client for the ensemble, used by the benchmark and the tests."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc._utils import get_error_grpc
from tritonclient.utils import InferenceServerException

# Errors on a stream then end it with their gRPC status code (INVALID_ARGUMENT, ...)
# instead of an in-band message without one (Triton >= 24.08).
GRPC_ERROR_HEADERS = {"triton_grpc_error": "true"}

_TYPES = {np.int32: "INT32", np.float32: "FP32", np.uint64: "UINT64", np.bool_: "BOOL"}


@dataclass
class Result:
    """Responses of one ensemble call."""

    chunks: list[str] = field(default_factory=list)
    finish_reason: str = ""
    num_input_tokens: int = 0
    num_output_tokens: int = 0
    error: InferenceServerException | None = None

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def ensemble_inputs(prompt: str, max_tokens: int, **options: Any) -> list[grpcclient.InferInput]:
    """Inputs for `ensemble`; options are tensor names (stream, temperature, stop_words, ...)."""
    tensors: dict[str, np.ndarray[Any, Any]] = {
        "text_input": np.array([[prompt.encode()]], dtype=object),
        "max_tokens": np.array([[max_tokens]], dtype=np.int32),
    }
    kinds = {
        "stream": np.bool_, "temperature": np.float32, "top_p": np.float32, "top_k": np.int32,
        "seed": np.uint64, "repetition_penalty": np.float32, "end_id": np.int32,
        "min_tokens": np.int32,
    }  # fmt: skip
    for name, value in options.items():
        if name in ("stop_words", "bad_words"):
            tensors[name] = np.array([[w.encode() for w in value]], dtype=object)
        else:
            tensors[name] = np.array([[value]], dtype=kinds[name])
    inputs = []
    for name, array in tensors.items():
        dtype = "BYTES" if array.dtype == object else _TYPES[array.dtype.type]
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


async def request_stream(
    inputs: list[grpcclient.InferInput],
    model: str = "ensemble",
    request_id: str = "",
    outputs: Sequence[str] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """One request for `stream_infer`; `outputs` limits what comes back (default: all)."""
    requested = None if outputs is None else [grpcclient.InferRequestedOutput(o) for o in outputs]
    yield {
        "model_name": model,
        "inputs": inputs,
        "outputs": requested,
        "request_id": request_id,
        "enable_empty_final_response": True,
    }


async def generate(
    client: grpcclient.InferenceServerClient,
    prompt: str,
    max_tokens: int,
    request_id: str = "",
    stream_timeout: float = 120.0,
    outputs: Sequence[str] | None = None,
    **options: Any,
) -> Result:
    """Call the ensemble (streaming or not) and collect every response (or only `outputs`)."""
    inputs = ensemble_inputs(prompt, max_tokens, **options)
    return await call(
        client, inputs, request_id=request_id, stream_timeout=stream_timeout, outputs=outputs
    )


async def call(
    client: grpcclient.InferenceServerClient,
    inputs: list[grpcclient.InferInput],
    request_id: str = "",
    stream_timeout: float = 120.0,
    outputs: Sequence[str] | None = None,
) -> Result:
    """Send prepared ensemble inputs on one stream and collect every response."""
    result = Result()
    responses = client.stream_infer(
        request_stream(inputs, request_id=request_id, outputs=outputs),
        stream_timeout=stream_timeout,
        headers=GRPC_ERROR_HEADERS,
    )
    try:
        async for response, error in responses:
            if error is not None:
                result.error = error
                break
            collect(result, response)
            if response.get_response().parameters["triton_final_response"].bool_param:
                break
    except InferenceServerException as exc:
        result.error = exc
    except grpc.RpcError as exc:
        result.error = get_error_grpc(exc)
    return result


def collect(result: Result, response: Any) -> None:
    """Add one response's outputs to `result` (an empty final response has none)."""
    text = response.as_numpy("text_output")
    if text is not None:
        result.chunks.append(text.reshape(-1)[0].decode())
    finish = response.as_numpy("finish_reason")
    if finish is not None:
        result.finish_reason = finish.reshape(-1)[0].decode()
    for name in ("num_input_tokens", "num_output_tokens"):
        count = response.as_numpy(name)
        if count is not None:
            setattr(result, name, int(count.reshape(-1)[0]))


def metric_value(metrics_url: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 if absent)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
        body = resp.read().decode()
    for family in text_string_to_metric_families(body):
        # The parser names a counter's samples `<family>_total` even where the exporter
        # does not (Triton's nv_inference_request_success): accept the exposed name too.
        names = {name} if family.type != "counter" else {name, name + "_total"}
        for sample in family.samples:
            if sample.name in names and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
