"""Simulated engine (`engine: sim`): a GPU engine's batching and timing, with no weights.

For load tests, benchmarks and routing studies at GPU token rates on any machine. The
CPU engine's `Scheduler` does what it does for llama.cpp: admission into
`max_batch_size` slots while the KV cache has room (each sequence reserves prompt +
max_tokens cells, as TensorRT-LLM's default GUARANTEED_NO_EVICT policy reserves its
blocks), the bounded waiting queue, chunked prefill within a step's token budget, the
prefix cache's block hashing (a cached prefix is not prefilled again), stop sequences,
end ids, min_tokens and length limits. What a GPU would compute is replaced by two
stated models:

- Time: a step lasts `SimTiming.step_s` of its batch: a base (the weights read once per
  step), a cost per sequence in the batch, a cost per context token the decoding
  sequences attend to (their KV cells read), and the prompt tokens prefilled in it at
  `prefill_tokens_per_s`. Presets stand for a GPU; they are assumptions fitted to
  published figures (see PRESETS), not measurements.
- Tokens: real ids of the served tokenizer's vocabulary, so detokenization, stop words
  and max_tokens behave as with a model. Each sequence reads a fixed pseudo-random text
  of ordinary one-token words (drawn once from `seed`) from an offset of its own: the
  prompt's hash for greedy requests (the same prompt gives the same text, as a greedy
  model would), prompt and seed + sequence index for seeded ones, a random one
  otherwise. End-of-generation appears only with `end_probability` > 0; banned tokens
  (bad words, end tokens before min_tokens) are skipped.

Steps run as timers on the asyncio loop the engine started on (the `tensorrt_llm`
model's own loop): no thread, no lock, and one timer per step for the whole batch. The
step timeline is kept against the clock, so a loop that is briefly late does not slow
the simulated GPU down; with `virtual_clock` steps take no wall time at all and only
`sim_time_s` advances (tests). Guided decoding is refused by name; logprobs are those
of a uniform choice among the words (cheap, and shaped like the real ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import zlib
from array import array
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from llm_stack.engine.base import (
    STALL_TIMEOUT_S,
    EngineError,
    EngineHealth,
    EngineStats,
    EngineStoppedError,
    FinishReason,
    GenerationRequest,
    HealthMonitor,
    InvalidRequestError,
    TokenDelta,
    TokenLogprob,
    check_token_ids,
    request_deltas,
)
from llm_stack.engine.scheduler import Scheduler, SchedulerLimits, SeqKey, StepItem
from llm_stack.guided_decoding import GUIDE_FIELD

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimTiming:
    """How long a simulated GPU step takes; all costs >= 0."""

    prefill_tokens_per_s: float  # prompt tokens computed per second; 0: prefill is free
    step_base_ms: float  # every step (the weights read once)
    step_per_sequence_us: float  # each sequence in the step's batch
    step_per_context_token_ns: float  # each KV cell a decoding sequence attends to

    def __post_init__(self) -> None:
        for name in (
            "prefill_tokens_per_s",
            "step_base_ms",
            "step_per_sequence_us",
            "step_per_context_token_ns",
        ):
            value = getattr(self, name)
            if not value >= 0.0:  # written this way round, it refuses nan too
                raise ValueError(f"{name} must be >= 0, got {value}")

    def step_s(self, prefill_tokens: int, sequences: int, context_tokens: int) -> float:
        """Seconds of one step: `sequences` in its batch, `prefill_tokens` prompt tokens
        computed, `context_tokens` KV cells read by its decoding sequences."""
        prefill = prefill_tokens / self.prefill_tokens_per_s if self.prefill_tokens_per_s else 0.0
        return (
            self.step_base_ms * 1e-3
            + sequences * self.step_per_sequence_us * 1e-6
            + context_tokens * self.step_per_context_token_ns * 1e-9
            + prefill
        )

    def steady_tokens_per_s(self, input_tokens: int, output_tokens: int, batch: int) -> float:
        """Output tokens/s with `batch` sequences always running, all of `input_tokens`
        prompt and `output_tokens` output (trtllm-bench's uniform datasets): per output
        token, its share of a prompt's prefill, of a step's base, its own sequence cost
        and the mean context it reads (the prompt and half the output)."""
        prefill = (
            input_tokens / output_tokens / self.prefill_tokens_per_s
            if self.prefill_tokens_per_s
            else 0.0
        )
        per_token = (
            prefill
            + self.step_base_ms * 1e-3 / batch
            + self.step_per_sequence_us * 1e-6
            + (input_tokens + output_tokens / 2) * self.step_per_context_token_ns * 1e-9
        )
        return 1.0 / per_token


# Presets: assumptions, not measurements. The GPU ones are fitted (least squares on
# relative error) to NVIDIA's published trtllm-bench throughput of Llama-3.1-8B-Instruct
# FP8, TP1, PyTorch backend (TensorRT-LLM "Performance Overview", docs/source/performance/
# perf-overview.md, v1.0-era table: H100 SXM 80GB 28,312 output tokens/s at ISL/OSL
# 128/128, 22,714 at 128/2048, 3,450 at 2048/128; H200 27,911 / 26,221 / 3,538), with
# every row of the table (10 ISL/OSL pairs) reproduced by `steady_tokens_per_s` within
# 7% at a batch of 512 sequences (that batch is our assumption; trtllm-bench picks its
# own). The fit fixes the per-token sum base/512 + per-sequence, the context cost and
# the prefill rate; the base is split off by the weights' read time: 8 GB of FP8 weights
# at 80% of the card's memory bandwidth (H100 3.35 TB/s: 3.0 ms; H200 4.8 TB/s: 2.1 ms).
# The context cost matches FP8 KV cells (32 layers x 8 KV heads x 128 x 2 = 64 KiB a
# token) read at that bandwidth.
PRESETS: Mapping[str, SimTiming] = {
    "h100-llama3-8b": SimTiming(70_000.0, 3.0, 9.0, 25.5),
    "h200-llama3-8b": SimTiming(69_000.0, 2.1, 13.0, 17.5),
    # The serving-path benchmark's timer: every step 20 ms flat, prefill free, so each
    # running sequence gets one token every 20 ms (256 slots: 12,800 tokens/s on offer).
    "timer-20ms": SimTiming(0.0, 20.0, 0.0, 0.0),
}
CUSTOM_PRESET = "custom"  # the timing comes from the sim_* parameters

# Ordinary English words; those the tokenizer writes as one token (with their leading
# space) make the simulated text, so it reads as words and detokenizes like a model's.
_WORDS_TEXT = (
    "the of and to in is was that for it with as his on be at by had are but from or "
    "have an they which one you were all we her she there would their will when who him "
    "been has more if no out do so can what up said about other into than its time only "
    "could new them man some these then two first may any like now my such make over our "
    "even most me state after also made many did must before back see through way where "
    "get much go well your know should down work year because come people just say each "
    "those take day good how long very own world little house never under last might "
    "great old both while off still here place part same think again light water small "
    "found every city between life home night right around few end hand high keep large "
    "open point read river road school side sound start story tree wind young green sea "
    "stone morning letter garden window summer winter music north south east west"
)
_WORDS = tuple(_WORDS_TEXT.split())
_TABLE_SIZE = 8192  # words of the fixed text (a power of two: positions wrap by a mask)
# The step timeline may fall this far behind the clock (a busy loop) and catch up; more
# and it starts again from now, the time lost.
_MAX_LAG_S = 0.1
_LAG_LOG_PERIOD_S = 10.0


@dataclass(frozen=True)
class SimVocabulary:
    """What the simulation needs of the served tokenizer's vocabulary."""

    size: int  # ids run 0..size - 1
    end_id: int  # the end-of-generation token it emits (with end_probability)
    end_ids: frozenset[int]  # every token that ends generation
    words: tuple[int, ...]  # one-token ordinary words, the output's material

    def __post_init__(self) -> None:
        ids = (self.end_id, *self.end_ids, *self.words)
        if not self.words or any(not 0 <= t < self.size for t in ids):
            raise ValueError("a vocabulary needs words, and ids within its size")
        if self.end_id not in self.end_ids or self.end_ids & set(self.words):
            raise ValueError("end_id must be an end token, and no word one")


def load_vocabulary(path: Path) -> SimVocabulary:
    """The vocabulary of a GGUF file (vocabulary only, no weights) or of a Hugging Face
    checkpoint directory."""
    if path.is_dir():
        return _hf_vocabulary(path)
    return _gguf_vocabulary(path)


def _gguf_vocabulary(path: Path) -> SimVocabulary:
    import ctypes

    from llm_stack.llama_loader import load_model

    lc, model = load_model(path, vocab_only=True)
    if not model:
        raise EngineStoppedError(f"cannot read a GGUF vocabulary from {path}")
    try:
        vocab = lc.llama_model_get_vocab(model)
        size = int(lc.llama_vocab_n_tokens(vocab))
        end_ids = frozenset(t for t in range(size) if lc.llama_vocab_is_eog(vocab, t))
        out = (ctypes.c_int32 * 8)()

        def encode(text: str) -> list[int]:
            data = text.encode()
            n = lc.llama_tokenize(vocab, data, len(data), out, len(out), False, False)
            return list(out[: max(n, 0)])

        words = _one_token_words(encode, end_ids)
        return SimVocabulary(size, int(lc.llama_vocab_eos(vocab)), end_ids, words)
    finally:
        lc.llama_model_free(model)


def _hf_vocabulary(path: Path) -> SimVocabulary:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    end_id = int(tok.eos_token_id)
    end_ids = frozenset({end_id})

    def encode(text: str) -> list[int]:
        return list(tok.encode(text, add_special_tokens=False))

    return SimVocabulary(len(tok), end_id, end_ids, _one_token_words(encode, end_ids))


def _one_token_words(
    encode: Callable[[str], list[int]], end_ids: frozenset[int]
) -> tuple[int, ...]:
    words: dict[int, None] = {}
    for word in _WORDS:
        ids = encode(" " + word)
        if len(ids) == 1 and ids[0] not in end_ids:
            words[ids[0]] = None
    return tuple(words)


@dataclass(frozen=True)
class SimConfig:
    """The simulated GPU: its timing, sizes and output."""

    timing: SimTiming
    max_batch_size: int = 16  # sequences in flight
    max_queue: int = 64  # requests waiting for a slot
    # KV cache: blocks of block_tokens cells (also the prefix cache's block size).
    kv_cache_blocks: int = 14336
    block_tokens: int = 64
    max_seq_len: int = 4096  # prompt + output of one sequence
    max_step_tokens: int = 8192  # tokens one step computes (TensorRT-LLM's max_num_tokens)
    enable_prefix_cache: bool = True
    end_probability: float = 0.0  # chance that a word of the text is the end token
    seed: int = 0  # of the fixed text
    stall_timeout_s: float = STALL_TIMEOUT_S
    virtual_clock: bool = False  # steps take no wall time (tests); sim_time_s adds up

    def __post_init__(self) -> None:
        if not 0.0 <= self.end_probability < 1.0:
            raise ValueError(f"end_probability must be in [0, 1), got {self.end_probability}")

    @property
    def kv_cache_tokens(self) -> int:
        return self.kv_cache_blocks * self.block_tokens


class _Stream:
    """One sequence's place in the fixed text, and what its tokens need."""

    __slots__ = ("bans", "logprobs", "pos", "prompt_len")

    def __init__(self, pos: int, prompt_len: int, bans: bool, logprobs: int | None) -> None:
        self.pos = pos
        self.prompt_len = prompt_len
        self.bans = bans  # bad words or min_tokens: check each token against the bans
        self.logprobs = logprobs


class _Mailbox:
    """A request's deltas (or the error that ended it) for its one consumer: a deque and
    a future to wake it, cheaper than an asyncio.Queue per request."""

    __slots__ = ("items", "loop", "remaining", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, remaining: int) -> None:
        self.items: deque[TokenDelta | EngineError] = deque()
        self.loop = loop
        self.remaining = remaining  # sequences not yet ended
        self.waiter: asyncio.Future[None] | None = None

    def put(self, item: TokenDelta | EngineError) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> TokenDelta | EngineError:
        while not self.items:
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


class SimEngine:
    """The simulated engine (implements `Engine`); bound to the loop `start` runs on."""

    def __init__(self, config: SimConfig, vocabulary: SimVocabulary | Path) -> None:
        """`vocabulary`: given, or the model file or directory to read it from at start."""
        self.config = config
        self._vocab_source = vocabulary
        self._vocab: SimVocabulary | None = None
        self._scheduler = Scheduler(
            SchedulerLimits(
                max_active=config.max_batch_size,
                max_waiting=config.max_queue,
                kv_capacity=config.kv_cache_tokens,
                max_seq_len=config.max_seq_len,
                max_step_tokens=config.max_step_tokens,
                # No sequence-id limit here (llama.cpp's is 256): a cached prefix per slot.
                cache_slots=config.max_batch_size if config.enable_prefix_cache else 0,
                block_tokens=config.block_tokens,
            )
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mail: dict[str, _Mailbox] = {}
        self._streams: dict[SeqKey, _Stream] = {}
        self._text: list[int] = []
        self._words: dict[int, int] = {}  # word id -> its index in the vocabulary's words
        self._word_logprob = 0.0
        self._in_flight: list[StepItem] = []  # the running step's batch
        self._timer: asyncio.Handle | None = None
        self._step_end = 0.0  # loop time at which the running step ends on the timeline
        self._stopping = False
        self._monitor = HealthMonitor("sim engine", stall_s=config.stall_timeout_s)
        self.sim_time_s = 0.0  # simulated seconds of all steps so far
        self.lag_resets = 0  # times the timeline fell over _MAX_LAG_S behind the clock
        self._lag_logged_at = -math.inf

    # -- the Engine interface ----------------------------------------------------------

    async def start(self) -> None:
        """Read the vocabulary (in a worker thread) and bind to this loop."""
        source = self._vocab_source
        vocab = source if isinstance(source, SimVocabulary) else None
        if vocab is None:
            assert isinstance(source, Path)
            vocab = await asyncio.to_thread(load_vocabulary, source)
        self._vocab = vocab
        rng = random.Random(self.config.seed)
        p = self.config.end_probability
        self._text = [
            vocab.end_id if p and rng.random() < p else rng.choice(vocab.words)
            for _ in range(_TABLE_SIZE)
        ]
        self._words = {word: i for i, word in enumerate(vocab.words)}
        self._word_logprob = -math.log(len(vocab.words))
        self._loop = asyncio.get_running_loop()
        log.info(
            "sim engine ready: %d slots, %d KV cells, %d words of a %d-token vocabulary, %s",
            self.config.max_batch_size,
            self.config.kv_cache_tokens,
            len(vocab.words),
            vocab.size,
            self.config.timing,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenDelta]:
        """Stream the deltas of a request's sequences; closing early aborts it."""
        loop, vocab = self._loop, self._vocab
        if self._stopping or loop is None or vocab is None:
            raise EngineStoppedError("the engine is not running")
        if asyncio.get_running_loop() is not loop:
            raise EngineStoppedError("the sim engine serves only the loop it started on")
        if request.guide is not None:
            raise InvalidRequestError(
                f"guided decoding ({request.guide.type}) is not simulated by the sim engine",
                field=GUIDE_FIELD,
            )
        check_token_ids(request, vocab.size)
        self._scheduler.add(request)  # raises InvalidRequest/Overloaded before any delta
        rid, n = request.request_id, request.sampling.n
        box = _Mailbox(loop, n)
        self._mail[rid] = box
        for index in range(n):
            self._streams[(rid, index)] = self._new_stream(request, index)
        self._kick()
        deltas = request_deltas(box.get, n, partial(self._abort_now, rid))
        async with contextlib.aclosing(deltas):
            async for delta in deltas:
                yield delta

    async def abort(self, request_id: str) -> None:
        """Abort a waiting or running request at once; a no-op if it already ended."""
        self._abort_now(request_id)

    def stats(self) -> EngineStats:
        """The scheduler's current figures."""
        return self._scheduler.stats()

    def health(self) -> EngineHealth:
        """Whether the step timers can generate: started, not stopping, no failed steps
        in a row and no stall while requests wait."""
        if self._loop is None:
            return EngineHealth(False, "the engine is not started")
        if self._stopping:
            return EngineHealth(False, "the engine is shutting down")
        return self._monitor.check(busy=bool(self._mail))

    async def shutdown(self) -> None:
        """Cancel every sequence and stop the timers."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._in_flight = []
        aborted = self._scheduler.abort_all()
        self._streams.clear()
        self._deliver(aborted)
        if self.lag_resets:
            log.warning(
                "sim engine: the step timeline fell over %.0f ms behind the clock %d times",
                _MAX_LAG_S * 1000,
                self.lag_resets,
            )

    # -- token bookkeeping -----------------------------------------------------------------

    @property
    def vocabulary(self) -> SimVocabulary:
        """The vocabulary in use (known once started)."""
        if self._vocab is None:
            raise EngineStoppedError("the engine is not started")
        return self._vocab

    def _new_stream(self, request: GenerationRequest, index: int) -> _Stream:
        sampling = request.sampling
        if sampling.greedy or sampling.seed is not None:
            # Greedy: the prompt alone decides, as with a model; seeded: prompt and seed.
            prompt = zlib.crc32(array("i", request.prompt_ids).tobytes())
            pos = prompt if sampling.greedy else prompt ^ _mix(sampling.seed or 0, index)
        else:
            pos = secrets.randbits(32)
        bans = bool(request.bad_sequences) or sampling.min_tokens > 0
        return _Stream(pos, len(request.prompt_ids), bans, sampling.logprobs)

    def _next_token(self, key: SeqKey, stream: _Stream) -> int | FinishReason:
        text, mask = self._text, _TABLE_SIZE - 1
        token = text[stream.pos & mask]
        stream.pos += 1
        if stream.bans:
            assert self._vocab is not None
            banned = self._scheduler.banned_tokens(key, self._vocab.end_ids)
            tries = 0
            while token in banned:
                if tries == _TABLE_SIZE:  # every word of the text is banned: nothing left
                    return FinishReason.LENGTH
                token = text[stream.pos & mask]
                stream.pos += 1
                tries += 1
        return token

    def _logprob(self, token: int, top: int) -> TokenLogprob:
        # A uniform choice among the words: every word as likely as the sampled one.
        words = self.vocabulary.words
        lp = self._word_logprob
        start = self._words.get(token, 0)
        alternatives = [(token, lp)] if top else []
        alternatives += [(words[(start + i) % len(words)], lp) for i in range(1, top)]
        return TokenLogprob(lp, tuple(alternatives[:top]))

    # -- steps ------------------------------------------------------------------------------

    def _kick(self) -> None:
        """Start a step soon if none is running (work just arrived at an idle engine):
        after this loop turn, so requests that arrive together start in one batch."""
        if self._timer is None and not self._stopping:
            assert self._loop is not None
            self._timer = self._loop.call_soon(self._begin)

    def _begin(self) -> None:
        self._timer = None
        try:
            self._start_step(fresh=True)
        except Exception as exc:  # planning failed: nothing runs, so end every request
            self._planning_failed(exc)

    def _start_step(self, fresh: bool) -> None:
        """Plan the next step and set its end on the timeline; `fresh`: the engine was
        idle, so the timeline starts from now."""
        assert self._loop is not None
        items = self._scheduler.plan()
        self._in_flight = items
        self._monitor.progressed()
        if not items:
            return  # idle: the next request kicks
        duration = self._duration(items)
        self.sim_time_s += duration
        if self.config.virtual_clock:
            self._timer = self._loop.call_soon(self._end_step)
            return
        now = self._loop.time()
        start = now if fresh else self._step_end
        if now - start > _MAX_LAG_S:
            # The loop could not keep up; steps start from now, the time lost is lost.
            self.lag_resets += 1
            if now - self._lag_logged_at > _LAG_LOG_PERIOD_S:
                self._lag_logged_at = now
                log.warning(
                    "sim engine: %.0f ms behind its step timeline (the model's loop is "
                    "saturated); %d resets so far",
                    (now - start) * 1000,
                    self.lag_resets,
                )
            start = now
        self._step_end = start + duration
        self._timer = self._loop.call_at(self._step_end, self._end_step)

    def _duration(self, items: list[StepItem]) -> float:
        prefill = context = 0
        streams = self._streams
        for item in items:
            stream = streams.get((item.request_id, item.index))
            if stream is not None and item.start_pos >= stream.prompt_len:
                context += item.start_pos + 1  # a decode token attends to every cell so far
            else:
                prefill += len(item.tokens)  # a prompt chunk (or a sequence sharing one)
        return self.config.timing.step_s(prefill, len(items), context)

    def _end_step(self) -> None:
        """The running step is done: its tokens come out, the next step starts."""
        self._timer = None
        items, self._in_flight = self._in_flight, []
        try:
            self._complete(items)
            self._monitor.succeeded()
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("sim engine step failed: %s", why)
            self._monitor.failed(why)
            self._fail(dict.fromkeys(item.request_id for item in items), why)
        if self._stopping:
            return
        try:
            self._start_step(fresh=False)
        except Exception as exc:  # planning failed: nothing runs, so end every request
            self._planning_failed(exc)

    def _planning_failed(self, exc: Exception) -> None:
        why = f"{type(exc).__name__}: {exc}"[:300]
        log.exception("sim engine could not plan a step: %s", why)
        self._monitor.failed(why)
        self._in_flight = []
        self._fail(self._scheduler.request_ids(), why)

    def _complete(self, items: list[StepItem]) -> None:
        streams = self._streams
        sampled: dict[SeqKey, int] = {}
        ended: dict[SeqKey, FinishReason] = {}
        logprobs: dict[SeqKey, TokenLogprob] = {}
        for item in items:
            if not item.sample:
                continue
            key = (item.request_id, item.index)
            stream = streams.get(key)
            if stream is None:  # aborted while the step ran
                continue
            token = self._next_token(key, stream)
            if isinstance(token, FinishReason):
                ended[key] = token
                continue
            sampled[key] = token
            if stream.logprobs is not None:
                logprobs[key] = self._logprob(token, stream.logprobs)
        assert self._vocab is not None
        deltas, _ = self._scheduler.complete(
            sampled, self._vocab.end_ids.__contains__, ended or None, logprobs or None
        )
        for rid, delta in deltas:
            if delta.finished:
                streams.pop((rid, delta.index), None)
        self._deliver(deltas)

    def _deliver(self, deltas: Iterable[tuple[str, TokenDelta]]) -> None:
        mail = self._mail
        for rid, delta in deltas:
            box = mail.get(rid)
            if box is None:
                continue
            if delta.finished:
                box.remaining -= 1
                if box.remaining == 0:
                    del mail[rid]
            box.put(delta)

    def _abort_now(self, request_id: str) -> None:
        aborted = self._scheduler.abort(request_id)
        for delta, _slot in aborted:
            self._streams.pop((request_id, delta.index), None)
        self._deliver((request_id, delta) for delta, _slot in aborted)

    def _fail(self, request_ids: Iterable[str], why: str) -> None:
        """End these requests with an EngineError; the others go on."""
        error = EngineError(f"the engine step failed: {why}")
        for rid in list(request_ids):
            box = self._mail.pop(rid, None)
            for index, _slot in self._scheduler.fail(rid):
                self._streams.pop((rid, index), None)
            for key in [k for k in self._streams if k[0] == rid]:  # waiting sequences
                del self._streams[key]
            if box is not None:
                box.put(error)


def _mix(seed: int, index: int) -> int:
    """A 32-bit offset for sequence `index` of a request seeded `seed` (n sequences are
    seeded seed, seed + 1, ..., as the other engines seed them)."""
    return zlib.crc32((seed + index).to_bytes(9, "little", signed=False))


__all__ = [
    "CUSTOM_PRESET",
    "PRESETS",
    "SimConfig",
    "SimEngine",
    "SimTiming",
    "SimVocabulary",
    "load_vocabulary",
]
