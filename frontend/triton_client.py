"""The Triton side: one gRPC aio client per endpoint, health probes, load spreading, errors.

Each endpoint keeps one channel (HTTP/2, so every call shares one connection) for the
frontend's lifetime. Calls go to the ready endpoint with the fewest calls in flight; a
background probe takes endpoints whose model is not ready out of rotation and puts them
back when they recover, and a call that finds its endpoint's connection down takes it
out at once. A call that fails to connect before any response is retried on another
endpoint; once text has been produced it is never retried.

Every call is one `ModelStreamInfer` stream on the decoupled model with a deadline.
Going away mid-call cancels the stream and, when `abort_model` is set, also sends that
model a `stop` request with the call's request id: cancelling an ensemble's stream does
not reach its decoupled step in Triton 2.51, the stop request does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from frontend.errors import (
    FrontendError,
    ModelRejectedRequestError,
    PromptTooManyTokensError,
    TritonError,
    TritonInternalError,
    TritonQueueFullError,
    TritonTimeoutError,
    TritonUnavailableError,
)
from frontend.metrics import FrontendMetrics
from frontend.validation import GenerationRequest

log = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_PROMPT_TOKENS = re.compile(
    r"(?:(?P<input>messages|text_input): )?prompt has (?P<tokens>\d+) tokens, "
    r"exceeds the limit of (?P<limit>\d+)"
)
# Chat messages the model's template refused ("messages: roles must alternate ...").
_MESSAGES_ERROR = re.compile(r"^messages\b")
# Triton names the ensemble a failed step belongs to; clients know no steps.
_ENSEMBLE_PREFIX = re.compile(r"^in ensemble '[^']*', ")
# The model's INVALID_ARG messages, for errors that arrive in-band without a code.
_USER_ERROR = re.compile(
    r"exceeds the sequence limit|\bmust (?:be|hold)\b|is required\b|already in flight"
)
_QUEUE_FULL = re.compile(r"queue is full|exceeds maximum queue size", re.IGNORECASE)
_MODEL_TIMEOUT = re.compile(r"exceeded the time limit")
_CLIENT_MESSAGE_CHARS = 300
# Triton (>= 24.08) then ends a failed stream with the error's gRPC status code instead
# of an in-band message without one.
_GRPC_ERROR_HEADERS = {"triton_grpc_error": "true"}


@dataclass(frozen=True, slots=True)
class EngineChunk:
    """One response of the model: new text and the cumulative token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "" until the last response
    model_version: str


class Endpoint:
    """One Triton gRPC endpoint and its bookkeeping."""

    def __init__(
        self, url: str, client: grpcaio.InferenceServerClient, metrics: FrontendMetrics
    ) -> None:
        self.url = url
        self.client = client
        self.in_flight = 0
        self.ready = False
        # Labelled children looked up once, not on every call.
        self.in_flight_gauge = metrics.endpoint_in_flight.labels(url)
        self.calls_counter = metrics.endpoint_calls.labels(url)
        self.up_gauge = metrics.endpoint_up.labels(url)
        self.in_flight_gauge.set(0)
        self.up_gauge.set(0)

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, ready={self.ready}, in_flight={self.in_flight})"


@dataclass(frozen=True, slots=True)
class PoolConfig:
    model_name: str
    timeout_s: float
    probe_interval_s: float
    probe_timeout_s: float
    reconnect_backoff_max_s: float
    keepalive_s: float = 300.0
    abort_model: str | None = None


class _ConnectFailedError(Exception):
    """The endpoint could not be reached before any response: safe to try another."""

    def __init__(self, error: TritonError) -> None:
        super().__init__(error.message)
        self.error = error


