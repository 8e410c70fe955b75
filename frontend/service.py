"""The generation pipeline, free of any HTTP or wire format.

admission (concurrency bound, then rate limits) → Triton call → usage accounting.
`GenerationService.generate` takes a validated request and yields internal events; the
protocol layers (/generate, the OpenAI API under /v1) only render them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Literal

from frontend.admission import ConcurrencyGate
from frontend.errors import FrontendError, RateLimitedError, TritonInternalError
from frontend.metrics import FrontendMetrics
from frontend.rate_limit import RateLimiter, Reservation, estimate_prompt_tokens
from frontend.triton_client import EngineChunk, TritonPool
from frontend.validation import GenerationRequest

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: `key_id` labels usage, `rate_key` names the rate-limit budget."""

    key_id: str
    rate_key: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of the prompt tokens, those reused from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Admitted:
    """First event: the request passed admission; headers report the caller's budgets."""

    rate_limit_headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Completed:
    """Last event of a generation that ran to its end."""

    finish_reason: FinishReason
    usage: Usage
    model_version: str


GenerationEvent = Admitted | TextDelta | Completed


@dataclass(slots=True)
class GenerationRecord:
    """What one generation used and how it ended; filled in as it runs (for logs)."""

    key_id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcome: str = "pending"
    model_version: str = ""


class GenerationService:
    """Runs generations: admission, the Triton call, metrics and usage accounting."""

    def __init__(
        self,
        pool: TritonPool,
        gate: ConcurrencyGate,
        limiter: RateLimiter,
        metrics: FrontendMetrics,
    ) -> None:
        self._pool = pool
        self._gate = gate
        self._limiter = limiter
        self._metrics = metrics
        self._accounting: set[asyncio.Task[None]] = set()

    async def generate(
        self,
        request: GenerationRequest,
        caller: Caller,
        request_id: str,
        record: GenerationRecord | None = None,
    ) -> AsyncGenerator[GenerationEvent, None]:
        """Admitted, then TextDelta for each piece of new text, then Completed.

        Raises FrontendError subclasses; closing the iterator early (client gone) cancels
        the Triton call. Resources are released however it ends.
        """
        record = record if record is not None else GenerationRecord(caller.key_id)
        metrics = self._metrics
        await self._gate.acquire()
        reservation: Reservation | None = None
        last: EngineChunk | None = None
        try:
            reserve = estimate_prompt_tokens(request.input_text) + request.max_tokens
            if self._limiter.enabled:
                try:
                    reservation = await self._limiter.admit(caller.rate_key, reserve)
                except RateLimitedError as limited:
                    metrics.rate_limited.labels(limited.limit_name).inc()
                    raise
            yield Admitted(reservation.headers() if reservation else {})

            started = time.perf_counter()
            previous_at = started
            previous_tokens = 0
            async for chunk in self._pool.generate(request, request_id):
                last = chunk
                record.prompt_tokens = chunk.prompt_tokens
                record.completion_tokens = chunk.completion_tokens
                if chunk.text:
                    now = time.perf_counter()
                    if request.stream:
                        if previous_tokens == 0:
                            metrics.time_to_first_token.observe(now - started)
                        else:
                            tokens = max(1, chunk.completion_tokens - previous_tokens)
                            metrics.inter_token_latency.observe((now - previous_at) / tokens)
                    previous_at, previous_tokens = now, chunk.completion_tokens
                    yield TextDelta(chunk.text)
                if chunk.finish_reason:
                    break
            if last is None or last.finish_reason not in ("stop", "length"):
                log.error(
                    "generation %s ended with finish reason %r",
                    request_id,
                    last.finish_reason if last else None,
                )
                raise TritonInternalError
            finish: FinishReason = "stop" if last.finish_reason == "stop" else "length"
            record.outcome = finish
            record.model_version = last.model_version
            yield Completed(
                finish,
                Usage(last.prompt_tokens, last.completion_tokens, last.cached_tokens),
                last.model_version,
            )
        except FrontendError as error:
            record.outcome = type(error).__name__
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # Closing after Completed is the normal end; before it, the client went away.
            if record.outcome == "pending":
                record.outcome = "cancelled"
            raise
        finally:
            self._gate.release()
            if record.outcome == "pending":
                record.outcome = "closed"
            metrics.generations.labels(_outcome_label(record.outcome)).inc()
            self._account(caller, reservation, record)

    def _account(
        self, caller: Caller, reservation: Reservation | None, record: GenerationRecord
    ) -> None:
        """Count usage and correct the token reservation off the response path."""
        metrics = self._metrics
        metrics.prompt_tokens.labels(caller.key_id).inc(record.prompt_tokens)
        metrics.completion_tokens.labels(caller.key_id).inc(record.completion_tokens)
        if reservation is None:
            return
        used = record.prompt_tokens + record.completion_tokens
        task = asyncio.get_running_loop().create_task(self._settle(reservation, used))
        self._accounting.add(task)
        task.add_done_callback(self._accounting.discard)

    async def _settle(self, reservation: Reservation, used: int) -> None:
        try:
            await self._limiter.settle(reservation, used)
        except Exception:  # storage trouble must not outlive the request
            log.exception("could not settle the token reservation of %s", reservation.identity)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for pending usage accounting; called at shutdown."""
        if self._accounting:
            await asyncio.wait(self._accounting, timeout=timeout_s)


def _outcome_label(outcome: str) -> str:
    if outcome in ("stop", "length", "cancelled", "closed"):
        return outcome
    return "error"
