"""An asyncio gRPC client for the ensemble, used by the benchmarks and the tests."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import tritonclient.grpc.aio as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc._utils import get_error_grpc
from tritonclient.utils import InferenceServerException

from llm_stack.ensemble_contract import (
    EnsembleRequest,
    EnsembleTokenLogprob,
    has_outputs,
    parse_response,
    stream_request,
)


@dataclass
class Result:
    """Responses of one ensemble call (of its first sequence; `sequences` has each one's)."""

    chunks: list[str] = field(default_factory=list)
    finish_reason: str = ""
    num_input_tokens: int = 0
    num_output_tokens: int = 0
    num_cached_tokens: int = 0
    logprobs: list[EnsembleTokenLogprob] = field(default_factory=list)
    error: InferenceServerException | None = None
    # With num_return_sequences > 1: every sequence's own result, by sequence_index.
    sequences: dict[int, Result] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


async def generate(
    client: grpcclient.InferenceServerClient,
    prompt: str,
    max_tokens: int,
    request_id: str = "",
    stream_timeout: float = 120.0,
    outputs: Sequence[str] | None = None,
    **options: Any,
) -> Result:
    """Call the ensemble (streaming or not) and collect every response (or only `outputs`).

    `options` are the other fields of `EnsembleRequest` (stream, temperature, stop_words, ...).
    """
    request = EnsembleRequest(text_input=prompt, max_tokens=max_tokens, **options)
    return await call(
        client, request, request_id=request_id, stream_timeout=stream_timeout, outputs=outputs
    )


async def call(
    client: grpcclient.InferenceServerClient,
    request: EnsembleRequest,
    request_id: str = "",
    stream_timeout: float = 120.0,
    outputs: Sequence[str] | None = None,
) -> Result:
    """Send one ensemble request on its own stream and collect every response."""
    result = Result()
    responses = client.stream_infer(
        one_request(request, request_id, outputs),
        stream_timeout=stream_timeout,
    )
    try:
        async for response, error in responses:
            if error is not None:
                result.error = error
            elif not collect(result, response):
                continue
            # Read on to the stream's end (its OK status) rather than drop it open: an
            # open call is cancelled when it is collected, and Triton 2.51 keeps a stream
            # cancelled after its final response, with the ensemble model, until its exit
            # timeout.
            with contextlib.suppress(grpc.RpcError):  # the end is all that is awaited
                async for _rest in responses:
                    pass
            break
    except InferenceServerException as exc:
        result.error = exc
    except grpc.RpcError as exc:
        result.error = get_error_grpc(exc)
    return result


async def one_request(
    request: EnsembleRequest, request_id: str = "", outputs: Sequence[str] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The request stream `stream_infer` takes: this one request."""
    yield stream_request(request, request_id, outputs)


def collect(result: Result, response: Any) -> bool:
    """Add one response's outputs to `result`; True when it was the final response."""
    parsed = parse_response(response)
    if has_outputs(response):
        index = parsed.sequence_index
        targets = [result.sequences.setdefault(index, Result())]
        if index == 0:
            targets.append(result)
        for target in targets:
            target.chunks.append(parsed.text)
            target.finish_reason = parsed.finish_reason or target.finish_reason
            target.num_input_tokens = parsed.num_input_tokens or target.num_input_tokens
            target.num_output_tokens = parsed.num_output_tokens or target.num_output_tokens
            target.num_cached_tokens = parsed.num_cached_tokens or target.num_cached_tokens
            target.logprobs.extend(parsed.logprobs)
    return parsed.final


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