def _channel_args(config: PoolConfig) -> list[tuple[str, Any]]:
    # Triton refuses pings more often than every 5 minutes on idle connections by default,
    # so keep-alive pings stay at that pace and only while calls are open.
    keepalive_ms = int(config.keepalive_s * 1000)
    backoff_ms = int(config.reconnect_backoff_max_s * 1000)
    return [
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 2),
        # A restarted Triton is found again within the back-off, not minutes later.
        ("grpc.initial_reconnect_backoff_ms", min(backoff_ms, 250)),
        ("grpc.min_reconnect_backoff_ms", min(backoff_ms, 250)),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


def _tensor(name: str, value: np.ndarray[Any, Any], datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


def _scalar(
    name: str, value: float, dtype: type[np.generic], datatype: str
) -> grpcclient.InferInput:
    return _tensor(name, np.array([[value]], dtype=dtype), datatype)


def build_inputs(request: GenerationRequest) -> list[grpcclient.InferInput]:
    """The ensemble's input tensors (batch dimension 1) for a validated request.

    Chat messages go as the `messages` input, a JSON array that Triton's preprocessing
    renders with the model's chat template; `text_input` is then empty.
    """
    inputs = [
        _tensor("text_input", np.array([[request.prompt.encode()]], dtype=np.object_), "BYTES"),
        _scalar("max_tokens", request.max_tokens, np.int32, "INT32"),
        _scalar("stream", request.stream, np.bool_, "BOOL"),
        _scalar("temperature", request.temperature, np.float32, "FP32"),
    ]
    if request.messages:
        messages = json.dumps(
            [{"role": m.role, "content": m.content} for m in request.messages],
            ensure_ascii=False,
        )
        inputs.append(
            _tensor("messages", np.array([[messages.encode()]], dtype=np.object_), "BYTES")
        )
    optional: tuple[tuple[str, float | None, type[np.generic], str], ...] = (
        ("top_p", request.top_p, np.float32, "FP32"),
        ("top_k", request.top_k, np.int32, "INT32"),
        ("seed", request.seed, np.uint64, "UINT64"),
        ("presence_penalty", request.presence_penalty, np.float32, "FP32"),
        ("frequency_penalty", request.frequency_penalty, np.float32, "FP32"),
        ("repetition_penalty", request.repetition_penalty, np.float32, "FP32"),
        ("min_tokens", request.min_tokens, np.int32, "INT32"),
    )
    for name, value, dtype, datatype in optional:
        if value is not None:
            inputs.append(_scalar(name, value, dtype, datatype))
    if request.stop:
        words = np.array([[s.encode("utf-8") for s in request.stop]], dtype=np.object_)
        inputs.append(_tensor("stop_words", words, "BYTES"))
    return inputs


def classify_error(code: str | None, message: str) -> FrontendError | None:
    """The frontend error for a failed call: `code` is the gRPC status name (None for an
    error sent inside the stream), `message` its details. None: the connection failed.
    """
    if code == "DEADLINE_EXCEEDED":
        return TritonTimeoutError(None)
    if match := _PROMPT_TOKENS.search(message):
        tokens, limit = int(match["tokens"]), int(match["limit"])
        return PromptTooManyTokensError(
            tokens, limit, "messages" if match["input"] == "messages" else "prompt"
        )
    if code == "RESOURCE_EXHAUSTED" or _QUEUE_FULL.search(message):
        return TritonQueueFullError()
    if _MODEL_TIMEOUT.search(message):
        return TritonTimeoutError(None)
    if code == "INVALID_ARGUMENT" or (code is None and _USER_ERROR.search(message)):
        # The model's own validation messages name the field; they are meant for clients.
        first_line = message.strip().splitlines()[0] if message.strip() else "invalid request"
        first_line = _ENSEMBLE_PREFIX.sub("", first_line)
        return ModelRejectedRequestError(
            first_line[:_CLIENT_MESSAGE_CHARS],
            "messages" if _MESSAGES_ERROR.match(first_line) else None,
        )
    if code == "UNAVAILABLE":
        return None
    if code in ("CANCELLED", "NOT_FOUND"):
        return TritonUnavailableError()
    return TritonInternalError()


def _first_value(result: grpcclient.InferResult, name: str) -> Any:
    array = result.as_numpy(name)
    if array is None or array.size == 0:
        return None
    return array.reshape(-1)[0]


def parse_response(result: grpcclient.InferResult) -> EngineChunk | None:
    """The chunk a response carries, or None for an empty final response."""
    text_array = result.as_numpy("text_output")
    if text_array is None:
        return None
    text = "".join(
        v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)
        for v in text_array.reshape(-1)
    )
    finish = _first_value(result, "finish_reason")
    finish_text = finish.decode("utf-8") if isinstance(finish, bytes) else str(finish or "")
    n_in = _first_value(result, "num_input_tokens")
    n_out = _first_value(result, "num_output_tokens")
    return EngineChunk(
        text=text,
        prompt_tokens=int(n_in) if n_in is not None else 0,
        completion_tokens=int(n_out) if n_out is not None else 0,
        finish_reason=finish_text,
        model_version=result.get_response().model_version,
    )


