"""The Triton side: one gRPC aio client per endpoint, health probes, load spreading, errors.

Each endpoint keeps one channel (HTTP/2, so every call shares one connection) for the
frontend's lifetime. Calls go to the ready endpoint with the fewest calls in flight; a
background probe takes endpoints whose model is not ready out of rotation and puts them
back when they recover, and a call that finds its endpoint's connection down takes it
out at once. A call that fails to connect before any response is retried on another
endpoint; once text has been produced it is never retried.

Every call is one `ModelStreamInfer` stream on the decoupled model with a deadline.
Going away mid-call sends the engine model (`abort_model`) a `stop` request with the
call's request id and reads the stream on until Triton ends it, rather than cancelling
it: in Triton 2.51 an ensemble stream's cancellation does not reach its decoupled step,
and a cancelled ensemble request can stay in Triton until its exit timeout (see
`TritonPool._stop_and_drain`). Without an abort model the stream is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from frontend.errors import (
    EngineUnavailableError,
    FrontendError,
    ModelRejectedRequestError,
    PromptTooManyTokensError,
    SequenceTooLongError,
    TritonError,
    TritonInternalError,
    TritonQueueFullError,
    TritonTimeoutError,
    TritonUnavailableError,
)
from frontend.metrics import FrontendMetrics
from frontend.routing import Decision, PrefixRouting, choose
from frontend.validation import ChatMessage, ValidatedRequest
from llm_stack.ensemble_contract import (
    FINISH_CANCELLED,
    EnsembleRequest,
    EnsembleTokenLogprob,
    has_outputs,
    parse_response,
    stop_request,
    stream_request,
)
from llm_stack.model_errors import ErrorCode, ModelError, decode_model_error
from llm_stack.sampling_contract import SAMPLING_PARAMETERS

log = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CLIENT_MESSAGE_CHARS = 300
# How long a call given up on is read after its engine sequence was stopped, before it
# is cancelled after all (see TritonPool._stop_and_drain).
_DRAIN_S = 5.0
# How often the stop request is repeated meanwhile.
_STOP_EVERY_S = 0.5
# Responses a call is read ahead of its consumer, at most: a client slow to take its
# stream holds back its call's reads (gRPC's flow control), not the frontend's memory.
_READ_AHEAD = 16
# Health checks start no sequence, so they may share one id (and their errors read alike).
_HEALTH_REQUEST_ID = "frontend-health-check"
# The ensemble's inputs under the names clients sent them (the rest keep theirs).
_CLIENT_FIELDS: Mapping[str, str] = {
    "text_input": "prompt",
    "stop_words": "stop",
    **{p.name: p.client_name for p in SAMPLING_PARAMETERS if p.client_name != p.name},
}


@dataclass(frozen=True, slots=True)
class EngineChunk:
    """One response of the model: new text of choice `index` and the cumulative token
    counts (completion tokens: that choice's; prompt and cached tokens: the prompt's)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: str  # "" until the choice's last response
    model_version: str
    index: int = 0
    logprobs: tuple[EnsembleTokenLogprob, ...] = ()  # the tokens this response adds, when asked


class Endpoint:
    """One Triton gRPC endpoint and its bookkeeping."""

    def __init__(
        self, url: str, client: grpcaio.InferenceServerClient, metrics: FrontendMetrics
    ) -> None:
        self.url = url
        self.client = client
        self.in_flight = 0
        self.ready = False
        # Set when the endpoint leaves rotation, so its probe loop takes up the fast pace.
        self.went_down = asyncio.Event()
        self.down_reason: str | None = None  # why it is out of rotation, as last logged
        # Health checks in a row that got no answer in time while it was in rotation.
        self.health_misses = 0
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
    # While an endpoint is out of rotation it is probed this often, so it is back in
    # rotation within about this (plus the reconnect back-off) of being ready again.
    down_probe_interval_s: float = 0.25
    keepalive_s: float = 300.0
    abort_model: str | None = None
    routing: PrefixRouting = field(default_factory=PrefixRouting)


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


