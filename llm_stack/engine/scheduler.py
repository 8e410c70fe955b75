"""In-flight batching scheduler: the part of TensorRT-LLM's batch manager the CPU engine plays.

Pure bookkeeping, no model: it admits requests into a fixed number of slots while the
KV cache has room, plans each step as one decode token per running sequence plus
prompt chunks of newly admitted ones (chunked prefill) within a token budget, and
turns sampled tokens into deltas, applying stop words, end ids and length limits.

A request for n sequences takes n slots at once. Its first sequence computes the
prompt; the others draw their first token from the same logits and then take the
prompt's KV cells by copy, so the prompt is computed once (vLLM's parallel sampling).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field, replace

from llm_stack.engine.base import (
    EngineOverloadedError,
    EngineStats,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    TokenDelta,
    TokenLogprob,
)
from llm_stack.engine.stops import StopMatcher, banned_next_tokens
from llm_stack.model_errors import ErrorCode


def block_hashes(tokens: Seq[int], block_tokens: int) -> tuple[bytes, ...]:
    """One hash per whole block of `tokens`, each of the block and every block before it.

    Chained as vLLM and TensorRT-LLM chain theirs: equal hashes mean equal prefixes.
    """
    hashes: list[bytes] = []
    previous = b""
    for end in range(block_tokens, len(tokens) + 1, block_tokens):
        block = array("i", tokens[end - block_tokens : end]).tobytes()
        previous = hashlib.blake2b(previous + block, digest_size=16).digest()
        hashes.append(previous)
    return tuple(hashes)


@dataclass(frozen=True)
class CacheCopy:
    """Make `dst` hold the cells of `src` for positions [0, tokens); tokens 0: clear `src`."""

    src: int
    dst: int
    tokens: int


@dataclass
class _CachedPrefix:
    """Whole prompt blocks kept in the KV cache under a sequence id of their own."""

    seq_id: int
    hashes: tuple[bytes, ...]


SeqKey = tuple[str, int]  # (request id, index among the request's n sequences)


@dataclass
class Sequence:
    """One sequence's state inside the scheduler (a request has `sampling.n` of them)."""

    request: GenerationRequest
    stops: StopMatcher
    reserved: int
    index: int = 0
    slot: int = -1
    prefilled: int = 0
    output: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per output token
    emitted: int = 0
    next_token: int | None = None
    hashes: tuple[bytes, ...] = ()
    cached: int = 0  # prompt tokens copied from the prefix cache
    seen_blocks: int = 0  # leading prompt blocks an earlier prompt also had
    # The request's first sequence, whose prompt cells this one copies once they are
    # computed (None: it has its own, or has them already).
    follows: Sequence | None = None
    followers: list[Sequence] = field(default_factory=list)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def key(self) -> SeqKey:
        return (self.request.request_id, self.index)

    @property
    def prompt_len(self) -> int:
        return len(self.request.prompt_ids)

    def banned_tokens(self, end_tokens: frozenset[int]) -> set[int]:
        """Tokens that must not be sampled next (bad words; end tokens before min_tokens)."""
        banned = banned_next_tokens(self.output, self.request.bad_sequences)
        if len(self.output) < self.request.sampling.min_tokens:
            end_id = self.request.end_id
            banned |= {end_id} if end_id is not None else end_tokens
        return banned


@dataclass(frozen=True)
class StepItem:
    """Tokens of one sequence to feed in this step, starting at `start_pos`.

    A sequence that shares its request's prompt has no tokens in the step that computes
    the prompt's last one: it samples from the logits of sequence `logits_of`.
    """

    request_id: str
    slot: int
    tokens: tuple[int, ...]
    start_pos: int
    sample: bool  # the last token's logits are needed to sample the next token
    index: int = 0
    logits_of: SeqKey | None = None

    @property
    def key(self) -> SeqKey:
        return (self.request_id, self.index)


@dataclass(frozen=True)
class SchedulerLimits:
    """Sizes the scheduler works within."""

    max_active: int  # slots: sequences in flight at once
    max_waiting: int  # bound of the admission queue
    kv_capacity: int  # KV cache cells shared by all sequences
    max_seq_len: int  # prompt + output tokens of one sequence
    max_step_tokens: int  # tokens fed to the model in one step
    # Sequence ids for cached prefixes (0: no prefix cache), taken after the slots', and
    # the size of a cache block in tokens.
    cache_slots: int = 0
    block_tokens: int = 64

    def __post_init__(self) -> None:
        for name in ("max_active", "kv_capacity", "max_seq_len", "max_step_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {self.max_waiting}")
        if self.cache_slots < 0 or self.block_tokens < 1:
            raise ValueError(
                f"cache_slots must be >= 0 and block_tokens >= 1, got {self.cache_slots} "
                f"and {self.block_tokens}"
            )


