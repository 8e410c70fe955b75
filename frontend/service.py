"""The generation pipeline, free of any HTTP or wire format.

admission (concurrency bound, then rate limits) → Triton call → usage accounting.
`GenerationService.generate` takes a validated request and yields internal events; the
protocol layers (/generate, the OpenAI API under /v1) only render them. A request for n
choices is one Triton call whose n sequences stream side by side: events name their choice.

A request with tools (and a tool choice other than none) has each choice's text read by
a `ToolCallParser` of the request's format, so every API renders the same events: its
content as TextDelta, and each call as ToolCallStart (id, name), ToolCallArguments (its
JSON text as it comes) and ToolCallEnd; a choice that ended with calls finishes with
`tool_calls`. Without tools no parser runs: the text goes out as it comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from frontend.admission import ConcurrencyGate
from frontend.errors import (
    FrontendError,
    InvalidInputError,
    RateLimitedError,
    TritonInternalError,
)
from frontend.metrics import FrontendMetrics
from frontend.rate_limit import RateLimiter, Reservation, estimate_prompt_tokens
from frontend.triton_client import EngineChunk, TritonPool
from frontend.validation import ValidatedRequest
from llm_stack.ensemble_contract import EnsembleTokenLogprob
from llm_stack.tool_calls import (
    ArgumentsDelta,
    ToolCallEvent,
    ToolCallFinished,
    ToolCallParser,
    ToolCallStarted,
)
from llm_stack.tool_calls import TextDelta as ParsedText

log = logging.getLogger(__name__)

# tool_calls: the choice ended (as with stop) after making tool calls.
FinishReason = Literal["stop", "length", "tool_calls"]
# What a request without tools can end with.
TextFinishReason = Literal["stop", "length"]


def text_finish(reason: FinishReason) -> TextFinishReason:
    """`reason` of a request without tools (an API that takes none never sees tool_calls)."""
    assert reason != "tool_calls", "a request without tools ended with tool calls"
    return reason


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: `key_id` labels usage, `rate_key` names the rate-limit budget."""

    key_id: str
    rate_key: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int  # the prompt's, once whatever the number of choices
    completion_tokens: int  # summed over the choices
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
    """New text of choice `index`, with its tokens' log-probabilities when asked for (the
    text may be empty while the tokens hold part of a character)."""

    text: str
    index: int = 0
    logprobs: tuple[EnsembleTokenLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """Choice `index` begins its tool call number `call` (0, 1, ... within the choice):
    its id (OpenAI's shape, `call_...`) and the function's name."""

    index: int
    call: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallArguments:
    """More of the arguments' JSON text of choice `index`'s call number `call`."""

    index: int
    call: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    """Choice `index`'s call number `call` has all its arguments (`complete`), or the
    output ended inside them (cut by max_tokens: the arguments are a prefix)."""

    index: int
    call: int
    complete: bool


@dataclass(frozen=True, slots=True)
class ChoiceFinished:
    """Choice `index` has all its text; the others may still be running."""

    index: int
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class Completed:
    """Last event of a generation that ran to its end: every choice has finished."""

    finish_reasons: tuple[FinishReason, ...]  # by choice index
    usage: Usage
    model_version: str

    @property
    def finish_reason(self) -> FinishReason:
        """The first choice's (the only one without n)."""
        return self.finish_reasons[0]


ToolCallDelta = ToolCallStart | ToolCallArguments | ToolCallEnd
GenerationEvent = Admitted | TextDelta | ToolCallDelta | ChoiceFinished | Completed


@dataclass(slots=True)
class GenerationRecord:
    """What one generation used and how it ended; filled in as it runs (for logs)."""

    key_id: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    outcome: str = "pending"
    model_version: str = ""

    def stopped_by_api(self) -> None:
        """The API ended the generation itself at a stop it found in the text (Anthropic's
        stop sequences): counted as a stop, not as a client gone away, though closing the
        events then cancels the Triton call."""
        if self.outcome == "pending":
            self.outcome = "stop"


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

    async def validated(
        self, caller: Caller, validate: Callable[[], ValidatedRequest]
    ) -> ValidatedRequest:
        """What `validate` makes of a request; when it refuses the request as invalid, the
        refusal counts against the caller's requests per minute (429 once they are spent)."""
        try:
            return validate()
        except InvalidInputError:
            if self._limiter.enabled:
                try:
                    await self._limiter.charge_refused(caller.rate_key)
                except RateLimitedError as limited:
                    self._metrics.rate_limited.labels(limited.limit_name).inc()
                    raise limited from None
            raise

    async def generate(
        self,
        request: ValidatedRequest,
        caller: Caller,
        request_id: str,
        record: GenerationRecord | None = None,
    ) -> AsyncGenerator[GenerationEvent, None]:
        """Admitted, then TextDelta for each piece of new text and ChoiceFinished as each
        choice ends, then Completed.

        Raises FrontendError subclasses; closing the iterator early (client gone) cancels
        the Triton call. Resources are released however it ends.
        """
        record = record if record is not None else GenerationRecord(caller.key_id)
        # A request holds a slot of the gate and tokens of its budget for each of its n
        # sequences: n choices cost the engine what n requests would (bar the prompt).
        slots = await self._gate.acquire(request.n)
        reservation: Reservation | None = None
        try:
            reserve = (
                estimate_prompt_tokens(request.estimated_text) + request.n * request.max_tokens
            )
            if self._limiter.enabled:
                try:
                    reservation = await self._limiter.admit(caller.rate_key, reserve)
                except RateLimitedError as limited:
                    self._metrics.rate_limited.labels(limited.limit_name).inc()
                    raise
            yield Admitted(reservation.headers() if reservation else {})
            run = self._run(request, request_id, record)
            if request.parses_tool_calls:
                run = _with_tool_calls(run, request)
            async with aclosing(run) as events:
                async for event in events:
                    yield event
        except FrontendError as error:
            record.outcome = type(error).__name__
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # Closing after Completed is the normal end; before it, the client went away.
            if record.outcome == "pending":
                record.outcome = "cancelled"
            raise
        finally:
            self._gate.release(slots)
            if record.outcome == "pending":
                record.outcome = "closed"
            self._metrics.generations.labels(_outcome_label(record.outcome)).inc()
            self._account(caller, reservation, record)

    async def _run(
        self, request: ValidatedRequest, request_id: str, record: GenerationRecord
    ) -> AsyncGenerator[GenerationEvent, None]:
        """The Triton call's events, until every choice has finished."""
        metrics = self._metrics
        started = time.perf_counter()
        first_text = True
        # Per choice: its completion tokens so far, and when (and at how many tokens) its
        # last text came, so inter-token latency is measured within each sequence.
        tokens: dict[int, int] = {}
        last_text: dict[int, tuple[float, int]] = {}
        finished: dict[int, FinishReason] = {}
        last: EngineChunk | None = None
        async for chunk in self._pool.generate(request, request_id):
            index = chunk.index
            if not 0 <= index < request.n or index in finished:
                log.error("generation %s got a response of choice %d", request_id, index)
                raise TritonInternalError
            last = chunk
            tokens[index] = chunk.completion_tokens
            record.prompt_tokens = chunk.prompt_tokens
            record.completion_tokens = sum(tokens.values())
            if chunk.text and request.stream:
                now = time.perf_counter()
                previous = last_text.get(index)
                if first_text:
                    metrics.time_to_first_token.observe(now - started)
                    first_text = False
                elif previous is not None:
                    gap = max(1, chunk.completion_tokens - previous[1])
                    metrics.inter_token_latency.observe((now - previous[0]) / gap)
                last_text[index] = (now, chunk.completion_tokens)
            if chunk.text or chunk.logprobs:
                yield TextDelta(chunk.text, index, chunk.logprobs)
            if chunk.finish_reason:
                if chunk.finish_reason not in ("stop", "length"):
                    log.error(
                        "generation %s choice %d ended with finish reason %r",
                        request_id,
                        index,
                        chunk.finish_reason,
                    )
                    raise TritonInternalError
                finish: FinishReason = "stop" if chunk.finish_reason == "stop" else "length"
                finished[index] = finish
                yield ChoiceFinished(index, finish)
                if len(finished) == request.n:
                    break
        if last is None or len(finished) < request.n:
            log.error(
                "generation %s ended with %d of %d choices finished",
                request_id,
                len(finished),
                request.n,
            )
            raise TritonInternalError
        reasons = tuple(finished[i] for i in range(request.n))
        # A request some of whose choices ran out of tokens counts as cut by its length.
        record.outcome = "length" if "length" in reasons else "stop"
        record.model_version = last.model_version
        yield Completed(
            reasons,
            Usage(last.prompt_tokens, sum(tokens.values()), last.cached_tokens),
            last.model_version,
        )

    def _account(
        self, caller: Caller, reservation: Reservation | None, record: GenerationRecord
    ) -> None:
        """Count usage and correct the token reservation off the response path."""
        self._metrics.count_tokens(caller.key_id, record.prompt_tokens, record.completion_tokens)
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


async def _with_tool_calls(
    events: AsyncGenerator[GenerationEvent, None], request: ValidatedRequest
) -> AsyncGenerator[GenerationEvent, None]:
    """`events` with each choice's text read for tool calls (one parser per choice)."""
    assert request.tools is not None
    fmt = request.tools.format
    names = [tool.name for tool in request.tools.tools]
    parsers: dict[int, ToolCallParser] = {}
    called: set[int] = set()  # choices that made a complete call
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                parser = parsers.get(event.index)
                if parser is None:
                    parser = parsers[event.index] = ToolCallParser(
                        fmt, tool_names=names, calls_only=request.tools.calls_only
                    )
                for out in _tool_events(parser.feed(event.text), event.index, called):
                    yield out
            elif isinstance(event, ChoiceFinished):
                parser = parsers.pop(event.index, None)
                if parser is not None:
                    for out in _tool_events(parser.finish(), event.index, called):
                        yield out
                yield ChoiceFinished(event.index, _finish(event.finish_reason, event.index, called))
            elif isinstance(event, Completed):
                reasons = tuple(
                    _finish(reason, index, called)
                    for index, reason in enumerate(event.finish_reasons)
                )
                yield Completed(reasons, event.usage, event.model_version)
            else:
                yield event


def _finish(reason: FinishReason, index: int, called: set[int]) -> FinishReason:
    # Cut by max_tokens stays `length`, calls or not (the last may be incomplete).
    return "tool_calls" if reason == "stop" and index in called else reason


def _tool_events(
    parsed: list[ToolCallEvent], index: int, called: set[int]
) -> list[GenerationEvent]:
    out: list[GenerationEvent] = []
    for event in parsed:
        match event:
            case ParsedText(text):
                out.append(TextDelta(text, index))
            case ToolCallStarted(call, call_id, name):
                out.append(ToolCallStart(index, call, call_id, name))
            case ArgumentsDelta(call, text):
                out.append(ToolCallArguments(index, call, text))
            case ToolCallFinished(call, complete):
                if complete:
                    called.add(index)
                out.append(ToolCallEnd(index, call, complete))
    return out


def _outcome_label(outcome: str) -> str:
    if outcome in ("stop", "length", "cancelled", "closed"):
        return outcome
    return "error"