def ensemble_request(request: ValidatedRequest) -> EnsembleRequest:
    """The ensemble request for a validated request.

    Chat messages go as the `messages` input, a JSON array that Triton's preprocessing
    renders with the model's chat template (with the request's tools as `tools`, also
    under tool_choice none: the model sees them, the grammar and the parser stay off);
    `text_input` is then empty. The tools' guide, if any, is the request's guide. The sampling
    parameters go as the inputs of their names (llm_stack.sampling_contract), those at
    the engine's default left out.
    """
    messages = tools = None
    if request.messages:
        messages = json.dumps([_message(m) for m in request.messages], ensure_ascii=False)
        tools = request.tools_text
    return EnsembleRequest(
        text_input=request.prompt,
        max_tokens=request.max_tokens,
        stream=request.stream,
        messages=messages,
        tools=tools,
        stop_words=request.stop or None,
        guided_decoding_guide_type=request.guide.type.value if request.guide else None,
        guided_decoding_guide=request.guide.schema if request.guide else None,
        # Left out at their default (no log-probabilities).
        return_log_probs=True if request.logprobs is not None else None,
        num_top_log_probs=request.logprobs or None,
        **request.sampling.sent(),
    )


def _message(message: ChatMessage) -> dict[str, Any]:
    """A chat message as the `messages` input has it (OpenAI chat's shape)."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def health_request(model: str, request_id: str) -> dict[str, Any]:
    """The `stream_infer` keyword arguments of a health check of engine model `model`:
    its one `health_check` input set (shaped as the `stop` request's inputs)."""
    check = grpcclient.InferInput("health_check", [1, 1], "BOOL")
    check.set_data_from_numpy(np.array([[True]], dtype=np.bool_))
    return {
        "model_name": model,
        "inputs": [check],
        "request_id": request_id,
        "enable_empty_final_response": True,
    }


def _health_error(message: str) -> str:
    model_error = decode_model_error(message)
    if model_error is not None:
        return f"{model_error.code.value}: {_short(model_error.message)}"
    return _short(message)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _CLIENT_MESSAGE_CHARS else text[:_CLIENT_MESSAGE_CHARS] + "..."


# Triton's dynamic batcher refusing a request (its queue is full, or the request waited
# past the queue policy's timeout): status UNAVAILABLE, like a server that is down, or
# inside an ensemble's stream with no status at all; only the words tell them apart.
_QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout expired")


# Health checks in a row without an answer that take an endpoint out of rotation: with
# the defaults a stalled engine is out within interval + 2 x timeout + the fast pace.
HEALTH_MISSES_TO_LEAVE = 2


def classify_error(code: str | None, message: str) -> FrontendError | None:
    """The frontend error for a failed call: `code` is the gRPC status name (None for an
    error sent inside the stream), `message` its details. None: the connection failed.
    """
    if code == "DEADLINE_EXCEEDED":
        return TritonTimeoutError(None)
    model_error = decode_model_error(message)
    if model_error is not None:
        return _from_model_error(model_error)
    if code == "RESOURCE_EXHAUSTED" or any(words in message for words in _QUEUE_REFUSALS):
        return TritonQueueFullError()
    if code == "UNAVAILABLE":
        return None
    if code in ("CANCELLED", "NOT_FOUND"):
        return TritonUnavailableError()
    return TritonInternalError()


def _from_model_error(error: ModelError) -> FrontendError:
    field = _CLIENT_FIELDS.get(error.field, error.field) if error.field else None
    values = error.values
    match error.code:
        case ErrorCode.PROMPT_TOO_LONG:
            return PromptTooManyTokensError(
                int(values.get("tokens", 0)), int(values.get("limit", 0)), field or "prompt"
            )
        case ErrorCode.SEQUENCE_TOO_LONG:
            return SequenceTooLongError(int(values.get("tokens", 0)), int(values.get("limit", 0)))
        case (
            ErrorCode.INVALID_ARGUMENT | ErrorCode.INVALID_MESSAGES | ErrorCode.DUPLICATE_REQUEST_ID
        ):
            # The model's own validation messages name the field; they are meant for clients.
            first_line = error.message.strip().splitlines()[0] if error.message.strip() else ""
            return ModelRejectedRequestError(
                first_line[:_CLIENT_MESSAGE_CHARS] or "invalid request", field
            )
        case ErrorCode.QUEUE_FULL:
            return TritonQueueFullError()
        case ErrorCode.TIMEOUT:
            return TritonTimeoutError(None)
        case ErrorCode.CANCELLED:
            return TritonUnavailableError()
        case ErrorCode.ENGINE_UNAVAILABLE:
            return EngineUnavailableError()
        case _:
            return TritonInternalError()


class _Responses:
    """The responses of one call, read by a task of its own into a short queue.

    gRPC cancels a call whose read is cancelled. Read apart, cancelling whoever waits for
    a response (a client gone, a shutdown) leaves the call open, to be ended by a stop
    request and read to its end instead. One reader task serves the whole call: a task
    and a shield per response cost more than the rest of a response's way through here.
    """

    def __init__(self, call: Any) -> None:
        self.call = call
        self._queue: asyncio.Queue[Any] = asyncio.Queue(_READ_AHEAD)
        self._reader: asyncio.Task[None] | None = None
        self._ended = False
        self._failure: Exception | None = None

    async def next(self) -> Any:
        """The next (result, error) pair of the stream, or None once it has ended; raises
        what reading the call raised (grpc.RpcError)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        item = _END if self._ended and self._queue.empty() else await self._queue.get()
        if item is not _END:
            return item
        if self._failure is not None:
            raise self._failure
        return None

    async def _read(self) -> None:
        try:
            async for item in self.call:
                await self._queue.put(item)
        except Exception as exc:  # the consumer's to raise
            self._failure = exc
        finally:
            # With the queue full the consumer is not waiting: it finds the end once it
            # has taken what the queue holds.
            self._ended = True
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_END)

    async def drain(self, timeout_s: float) -> bool:
        """Read until Triton ends the stream, discarding what comes; after `timeout_s`
        cancel the call. True when the stream ended by itself."""
        try:
            async with asyncio.timeout(timeout_s):
                while await self.next() is not None:
                    pass
        except TimeoutError:
            self.cancel()
            return False
        except grpc.RpcError:  # its end was all that was awaited
            pass
        return True

    def cancel(self) -> None:
        """Cancel the call, and its reader (which may wait for room in the queue)."""
        self.call.cancel()
        if self._reader is not None:
            self._reader.cancel()


_END = object()  # the reader's last item: the stream has ended


def parse_chunk(result: Any) -> EngineChunk | None:
    """The chunk a response carries, or None for an empty final response."""
    if not has_outputs(result):
        return None
    response = parse_response(result)
    return EngineChunk(
        text=response.text,
        prompt_tokens=response.num_input_tokens,
        completion_tokens=response.num_output_tokens,
        cached_tokens=response.num_cached_tokens,
        finish_reason=response.finish_reason,
        model_version=response.model_version,
        index=response.sequence_index,
        logprobs=response.logprobs,
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
        self._probe_tasks: list[asyncio.Task[None]] = []
        self._probing: asyncio.Future[dict[str, bool]] | None = None
        self._aborts: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Probe once, then keep probing each endpoint in the background."""
        await self.probe()
        self._probe_tasks = [
            asyncio.create_task(self._probe_loop(e), name=f"triton-health-probe {e.url}")
            for e in self.endpoints
        ]

    async def close(self) -> None:
        """Stop probing, let pending aborts finish (bounded), close every channel."""
        for task in self._probe_tasks:
            task.cancel()
        await asyncio.gather(*self._probe_tasks, return_exceptions=True)
        if self._aborts:
            await asyncio.wait(self._aborts, timeout=_DRAIN_S + self.config.probe_timeout_s)
        await asyncio.gather(*(e.client.close() for e in self.endpoints), return_exceptions=True)

    async def probe(self) -> dict[str, bool]:
        """Check every endpoint now (with a timeout); update and return readiness.

        Callers that come while a probe runs share it: however often readiness is asked
        for, each endpoint has at most one such probe in flight.
        """
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._probe_all())
        return await asyncio.shield(self._probing)

    async def _probe_all(self) -> dict[str, bool]:
        results = await asyncio.gather(*(self._probe_one(e) for e in self.endpoints))
        return {e.url: ok for e, ok in zip(self.endpoints, results, strict=True)}

    async def _probe_one(self, endpoint: Endpoint) -> bool:
        """Ready: the model is ready, and the engine model answers a health check (when
        there is one) within the probe timeout."""
        try:
            model_ready = bool(
                await endpoint.client.is_model_ready(
                    self.config.model_name, client_timeout=self.config.probe_timeout_s
                )
            )
        except (InferenceServerException, grpc.RpcError):
            model_ready = False
        if not model_ready:
            self._set_ready(endpoint, False, f"model {self.config.model_name} not ready")
            return False
        problem, unanswered = await self._engine_problem(endpoint)
        if problem is None:
            endpoint.health_misses = 0
        elif unanswered and endpoint.ready:
            # A saturated engine model can answer late once; only misses in a row (probed
            # at the fast pace meanwhile) take it out. An answer that it cannot generate,
            # or a failed call, takes it out at once.
            endpoint.health_misses += 1
            if endpoint.health_misses < HEALTH_MISSES_TO_LEAVE:
                log.info("triton endpoint %s: %s (%d in a row)", endpoint.url, problem,
                         endpoint.health_misses)  # fmt: skip
                return True
        self._set_ready(endpoint, problem is None, problem)
        return problem is None

    async def _engine_problem(self, endpoint: Endpoint) -> tuple[str | None, bool]:
        """Why the engine model cannot generate, from its health check (None: it can, or
        there is no engine model to ask), and whether that is only a missing answer."""
        model = self.config.abort_model
        if model is None:
            return None, False
        payload = health_request(model, _HEALTH_REQUEST_ID)

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield payload

        timeout_s = self.config.probe_timeout_s
        healthy = False
        try:
            async with asyncio.timeout(timeout_s):
                call = endpoint.client.stream_infer(one_request(), stream_timeout=timeout_s)
                # Read to the stream's end (Triton ends it after the final response).
                async for result, error in call:
                    if error is not None:
                        return _health_error(str(error.message())), False
                    response = result.get_response()
                    healthy = response.parameters["triton_final_response"].bool_param
        except TimeoutError:
            return f"the {model} health check did not answer within {timeout_s:g} s", True
        except (grpc.RpcError, InferenceServerException) as exc:
            return f"the {model} health check failed: {_short(str(exc))}", False
        if healthy:
            return None, False
        return f"the {model} health check ended without a final response", False

    def _set_ready(self, endpoint: Endpoint, ready: bool, why: str | None = None) -> None:
        if ready and not endpoint.ready:
            log.info("triton endpoint %s is ready", endpoint.url)
        elif not ready and (endpoint.ready or why != endpoint.down_reason):
            # Once per reason: a probe that keeps failing the same way says so once.
            log.warning("triton endpoint %s is out of rotation: %s", endpoint.url, why)
            if endpoint.ready:
                endpoint.went_down.set()
        endpoint.down_reason = None if ready else why
        endpoint.ready = ready
        endpoint.up_gauge.set(1 if ready else 0)

    async def _probe_loop(self, endpoint: Endpoint) -> None:
        while True:
            await self._until_next_probe(endpoint)
            try:
                await self._probe_one(endpoint)
            except Exception:  # the probe must outlive any one failure
                log.exception("triton health probe of %s failed", endpoint.url)

    async def _until_next_probe(self, endpoint: Endpoint) -> None:
        """The normal interval while the endpoint is in rotation, the fast one while it is
        out (also from the moment a failed call takes it out between probes)."""
        config = self.config
        if endpoint.ready and not endpoint.health_misses:
            endpoint.went_down.clear()
            try:
                async with asyncio.timeout(config.probe_interval_s):
                    await endpoint.went_down.wait()
            except TimeoutError:
                return
        await asyncio.sleep(config.down_probe_interval_s)

    def pick(
        self, tried: set[str] | frozenset[str] = frozenset(), key: bytes | None = None
    ) -> Endpoint:
        """The ready endpoint for a call: by prefix `key` within the load bound, else the
        least busy one."""
        candidates = [e for e in self.endpoints if e.ready and e.url not in tried]
        if not candidates:
            raise TritonUnavailableError
        if key is not None and len(self.endpoints) > 1:
            endpoint, decision = choose(key, candidates, self.config.routing.load_factor)
            self._metrics.routing_decisions.labels(decision.value).inc()
            return endpoint
        # Least calls in flight; ties go round-robin so idle endpoints share light load.
        start = next(self._round_robin) % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        if len(self.endpoints) > 1:
            self._metrics.routing_decisions.labels(Decision.LEAST_LOADED.value).inc()
        return min(rotated, key=lambda e: e.in_flight)

    async def generate(
        self, request: ValidatedRequest, request_id: str
    ) -> AsyncIterator[EngineChunk]:
        """Stream the model's chunks for one request; raises FrontendError subclasses."""
        tried: set[str] = set()
        key = self.config.routing.key(request)
        while True:
            endpoint = self.pick(tried, key)
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
        self, endpoint: Endpoint, request: ValidatedRequest, request_id: str
    ) -> AsyncIterator[EngineChunk]:
        # Triton ids must be unique while in flight; a client's X-Request-ID need not be.
        triton_id = f"{request_id[:64]}-{uuid.uuid4().hex[:12]}"
        payload = stream_request(ensemble_request(request), triton_id)
        payload["model_name"] = self.config.model_name

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield payload

        endpoint.in_flight += 1
        endpoint.in_flight_gauge.inc()
        endpoint.calls_counter.inc()
        call = endpoint.client.stream_infer(one_request(), stream_timeout=self.config.timeout_s)
        responses = _Responses(call)
        finished = False
        cancelled = False
        try:
            while (item := await responses.next()) is not None:
                result, error = item
                if error is not None:
                    finished = True
                    # Read to its end like a stream that ended well (see below).
                    await responses.drain(self.config.probe_timeout_s)
                    raise self._failure(endpoint, triton_id, None, str(error.message()))
                response = result.get_response()
                final = response.parameters["triton_final_response"].bool_param
                chunk = parse_chunk(result)
                if chunk is not None and chunk.finish_reason == FINISH_CANCELLED:
                    # The engine sequence was stopped by a `stop` request (with n choices
                    # each of them ends so, the last in the final response).
                    cancelled, chunk = True, None
                if final:
                    finished = True
                    # Read the stream to its end before the last chunk goes out: the
                    # consumer stops at that chunk, and a call left open is cancelled
                    # when it is collected, which Triton 2.51 mishandles after a final
                    # response (it keeps the stream's state, and the ensemble model with
                    # it, until its exit timeout).
                    await responses.drain(self.config.probe_timeout_s)
                    if cancelled:
                        raise self._count(TritonUnavailableError())
                    if chunk is not None:
                        yield chunk
                    return
                if chunk is not None:
                    yield chunk
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
                self._give_up(endpoint, triton_id, responses)

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
            self._set_ready(endpoint, False, f"unreachable: {_short(message)}")
            unavailable = TritonUnavailableError()
            self._count(unavailable)
            return _ConnectFailedError(unavailable)
        if isinstance(error, EngineUnavailableError):
            # Not this request's fault: no request goes there until the probe finds the
            # engine healthy again.
            self._set_ready(endpoint, False, _health_error(message))
        elif isinstance(error, TritonInternalError):
            log.error("triton failed %s: %s %s", triton_id, code, message)
        elif code == "DEADLINE_EXCEEDED":
            error = TritonTimeoutError(self.config.timeout_s)
        return self._count(error)

    def _spawn_abort(self, endpoint: Endpoint, triton_id: str) -> None:
        self._spawn(self._abort(endpoint, triton_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    def _give_up(self, endpoint: Endpoint, triton_id: str, responses: _Responses) -> None:
        """End a call that nobody reads any more (client gone, shutdown)."""
        if self.config.abort_model is None:
            responses.cancel()  # no engine model to stop: cancelling is all there is
            return
        self._spawn(self._stop_and_drain(endpoint, triton_id, responses))

    async def _stop_and_drain(
        self, endpoint: Endpoint, triton_id: str, responses: _Responses
    ) -> None:
        """Stop the engine sequence, then read the call until Triton ends it.

        Cancelling the stream instead is what Triton 2.51 gets wrong: the ensemble passes
        the cancellation on to its next postprocessing step, that step fails while the
        engine step still runs, and the ensemble request is never released (Triton waits
        out its exit timeout for it when it stops). Stopped, the engine ends the sequence
        with a final response, and the stream ends by itself.
        """
        drained = asyncio.ensure_future(responses.drain(_DRAIN_S))
        while not drained.done():
            # Repeated: a stop that arrives before the engine has the sequence (still
            # in preprocessing, or queued) finds nothing to stop.
            await self._abort(endpoint, triton_id)
            await asyncio.wait([drained], timeout=_STOP_EVERY_S)
        if not drained.result():
            log.warning(
                "triton call %s did not end within %.0f s of its stop request; cancelled",
                triton_id,
                _DRAIN_S,
            )

    async def _abort(self, endpoint: Endpoint, triton_id: str) -> None:
        """Ask the engine model to drop the sequence with this request id."""
        assert self.config.abort_model is not None
        payload = stop_request(triton_id)
        payload["model_name"] = self.config.abort_model

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

    async def infer(
        self,
        model: str,
        inputs: Sequence[grpcclient.InferInput],
        outputs: Sequence[str],
        request_id: str,
    ) -> grpcclient.InferResult:
        """One unary call of a model that is not decoupled (`preprocessing`, for
        /tokenize): on the least busy ready endpoint, on another when it cannot be
        reached; raises FrontendError subclasses, classified as generation's are."""
        tried: set[str] = set()
        while True:
            endpoint = self.pick(tried)
            tried.add(endpoint.url)
            try:
                return await self._infer(endpoint, model, inputs, outputs, request_id)
            except _ConnectFailedError as failed:
                if not any(e.ready and e.url not in tried for e in self.endpoints):
                    raise failed.error from None
                log.warning("retrying %s on another endpoint: %s is down", request_id, endpoint.url)

    async def _infer(
        self,
        endpoint: Endpoint,
        model: str,
        inputs: Sequence[grpcclient.InferInput],
        outputs: Sequence[str],
        request_id: str,
    ) -> grpcclient.InferResult:
        triton_id = f"{request_id[:64]}-{uuid.uuid4().hex[:12]}"
        endpoint.in_flight += 1
        endpoint.in_flight_gauge.inc()
        endpoint.calls_counter.inc()
        try:
            return await endpoint.client.infer(
                model,
                list(inputs),
                outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
                request_id=triton_id,
                client_timeout=self.config.timeout_s,
            )
        except InferenceServerException as exc:
            # The status comes as "StatusCode.NAME"; classify_error reads the name.
            code = str(exc.status() or "").removeprefix("StatusCode.") or None
            raise self._failure(endpoint, triton_id, code, str(exc.message() or "")) from None
        finally:
            endpoint.in_flight -= 1
            endpoint.in_flight_gauge.dec()
