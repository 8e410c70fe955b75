"""Triton model `tensorrt_llm`: decoupled, streams tokens from an in-flight batching engine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import triton_python_backend_utils as pb_utils
from engine_request import INPUTS, build_request, health_reply, kv_cache_blocks
from response_stream import ResponseStream, SendQueue

from llm_stack.engine.base import (
    EngineError,
    EngineHealth,
    EngineOverloadedError,
    EngineStats,
    EngineStoppedError,
    InvalidRequestError,
    TokenDelta,
)
from llm_stack.engine.factory import create_engine
from llm_stack.model_config import ModelParameters
from llm_stack.model_errors import ErrorCode, ModelError, error_response
from llm_stack.stub_lifetime import watch_parent

log = logging.getLogger(__name__)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
CANCEL_POLL_S = 0.5  # each check is a round trip to the Triton process
METRICS_PERIOD_S = 0.25
HEALTH_PERIOD_S = 1.0  # how often the health gauge follows the engine between probes


class TritonPythonModel:
    """One asyncio task per request on the model's own loop; the engine batches them in flight.

    The loop runs in a thread of its own rather than in the stub's `async execute`
    support, whose bookkeeping races with coroutines that return at once (it logs
    "Cannot remove future from background" for each request).
    """

    def initialize(self, args: dict[str, Any]) -> None:
        watch_parent()
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException("tensorrt_llm must be decoupled")
        params = ModelParameters(config)
        self.max_input_len = params.get_int("max_input_len", minimum=1)
        self.timeout_s = params.get_float("request_timeout_s", minimum=1.0)
        self.stream_interval = params.get_int("stream_interval", minimum=1)
        self.engine = create_engine(params)
        # Responses are sent from a thread of their own: see response_stream.
        self.sends = SendQueue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="tensorrt_llm-requests", daemon=True
        )
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.engine.start(), self.loop).result()
        self.metrics = _EngineMetrics()
        self.metrics.update(self.engine.stats, force=True)
        self.tasks: set[concurrent.futures.Future[None]] = set()
        self.by_triton_id: dict[str, str] = {}  # Triton request id → engine request id
        self.health_task = asyncio.run_coroutine_threadsafe(self._follow_health(), self.loop)

    def execute(self, requests: list[Any]) -> None:
        # Decoupled: responses go out through each request's sender, from the loop.
        for request in requests:
            future = asyncio.run_coroutine_threadsafe(self._serve(request), self.loop)
            self.tasks.add(future)
            future.add_done_callback(self.tasks.discard)

    async def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        if _flag(request, "health_check"):
            # Answered here, on the loop: no sequence, no queue. A loop too blocked to
            # get here leaves the caller's probe to time out, which reads as not ready.
            _send_reply(sender, health_reply(self._health()))
            return
        triton_id = request.request_id()
        if _flag(request, "stop"):
            await self._stop(triton_id, sender)
            return
        request_id = f"{triton_id or 'req'}-{uuid.uuid4().hex[:12]}"
        if triton_id:
            if triton_id in self.by_triton_id:
                _send_error(
                    sender,
                    ModelError(
                        ErrorCode.DUPLICATE_REQUEST_ID,
                        f"request id {triton_id!r} is already in flight",
                    ),
                )
                return
            self.by_triton_id[triton_id] = request_id
        try:
            await self._generate(request, request_id, sender)
        finally:
            if triton_id:
                self.by_triton_id.pop(triton_id, None)

    async def _stop(self, triton_id: str, sender: Any) -> None:
        # NVIDIA's `stop` input: abort the in-flight request with this request id. A
        # cancelled ensemble stream does not reach this model in Triton 2.51, so a
        # client that goes away sends this too.
        request_id = self.by_triton_id.get(triton_id) if triton_id else None
        if request_id is not None:
            await self.engine.abort(request_id)
        sender.send(flags=FINAL)

    async def _generate(self, request: Any, request_id: str, sender: Any) -> None:
        try:
            tensors = {name: _optional(request, name) for name in INPUTS}
            gen_request, streaming = build_request(request_id, tensors, self.max_input_len)
        except InvalidRequestError as exc:
            _send_error(sender, exc.model_error())
            return
        # Each of the n sequences streams its own responses (sequence_index); the last
        # sequence's final response is the request's. An aborted sequence ends like any
        # other, with a final response whose finish_reason is "cancelled". An error after
        # some responses would fail the ensemble while its postprocessing step may still
        # work on an earlier one, and Triton 2.51 then never releases the ensemble
        # request (it waits out its exit timeout for it when it stops).
        stream = ResponseStream(
            sender,
            self.sends,
            n=gen_request.sampling.n,
            streaming=streaming,
            logprobs=gen_request.sampling.logprobs is not None,
            stream_interval=self.stream_interval,
            build=_response,
            build_error=_error_response,
            final_flag=FINAL,
            wanted=_requested_outputs(request),
        )
        watcher = asyncio.get_running_loop().create_task(
            self._watch_cancel(stream, request, request_id)
        )
        deltas = self.engine.generate(gen_request)
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    async for delta in deltas:
                        stream.add(delta)
                        self.metrics.update(self.engine.stats, force=delta.finished)
                        if stream.broken is not None:
                            return  # nothing reaches the client any more
                finally:
                    # Closing the engine's stream early aborts its sequences.
                    await _close(deltas)
            if stream.running > 0:  # the engine broke its contract: the request must still end
                raise EngineError(
                    f"the engine's stream ended with {stream.running} sequences running"
                )
        except (InvalidRequestError, EngineOverloadedError) as exc:
            stream.fail(exc.model_error())
        except TimeoutError:
            message = f"generation exceeded the time limit of {self.timeout_s:.0f} s"
            limit = {"limit_s": self.timeout_s}
            stream.fail(ModelError(ErrorCode.TIMEOUT, message, None, limit))
        except EngineStoppedError as exc:  # our own words on why the engine serves nothing
            stream.fail(exc.model_error())
        except EngineError as exc:
            log.error("engine error for %s: %s", request_id, exc)
            stream.fail(ModelError(ErrorCode.ENGINE_ERROR, "engine error"))
        finally:
            watcher.cancel()
            self.metrics.update(self.engine.stats, force=True)

    def _health(self) -> EngineHealth:
        try:
            health = self.engine.health()
        except Exception as exc:  # a health check that breaks is no sign of health
            log.exception("the engine's health check failed")
            health = EngineHealth(False, f"the engine's health check failed: {exc!r}")
        self.metrics.set(self.metrics.healthy, 1 if health.ok else 0)
        return health

    async def _follow_health(self) -> None:
        # The gauge follows the engine between probes too (and the engine logs each turn).
        while True:
            self._health()
            await asyncio.sleep(HEALTH_PERIOD_S)

    async def _watch_cancel(self, stream: ResponseStream, request: Any, request_id: str) -> None:
        # Triton flags cancellation (client gone, stream cancelled) on the request only;
        # the stream asks it only before the final response.
        while not stream.cancelled(request):  # noqa: ASYNC110 - Triton offers only polling
            await asyncio.sleep(CANCEL_POLL_S)
        await self.engine.abort(request_id)

    def finalize(self) -> None:
        self.health_task.cancel()
        for future in list(self.tasks):
            future.cancel()
        asyncio.run_coroutine_threadsafe(self.engine.shutdown(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.sends.close()


def _optional(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _flag(request: Any, name: str) -> bool:
    value = _optional(request, name)
    return bool(value is not None and value.size and value.reshape(-1)[0])


async def _close(deltas: AsyncIterator[TokenDelta]) -> None:
    aclose = getattr(deltas, "aclose", None)
    if aclose is not None:
        await aclose()


def _requested_outputs(request: Any) -> list[str] | None:
    """The outputs the caller asked for (Triton drops the others); None: unknown, all."""
    try:
        return list(request.requested_output_names())
    except Exception:  # not offered by this backend: build every output
        return None


def _response(arrays: dict[str, Any]) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, value) for name, value in arrays.items()]
    )


def _error_response(error: ModelError) -> Any:
    return error_response(pb_utils, error)


def _send_reply(sender: Any, reply: dict[str, Any] | ModelError) -> None:
    """One final response: these output tensors, or this error."""
    if isinstance(reply, ModelError):
        _send_error(sender, reply)
        return
    response = pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, value) for name, value in reply.items()]
    )
    try:
        sender.send(response, flags=FINAL)
    except Exception:  # the client is gone; nothing left to tell it
        log.debug("could not send a response", exc_info=True)


def _send_error(sender: Any, error: ModelError) -> None:
    try:
        sender.send(error_response(pb_utils, error), flags=FINAL)
    except Exception:  # the client is gone; nothing left to tell it
        log.debug("could not send an error response", exc_info=True)


class _EngineMetrics:
    """Engine figures on Triton's metrics endpoint, named as TensorRT-LLM's backend names them."""

    def __init__(self) -> None:
        gauge, counter = pb_utils.MetricFamily.GAUGE, pb_utils.MetricFamily.COUNTER
        requests = pb_utils.MetricFamily(
            name="nv_trt_llm_request_metrics",
            description="TRT LLM request metrics",
            kind=gauge,
        )
        # Families must outlive their metrics: keep every one on self.
        self.families = [requests]
        self.gauges = {
            kind: requests.Metric(labels={"request_type": kind, "model": "tensorrt_llm"})
            for kind in ("active", "waiting", "max", "scheduled", "context")
        }
        self.peak = self._single(
            "llm_engine_peak_step_batch", "Most sequences decoded in one engine step", gauge
        )
        self.healthy = self._single(
            "llm_engine_healthy",
            "1 while the engine can generate, 0 when it cannot (the log says why)",
            gauge,
        )
        self.steps = self._single("llm_engine_steps_total", "Engine steps run", counter)
        self.tokens = self._single(
            "llm_engine_generated_tokens_total", "Tokens the engine generated", counter
        )
        blocks = pb_utils.MetricFamily(
            name="nv_trt_llm_kv_cache_block_metrics",
            description="TRT LLM KV cache block metrics",
            kind=gauge,
        )
        prompt = pb_utils.MetricFamily(
            name="llm_engine_prompt_tokens_total",
            description="Prompt tokens taken from the prefix cache (cached) or computed",
            kind=counter,
        )
        self.families += [blocks, prompt]
        self.blocks = {
            kind: blocks.Metric(labels={"kv_cache_block_type": kind, "model": "tensorrt_llm"})
            for kind in ("max", "used", "free", "reused", "tokens_per")
        }
        self.prompt = {
            source: prompt.Metric(labels={"source": source, "model": "tensorrt_llm"})
            for source in ("cached", "computed")
        }
        self._last = EngineStats()
        self._at = 0.0
        self._values: dict[int, float] = {}  # id(metric) → the value it was set to

    def set(self, metric: Any, value: float) -> None:
        # Each set is a round trip to the Triton process: skip the ones that change nothing.
        if self._values.get(id(metric)) != value:
            metric.set(value)
            self._values[id(metric)] = value

    @staticmethod
    def _add(metric: Any, amount: float) -> None:
        if amount > 0:
            metric.increment(amount)

    def _single(self, name: str, description: str, kind: Any) -> Any:
        family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
        self.families.append(family)
        return family.Metric(labels={"model": "tensorrt_llm"})

    def update(self, snapshot: Callable[[], EngineStats], force: bool = False) -> None:
        # A snapshot takes the engine's lock: take one only when the figures are due.
        now = time.monotonic()
        if not force and now - self._at < METRICS_PERIOD_S:
            return
        self._at = now
        stats = snapshot()
        for kind, value in (
            ("active", stats.active),
            ("waiting", stats.waiting),
            ("max", stats.max_active),
            ("scheduled", stats.scheduled),
            ("context", stats.context),
        ):
            self.set(self.gauges[kind], value)
        self.set(self.peak, stats.peak_step_batch)
        self._add(self.steps, stats.steps - self._last.steps)
        self._add(self.tokens, stats.generated_tokens - self._last.generated_tokens)
        for kind, value in kv_cache_blocks(stats).items():
            self.set(self.blocks[kind], value)
        self._add(
            self.prompt["cached"], stats.prompt_tokens_cached - self._last.prompt_tokens_cached
        )
        self._add(
            self.prompt["computed"],
            stats.prompt_tokens_computed - self._last.prompt_tokens_computed,
        )
        self._last = stats
