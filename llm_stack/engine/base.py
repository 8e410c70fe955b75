"""The engine interface the `tensorrt_llm` Triton model talks to.

An engine takes token ids with sampling parameters and streams token deltas back; it
can abort a sequence and report its batching statistics. The CPU engine (llama.cpp)
and the TensorRT-LLM engine both implement it.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from llm_stack.guided_decoding import Guide
from llm_stack.model_errors import CodedError, ErrorCode


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
    """The engine is shutting down or has failed."""


MAX_TOP_LOGPROBS = 20  # alternatives per token at most (OpenAI's top_logprobs limit)


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings; `temperature` 0 means greedy.

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
        return self.temperature == 0.0 or self.top_k == 1


@dataclass(frozen=True)
class GenerationRequest:
    """One sequence to generate: prompt ids, sampling and stop conditions."""

    request_id: str
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    bad_sequences: tuple[tuple[int, ...], ...] = ()
    end_id: int | None = None  # None: the model's own end-of-generation tokens
    # Structured output: the output must be this JSON value; the sequence ends with `stop`
    # when the value is complete.
    guide: Guide | None = None

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise InvalidRequestError("the prompt is empty: it has 0 tokens", field="text_input")
        if any(not seq for seq in (*self.stop_sequences, *self.bad_sequences)):
            raise InvalidRequestError(
                "stop and bad word sequences must not be empty", field="stop_words"
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


class Engine(Protocol):
    """What the `tensorrt_llm` model needs from an engine."""

    async def start(self) -> None:
        """Load weights and start the scheduler; fail fast if that is impossible."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenDelta]:
        """Stream deltas; each sequence's last one has `finish_reason` set, and the
        stream ends after the last sequence's.

        Raises `InvalidRequestError` or `EngineOverloadedError` before the first delta.
        Closing the iterator early aborts the sequence and frees its slot.
        """
        ...

    async def abort(self, request_id: str) -> None:
        """Abort a running or waiting sequence; a no-op if it already ended."""

    def stats(self) -> EngineStats:
        """The scheduler's current figures."""
        ...

    async def shutdown(self) -> None:
        """Abort everything and release the model."""
