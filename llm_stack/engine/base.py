"""The engine interface the `tensorrt_llm` Triton model talks to.

An engine takes token ids with sampling parameters and streams token deltas back; it
can abort a sequence and report its batching statistics. The CPU engine (llama.cpp)
and the TensorRT-LLM engine both implement it.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from llm_stack.guided_decoding import Guide
from llm_stack.model_errors import CodedError, ErrorCode

log = logging.getLogger(__name__)


class FinishReason(enum.StrEnum):
    """Why a sequence ended (OpenAI's names where they exist)."""

    STOP = "stop"  # end-of-sequence token or a stop word
    LENGTH = "length"  # max_tokens reached, or the context is full
    CANCELLED = "cancelled"  # aborted by the client


class EngineError(CodedError):
    """Base of the errors an engine raises for one request; models send them coded."""


class InvalidRequestError(EngineError):
    """The request cannot be served as given (bad parameter, prompt too long)."""

    default_code = ErrorCode.INVALID_ARGUMENT


class EngineOverloadedError(EngineError):
    """The engine's waiting queue is full; the caller may retry later."""

    default_code = ErrorCode.QUEUE_FULL


class EngineStoppedError(EngineError):
    """The engine is shutting down or has failed: it serves no request."""

    default_code = ErrorCode.ENGINE_UNAVAILABLE


MAX_TOP_LOGPROBS = 20  # alternatives per token at most (OpenAI's top_logprobs limit)
# Temperatures below this sample greedily (vLLM's _SAMPLING_EPS). Dividing logits by a
# tinier one overflows FP32 (a logit of 30 over 1e-40 is inf; inf - inf is NaN, and the
# draw lands on any token, control tokens included), and at 1e-5 the softmax already puts
# all the mass on the best token unless another is within about 1e-4 of it.
GREEDY_TEMPERATURE = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings; `temperature` below GREEDY_TEMPERATURE (0 too) means
    greedy.

    `n` sequences are sampled from one prompt (sequence i seeded `seed + i`); `logprobs`
    (None: off) asks for each output token's log-probability and that many likeliest
    alternatives, up to MAX_TOP_LOGPROBS.
    """

    max_tokens: int
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    seed: int | None = None
    n: int = 1
    logprobs: int | None = None

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str, str]] = [
            (self.max_tokens >= 1, "max_tokens", f"must be >= 1, got {self.max_tokens}"),
            (self.temperature >= 0.0, "temperature", f"must be >= 0, got {self.temperature}"),
            (self.top_k >= 0, "top_k", f"must be >= 0, got {self.top_k}"),
            (0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1], got {self.top_p}"),
            (
                self.repetition_penalty > 0.0,
                "repetition_penalty",
                f"must be > 0, got {self.repetition_penalty}",
            ),
            (self.min_tokens >= 0, "min_tokens", f"must be >= 0, got {self.min_tokens}"),
            (
                self.seed is None or 0 <= self.seed < 2**64,
                "seed",
                f"must be an unsigned 64-bit integer, got {self.seed}",
            ),
            # Named as the ensemble's inputs are: errors name what the client sent.
            (self.n >= 1, "num_return_sequences", f"must be >= 1, got {self.n}"),
            (
                self.logprobs is None or 0 <= self.logprobs <= MAX_TOP_LOGPROBS,
                "num_top_log_probs",
                f"must be in 0..{MAX_TOP_LOGPROBS}, got {self.logprobs}",
            ),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise InvalidRequestError(f"{name} {rule}", field=name)

    @property
    def greedy(self) -> bool:
        """Whether to take the likeliest token: the one place that rule is decided."""
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1


@dataclass(frozen=True)
class GenerationRequest:
    """One sequence to generate: prompt ids, sampling and stop conditions."""

    request_id: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    bad_sequences: tuple[tuple[int, ...], ...] = ()
    end_id: int | None = None  # None: the model's own end-of-generation tokens
    # Structured output: the output must be what the guide allows (a JSON value, or text and
    # tool calls); the sequence ends with `stop` where the guide allows nothing but the end.
    guide: Guide | None = None

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise InvalidRequestError("the prompt is empty: it has 0 tokens", field="text_input")
        if any(not seq for seq in (*self.stop_sequences, *self.bad_sequences)):
            raise InvalidRequestError(
                "stop and bad word sequences must not be empty", field="stop_words"
            )


def check_token_ids(request: GenerationRequest, vocab_size: int) -> None:
    """Refuse a request holding a token id outside the vocabulary, naming the input, the
    vocabulary size and the id: an engine fed one fails (llama.cpp's decode refuses the
    whole batch, a GPU embedding lookup reads out of bounds)."""
    groups: list[tuple[str, Iterable[int]]] = [
        ("input_ids", request.prompt_ids),
        ("stop_words", (t for seq in request.stop_sequences for t in seq)),
        ("bad_words", (t for seq in request.bad_sequences for t in seq)),
        ("end_id", () if request.end_id is None else (request.end_id,)),
    ]
    for name, ids in groups:
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"{name} holds token id {bad}, outside the vocabulary of {vocab_size} tokens "
                f"(ids 0..{vocab_size - 1})",
                field=name,
                limit=vocab_size,
                value=bad,
            )


@dataclass(frozen=True)
class TokenLogprob:
    """A sampled token's log-probability and the likeliest alternatives, likeliest first,
    as (token id, log-probability), from the distribution the token was drawn from."""

    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class TokenDelta:
    """New tokens of one sequence; the last delta carries `finish_reason`.

    With `n` > 1 each of a request's sequences streams its own deltas, told apart by
    `index`; the request ends when every index has sent its last delta.
    """

    token_ids: tuple[int, ...]
    num_input_tokens: int
    num_output_tokens: int  # all output tokens of this sequence so far, this delta included
    finish_reason: FinishReason | None = None
    num_cached_tokens: int = 0  # prompt tokens reused from the prefix cache, not computed
    index: int = 0  # which of the request's n sequences
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token id, when asked for

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


async def request_deltas(
    get: Callable[[], Awaitable[TokenDelta | EngineError]],
    sequences: int,
    abandon: Callable[[], None],
) -> AsyncGenerator[TokenDelta, None]:
    """A request's deltas from its mailbox until all `sequences` have sent their last.

    An `EngineError` in the mailbox (the engine dropped the request) is raised. A consumer
    that stops early (closed, cancelled, or raising) calls `abandon`, so the engine aborts
    the request rather than generating for nobody; engines wrap this in
    `contextlib.aclosing` so the abort happens when their own generator is closed.
    """
    remaining, finished = sequences, False
    try:
        while True:
            delta = await get()
            if isinstance(delta, EngineError):
                finished = True  # the engine dropped the request already
                raise delta
            remaining -= delta.finished
            finished = remaining == 0
            yield delta
            if finished:
                return
    finally:
        if not finished:
            abandon()


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's scheduler, exported as Triton metrics."""

    active: int = 0  # sequences holding a slot (prefilling or decoding)
    waiting: int = 0  # admitted to the queue, no slot yet
    max_active: int = 0  # slot count (the in-flight batch limit)
    context: int = 0  # sequences in prefill during the last step
    scheduled: int = 0  # sequences in the last step's batch
    steps: int = 0  # engine steps since start
    step_sequences: int = 0  # sum over steps of sequences in the step
    peak_step_batch: int = 0  # most sequences ever decoded in one step
    generated_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)  # by finish reason
    # Prefix cache: prompt tokens taken from it vs computed; KV cells in use.
    prompt_tokens_cached: int = 0
    prompt_tokens_computed: int = 0
    kv_cache_tokens: int = 0  # cells in all
    kv_reserved_tokens: int = 0  # held for running sequences (prompt + max_tokens each)
    prefix_cache_tokens: int = 0  # held by cached prefix blocks
    block_tokens: int = 0  # tokens per cache block (0: no blocks)
    failed: int = 0  # sequences ended by an engine failure (their requests got an error)


