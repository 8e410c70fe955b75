"""GPU engine: the TensorRT-LLM LLM API (`tensorrt_llm.LLM`) behind the `Engine` interface.

TensorRT-LLM does the in-flight batching, KV cache paging, KV block reuse and sampling
itself; this adapter maps our requests onto `SamplingParams`, turns the LLM API's
cumulative streamed outputs into token deltas, bounds the sequences in flight and keeps
the figures the Triton metrics need. `tensorrt_llm` is imported in `start()` only, so the
CPU path never loads it.

What it loads (`start()`):
- By default a Hugging Face checkpoint directory through the PyTorch backend,
  `tensorrt_llm.LLM(model=..., backend="pytorch")`, as NVIDIA's own Triton model does
  (`triton_backend/all_models/llmapi`, the only Triton flavour NVIDIA keeps). In
  TensorRT-LLM 1.x `tensorrt_llm.LLM` is the PyTorch-backend class (`_TorchLLM` in
  `llmapi/llm.py`), whose `backend` defaults to "pytorch"; saying so keeps it explicit.
- Legacy: a directory `trtllm-build` wrote (`rank*.engine` beside `config.json`) through
  the TensorRT backend's LLM, `tensorrt_llm._tensorrt_engine.LLM` (the class the PyTorch
  LLM's own error message names for TensorRT-backend arguments).
- Either way `kv_cache_config=KvCacheConfig(enable_block_reuse, free_gpu_memory_fraction)`
  (`tensorrt_llm.llmapi.KvCacheConfig`, defined in `llmapi/llm_args.py`; both fields exist
  for both backends). Block reuse on a TensorRT engine needs one built with paged context
  attention (`trtllm-build --use_paged_context_fmha enable`).

The mapping follows the LLM API of TensorRT-LLM 1.0 (`tensorrt_llm/sampling_params.py`,
`tensorrt_llm/executor/result.py`, `tensorrt_llm/llmapi/llm.py` at version 1.0.0rc4; the
field names are unchanged in the 1.4 reference docs):
- `SamplingParams(end_id, pad_id, max_tokens, stop_token_ids, bad_token_ids, top_k, top_p,
  temperature, seed, min_tokens, repetition_penalty, presence_penalty, frequency_penalty,
  detokenize)`. A field left as None takes the C++ runtime's default.
- Stop and bad words of several tokens exist only as strings (`stop`, `bad`) that the LLM
  API tokenizes itself; token-id lists are public for single tokens only.
- `LLM.generate_async(token_ids, sampling_params=..., streaming=True)` returns a
  `RequestOutput` at once; iterating it asynchronously yields the same object, updated:
  `outputs[0].token_ids` is cumulative, `outputs[0].finish_reason` is one of 'stop',
  'length', 'timeout', 'cancelled' on the final output. On a stop token the token is cut
  from `token_ids` in that final output; an end id is never in the output.
- `RequestOutput.abort()` cancels the request; its final output then says 'cancelled'.
- `LLM.get_stats_async(timeout)` yields one dict per engine iteration (C++ IterationStats
  as JSON: `numActiveRequests`, `inflightBatchingStats.numScheduledRequests`, ...).
- `RequestOutput.cached_tokens` (newer versions; `executor/result.py`, set from each
  response's `cached_tokens`, 0 until known): prompt tokens reused from the KV cache, what
  TensorRT-LLM's OpenAI server reports as `prompt_tokens_details.cached_tokens`. Versions
  without it read as 0.
- Structured outputs: `SamplingParams(guided_decoding=GuidedDecodingParams(json=<schema>))`
  or `GuidedDecodingParams(json_object=True)` (`tensorrt_llm/sampling_params.py`), as
  TensorRT-LLM's own OpenAI server maps `response_format`; they are enforced only when the
  LLM has a grammar backend, `guided_decoding_backend="xgrammar"` (`llmapi/llm_args.py`,
  default None; xgrammar serves both backends, llguidance only PyTorch). The value ends
  with the end id, hence finish reason 'stop'.

Several sequences (`SamplingParams.n`), read in `tensorrt_llm/sampling_params.py`,
`tensorrt_llm/executor/result.py` and `cpp/tensorrt_llm/batch_manager/llmRequest.cpp`:
- `SamplingParams(n=...)`; `best_of` is left unset, which the LLM API makes `n`. With
  `best_of > n` it would sort the outputs by cumulative log-probability and renumber their
  `index` on every streamed iteration, so a stream could not follow one sequence.
- The C++ runtime runs the n as child requests seeded `seed + sequence index`, the rule of
  our `SamplingParams`. `RequestOutput.outputs` holds n `CompletionOutput`s, each with its
  `index`, cumulative `token_ids` and `logprobs`, updated in place.
- `RequestOutput.finished` (C++ `Result.isFinal`) comes once every sequence is final. A
  sequence's `finish_reason` (and the cut of a stop token) is set only in that request's
  final response (`if self._done` in `_handle_sequence`), except 'cancelled': a sequence
  that ends before the others streams its stop token, uncut, and no finish of its own.
  So with several sequences the stream filter also matches single-token stops (and the
  end id), ending the sequence there; one that ended otherwise is ended when the request
  ends, LENGTH if it holds max_tokens tokens, else STOP (the model's end of generation).
- The LLM API refuses greedy decoding with `best_of > 1` unless the process sets
  TLLM_ALLOW_N_GREEDY_DECODING. Greedy sequences of one prompt are all the same, so for
  greedy sampling the engine asks for one and streams it as each of the n (admission and
  the statistics still count n sequences, as for any request).
- `abort()` cancels the whole request; a sequence cannot be stopped alone. A sequence a
  multi-token stop sequence ends here runs on in TensorRT-LLM, unread, until its request
  ends or every other sequence ended too (then the request is aborted).

Token log-probabilities (`SamplingParams.logprobs`), read in `tensorrt_llm/sampling_params.py`,
`executor/result.py`, `_torch/pyexecutor/sampler.py` and `_torch/pyexecutor/sampler/
logprobs.py` at several commits, and in the 1.3 API reference:
- `SamplingParams(logprobs=k)`. Versions whose `_get_output_config` turns them on with
  `bool(self.logprobs)` read 0 as off, so the engine asks for `max(k, 1)` and keeps k
  alternatives, as TensorRT-LLM's own server does (`ChatCompletionRequest
  .to_sampling_params` in `serve/openai_protocol.py`: `1 if not top_logprobs`).
- `CompletionOutput.logprobs` holds one entry per output token: a dict token id ->
  `Logprob(logprob, rank)` (`TokenLogprobs`), or a plain float (the sampled token's only).
  It is not cut with a stop token, so it may run past `token_ids`: it is read by position.
- Which distribution, PyTorch backend: an earlier `TorchSampler` returned only the
  sampled token, {token: Logprob(logprob, rank=1)}, from the softmax it drew from. Later
  ones return the top k of log_softmax of the model's logits, "specified to not reflect
  temperature scaling, top-k/top-p masking" (their comment); in some of those the sampled
  token is in the dict only when among the k. The newest (1.3 reference: "return top-K log
  probabilities + the sampled token's log probability ... if it's not in the Top-K") put
  the sampled token first and add `SamplingParams.logprobs_mode`: `LogprobMode.RAW`, the
  default and the above, or `PROCESSED` (after temperature and top-k/top-p). The engine
  leaves it unset (older versions refuse the field): the values are the model's own
  distribution at temperature 1, before top-k/top-p, unlike the CPU engine's (after
  temperature and penalties).
- Legacy TensorRT backend: computed after the fact from the generation logits
  (`compute_logprobs` in `executor/result.py`, log_softmax, top k), which needs an engine
  built with `--gather_generation_logits`; TensorRT-LLM's own server refuses
  `top_logprobs` without it.
- Mapping (as `create_logprobs` in `serve/postprocess_handlers.py` reads them): the
  sampled token's value from its entry, the alternatives the entry's k likeliest. A value
  TensorRT-LLM did not give (a sampled token outside a top-k-only dict, a position with no
  entry) reads UNKNOWN_LOGPROB, -9999.0, OpenAI's "very unlikely", to which -inf is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from llm_stack.engine.base import (
    STALL_TIMEOUT_S,
    EngineError,
    EngineHealth,
    EngineOverloadedError,
    EngineStats,
    EngineStoppedError,
    FinishReason,
    GenerationRequest,
    HealthMonitor,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
    check_token_ids,
)
from llm_stack.engine.stops import StopMatcher
from llm_stack.guided_decoding import GUIDE_TYPE_FIELD, Guide, GuideType
from llm_stack.model_errors import ErrorCode

log = logging.getLogger(__name__)

# The LLM API's finish reasons (CompletionOutput.finish_reason) → ours. 'timeout' only
# happens with a per-request time budget, which we never set; the engine cut it short.
FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "cancelled": FinishReason.CANCELLED,
    "timeout": FinishReason.CANCELLED,
}

STATS_TIMEOUT_S = 1.0  # how long one pass over the iteration-stats queue waits for more
STATS_IDLE_S = 0.5  # pause between passes, so an idle engine is not polled in a busy loop


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
    """What we read of `tensorrt_llm.llmapi.RequestOutput` (and `cached_tokens` if it has it)."""

    @property
    def outputs(self) -> Sequence[CompletionLike]: ...

    @property
    def finished(self) -> bool: ...


def to_sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """Keyword arguments for `tensorrt_llm.SamplingParams`; raises InvalidRequestError.

    Multi-token stop sequences are left out: the engine matches them on the stream
    (`StopSequenceFilter`), since the LLM API takes them only as strings.
    """
    sampling = request.sampling
    kwargs: dict[str, Any] = {"max_tokens": sampling.max_tokens, "detokenize": False}
    if sampling.greedy:
        # top_k=1 is greedy in every LLM API version; temperature=0 is accepted as
        # greedy only by newer ones (older C++ runtimes require temperature > 0).
        kwargs["top_k"] = 1
    else:
        # top_p is always set: with top_k, top_p and temperature all unset, the runtime
        # decodes greedily.
        kwargs["temperature"] = sampling.temperature
        kwargs["top_p"] = sampling.top_p
        if sampling.top_k > 0:
            kwargs["top_k"] = sampling.top_k
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
    # Neutral values stay unset, so the runtime skips the penalty kernels.
    if sampling.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = sampling.repetition_penalty
    if sampling.presence_penalty != 0.0:
        kwargs["presence_penalty"] = sampling.presence_penalty
    if sampling.frequency_penalty != 0.0:
        kwargs["frequency_penalty"] = sampling.frequency_penalty
    if sampling.min_tokens > 0:
        kwargs["min_tokens"] = sampling.min_tokens
    if engine_sequences(sampling) > 1:
        kwargs["n"] = sampling.n  # best_of unset: the LLM API makes it n
    if sampling.logprobs is not None:
        # 0 turns them off in some versions; the one alternative is dropped.
        kwargs["logprobs"] = max(sampling.logprobs, 1)
    if request.end_id is not None:
        # Unset, the LLM API takes both from the model's tokenizer.
        kwargs["end_id"] = request.end_id
        kwargs["pad_id"] = request.end_id
    stop_ids = _single_tokens(request.stop_sequences)
    if stop_ids:
        kwargs["stop_token_ids"] = stop_ids
    long_bad = [seq for seq in request.bad_sequences if len(seq) > 1]
    if long_bad:
        raise InvalidRequestError(
            f"bad_words: the TensorRT-LLM engine bans single tokens only; "
            f"{len(long_bad)} bad word(s) encode to several tokens (the longest to "
            f"{max(len(seq) for seq in long_bad)})",
            field="bad_words",
        )
    bad_ids = _single_tokens(request.bad_sequences)
    if bad_ids:
        kwargs["bad_token_ids"] = bad_ids
    return kwargs


def engine_sequences(sampling: SamplingParams) -> int:
    """Sequences TensorRT-LLM generates for a request: greedy ones would all be the same
    (and the LLM API refuses several), so a greedy request gets one, streamed n times."""
    return 1 if sampling.greedy else sampling.n


def guided_decoding_kwargs(guide: Guide) -> dict[str, Any]:
    """Keyword arguments for `tensorrt_llm.sampling_params.GuidedDecodingParams`."""
    if guide.type is GuideType.JSON:
        return {"json_object": True}
    return {"json": guide.schema}


def _single_tokens(sequences: Iterable[Sequence[int]]) -> list[int]:
    return sorted({seq[0] for seq in sequences if len(seq) == 1})


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
        num_cached_tokens=max(previous_cached, int(getattr(output, "cached_tokens", 0) or 0)),
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


@dataclass
class IterationFigures:
    """Per-iteration statistics of the TensorRT-LLM executor, folded into running figures."""

    seen: bool = False
    active: int = 0  # numActiveRequests of the latest iteration
    context: int = 0
    scheduled: int = 0
    steps: int = 0
    step_sequences: int = 0
    peak_step_batch: int = 0

    def add(self, item: Mapping[str, Any] | str) -> None:
        """Fold one iteration (a dict, or its JSON as some versions give it)."""
        stats: Mapping[str, Any] = json.loads(item) if isinstance(item, str) else item
        batching = stats.get("inflightBatchingStats") or {}
        scheduled = int(batching.get("numScheduledRequests", 0))
        self.seen = True
        self.active = int(stats.get("numActiveRequests", 0))
        self.context = int(batching.get("numContextRequests", 0))
        self.scheduled = scheduled
        if scheduled > 0:
            self.steps += 1
            self.step_sequences += scheduled
            self.peak_step_batch = max(self.peak_step_batch, scheduled)


def config_vocab_size(model_path: Path) -> int | None:
    """The vocabulary size (embedding rows) in a model directory's config.json: a Hugging
    Face checkpoint's `vocab_size` (`text_config.vocab_size` for multimodal ones), an
    engine directory's `pretrained_config.vocab_size`; None where it says none."""
    try:
        config = json.loads((model_path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for section in (config, config.get("text_config"), config.get("pretrained_config")):
        if isinstance(section, dict):
            size = section.get("vocab_size")
            if isinstance(size, int) and not isinstance(size, bool) and size > 0:
                return size
    return None


def tokenizer_vocab_size(llm: Any) -> int | None:
    """The size of the LLM's tokenizer, added tokens included (None: it has none). The LLM
    API wraps Hugging Face's tokenizer (`TransformersTokenizer.tokenizer`)."""
    tokenizer = getattr(llm, "tokenizer", None)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    try:
        size = len(tokenizer) if tokenizer is not None else 0
    except TypeError:
        return None
    return size if size > 0 else None


def executor_failure(llm: Any) -> str | None:
    """Why the LLM's executor cannot serve (None: as far as it tells, it can).

    Read as each TensorRT-LLM version offers it: `LLM.shutdown` sets `_executor` to None;
    newer executors have `check_health()` (False after a fatal error or a shutdown) or
    `is_shutdown()`, older ones the flag `doing_shutdown`.
    """
    if not hasattr(llm, "_executor"):
        return None  # an LLM class that tells nothing
    executor = llm._executor
    if executor is None:
        return "the TensorRT-LLM executor is shut down"
    try:
        check = getattr(executor, "check_health", None)
        is_shutdown = getattr(executor, "is_shutdown", None)
        if callable(check):
            healthy = bool(check())
        elif callable(is_shutdown):
            healthy = not is_shutdown()
        else:
            healthy = not getattr(executor, "doing_shutdown", False)
    except Exception as exc:
        return f"the TensorRT-LLM executor failed its health check: {type(exc).__name__}"
    return None if healthy else "the TensorRT-LLM executor hit a fatal error or is shutting down"


def is_engine_dir(path: Path) -> bool:
    """A directory `trtllm-build` wrote: `rank*.engine` files beside its config.json.

    Such a directory loads through the legacy TensorRT backend; anything else (a Hugging
    Face checkpoint) through the PyTorch backend.
    """
    return path.is_dir() and any(path.glob("rank*.engine")) and (path / "config.json").is_file()


class TrtLlmEngine:
    """TensorRT-LLM through its LLM API (implements `Engine`)."""

    def __init__(
        self,
        model_path: str,
        max_batch_size: int,
        max_queue: int,
        max_input_len: int,
        max_seq_len: int,
        llm_kwargs: Mapping[str, Any] | None = None,
        *,
        enable_block_reuse: bool = True,
        free_gpu_memory_fraction: float = 0.9,
        llm_factory: Callable[[], Any] | None = None,
        sampling_params_factory: Callable[..., Any] | None = None,
        guided_decoding_params_factory: Callable[..., Any] | None = None,
        collect_iteration_stats: bool = True,
        vocab_size: int | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> None:
        """`llm_kwargs` go to the LLM class, over ours; the factories replace it (tests,
        custom LLMs). `enable_block_reuse` and `free_gpu_memory_fraction` (of the GPU
        memory free after loading the model, in (0, 1]) make its `KvCacheConfig`.
        `vocab_size` bounds token ids (None: the model's config.json, else its tokenizer).
        """
        for name, value, minimum in (
            ("max_batch_size", max_batch_size, 1),
            ("max_queue", max_queue, 0),
            ("max_input_len", max_input_len, 1),
            ("max_seq_len", max_seq_len, 2),
        ):
            if value < minimum:
                raise ValueError(f"{name} must be >= {minimum}, got {value}")
        if max_input_len >= max_seq_len:
            raise ValueError(
                f"max_input_len ({max_input_len}) must be below max_seq_len ({max_seq_len})"
            )
        if not 0.0 < free_gpu_memory_fraction <= 1.0:
            raise ValueError(
                f"free_gpu_memory_fraction must be in (0, 1], got {free_gpu_memory_fraction}"
            )
        self.model_path = model_path
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.max_input_len = max_input_len
        self.max_seq_len = max_seq_len
        self.llm_kwargs = dict(llm_kwargs or {})
        self.enable_block_reuse = enable_block_reuse
        self.free_gpu_memory_fraction = free_gpu_memory_fraction
        self.backend: str | None = None  # "pytorch" or "tensorrt" once start() built the LLM
        self._llm_factory = llm_factory
        self._sampling_params_factory = sampling_params_factory
        self._guided_decoding_params_factory = guided_decoding_params_factory
        self._collect_iteration_stats = collect_iteration_stats
        self._llm: Any = None
        self._make_sampling_params: Callable[..., Any] | None = None
        self._make_guided_decoding_params: Callable[..., Any] | None = None
        self._stopping = False
        self._inflight: dict[str, _InFlight] = {}  # by request id
        self._peak_inflight = 0  # sequences
        self._generated = 0
        self._finished: dict[str, int] = {}
        self._iterations = IterationFigures()
        self._stats_task: asyncio.Task[None] | None = None
        self.vocab_size = vocab_size
        self._monitor = HealthMonitor(
            "TensorRT-LLM engine", stall_s=stall_timeout_s, work="TensorRT-LLM requests"
        )

    async def start(self) -> None:
        """Load the model (blocks until TensorRT-LLM has built or loaded the engine)."""
        if self._llm is not None:
            return
        llm_factory, params_factory = self._llm_factory, self._sampling_params_factory
        guided_factory = self._guided_decoding_params_factory
        if llm_factory is None or params_factory is None:
            try:
                import tensorrt_llm  # here only: the CPU path must never load it
            except ImportError as exc:
                raise EngineStoppedError("tensorrt_llm is not installed") from exc
            params_factory = params_factory or tensorrt_llm.SamplingParams
            if guided_factory is None:
                from tensorrt_llm.sampling_params import GuidedDecodingParams

                guided_factory = GuidedDecodingParams
            if llm_factory is None:
                llm_factory = self._llm_api_factory(tensorrt_llm)

        try:
            # Built on the caller's thread: TensorRT-LLM sets up CUDA and MPI there, and
            # its request results bind to whichever loop later calls generate_async.
            llm = llm_factory()
        except Exception as exc:
            log.exception("TensorRT-LLM could not load %s", self.model_path)
            raise EngineStoppedError(f"TensorRT-LLM could not load {self.model_path}") from exc
        vocab_size = (
            self.vocab_size or config_vocab_size(Path(self.model_path)) or tokenizer_vocab_size(llm)
        )
        if vocab_size is None:
            # Unchecked token ids would reach the GPU's embedding lookup: serve none.
            await asyncio.to_thread(llm.shutdown)
            raise EngineStoppedError(
                f"cannot tell the vocabulary size of {self.model_path} (no vocab_size in its "
                "config.json, no tokenizer): set the engine's vocab_size"
            )
        self.vocab_size = vocab_size
        self._llm = llm
        self._make_sampling_params = params_factory
        self._make_guided_decoding_params = guided_factory  # None: guides are refused
        self._stopping = False
        log.info(
            "TensorRT-LLM engine ready: %s (%s backend), vocabulary %d, batch %d, queue %d, "
            "input %d, sequence %d, KV block reuse %s, KV cache %.0f%% of free GPU memory",
            self.model_path,
            self.backend or "custom",
            vocab_size,
            self.max_batch_size,
            self.max_queue,
            self.max_input_len,
            self.max_seq_len,
            "on" if self.enable_block_reuse else "off",
            self.free_gpu_memory_fraction * 100,
        )

    def _llm_api_factory(self, tensorrt_llm: Any) -> Callable[[], Any]:
        """How to build the LLM: PyTorch backend for a checkpoint, TensorRT for an engine dir."""
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "max_batch_size": self.max_batch_size,
            "max_input_len": self.max_input_len,
            "max_seq_len": self.max_seq_len,
            # Without a grammar backend the LLM API does not enforce guided decoding.
            "guided_decoding_backend": "xgrammar",
        }
        engine_dir = is_engine_dir(Path(self.model_path))
        self.backend = "tensorrt" if engine_dir else "pytorch"
        if not engine_dir:
            kwargs["backend"] = "pytorch"

        def build() -> Any:  # imports here: a failing one fails the load like the LLM's own
            from tensorrt_llm.llmapi import KvCacheConfig

            if engine_dir:  # legacy: prebuilt TensorRT engines
                from tensorrt_llm import _tensorrt_engine

                llm_cls = _tensorrt_engine.LLM
            else:
                llm_cls = tensorrt_llm.LLM
            kv_cache_config = KvCacheConfig(
                enable_block_reuse=self.enable_block_reuse,
                free_gpu_memory_fraction=self.free_gpu_memory_fraction,
            )
            return llm_cls(**{**kwargs, "kv_cache_config": kv_cache_config, **self.llm_kwargs})

        return build

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        """Stream the deltas of a request's n sequences, each told by its `index`, until
        every one has sent its last; closing the iterator early aborts the request."""
        entry = self._submit(request)
        handle, request_id = entry.handle, request.request_id
        num_input = len(request.prompt_ids)
        sampling = request.sampling
        engine_n = engine_sequences(sampling)
        copies = sampling.n // engine_n  # our sequences per engine sequence (greedy: n)
        several = engine_n > 1  # whose finishes TensorRT-LLM reports late, uncut
        max_tokens = sampling.max_tokens if several else None
        stops = _stream_stops(request, several)
        streams = [_SequenceStream(stops, several) for _ in range(engine_n)]
        remaining = sampling.n  # our sequences without their last delta
        cached = 0
        engine_done = False
        failed = False
        try:
            outputs = aiter(handle)
            while remaining:
                try:
                    output = await anext(outputs)
                    self._monitor.progressed()
                    raws = [
                        delta_from_output(
                            stream.received,
                            output,
                            num_input,
                            cached,
                            index=i,
                            logprobs=sampling.logprobs,
                            max_tokens=max_tokens,
                        )
                        for i, stream in enumerate(streams)
                    ]
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    failed = True
                    log.error("TensorRT-LLM request %s failed: %r", request_id, exc)
                    self._monitor.failed(f"a request failed: {type(exc).__name__}")
                    raise EngineError("the TensorRT-LLM request failed") from exc
                engine_done = bool(output.finished) or all(raw.finished for raw in raws)
                for i, (stream, raw) in enumerate(zip(streams, raws, strict=True)):
                    stream.received = raw.num_output_tokens
                    cached = max(cached, raw.num_cached_tokens)
                    if stream.done:
                        continue  # ended here by a stop sequence: TensorRT-LLM runs on
                    self._generated += len(raw.token_ids) * copies
                    delta = stream.stops.push(raw)
                    if delta is None:
                        continue
                    if delta.finished:
                        stream.done = True
                        remaining -= copies
                        self._finish(request_id, entry, delta.finish_reason, copies)
                        if not remaining:
                            self._monitor.succeeded()  # served to its end
                        if not remaining and not engine_done:
                            # Stop sequences ended what is left, not TensorRT-LLM.
                            _abort(handle, request_id)
                    for copy in range(i * copies, (i + 1) * copies):
                        yield replace(delta, index=copy)
            if not remaining:
                return
            # The output iterator ended without a final output: the rest are cancelled.
            for i, stream in enumerate(streams):
                if stream.done:
                    continue
                stream.done = True
                remaining -= copies
                self._finish(request_id, entry, FinishReason.CANCELLED, copies)
                end = TokenDelta(
                    (), num_input, stream.received, FinishReason.CANCELLED, cached, index=i
                )
                last = stream.stops.push(end)
                if last is not None:
                    for copy in range(i * copies, (i + 1) * copies):
                        yield replace(last, index=copy)
        finally:
            if remaining:
                if not engine_done:
                    _abort(handle, request_id)
                # An engine failure is no finish reason; a consumer leaving is a cancel.
                reason = None if failed else FinishReason.CANCELLED
                self._finish(request_id, entry, reason, remaining)

    def _submit(self, request: GenerationRequest) -> _InFlight:
        """Validate and admit a request; its entry, with the TensorRT-LLM handle."""
        llm, make_params = self._llm, self._make_sampling_params
        if llm is None or make_params is None or self._stopping or self.vocab_size is None:
            raise EngineStoppedError("the engine is not running")
        check_token_ids(request, self.vocab_size)
        prompt_len = len(request.prompt_ids)
        if prompt_len > self.max_input_len:
            raise InvalidRequestError(
                f"prompt has {prompt_len} tokens, exceeds the limit of {self.max_input_len}",
                code=ErrorCode.PROMPT_TOO_LONG,
                field="text_input",
                tokens=prompt_len,
                limit=self.max_input_len,
            )
        need = prompt_len + request.sampling.max_tokens
        if need > self.max_seq_len:
            raise InvalidRequestError(
                f"prompt tokens + max_tokens = {prompt_len} + {request.sampling.max_tokens} = "
                f"{need} exceeds the sequence limit of {self.max_seq_len}",
                code=ErrorCode.SEQUENCE_TOO_LONG,
                field="max_tokens",
                tokens=need,
                limit=self.max_seq_len,
            )
        n = request.sampling.n
        if n > self.max_batch_size:
            raise InvalidRequestError(
                f"num_return_sequences is {n}, exceeds the engine's {self.max_batch_size} "
                "sequences in flight",
                field="num_return_sequences",  # the ensemble input's name, as the CPU engine's
            )
        if request.request_id in self._inflight:
            raise InvalidRequestError(
                f"request id {request.request_id!r} is already in flight",
                code=ErrorCode.DUPLICATE_REQUEST_ID,
            )
        # Sequences count, not requests: each of the n takes a slot of the batch.
        inflight = self._inflight_sequences()
        if inflight + n > self.max_batch_size + self.max_queue:
            waiting = max(inflight - self.max_batch_size, 0)
            raise EngineOverloadedError(
                f"engine queue is full: {waiting} sequences waiting", waiting=waiting
            )
        kwargs = to_sampling_kwargs(request)
        if not request.sampling.greedy and "seed" not in kwargs:
            # Unset, the runtime seeds every request with 0: equal prompts, equal samples.
            kwargs["seed"] = secrets.randbits(64)
        if request.guide is not None:
            make_guided = self._make_guided_decoding_params
            if make_guided is None:
                raise InvalidRequestError(
                    "this engine has no guided decoding", field=GUIDE_TYPE_FIELD
                )
            kwargs["guided_decoding"] = make_guided(**guided_decoding_kwargs(request.guide))
        try:
            handle = llm.generate_async(
                list(request.prompt_ids),
                sampling_params=make_params(**kwargs),
                streaming=True,
            )
        except ValueError as exc:  # the LLM API's own argument checks
            log.warning("TensorRT-LLM rejected request %s: %s", request.request_id, exc)
            raise InvalidRequestError("the engine rejected the request's parameters") from exc
        except Exception as exc:
            log.error("TensorRT-LLM could not take request %s: %r", request.request_id, exc)
            self._monitor.failed(f"could not take a request: {type(exc).__name__}")
            raise EngineError("the TensorRT-LLM engine could not take the request") from exc
        if not self._inflight:
            self._monitor.progressed()  # the time it idled was no stall
        entry = _InFlight(handle, n)
        self._inflight[request.request_id] = entry
        self._peak_inflight = max(self._peak_inflight, self._inflight_sequences())
        self._ensure_stats_task()
        return entry

    def _inflight_sequences(self) -> int:
        return sum(entry.sequences for entry in self._inflight.values())

    def _finish(
        self, request_id: str, entry: _InFlight, reason: FinishReason | None, count: int
    ) -> None:
        """`count` of a request's sequences ended (reason None: failed, not counted)."""
        entry.sequences -= count
        if reason is not None:
            self._finished[reason.value] = self._finished.get(reason.value, 0) + count
        if entry.sequences <= 0 and self._inflight.get(request_id) is entry:
            del self._inflight[request_id]  # the id is free again once its last delta is out

    async def abort(self, request_id: str) -> None:
        """Cancel a request in TensorRT-LLM; its unfinished sequences end with CANCELLED."""
        entry = self._inflight.get(request_id)
        if entry is not None:
            _abort(entry.handle, request_id)

    def health(self) -> EngineHealth:
        """Whether the LLM can generate: started, its executor alive (as far as it tells),
        requests not failing one after another, and outputs coming while any run."""
        llm = self._llm
        if llm is None:
            return EngineHealth(False, "the engine is not running")
        if self._stopping:
            return EngineHealth(False, "the engine is shutting down")
        failure = executor_failure(llm)
        if failure is not None:
            self._monitor.fatal(failure)
        return self._monitor.check(busy=bool(self._inflight))

    def stats(self) -> EngineStats:
        """Our own admission figures (sequences), refined by the executor's iteration stats."""
        inflight = self._inflight_sequences()
        figures = self._iterations
        if figures.seen:
            active = min(inflight, figures.active)
            peak = figures.peak_step_batch
        else:
            active = min(inflight, self.max_batch_size)
            peak = min(self._peak_inflight, self.max_batch_size)
        busy = inflight > 0
        return EngineStats(
            active=active,
            waiting=inflight - active,
            max_active=self.max_batch_size,
            context=figures.context if busy else 0,
            scheduled=figures.scheduled if busy else 0,
            steps=figures.steps,
            step_sequences=figures.step_sequences,
            peak_step_batch=peak,
            generated_tokens=self._generated,
            finished=dict(self._finished),
        )

    async def shutdown(self) -> None:
        """Abort every request, stop collecting stats and shut the LLM down."""
        self._stopping = True
        for request_id, entry in list(self._inflight.items()):
            _abort(entry.handle, request_id)
        self._stop_stats_task()
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    # -- iteration stats ---------------------------------------------------------

    def _ensure_stats_task(self) -> None:
        # Started on the first request's loop: the executor's stats queue binds to the
        # loop that submits the first request, which is not the one start() ran on.
        if not self._collect_iteration_stats or not hasattr(self._llm, "get_stats_async"):
            return
        if self._stats_task is not None and not self._stats_task.done():
            return
        self._stats_task = asyncio.get_running_loop().create_task(
            self._collect_stats(), name="trtllm-iteration-stats"
        )

    async def _collect_stats(self) -> None:
        llm = self._llm
        while not self._stopping and llm is self._llm:
            try:
                async for item in llm.get_stats_async(timeout=STATS_TIMEOUT_S):
                    self._iterations.add(item)
            except Exception:
                log.warning("TensorRT-LLM iteration stats unavailable", exc_info=True)
                return
            await asyncio.sleep(STATS_IDLE_S)

    def _stop_stats_task(self) -> None:
        task, self._stats_task = self._stats_task, None
        if task is None or task.done():
            return
        loop = task.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            task.cancel()
        elif not loop.is_closed():
            # shutdown() may run on another loop than the requests did (Triton finalize).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)


@dataclass
class _InFlight:
    """A request in TensorRT-LLM: its RequestOutput handle and its unfinished sequences."""

    handle: Any
    sequences: int


class _SequenceStream:
    """What `generate` tracks of one sequence TensorRT-LLM generates."""

    def __init__(self, stop_sequences: Iterable[Sequence[int]], single_tokens: bool) -> None:
        self.stops = StopSequenceFilter(stop_sequences, single_tokens=single_tokens)
        self.received = 0  # output tokens read so far
        self.done = False  # its last delta went out


def _stream_stops(request: GenerationRequest, several: bool) -> tuple[tuple[int, ...], ...]:
    """The stop sequences a request's streams match. One of several sequences may end
    before the others, and then TensorRT-LLM cuts neither its stop token nor (should it
    show) its end id: the stream cuts them."""
    if not several or request.end_id is None:
        return request.stop_sequences
    return (*request.stop_sequences, (request.end_id,))


def _abort(handle: Any, request_id: str) -> None:
    try:
        handle.abort()
    except Exception:  # finished or gone meanwhile: nothing left to abort
        log.debug("abort of %s had no effect", request_id, exc_info=True)


__all__ = [
    "FINISH_REASONS",
    "UNKNOWN_LOGPROB",
    "IterationFigures",
    "StopSequenceFilter",
    "TrtLlmEngine",
    "config_vocab_size",
    "delta_from_output",
    "engine_sequences",
    "executor_failure",
    "guided_decoding_kwargs",
    "to_sampling_kwargs",
    "token_logprob",
    "tokenizer_vocab_size",
]
