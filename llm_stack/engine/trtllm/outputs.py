"""Reading the LLM API's streamed outputs: cumulative `RequestOutput`s become token deltas.

`LLM.generate_async(..., streaming=True)` returns a `RequestOutput` updated in place: each
`CompletionOutput` (one per sequence, told by `index`) holds the cumulative `token_ids` and
`logprobs` so far, and `finish_reason` once that sequence ended in the request's final
response. `StopSequenceFilter` applies the stop sequences TensorRT-LLM cannot (several
tokens) to one sequence's deltas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from llm_stack.engine.base import EngineError, FinishReason, TokenDelta, TokenLogprob
from llm_stack.engine.stops import StopMatcher

# The LLM API's finish reasons (CompletionOutput.finish_reason) -> ours. 'timeout' only
# happens with a per-request time budget, which we never set; the engine cut it short.
FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "cancelled": FinishReason.CANCELLED,
    "timeout": FinishReason.CANCELLED,
}


class LogprobLike(Protocol):
    """What we read of `tensorrt_llm.executor.result.Logprob`."""

    @property
    def logprob(self) -> float: ...


# One output token's entry of `CompletionOutput.logprobs`: token id -> Logprob, or the
# sampled token's value alone.
LogprobEntry = Mapping[int, LogprobLike] | float


class CompletionLike(Protocol):
    """What we read of `tensorrt_llm.executor.result.CompletionOutput`."""

    @property
    def index(self) -> int: ...

    @property
    def token_ids(self) -> Sequence[int] | None: ...

    @property
    def logprobs(self) -> Sequence[LogprobEntry] | None: ...

    @property
    def finish_reason(self) -> str | None: ...


class RequestOutputLike(Protocol):
    """What we read of `tensorrt_llm.llmapi.RequestOutput`."""

    @property
    def outputs(self) -> Sequence[CompletionLike]: ...

    @property
    def finished(self) -> bool: ...

    @property
    def cached_tokens(self) -> int: ...


UNKNOWN_LOGPROB = -9999.0  # a log-probability TensorRT-LLM did not report (OpenAI's floor)


def token_logprob(token: int, entry: LogprobEntry | None, top: int) -> TokenLogprob:
    """One output token's log-probability and its `top` likeliest alternatives, from its
    entry of `CompletionOutput.logprobs` (None: no entry)."""
    if entry is None:
        return TokenLogprob(UNKNOWN_LOGPROB)
    if not isinstance(entry, Mapping):
        return TokenLogprob(_reported(entry))
    values = {int(token_id): _reported(value.logprob) for token_id, value in entry.items()}
    ranked = sorted(values.items(), key=lambda item: (-item[1], item[0]))
    return TokenLogprob(values.get(token, UNKNOWN_LOGPROB), tuple(ranked[:top]))


def _reported(value: float) -> float:
    return max(float(value), UNKNOWN_LOGPROB)  # -inf (a banned token) is no JSON number


def delta_from_output(
    previous_len: int,
    output: RequestOutputLike,
    num_input_tokens: int,
    previous_cached: int = 0,
    *,
    index: int = 0,
    logprobs: int | None = None,
    max_tokens: int | None = None,
) -> TokenDelta:
    """Sequence `index`'s tokens after its first `previous_len`, from a cumulative output.

    With `logprobs` (alternatives per token, None: off) each token gets its TokenLogprob.
    A request that ended without a finish reason for this sequence ended it CANCELLED, or,
    given `max_tokens` (a sequence of several, whose reason TensorRT-LLM leaves unset when
    it ends before the last), LENGTH if it has that many tokens and STOP if fewer. The
    cached-token count is the largest reported so far: a response that leaves it unset
    does not undo what the request's prompt already got from the cache.
    """
    completion = _completion(output, index)
    token_ids: Sequence[int] = completion.token_ids or ()
    reason = completion.finish_reason
    finish: FinishReason | None = None
    if reason:
        finish = FINISH_REASONS.get(reason, FinishReason.CANCELLED)
    elif output.finished:
        if max_tokens is None:
            finish = FinishReason.CANCELLED  # ended without saying why: not a natural end
        elif len(token_ids) >= max_tokens:
            finish = FinishReason.LENGTH
        else:
            finish = FinishReason.STOP  # an end or stop token, which the filter cuts
    # A final output may be shorter than the last one (a stop token cut from it).
    new = tuple(token_ids[previous_len:])
    token_logprobs: tuple[TokenLogprob, ...] = ()
    if logprobs is not None:
        entries = completion.logprobs or ()
        token_logprobs = tuple(
            token_logprob(token, entries[at] if at < len(entries) else None, logprobs)
            for at, token in enumerate(new, start=previous_len)
        )
    return TokenDelta(
        token_ids=new,
        num_input_tokens=num_input_tokens,
        num_output_tokens=previous_len + len(new),
        finish_reason=finish,
        num_cached_tokens=max(previous_cached, int(output.cached_tokens or 0)),
        index=index,
        logprobs=token_logprobs,
    )


def _completion(output: RequestOutputLike, index: int) -> CompletionLike:
    for completion in output.outputs:
        if completion.index == index:
            return completion
    raise EngineError(f"TensorRT-LLM returned no output of index {index}")


class StopSequenceFilter:
    """Applies multi-token stop sequences to one sequence's stream of engine deltas.

    Tokens that might start a stop sequence are held back until the next ones decide;
    a matched stop sequence is cut and ends the stream with STOP. Log-probabilities go
    with their tokens: held back, cut and passed on alike.
    """

    def __init__(
        self, stop_sequences: Iterable[Sequence[int]], *, single_tokens: bool = False
    ) -> None:
        """Single-token stops only with `single_tokens`: TensorRT-LLM cuts them itself."""
        shortest = 1 if single_tokens else 2
        self._matcher = StopMatcher(seq for seq in stop_sequences if len(seq) >= shortest)
        self._output: list[int] = []
        self._logprobs: list[TokenLogprob] = []  # one per token received, when asked for
        self._emitted = 0

    def push(self, delta: TokenDelta) -> TokenDelta | None:
        """The delta to pass on (None: nothing yet); finished if a stop sequence matched."""
        finish = delta.finish_reason
        for at, token in enumerate(delta.token_ids):
            self._output.append(token)
            if delta.logprobs:
                self._logprobs.append(delta.logprobs[at])
            matched = self._matcher.matched_stop(self._output)
            if matched:  # cut: the log-probabilities past it are never passed on
                del self._output[-matched:]
                finish = FinishReason.STOP
                break
        visible = len(self._output)
        if finish is None:
            visible -= self._matcher.holdback(self._output)
        visible = max(visible, self._emitted)
        if visible == self._emitted and finish is None:
            return None
        new = tuple(self._output[self._emitted : visible])
        new_logprobs = tuple(self._logprobs[self._emitted : visible])
        self._emitted = visible
        return TokenDelta(
            token_ids=new,
            num_input_tokens=delta.num_input_tokens,
            num_output_tokens=self._emitted,
            finish_reason=finish,
            num_cached_tokens=delta.num_cached_tokens,
            index=delta.index,
            logprobs=new_logprobs,
        )