class Scheduler:
    """Admission, step planning and token bookkeeping for in-flight batching."""

    def __init__(self, limits: SchedulerLimits) -> None:
        self.limits = limits
        # Each waiting request by its first sequence; the others are made at admission.
        self._waiting: deque[Sequence] = deque()
        self._active: dict[SeqKey, Sequence] = {}
        self._free_slots = list(range(limits.max_active - 1, -1, -1))
        self._reserved = 0
        self._steps = 0
        self._step_sequences = 0
        self._peak = 0
        self._last_scheduled = 0
        self._last_context = 0
        self._generated = 0
        # Prefix cache: LRU order, oldest first; the copies the engine must make, in order.
        self._cache: OrderedDict[int, _CachedPrefix] = OrderedDict()
        first = limits.max_active
        self._free_cache_ids = list(range(first + limits.cache_slots - 1, first - 1, -1))
        self._copies: list[CacheCopy] = []
        # Block hashes of recent prompts, without cells: a prefix is cached only when a
        # second prompt starts with it (see `_store`).
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._prompt_cached = 0
        self._prompt_computed = 0
        self._finished: dict[str, int] = {}
        self._failed = 0  # sequences dropped by `fail`

    # -- admission ---------------------------------------------------------------

    def add(self, request: GenerationRequest) -> None:
        """Queue a request; raise if it can never fit or the queue is full."""
        if self._in_flight(request.request_id):
            raise InvalidRequestError(
                f"request id {request.request_id!r} is already in flight",
                code=ErrorCode.DUPLICATE_REQUEST_ID,
            )
        need = len(request.prompt_ids) + request.sampling.max_tokens
        limit = min(self.limits.max_seq_len, self.limits.kv_capacity)
        if need > limit:
            raise InvalidRequestError(
                f"prompt tokens + max_tokens = {len(request.prompt_ids)} + "
                f"{request.sampling.max_tokens} = {need} exceeds the sequence limit of {limit}",
                code=ErrorCode.SEQUENCE_TOO_LONG,
                field="max_tokens",
                tokens=need,
                limit=limit,
            )
        n = request.sampling.n
        if n > self.limits.max_active:
            raise InvalidRequestError(
                f"num_return_sequences is {n}, exceeds the engine's "
                f"{self.limits.max_active} sequences in flight",
                field="num_return_sequences",
            )
        if n * need > self.limits.kv_capacity:
            raise InvalidRequestError(
                f"num_return_sequences * (prompt tokens + max_tokens) = {n} * {need} = "
                f"{n * need} exceeds the KV cache of {self.limits.kv_capacity} tokens",
                field="num_return_sequences",
                tokens=n * need,
                limit=self.limits.kv_capacity,
            )
        # Slots freed or never used since the last step take arrivals first, so the
        # queue bound counts only requests that really wait.
        self._admit()
        if len(self._waiting) >= self.limits.max_waiting and not self._can_admit_now(need, n):
            raise EngineOverloadedError(
                f"engine queue is full: {len(self._waiting)} requests waiting",
                waiting=len(self._waiting),
            )
        hashes = (
            block_hashes(request.prompt_ids, self.limits.block_tokens)
            if self.limits.cache_slots
            else ()
        )
        seen = 0
        while seen < len(hashes) and hashes[seen] in self._seen:
            seen += 1
        for h in hashes:
            self._seen[h] = None
            self._seen.move_to_end(h)
        while len(self._seen) > _SEEN_HASHES:
            self._seen.popitem(last=False)
        self._waiting.append(
            Sequence(
                request=request,
                stops=StopMatcher(request.stop_sequences),
                reserved=need,
                hashes=hashes,
                seen_blocks=seen,
            )
        )
        self._admit()

    def _in_flight(self, request_id: str) -> bool:
        return any(s.request_id == request_id for s in (*self._waiting, *self._active.values()))

    def _can_admit_now(self, need: int, n: int) -> bool:
        # Cached blocks never hold a request back: they are evicted to make room.
        return (
            not self._waiting
            and len(self._free_slots) >= n
            and self._reserved + n * need <= self.limits.kv_capacity
        )

    def _admit(self) -> None:
        # FIFO: a large request at the head waits for room rather than being overtaken.
        while self._waiting:
            head = self._waiting[0]
            n = head.request.sampling.n
            need = n * head.reserved
            if len(self._free_slots) < n or self._reserved + need > self.limits.kv_capacity:
                break
            match, blocks = self._longest_match(head)
            keep = {match.seq_id} if match else set()
            if not self._make_room(need, keep):
                match = None
                self._make_room(need, set())
            self._waiting.popleft()
            for index in range(1, n):
                follower = Sequence(
                    request=head.request,
                    stops=StopMatcher(head.request.stop_sequences),
                    reserved=head.reserved,
                    index=index,
                    hashes=head.hashes,
                    seen_blocks=head.seen_blocks,
                    follows=head,
                )
                head.followers.append(follower)
            for seq in (head, *head.followers):
                seq.slot = self._free_slots.pop()
                self._reserved += seq.reserved
                self._active[seq.key] = seq
            reused = 0
            if match is not None:
                # Running sequences share the copied cells.
                reused = blocks * self.limits.block_tokens
                self._copies.append(CacheCopy(match.seq_id, head.slot, reused))
                self._cache.move_to_end(match.seq_id)
            head.prefilled = head.cached = reused
            self._prompt_cached += reused
            self._prompt_computed += head.prompt_len - reused

    # -- prefix cache ----------------------------------------------------------------

    def _longest_match(self, seq: Sequence) -> tuple[_CachedPrefix | None, int]:
        """The entry sharing the most leading blocks with `seq`'s prompt, and how many.

        The last prompt token is always computed, so there are logits to sample from.
        """
        usable = seq.hashes[: (seq.prompt_len - 1) // self.limits.block_tokens]
        best, best_blocks = None, 0
        for entry in self._cache.values():
            blocks = _common(entry.hashes, usable)
            if blocks > best_blocks:
                best, best_blocks = entry, blocks
        return best, best_blocks

    @property
    def _cache_tokens(self) -> int:
        return sum(len(e.hashes) for e in self._cache.values()) * self.limits.block_tokens

    def _make_room(self, tokens: int, keep: set[int]) -> bool:
        """Evict least recently used entries (not `keep`) until `tokens` more cells fit."""
        while self._reserved + self._cache_tokens + tokens > self.limits.kv_capacity:
            victim = next((i for i in self._cache if i not in keep), None)
            if victim is None:
                return False
            self._drop(victim)
        return True

    def _drop(self, seq_id: int) -> None:
        del self._cache[seq_id]
        self._free_cache_ids.append(seq_id)
        self._copies.append(CacheCopy(seq_id, seq_id, 0))

    def _store(self, seq: Sequence) -> None:
        """Keep the computed whole prompt blocks of a sequence that leaves its slot, as far
        as an earlier prompt started with them too.

        Cached blocks are not free for the rest: they keep their KV cells in use, and
        llama.cpp's attention spans every cell up to the highest one used. Prefixes seen
        once (distinct prompts, each prompt's own last lines) would cost every step and
        never be reused; a prefix that recurs is cached from its second sight.
        """
        computed = min(seq.prefilled, seq.prompt_len) // self.limits.block_tokens
        blocks = min(computed, seq.seen_blocks)
        if not self.limits.cache_slots or blocks == 0:
            return
        hashes = seq.hashes[:blocks]
        for entry in self._cache.values():
            if _common(entry.hashes, hashes) == blocks:  # already held, maybe longer
                self._cache.move_to_end(entry.seq_id)
                return
        for entry in list(self._cache.values()):
            if _common(entry.hashes, hashes) == len(entry.hashes):  # ours extends it
                self._drop(entry.seq_id)
        if not self._free_cache_ids and self._cache:
            self._drop(next(iter(self._cache)))
        if not self._free_cache_ids:
            return
        if not self._make_room(blocks * self.limits.block_tokens, set()):
            return
        seq_id = self._free_cache_ids.pop()
        self._cache[seq_id] = _CachedPrefix(seq_id, hashes)
        self._copies.append(CacheCopy(seq.slot, seq_id, blocks * self.limits.block_tokens))

    def take_copies(self) -> list[CacheCopy]:
        """The cache copies and clears planned since the last call, to apply in order
        before clearing any freed slot and before the next step runs."""
        copies, self._copies = self._copies, []
        return copies

    def cache_ids(self) -> dict[int, int]:
        """Each live cache entry's sequence id and its tokens (for checks and tests)."""
        return {i: len(e.hashes) * self.limits.block_tokens for i, e in self._cache.items()}

    # -- abort -------------------------------------------------------------------

    def abort(self, request_id: str) -> list[tuple[TokenDelta, int | None]]:
        """Drop a request's unfinished sequences; returns each one's final delta and the
        slot to clear (None: it had none). Empty when the request is unknown or done."""
        for waiting in self._waiting:
            if waiting.request_id == request_id:
                self._waiting.remove(waiting)
                cancelled = FinishReason.CANCELLED
                first = self._final_delta(waiting, cancelled)
                others = [replace(first, index=i) for i in range(1, waiting.request.sampling.n)]
                self._finished[cancelled.value] += len(others)
                return [(delta, None) for delta in (first, *others)]
        out: list[tuple[TokenDelta, int | None]] = []
        for seq in [s for s in self._active.values() if s.request_id == request_id]:
            slot = seq.slot
            self._release(seq)
            out.append((self._final_delta(seq, FinishReason.CANCELLED), slot))
        return out

    def fail(self, request_id: str) -> list[tuple[int, int]]:
        """Drop a request the engine failed; returns each running sequence's index and the
        slot to clear (none for a waiting request).

        Unlike an abort its prompt blocks are not cached: a failed step may have left their
        cells uncomputed.
        """
        for waiting in self._waiting:
            if waiting.request_id == request_id:
                self._waiting.remove(waiting)
                self._failed += waiting.request.sampling.n
                return []
        dropped: list[tuple[int, int]] = []
        for seq in [s for s in self._active.values() if s.request_id == request_id]:
            dropped.append((seq.index, seq.slot))
            self._release(seq, keep_prefix=False)
            self._failed += 1
        return dropped

    def request_ids(self) -> list[str]:
        """Every waiting or running request, once each."""
        ids = [s.request_id for s in (*self._waiting, *self._active.values())]
        return list(dict.fromkeys(ids))

    def abort_all(self) -> list[tuple[str, TokenDelta]]:
        """Cancel everything (engine shutdown)."""
        return [(rid, delta) for rid in self.request_ids() for delta, _ in self.abort(rid)]

    # -- steps -------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._waiting and not self._active

    def plan(self) -> list[StepItem]:
        """Admit what fits, then plan one step: decode tokens first, prefill chunks after."""
        self._admit()
        budget = self.limits.max_step_tokens
        items: list[StepItem] = []
        for seq in self._active.values():
            if seq.next_token is not None and budget > 0:
                pos = seq.prompt_len + len(seq.output) - 1
                items.append(
                    StepItem(seq.request_id, seq.slot, (seq.next_token,), pos, True, seq.index)
                )
                budget -= 1
        context = 0
        for seq in self._active.values():
            if budget <= 0:
                break
            if seq.prefilled < seq.prompt_len and seq.follows is None:
                chunk = seq.request.prompt_ids[seq.prefilled : seq.prefilled + budget]
                start = seq.prefilled
                seq.prefilled += len(chunk)
                done = seq.prefilled == seq.prompt_len
                items.append(StepItem(seq.request_id, seq.slot, tuple(chunk), start, done))
                budget -= len(chunk)
                context += 1
                if done:  # the other sequences draw from the same logits
                    items.extend(
                        StepItem(f.request_id, f.slot, (), seq.prompt_len, True, f.index, seq.key)
                        for f in seq.followers
                        if f.key in self._active
                    )
        if items:
            self._steps += 1
            self._step_sequences += len(items)
            self._peak = max(self._peak, len(items))
        self._last_scheduled = len(items)
        self._last_context = context
        return items

    def request(self, key: SeqKey) -> GenerationRequest | None:
        """The request of an active sequence."""
        seq = self._active.get(key)
        return seq.request if seq else None

    def banned_tokens(self, key: SeqKey, end_tokens: frozenset[int]) -> set[int]:
        """Tokens to mask before sampling for this sequence."""
        seq = self._active.get(key)
        return seq.banned_tokens(end_tokens) if seq else set()

    def complete(
        self,
        sampled: Mapping[SeqKey, int],
        is_end: Callable[[int], bool],
        ended: Mapping[SeqKey, FinishReason] | None = None,
        logprobs: Mapping[SeqKey, TokenLogprob] | None = None,
    ) -> tuple[list[tuple[str, TokenDelta]], list[int]]:
        """Apply sampled tokens; returns the deltas to send (by request id) and the slots
        freed.

        `ended`: sequences the sampler ended without a token (a guided sequence whose
        value is complete), with their finish reason. `logprobs`: the sampled tokens'
        log-probabilities, for the sequences that asked for them.
        """
        deltas: list[tuple[str, TokenDelta]] = []
        freed: list[int] = []
        steps: list[tuple[SeqKey, int | FinishReason]] = [
            *sampled.items(),
            *(ended or {}).items(),
        ]
        for key, token in steps:
            seq = self._active.get(key)
            if seq is None:  # aborted while the step ran
                continue
            if seq.follows is not None:
                # Its first token came from the prompt's last logits: the prompt's cells
                # are computed now, and become its own before its next step.
                self._copies.append(CacheCopy(seq.follows.slot, seq.slot, seq.prompt_len))
                seq.prefilled = seq.prompt_len
                seq.follows = None
            if isinstance(token, FinishReason):
                finish: FinishReason | None = token
            else:
                finish = self._apply(seq, token, is_end, (logprobs or {}).get(key))
            if finish is not None:
                freed.append(seq.slot)
                self._release(seq)
                deltas.append((seq.request_id, self._final_delta(seq, finish)))
                continue
            visible = len(seq.output) - seq.stops.holdback(seq.output)
            if visible > seq.emitted:
                deltas.append((seq.request_id, self._emit(seq, visible, None)))
        return deltas, freed

    def _apply(
        self,
        seq: Sequence,
        token: int,
        is_end: Callable[[int], bool],
        logprob: TokenLogprob | None,
    ) -> FinishReason | None:
        end_id = seq.request.end_id
        if (token == end_id) if end_id is not None else is_end(token):
            return FinishReason.STOP
        seq.output.append(token)
        if seq.request.sampling.logprobs is not None:
            seq.logprobs.append(logprob if logprob is not None else TokenLogprob(0.0))
        self._generated += 1
        stop_len = seq.stops.matched_stop(seq.output)
        if stop_len:
            del seq.output[-stop_len:]
            del seq.logprobs[len(seq.output) :]
            return FinishReason.STOP
        if len(seq.output) >= seq.request.sampling.max_tokens:
            return FinishReason.LENGTH
        if seq.prompt_len + len(seq.output) >= seq.reserved:
            return FinishReason.LENGTH
        seq.next_token = token
        return None

    def _release(self, seq: Sequence, keep_prefix: bool = True) -> None:
        del self._active[seq.key]
        self._free_slots.append(seq.slot)
        self._reserved -= seq.reserved
        if keep_prefix:
            self._store(seq)

    def _final_delta(self, seq: Sequence, finish: FinishReason) -> TokenDelta:
        self._finished[finish.value] = self._finished.get(finish.value, 0) + 1
        return self._emit(seq, len(seq.output), finish)

    @staticmethod
    def _emit(seq: Sequence, upto: int, finish: FinishReason | None) -> TokenDelta:
        """The delta of the output tokens after the emitted ones, up to `upto`."""
        start, seq.emitted = seq.emitted, upto
        return TokenDelta(
            token_ids=tuple(seq.output[start:upto]),
            num_input_tokens=seq.prompt_len,
            num_output_tokens=upto,
            finish_reason=finish,
            num_cached_tokens=seq.cached,
            index=seq.index,
            logprobs=tuple(seq.logprobs[start:upto]),
        )

    def stats(self) -> EngineStats:
        """A snapshot of the scheduler's figures."""
        return EngineStats(
            active=len(self._active),
            waiting=len(self._waiting),
            max_active=self.limits.max_active,
            context=self._last_context,
            scheduled=self._last_scheduled,
            steps=self._steps,
            step_sequences=self._step_sequences,
            peak_step_batch=self._peak,
            generated_tokens=self._generated,
            finished=dict(self._finished),
            prompt_tokens_cached=self._prompt_cached,
            prompt_tokens_computed=self._prompt_computed,
            kv_cache_tokens=self.limits.kv_capacity,
            kv_reserved_tokens=self._reserved,
            prefix_cache_tokens=self._cache_tokens,
            block_tokens=self.limits.block_tokens,
            failed=self._failed,
        )


_SEEN_HASHES = 65536  # block hashes remembered for second sight (16 bytes each)


def _common(a: tuple[bytes, ...], b: tuple[bytes, ...]) -> int:
    """How many leading blocks two hash chains share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
