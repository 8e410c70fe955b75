"""CPU engine: llama.cpp driven step by step through its batch API, with in-flight batching.

Each step is one `llama_batch` mixing one decode token per running sequence with
prompt chunks of newly admitted ones, each under its own `seq_id`; the scheduler
decides what goes in. The step loop runs in one thread (llama.cpp releases the GIL
while it computes) and hands deltas to the asyncio side through per-request queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import secrets
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llm_stack.engine.base import (
    STALL_TIMEOUT_S,
    EngineError,
    EngineHealth,
    EngineStats,
    EngineStoppedError,
    FinishReason,
    GenerationRequest,
    HealthMonitor,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
    check_token_ids,
    request_deltas,
)
from llm_stack.engine.grammar import GRAMMAR_ROOT, GrammarCache
from llm_stack.engine.logprobs import token_logprob
from llm_stack.engine.scheduler import CacheCopy, Scheduler, SchedulerLimits, SeqKey, StepItem
from llm_stack.llama_loader import load_model

log = logging.getLogger(__name__)

_PENALTY_WINDOW = 64
_MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ
# llama.cpp's llama_token_data: id, logit, p.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
# How many of the likeliest tokens a refused sample is redrawn from first, then next,
# before the whole vocabulary (see _sample_guided).
_GRAMMAR_TIERS = (512, 65536)


@dataclass(frozen=True)
class LlamaCppConfig:
    """Model file and the sizes of the in-flight batch."""

    model_path: Path
    max_batch_size: int = 16  # sequences in flight (llama.cpp n_seq_max)
    max_queue: int = 64  # requests waiting for a slot
    kv_cache_tokens: int = 16384  # KV cells shared by all sequences
    max_seq_len: int = 4096  # prompt + output of one sequence
    max_step_tokens: int = 256  # tokens per llama_decode call (prefill chunk budget)
    n_threads: int = 0  # 0: the cores this process may run on
    # Whole prompt blocks kept in the KV cache after their sequence ends, for later
    # prompts that start with them; each cached prefix holds a sequence id of its own.
    enable_prefix_cache: bool = True
    prefix_cache_block_tokens: int = 64
    # A step running this long while requests wait makes the engine unhealthy.
    stall_timeout_s: float = STALL_TIMEOUT_S

    @property
    def cache_slots(self) -> int:
        """Sequence ids for cached prefixes, after the running sequences' ones."""
        if not self.enable_prefix_cache:
            return 0
        return min(self.max_batch_size, _MAX_SEQUENCES - self.max_batch_size)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class _Llama:
    """The llama.cpp model, context and batch, owned by the step thread."""

    def __init__(self, config: LlamaCppConfig) -> None:
        self.lc, self.model = load_model(config.model_path)
        lc = self.lc
        if not self.model:
            raise EngineStoppedError(f"llama.cpp could not load {config.model_path}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        threads = config.n_threads or available_cores()
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = config.kv_cache_tokens
        cparams.n_batch = config.max_step_tokens
        cparams.n_ubatch = config.max_step_tokens
        cparams.n_seq_max = config.max_batch_size + config.cache_slots
        cparams.kv_unified = True  # one KV pool shared by all sequences, not n_ctx / n_seq_max each
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise EngineStoppedError("llama.cpp could not create a context")
        self.memory = lc.llama_get_memory(self.ctx)
        self.batch = lc.llama_batch_init(config.max_step_tokens, 0, 1)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.end_tokens = frozenset(
            t for t in range(self.n_vocab) if lc.llama_vocab_is_eog(self.vocab, t)
        )
        self.samplers: dict[SeqKey, Any] = {}
        # Grammar samplers of guided sequences, apart from their chains: the chains are
        # fed the prompt (for penalties), a grammar only the output.
        self.grammars: dict[SeqKey, Any] = {}
        self.penalized: set[SeqKey] = set()  # sequences whose chains keep penalty state
        # Sequences that want logprobs: how many alternatives, at which temperature.
        self.logprobs: dict[SeqKey, tuple[int, float]] = {}
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._candidates = np.zeros(self.n_vocab, dtype=_TOKEN_DATA)
        self._tiers = [
            np.zeros(size, dtype=_TOKEN_DATA) for size in _GRAMMAR_TIERS if size < self.n_vocab
        ]
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self._eog = min(self.end_tokens) if self.end_tokens else -1

    def grammar_sampler(self, gbnf: str) -> Any:
        """A grammar sampler of this vocabulary, NULL where llama.cpp refuses the grammar
        (it only reads the vocabulary: any thread, while the model lives)."""
        return self.lc.llama_sampler_init_grammar(self.vocab, gbnf.encode(), GRAMMAR_ROOT.encode())

    def new_sampler(
        self,
        key: SeqKey,
        sampling: SamplingParams,
        prompt: tuple[int, ...],
        grammar: Any = None,
    ) -> None:
        """The sequence's sampling chain; `grammar`, its own grammar sampler (compiled and
        copied by the GrammarCache's worker, never here), is freed with the sequence."""
        lc = self.lc
        if grammar is not None:
            self.grammars[key] = grammar
        if sampling.logprobs is not None:
            temperature = 1.0 if sampling.greedy else sampling.temperature
            self.logprobs[key] = (sampling.logprobs, temperature)
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if (
            sampling.repetition_penalty != 1.0
            or sampling.presence_penalty != 0.0
            or sampling.frequency_penalty != 0.0
        ):
            self.penalized.add(key)
            lc.llama_sampler_chain_add(
                chain,
                lc.llama_sampler_init_penalties(
                    self.n_vocab,  # llama.h of llama-cpp-python 0.3.36 takes it first
                    _PENALTY_WINDOW,
                    sampling.repetition_penalty,
                    sampling.frequency_penalty,
                    sampling.presence_penalty,
                ),
            )
        if sampling.greedy:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            if sampling.top_k > 0:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(sampling.top_k))
            if sampling.top_p < 1.0:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(sampling.top_p, 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(sampling.temperature))
            # The n sequences of one request: seeds seed, seed + 1, ...
            seed = sampling.seed + key[1] if sampling.seed is not None else secrets.randbits(32)
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        # Penalties see the prompt too, as TensorRT-LLM's do.
        for token in prompt[-_PENALTY_WINDOW:]:
            lc.llama_sampler_accept(chain, token)
        self.samplers[key] = chain

    def copy_cells(self, copies: list[CacheCopy]) -> None:
        """Apply the scheduler's prefix-cache copies and clears, in order."""
        lc = self.lc
        for copy in copies:
            if copy.tokens == 0:
                lc.llama_memory_seq_rm(self.memory, copy.src, -1, -1)
            else:
                lc.llama_memory_seq_rm(self.memory, copy.dst, -1, -1)
                lc.llama_memory_seq_cp(self.memory, copy.src, copy.dst, 0, copy.tokens)

    def last_positions(self, seq_ids: range) -> dict[int, int]:
        """The highest position each sequence id holds in the KV cache (-1: none)."""
        return {i: int(self.lc.llama_memory_seq_pos_max(self.memory, i)) for i in seq_ids}

    def free_sequence(self, key: SeqKey, slot: int | None) -> None:
        self.penalized.discard(key)
        self.logprobs.pop(key, None)
        for samplers in (self.samplers, self.grammars):
            sampler = samplers.pop(key, None)
            if sampler is not None:
                self.lc.llama_sampler_free(sampler)
        if slot is not None:
            self.lc.llama_memory_seq_rm(self.memory, slot, -1, -1)

    def decode(self, items: list[StepItem]) -> dict[SeqKey, int]:
        """Run one batch; returns each sampling item's index in the batch."""
        batch = self.batch
        n = 0
        logits_at: dict[SeqKey, int] = {}
        for item in items:
            if item.logits_of is not None:  # shares the logits of its request's prompt
                logits_at[item.key] = logits_at[item.logits_of]
                continue
            for offset, token in enumerate(item.tokens):
                batch.token[n] = token
                batch.pos[n] = item.start_pos + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = item.slot
                last = offset == len(item.tokens) - 1
                batch.logits[n] = 1 if (last and item.sample) else 0
                n += 1
            if item.sample:
                logits_at[item.key] = n - 1
        batch.n_tokens = n
        rc = self.lc.llama_decode(self.ctx, batch)
        if rc != 0:  # the step's sequences fail; llama.cpp rolled their cells back
            raise EngineError(f"llama_decode failed with code {rc}")
        return logits_at

    def sample(
        self, key: SeqKey, index: int, banned: set[int]
    ) -> tuple[int | FinishReason, TokenLogprob | None]:
        """The next token, or for a guided sequence the end of its value (stop) or a dead
        end (length: nothing the grammar allows is left, e.g. bad words ban it all); with
        its log-probability where the sequence asked for it.

        Banned tokens are masked in llama.cpp's own logits buffer. A sequence that shares
        its logits with others (n > 1) draws after them: the same bans apply to all.
        """
        if banned:
            logits = self.lc.llama_get_logits_ith(self.ctx, index)
            for token in banned:
                if 0 <= token < self.n_vocab:
                    logits[token] = -math.inf
        if key in self.grammars:
            return self._sample_guided(key, index)
        if key not in self.logprobs:
            return int(self.lc.llama_sampler_sample(self.samplers[key], self.ctx, index)), None
        token, scores = self._draw(key, self._logits(index))
        self.lc.llama_sampler_accept(self.samplers[key], token)
        return token, self._logprob(key, token, scores)

    def _logits(self, index: int) -> npt.NDArray[np.float32]:
        return np.ctypeslib.as_array(
            self.lc.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,)
        )

    def _draw(
        self, key: SeqKey, logits: npt.NDArray[np.float32]
    ) -> tuple[int, npt.NDArray[np.float32] | None]:
        """Draw a token through the chain over the whole vocabulary (not accepted); with
        logprobs also the scores it drew from: logits after bans and penalties, before
        top-k/top-p cut them (temperature is applied by `_logprob`)."""
        lc, chain = self.lc, self.samplers[key]
        candidates = self._fill(self._candidates, self._ids, logits)
        # The chain's samplers one by one, as its own apply runs them: penalties (first,
        # where there are any) change scores, the rest cut and draw.
        first = 1 if key in self.penalized else 0
        samplers = [
            lc.llama_sampler_chain_get(chain, i) for i in range(lc.llama_sampler_chain_n(chain))
        ]
        for sampler in samplers[:first]:
            lc.llama_sampler_apply(sampler, ctypes.byref(candidates))
        scores = self._candidates["logit"].copy() if key in self.logprobs else None
        for sampler in samplers[first:]:
            lc.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return int(candidates.data[candidates.selected].id), scores

    def _logprob(
        self, key: SeqKey, token: int, scores: npt.NDArray[np.float32] | None
    ) -> TokenLogprob | None:
        if scores is None:
            return None
        top, temperature = self.logprobs[key]
        return token_logprob(scores, token, temperature, top)

    def _sample_guided(
        self, key: SeqKey, index: int
    ) -> tuple[int | FinishReason, TokenLogprob | None]:
        # llama.cpp's common sampler: sample as usual and check the grammar on that token
        # alone; only when it is refused, mask by the grammar and sample again. Masking
        # costs every candidate's text against the grammar (about 50 ms for the 262k
        # tokens of Gemma 3), so the 512 likeliest tokens are masked first, then the
        # 65536 likeliest, and the whole vocabulary only when none of those fits: greedy
        # picks the same token either way (penalties aside, which reorder the logits).
        # Where the grammar wants one literal (the opening brace after a prose prompt)
        # its few tokens can rank below 20000.
        # Logprobs are those of the first draw's scores: the model's distribution before
        # the grammar's mask, which is known only for the tokens it was computed for.
        lc = self.lc
        chain, grammar = self.samplers[key], self.grammars[key]
        logits = self._logits(index)
        scores = None
        if key in self.penalized or key in self.logprobs:
            token, scores = self._draw(key, logits)
        else:
            # Without penalties a chain keeps no state between tokens (accepting is a
            # no-op), so llama.cpp's own sample call may draw: faster than filling here.
            token = int(lc.llama_sampler_sample(chain, self.ctx, index))
        if not self._allows(grammar, token):
            candidates = self._masked(grammar, logits)
            if candidates is None:
                end = FinishReason.STOP if self._allows(grammar, self._eog) else FinishReason.LENGTH
                return end, None
            lc.llama_sampler_apply(chain, ctypes.byref(candidates))
            token = int(candidates.data[candidates.selected].id)
        if token in self.end_tokens:
            return FinishReason.STOP, None  # the grammar allowed it: the value is complete
        lc.llama_sampler_accept(chain, token)
        lc.llama_sampler_accept(grammar, token)
        return token, self._logprob(key, token, scores)

    def _masked(self, grammar: Any, logits: npt.NDArray[np.float32]) -> Any:
        """The smallest tier of likeliest tokens with one the grammar allows, masked by it
        (None: the grammar allows no token at all)."""
        for data in [*self._tiers, self._candidates]:
            size = len(data)
            # Computed tier by tier: the first one fits most of the time.
            ids = self._ids if size == self.n_vocab else self._likeliest(logits, size)
            candidates = self._fill(data, ids, logits[ids])
            self.lc.llama_sampler_apply(grammar, ctypes.byref(candidates))
            if np.isfinite(data["logit"]).any():
                return candidates
        return None

    @staticmethod
    def _likeliest(logits: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.int32]:
        return np.argpartition(logits, -size)[-size:].astype(np.int32)

    def _fill(
        self, data: npt.NDArray[Any], ids: npt.NDArray[np.int32], logits: npt.NDArray[np.float32]
    ) -> Any:
        """`data` holding these candidates, as llama.cpp's array (samplers sort and cut it
        in place, so it is refilled each time)."""
        data["id"] = ids
        data["logit"] = logits
        data["p"] = 0.0
        return self.lc.llama_token_data_array(
            data=data.ctypes.data_as(self.lc.llama_token_data_p),
            size=len(data),
            selected=-1,
            sorted=False,
        )

    def _allows(self, grammar: Any, token: int) -> bool:
        if token < 0:
            return False
        one = self._one
        one["id"], one["logit"], one["p"] = token, 0.0, 0.0
        array = self.lc.llama_token_data_array(
            data=one.ctypes.data_as(self.lc.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        self.lc.llama_sampler_apply(grammar, ctypes.byref(array))
        return bool(np.isfinite(one["logit"][0]))

    def close(self) -> None:
        for rid in list(self.samplers):
            self.free_sequence(rid, None)
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)


class LlamaCppEngine:
    """The CPU engine: llama.cpp with in-flight batching (implements `Engine`)."""

    def __init__(self, config: LlamaCppConfig) -> None:
        self.config = config
        self._scheduler = Scheduler(
            SchedulerLimits(
                max_active=config.max_batch_size,
                max_waiting=config.max_queue,
                kv_capacity=config.kv_cache_tokens,
                max_seq_len=config.max_seq_len,
                max_step_tokens=config.max_step_tokens,
                cache_slots=config.cache_slots,
                block_tokens=config.prefix_cache_block_tokens,
            )
        )
        self._lock = threading.Condition()
        self._aborts: list[str] = []
        self._queues: dict[str, _Consumer] = {}
        self._llama: _Llama | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failure: str | None = None
        self._monitor = HealthMonitor("llama.cpp engine", stall_s=config.stall_timeout_s)
        self._planned: list[StepItem] = []  # the running step's items, failed together
        self.grammars = GrammarCache(self._grammar_sampler)

    def _grammar_sampler(self, gbnf: str) -> Any:
        # The GrammarCache's worker: only between start and the cache's close, while the
        # model lives.
        assert self._llama is not None
        return self._llama.grammar_sampler(gbnf)

    async def start(self) -> None:
        """Load the model (in a worker thread) and start the step loop."""
        self._llama = await asyncio.to_thread(_Llama, self.config)
        self._thread = threading.Thread(target=self._run, name="llama-cpp-engine", daemon=True)
        self._thread.start()
        log.info(
            "llama.cpp engine ready: %s, %d slots, %d KV cells",
            self.config.model_path.name,
            self.config.max_batch_size,
            self.config.kv_cache_tokens,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenDelta]:
        """Stream the deltas of one sequence; closing early aborts it."""
        if self._llama is not None:  # not started: refused below
            check_token_ids(request, self._llama.n_vocab)  # before any id reaches llama.cpp
        queue: asyncio.Queue[TokenDelta | EngineError] = asyncio.Queue()
        guide = request.guide if self._llama is not None else None
        guided = guide is not None
        if guide is not None:
            # Converted, compiled and copied for each sequence by the grammar worker, off
            # this loop and the step thread; refused here when it cannot be, or not in time.
            await self.grammars.prepare(guide, request.request_id, request.sampling.n)
        try:
            with self._lock:
                if self._stopping or self._failure or self._llama is None:
                    raise EngineStoppedError(self._failure or "the engine is not running")
                self._scheduler.add(request)  # raises InvalidRequest/Overloaded before any delta
                self._queues[request.request_id] = _Consumer(
                    asyncio.get_running_loop(), queue, request.sampling.n
                )
                self._lock.notify()
        except BaseException:
            if guided:
                self.grammars.release(request.request_id)  # no step will take them
            raise
        deltas = request_deltas(
            queue.get, request.sampling.n, partial(self._request_abort, request.request_id)
        )
        try:
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    yield delta
        finally:
            if guided:
                # After the abort is queued: the step thread applies aborts before it
                # admits, so no sequence of this request takes a grammar after this.
                self.grammars.release(request.request_id)

    def _request_abort(self, request_id: str) -> None:
        with self._lock:
            if request_id in self._queues:
                self._aborts.append(request_id)
                self._lock.notify()

    async def abort(self, request_id: str) -> None:
        """Abort a waiting or running sequence."""
        self._request_abort(request_id)

    def stats(self) -> EngineStats:
        """The scheduler's current figures."""
        with self._lock:
            return self._scheduler.stats()

    @property
    def vocab_size(self) -> int:
        """Token ids run 0..vocab_size - 1 (known once started)."""
        if self._llama is None:
            raise EngineStoppedError("the engine is not started")
        return int(self._llama.n_vocab)

    def health(self) -> EngineHealth:
        """Whether the step loop can generate: it runs, its steps do not keep failing and
        none has stalled while requests wait. Takes no engine lock, so a stuck step thread
        cannot block the caller."""
        if self._llama is None or self._thread is None:
            return EngineHealth(False, "the engine is not started")
        if self._stopping:
            return EngineHealth(False, "the engine is shutting down")
        if self._failure is None and not self._thread.is_alive():
            self._monitor.fatal("the engine's step thread is gone")
        return self._monitor.check(busy=bool(self._queues))

    def cell_owners(self) -> dict[int, int]:
        """Sequence ids holding KV cells, with the highest position each holds.

        For leak checks: once idle, only live prefix-cache entries hold cells.
        """
        assert self._llama is not None
        with self._lock:
            ids = range(self.config.max_batch_size + self.config.cache_slots)
            return {i: p for i, p in self._llama.last_positions(ids).items() if p >= 0}

    def cached_prefixes(self) -> dict[int, int]:
        """Each cache entry's sequence id and its tokens."""
        with self._lock:
            return self._scheduler.cache_ids()

    async def shutdown(self) -> None:
        """Cancel every sequence, stop the loop and free the model."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    # -- the step thread ---------------------------------------------------------

    def _deliver(self, deltas: list[tuple[str, TokenDelta]]) -> None:
        # One wake-up per consumer loop per step, not one per delta: with 16 sequences
        # in flight, per-delta wake-ups cost the consumer more than the deltas do.
        batches: dict[asyncio.AbstractEventLoop, list[tuple[_Queue, TokenDelta]]] = {}
        for request_id, delta in deltas:
            entry = self._queues.get(request_id)
            if entry is None:
                continue
            if delta.finished:
                entry.remaining -= 1
                if entry.remaining == 0:
                    del self._queues[request_id]
            batches.setdefault(entry.loop, []).append((entry.queue, delta))
        for loop, items in batches.items():
            with contextlib.suppress(RuntimeError):  # the consumer's loop is closed
                loop.call_soon_threadsafe(_put_all, items)

    def _fail_requests(self, llama: _Llama, request_ids: list[str], error: EngineError) -> None:
        """End these requests with `error` (their consumers raise it) and clear their cells;
        the caller holds the lock."""
        for rid in request_ids:
            # Told first: whatever llama.cpp does below, no consumer waits forever.
            entry = self._queues.pop(rid, None)
            if entry is not None:
                with contextlib.suppress(RuntimeError):  # the consumer's loop is closed
                    entry.loop.call_soon_threadsafe(entry.queue.put_nowait, error)
            dropped = self._scheduler.fail(rid)
            llama.copy_cells(self._scheduler.take_copies())
            for index, slot in dropped:
                llama.free_sequence((rid, index), slot)

    def _run(self) -> None:
        llama = self._llama
        assert llama is not None
        failure: str | None = "the engine's step thread ended unexpectedly"
        try:
            while self._guarded_step(llama):
                pass
            failure = None
        except Exception as exc:
            log.exception("llama.cpp engine: the step thread died")
            failure = f"the engine's step thread died: {_describe(exc)}"
        finally:
            try:
                with self._lock:
                    if failure is None:
                        aborted = self._scheduler.abort_all()
                        for rid, delta in aborted:
                            llama.free_sequence((rid, delta.index), None)
                        self._deliver(aborted)
                    else:
                        # Set under the lock: `generate` admits nothing after this.
                        self._failure = failure
                        self._monitor.fatal(failure)
                        stopped = EngineStoppedError(f"the engine failed: {failure}")
                        self._fail_requests(llama, list(self._queues), stopped)
            finally:
                # First: a grammar being compiled reads the model's vocabulary.
                self.grammars.close()
                llama.close()

    def _guarded_step(self, llama: _Llama) -> bool:
        """One step; a failure ends the requests of that step only, and the loop goes on."""
        try:
            return self._step(llama)
        except Exception as exc:
            why = _describe(exc)
            # Our own errors say enough; anything else is a bug worth its traceback.
            bug = not isinstance(exc, EngineError)
            log.error("llama.cpp engine step failed: %s", why, exc_info=bug)
            # Counted before the requests hear of it: they may ask for health at once.
            self._monitor.failed(why)
            self._monitor.progressed()
            with self._lock:
                ids = list(dict.fromkeys(item.request_id for item in self._planned))
                self._planned = []
                self._fail_requests(llama, ids, EngineError(f"the engine step failed: {why}"))
            return True

    def _step(self, llama: _Llama) -> bool:
        with self._lock:
            self._planned = []
            while not self._stopping and not self._aborts and self._scheduler.idle:
                self._monitor.progressed()  # idle is no stall
                self._lock.wait(timeout=1.0)
            if self._stopping:
                return False
            aborted = []
            for rid in self._aborts:
                for delta, slot in self._scheduler.abort(rid):
                    # Its prompt blocks go to the cache before its slot is cleared.
                    llama.copy_cells(self._scheduler.take_copies())
                    llama.free_sequence((rid, delta.index), slot)
                    aborted.append((rid, delta))
            self._aborts.clear()
            self._deliver(aborted)
            items = self._scheduler.plan()
            self._planned = items
            # Cached prefixes copied into newly admitted sequences (also those admitted
            # by `add` since the last step) before the step reads them.
            llama.copy_cells(self._scheduler.take_copies())
            for item in items:
                if item.key not in llama.samplers:
                    request = self._scheduler.request(item.key)
                    assert request is not None
                    grammar = self.grammars.take(item.key) if request.guide else None
                    llama.new_sampler(item.key, request.sampling, request.prompt_ids, grammar)
            banned = {
                item.key: self._scheduler.banned_tokens(item.key, llama.end_tokens)
                for item in items
                if item.sample
            }
        if not items:
            self._monitor.progressed()
            return True
        logits_at = llama.decode(items)  # the long part, outside the lock
        sampled: dict[SeqKey, int] = {}
        ended: dict[SeqKey, FinishReason] = {}
        logprobs: dict[SeqKey, TokenLogprob] = {}
        for key, idx in logits_at.items():
            token, logprob = llama.sample(key, idx, banned[key])
            if isinstance(token, FinishReason):
                ended[key] = token
            else:
                sampled[key] = token
            if logprob is not None:
                logprobs[key] = logprob
        self._monitor.succeeded()  # before any delta goes out, as failures are
        self._monitor.progressed()
        with self._lock:
            deltas, _ = self._scheduler.complete(
                sampled, llama.end_tokens.__contains__, ended, logprobs
            )
            llama.copy_cells(self._scheduler.take_copies())
            for rid, delta in deltas:
                if delta.finished:
                    key = (rid, delta.index)
                    llama.free_sequence(key, self._slot_of(items, key))
            self._deliver(deltas)
        return True

    @staticmethod
    def _slot_of(items: list[StepItem], key: SeqKey) -> int | None:
        return next((i.slot for i in items if i.key == key), None)


# A request's deltas, or the error that ended it.
_Queue = asyncio.Queue[TokenDelta | EngineError]


@dataclass
class _Consumer:
    """Where a request's deltas go, and how many of its sequences are still running."""

    loop: asyncio.AbstractEventLoop
    queue: _Queue
    remaining: int


def _describe(exc: BaseException) -> str:
    """An exception in one line for logs and health reasons."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:300]


def _put_all(items: list[tuple[_Queue, TokenDelta]]) -> None:
    for queue, delta in items:
        queue.put_nowait(delta)


__all__ = ["FinishReason", "LlamaCppConfig", "LlamaCppEngine", "available_cores"]