@dataclass(frozen=True)
class EngineHealth:
    """Whether the engine can generate; if not, why (our own words, for logs and probes)."""

    ok: bool
    reason: str = ""


MAX_FAILED_STEPS = 3  # consecutive failed steps (or requests) that make an engine unhealthy
STALL_TIMEOUT_S = 120.0  # no progress for this long while work is pending: unhealthy


class HealthMonitor:
    """An engine's own liveness figures: consecutive failures and the time of its last
    progress, read by `health()` from another thread.

    Unhealthy once `fatal` was called (for good), after `max_failures` failures with no
    success between them, or when nothing progressed for `stall_s` while work is pending.
    Each turn to unhealthy is logged once, with its reason.
    """

    def __init__(
        self,
        name: str,
        max_failures: int = MAX_FAILED_STEPS,
        stall_s: float = STALL_TIMEOUT_S,
        work: str = "engine steps",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`name`: the engine, for the log; `work`: what fails and progresses (plural)."""
        self.name = name
        self.work = work
        self._clock = clock
        self.max_failures = max_failures
        self.stall_s = stall_s
        self._lock = threading.Lock()
        self._fatal: str | None = None
        self._failures = 0
        self._last_failure = ""
        self._progress_at = clock()
        self._reported: str | None = None  # the unhealthy reason last logged

    def progressed(self) -> None:
        """The engine did work (a step ran) or has none waiting."""
        self._progress_at = self._clock()

    def succeeded(self) -> None:
        """A step (or request) went through: failures before it were not the engine's end."""
        with self._lock:
            self._failures = 0

    def failed(self, why: str) -> None:
        """A step (or request) failed; its requests were told."""
        with self._lock:
            self._failures += 1
            self._last_failure = why
            self._report(self._health(busy=False))

    def fatal(self, why: str) -> None:
        """The engine cannot generate any more (its loop is gone)."""
        with self._lock:
            if self._fatal is None:
                self._fatal = why
            self._report(self._health(busy=False))

    def check(self, busy: bool) -> EngineHealth:
        """The health now; `busy`: work is pending, so a lack of progress is a stall."""
        with self._lock:
            health = self._health(busy)
            self._report(health)
        return health

    def _health(self, busy: bool) -> EngineHealth:
        if self._fatal is not None:
            return EngineHealth(False, self._fatal)
        if self._failures >= self.max_failures:
            return EngineHealth(
                False,
                f"the last {self._failures} {self.work} failed (last: {self._last_failure})",
            )
        stalled = self._clock() - self._progress_at
        if busy and stalled > self.stall_s:
            return EngineHealth(
                False,
                f"no progress of {self.work} for {stalled:.0f} s while requests are pending "
                f"(limit {self.stall_s:.0f} s)",
            )
        return EngineHealth(True)

    def _report(self, health: EngineHealth) -> None:
        # Once per turn, not per probe: a probe every few seconds would flood the log.
        if health.ok and self._reported is not None:
            log.warning("%s is healthy again", self.name)
            self._reported = None
        elif not health.ok and self._reported is None:
            log.error("%s is unhealthy: %s", self.name, health.reason)
            self._reported = health.reason


class Engine(Protocol):
    """What the `tensorrt_llm` model needs from an engine."""

    async def start(self) -> None:
        """Load weights and start the scheduler; fail fast if that is impossible."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenDelta]:
        """Stream deltas; each sequence's last one has `finish_reason` set, and the
        stream ends after the last sequence's.

        Raises `InvalidRequestError` or `EngineOverloadedError` before the first delta,
        `EngineError` where the engine failed the request (the others go on).
        Closing the iterator early aborts the sequence and frees its slot.
        """
        ...

    async def abort(self, request_id: str) -> None:
        """Abort a running or waiting sequence; a no-op if it already ended."""

    def stats(self) -> EngineStats:
        """The scheduler's current figures."""
        ...

    def health(self) -> EngineHealth:
        """Whether the engine can generate, and if not why; cheap, never blocks."""
        ...

    async def shutdown(self) -> None:
        """Abort everything and release the model."""