class TritonPool:
    """Every Triton endpoint of the frontend, with health, load spreading and the calls."""

    def __init__(self, urls: Sequence[str], config: PoolConfig, metrics: FrontendMetrics) -> None:
        self.config = config
        self._metrics = metrics
        args = _channel_args(config)
        self.endpoints = [
            Endpoint(url, grpcaio.InferenceServerClient(url, channel_args=args), metrics)
            for url in urls
        ]
        self._round_robin = itertools.count()
        self._probe_task: asyncio.Task[None] | None = None
        self._aborts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Probe once, then keep probing in the background."""
        await self.probe()
        self._probe_task = asyncio.create_task(self._probe_loop(), name="triton-health-probe")

    async def close(self) -> None:
        """Stop probing, let pending aborts finish briefly, close every channel."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        if self._aborts:
            await asyncio.wait(self._aborts, timeout=self.config.probe_timeout_s)
        await asyncio.gather(*(e.client.close() for e in self.endpoints), return_exceptions=True)

    async def probe(self) -> dict[str, bool]:
        """Check every endpoint's model now (with a timeout); update and return readiness."""
        results = await asyncio.gather(*(self._probe_one(e) for e in self.endpoints))
        return {e.url: ok for e, ok in zip(self.endpoints, results, strict=True)}

    async def _probe_one(self, endpoint: Endpoint) -> bool:
        try:
            ready = bool(
                await endpoint.client.is_model_ready(
                    self.config.model_name, client_timeout=self.config.probe_timeout_s
                )
            )
        except (InferenceServerException, grpc.RpcError):
            ready = False
        self._set_ready(endpoint, ready)
        return ready

    def _set_ready(self, endpoint: Endpoint, ready: bool) -> None:
        if endpoint.ready != ready:
            log.log(
                logging.INFO if ready else logging.WARNING,
                "triton endpoint %s is %s",
                endpoint.url,
                "ready" if ready else "out of rotation",
            )
        endpoint.ready = ready
        endpoint.up_gauge.set(1 if ready else 0)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.probe_interval_s)
            try:
                await self.probe()
            except Exception:  # the probe must outlive any one failure
                log.exception("triton health probe failed")

    def pick(self, tried: set[str] | frozenset[str] = frozenset()) -> Endpoint:
        candidates = [e for e in self.endpoints if e.ready and e.url not in tried]
        if not candidates:
            raise TritonUnavailableError
        # Least calls in flight; ties go round-robin so idle endpoints share light load.
        start = next(self._round_robin) % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda e: e.in_flight)

    async def generate(
        self, request: GenerationRequest, request_id: str
    ) -> AsyncIterator[EngineChunk]:
        """Stream the model's chunks for one request; raises FrontendError subclasses."""
        tried: set[str] = set()
        while True:
            endpoint = self.pick(tried)
            tried.add(endpoint.url)
            produced = False
            try:
                async for chunk in self._call(endpoint, request, request_id):
                    produced = True
                    yield chunk
                return
            except _ConnectFailedError as failed:
                if produced or not any(e.ready and e.url not in tried for e in self.endpoints):
                    raise failed.error from None
                log.warning("retrying %s on another endpoint: %s is down", request_id, endpoint.url)

    async def _call(
        self, endpoint: Endpoint, request: GenerationRequest, request_id: str
    ) -> AsyncIterator[EngineChunk]:
        # Triton ids must be unique while in flight; a client's X-Request-ID need not be.
        triton_id = f"{request_id[:64]}-{uuid.uuid4().hex[:12]}"
        payload = {
            "model_name": self.config.model_name,
            "inputs": build_inputs(request),
            "request_id": triton_id,
            "enable_empty_final_response": True,
        }

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield payload

        endpoint.in_flight += 1
        endpoint.in_flight_gauge.inc()
        endpoint.calls_counter.inc()
        call = endpoint.client.stream_infer(
            one_request(), stream_timeout=self.config.timeout_s, headers=_GRPC_ERROR_HEADERS
        )
        finished = False
        try:
            async for result, error in call:
                if error is not None:
                    finished = True
                    raise self._failure(endpoint, triton_id, None, str(error.message()))
                response = result.get_response()
                final = response.parameters["triton_final_response"].bool_param
                chunk = parse_response(result)
                if chunk is not None:
                    yield chunk
                if final:
                    finished = True
                    return
            finished = True
            log.error("triton stream for %s ended without a final response", triton_id)
            raise self._count(TritonInternalError())
        except grpc.aio.AioRpcError as exc:
            finished = True
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and self.config.abort_model:
                # The deadline cancels the stream, which does not reach the engine either.
                self._spawn_abort(endpoint, triton_id)
            raise self._failure(endpoint, triton_id, exc.code().name, exc.details() or "") from None
        finally:
            endpoint.in_flight -= 1
            endpoint.in_flight_gauge.dec()
            if not finished:
                call.cancel()
                if self.config.abort_model:
                    self._spawn_abort(endpoint, triton_id)

    def _count(self, error: FrontendError) -> FrontendError:
        code = error.code if isinstance(error, TritonError) else "invalid_argument"
        self._metrics.triton_errors.labels(code).inc()
        return error

    def _failure(
        self, endpoint: Endpoint, triton_id: str, code: str | None, message: str
    ) -> Exception:
        error = classify_error(code, message)
        if error is None:
            # The connection itself failed: out of rotation until the probe sees it back.
            self._set_ready(endpoint, False)
            log.warning("triton endpoint %s unreachable: %s", endpoint.url, message)
            unavailable = TritonUnavailableError()
            self._count(unavailable)
            return _ConnectFailedError(unavailable)
        if isinstance(error, TritonInternalError):
            log.error("triton failed %s: %s %s", triton_id, code, message)
        elif code == "DEADLINE_EXCEEDED":
            error = TritonTimeoutError(self.config.timeout_s)
        return self._count(error)

    def _spawn_abort(self, endpoint: Endpoint, triton_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._abort(endpoint, triton_id))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def _abort(self, endpoint: Endpoint, triton_id: str) -> None:
        """Ask the engine model to drop the sequence with this request id."""
        assert self.config.abort_model is not None
        stop = _tensor("stop", np.array([[True]], dtype=np.bool_), "BOOL")
        payload = {
            "model_name": self.config.abort_model,
            "inputs": [stop],
            "request_id": triton_id,
            "enable_empty_final_response": True,
        }

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield payload

        try:
            call = endpoint.client.stream_infer(
                one_request(), stream_timeout=self.config.probe_timeout_s
            )
            async for _result, error in call:
                if error is not None:
                    log.warning("abort of %s refused: %s", triton_id, error.message())
                break
        except (grpc.RpcError, InferenceServerException) as exc:
            log.warning("abort of %s failed: %s", triton_id, exc)
