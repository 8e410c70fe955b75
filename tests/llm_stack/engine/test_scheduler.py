"""The in-flight batching scheduler, driven by a scripted fake model."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from llm_stack.engine.base import (
    EngineOverloadedError,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
)
from llm_stack.engine.scheduler import (
    CacheCopy,
    Scheduler,
    SchedulerLimits,
    SeqKey,
    StepItem,
    block_hashes,
)

END = 0  # the fake model's end-of-generation token


def limits(
    max_active: int = 4,
    max_waiting: int = 4,
    kv_capacity: int = 1000,
    max_seq_len: int = 100,
    max_step_tokens: int = 64,
) -> SchedulerLimits:
    return SchedulerLimits(
        max_active=max_active,
        max_waiting=max_waiting,
        kv_capacity=kv_capacity,
        max_seq_len=max_seq_len,
        max_step_tokens=max_step_tokens,
    )


def req(
    request_id: str,
    prompt: Iterable[int] = (11, 12, 13),
    max_tokens: int = 8,
    stops: tuple[tuple[int, ...], ...] = (),
    bad: tuple[tuple[int, ...], ...] = (),
    end_id: int | None = None,
    min_tokens: int = 0,
) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        prompt_ids=tuple(prompt),
        sampling=SamplingParams(max_tokens=max_tokens, min_tokens=min_tokens),
        stop_sequences=stops,
        bad_sequences=bad,
        end_id=end_id,
    )


@dataclass
class FakeModel:
    """Returns the next scripted token of each sampled sequence; records every step."""

    scripts: dict[str, Iterator[int]]
    end_tokens: frozenset[int] = frozenset({END})
    steps: list[list[StepItem]] = field(default_factory=list)
    deltas: dict[str, list[TokenDelta]] = field(default_factory=dict)
    freed: list[int] = field(default_factory=list)

    def step(self, scheduler: Scheduler) -> list[StepItem]:
        items = scheduler.plan()
        self.steps.append(items)
        sampled = {i.key: next(self.scripts[i.request_id]) for i in items if i.sample}
        deltas, freed = scheduler.complete(sampled, self.end_tokens.__contains__)
        for rid, delta in deltas:
            self.deltas.setdefault(rid, []).append(delta)
        self.freed.extend(freed)
        return items

    def run(self, scheduler: Scheduler, max_steps: int = 200) -> None:
        for _ in range(max_steps):
            if scheduler.idle:
                return
            self.step(scheduler)
        raise AssertionError(f"the scheduler did not finish within {max_steps} steps")

    def tokens(self, request_id: str) -> list[int]:
        return [t for d in self.deltas.get(request_id, []) for t in d.token_ids]

    def finish(self, request_id: str) -> FinishReason | None:
        deltas = self.deltas.get(request_id, [])
        return deltas[-1].finish_reason if deltas else None


def scripted(**scripts: Iterable[int]) -> FakeModel:
    return FakeModel({rid: iter(tokens) for rid, tokens in scripts.items()})


def active_ids(items: Iterable[StepItem]) -> set[str]:
    return {i.request_id for i in items}


# -- limits and admission ------------------------------------------------------


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("max_active", 0), ("kv_capacity", 0), ("max_seq_len", 0), ("max_step_tokens", 0)],
)
def test_limits_reject_sizes_below_one(field_name: str, value: int) -> None:
    kwargs: dict[str, int] = {field_name: value}
    with pytest.raises(ValueError, match=rf"{field_name} must be >= 1, got 0"):
        limits(**kwargs)


def test_limits_reject_negative_queue_bound() -> None:
    with pytest.raises(ValueError, match=r"max_waiting must be >= 0, got -1"):
        limits(max_waiting=-1)


def test_admits_into_free_slots_and_queues_the_rest() -> None:
    s = Scheduler(limits(max_active=2, max_waiting=4))
    for rid in ("a", "b", "c"):
        s.add(req(rid))
    items = s.plan()
    stats = s.stats()
    assert (stats.active, stats.waiting, stats.max_active) == (2, 1, 2)
    assert active_ids(items) == {"a", "b"}
    assert {i.slot for i in items} == {0, 1}
    assert s.request(("c", 0)) is None  # still waiting


def test_kv_reservation_limits_admission_and_is_freed_on_finish() -> None:
    # Each request reserves prompt (4) + max_tokens (6) = 10 cells; 25 cells hold two.
    s = Scheduler(limits(max_active=8, kv_capacity=25))
    model = scripted(a=[5] * 6, b=[6] * 6, c=[7] * 6)
    for rid in ("a", "b", "c"):
        s.add(req(rid, prompt=(1, 2, 3, 4), max_tokens=6))
    first = model.step(s)
    assert active_ids(first) == {"a", "b"}
    assert s.stats().waiting == 1
    model.run(s)
    # c only got a slot once a or b finished and gave its reservation back.
    c_first_step = next(n for n, items in enumerate(model.steps) if "c" in active_ids(items))
    assert c_first_step == 6
    assert model.tokens("c") == [7] * 6
    assert s.stats().active == 0


def test_queue_is_bounded() -> None:
    s = Scheduler(limits(max_active=1, max_waiting=1))
    s.add(req("a"))
    s.plan()  # a takes the only slot
    s.add(req("b"))  # waits
    with pytest.raises(EngineOverloadedError, match="queue is full: 1 requests waiting"):
        s.add(req("c"))
    assert s.stats().waiting == 1


def test_zero_queue_accepts_only_what_can_start_now() -> None:
    s = Scheduler(limits(max_active=1, max_waiting=0))
    s.add(req("a"))
    s.plan()
    with pytest.raises(EngineOverloadedError):
        s.add(req("b"))


def test_burst_between_steps_is_admitted_while_slots_are_free() -> None:
    # Requests arrive in bursts between two plan() calls (the engine plans once per
    # step); with four free slots, three arrivals must not overflow a one-place queue.
    s = Scheduler(limits(max_active=4, max_waiting=1))
    for rid in ("a", "b", "c"):
        s.add(req(rid))
    items = s.plan()
    assert active_ids(items) == {"a", "b", "c"}
    assert s.stats().waiting == 0


@pytest.mark.parametrize(
    ("max_seq_len", "kv_capacity", "limit"),
    [(12, 1000, 12), (100, 12, 12)],
)
def test_request_that_can_never_fit_is_invalid(
    max_seq_len: int, kv_capacity: int, limit: int
) -> None:
    s = Scheduler(limits(max_seq_len=max_seq_len, kv_capacity=kv_capacity))
    with pytest.raises(InvalidRequestError) as err:
        s.add(req("a", prompt=range(1, 6), max_tokens=10))
    assert str(err.value) == (
        f"prompt tokens + max_tokens = 5 + 10 = 15 exceeds the sequence limit of {limit}"
    )
    assert s.idle


def test_request_that_exactly_fits_is_accepted() -> None:
    s = Scheduler(limits(max_seq_len=15))
    s.add(req("a", prompt=range(1, 6), max_tokens=10))
    assert s.plan() == [StepItem("a", 0, (1, 2, 3, 4, 5), 0, True)]


def test_admission_is_fifo() -> None:
    # a holds 15 of 20 cells; b (10) waits for room and c (4), though it would fit,
    # does not overtake it.
    s = Scheduler(limits(max_active=4, kv_capacity=20))
    s.add(req("a", prompt=range(1, 6), max_tokens=10))
    s.plan()
    s.add(req("b", prompt=range(1, 6), max_tokens=5))
    s.add(req("c", prompt=(1, 2), max_tokens=2))
    assert s.plan() == []  # a waits for its first token; b and c wait for room
    assert s.stats().waiting == 2
    assert s.request(("c", 0)) is None
    s.abort("a")
    assert active_ids(s.plan()) == {"b", "c"}


def test_duplicate_request_ids_are_rejected() -> None:
    s = Scheduler(limits(max_active=1))
    s.add(req("a"))
    with pytest.raises(InvalidRequestError, match="request id 'a' is already in flight"):
        s.add(req("a"))  # waiting
    s.plan()
    with pytest.raises(InvalidRequestError, match="request id 'a' is already in flight"):
        s.add(req("a"))  # running
    assert s.stats().active == 1


# -- step planning ---------------------------------------------------------------


def test_chunked_prefill_positions_and_sampling() -> None:
    prompt = tuple(range(100, 110))
    s = Scheduler(limits(max_step_tokens=4))
    model = scripted(a=[7, 8, 9])
    s.add(req("a", prompt=prompt, max_tokens=3))
    steps = [model.step(s) for _ in range(5)]
    assert steps[0] == [StepItem("a", 0, prompt[0:4], 0, False)]
    assert steps[1] == [StepItem("a", 0, prompt[4:8], 4, False)]
    assert steps[2] == [StepItem("a", 0, prompt[8:10], 8, True)]
    # Then one decode token per step, fed at the position after the last one.
    assert steps[3] == [StepItem("a", 0, (7,), 10, True)]
    assert steps[4] == [StepItem("a", 0, (8,), 11, True)]
    assert model.tokens("a") == [7, 8, 9]
    assert model.finish("a") is FinishReason.LENGTH
    assert s.idle


def test_decode_tokens_come_before_prefill_chunks() -> None:
    s = Scheduler(limits(max_step_tokens=4))
    model = scripted(a=[7, 8, 9, 10], b=[20, 21])
    s.add(req("a", prompt=(1, 2), max_tokens=4))
    model.step(s)  # a's prompt, first token sampled
    s.add(req("b", prompt=tuple(range(50, 56)), max_tokens=2))
    items = model.step(s)
    # a's decode token first, then 3 of b's 6 prompt tokens fill the budget of 4.
    assert items == [
        StepItem("a", 0, (7,), 2, True),
        StepItem("b", 1, (50, 51, 52), 0, False),
    ]
    items = model.step(s)
    assert items == [
        StepItem("a", 0, (8,), 3, True),
        StepItem("b", 1, (53, 54, 55), 3, True),
    ]
    model.run(s)
    assert model.tokens("a") == [7, 8, 9, 10]
    assert model.tokens("b") == [20, 21]


def test_prefill_of_several_sequences_shares_the_budget() -> None:
    s = Scheduler(limits(max_step_tokens=5))
    s.add(req("a", prompt=(1, 2, 3)))
    s.add(req("b", prompt=(4, 5, 6)))
    items = s.plan()
    assert items == [StepItem("a", 0, (1, 2, 3), 0, True), StepItem("b", 1, (4, 5), 0, False)]
    assert s.stats().context == 2


def test_plan_with_nothing_to_do_is_empty_and_not_counted() -> None:
    s = Scheduler(limits())
    assert s.plan() == []
    assert s.stats().steps == 0


# -- completing steps ------------------------------------------------------------


def test_model_end_token_stops_and_is_not_in_the_output() -> None:
    s = Scheduler(limits())
    model = scripted(a=[5, 6, END, 9])
    s.add(req("a"))
    model.run(s)
    assert model.tokens("a") == [5, 6]
    assert model.finish("a") is FinishReason.STOP
    last = model.deltas["a"][-1]
    assert (last.num_input_tokens, last.num_output_tokens) == (3, 2)


def test_end_id_replaces_the_model_end_tokens() -> None:
    s = Scheduler(limits())
    model = scripted(a=[5, END, 6, 42, 9])
    s.add(req("a", end_id=42))
    model.run(s)
    assert model.tokens("a") == [5, END, 6]
    assert model.finish("a") is FinishReason.STOP


def test_max_tokens_exact_finishes_with_length() -> None:
    s = Scheduler(limits())
    model = scripted(a=range(1, 100))
    s.add(req("a", max_tokens=5))
    model.run(s)
    assert model.tokens("a") == [1, 2, 3, 4, 5]
    assert model.finish("a") is FinishReason.LENGTH
    assert model.deltas["a"][-1].num_output_tokens == 5


def test_each_token_streams_at_once_without_stop_words() -> None:
    s = Scheduler(limits())
    model = scripted(a=[5, 6, 7])
    s.add(req("a", max_tokens=3))
    model.run(s)
    assert [d.token_ids for d in model.deltas["a"]] == [(5,), (6,), (7,)]
    assert [d.num_output_tokens for d in model.deltas["a"]] == [1, 2, 3]
    assert [d.finish_reason for d in model.deltas["a"]] == [None, None, FinishReason.LENGTH]


def test_stop_sequence_is_cut_and_partial_matches_are_held_back() -> None:
    s = Scheduler(limits())
    model = scripted(a=[5, 8, 6, 8, 9, 7, 100])
    s.add(req("a", stops=((8, 9),)))
    model.run(s)
    # 8 is held until 6 shows it is not a stop; the second 8 is cut with 9.
    assert [d.token_ids for d in model.deltas["a"]] == [(5,), (8, 6), ()]
    assert model.finish("a") is FinishReason.STOP
    assert model.deltas["a"][-1].num_output_tokens == 3


def test_held_back_tokens_are_flushed_when_the_length_ends_the_sequence() -> None:
    s = Scheduler(limits())
    model = scripted(a=[5, 8])
    s.add(req("a", max_tokens=2, stops=((8, 9),)))
    model.run(s)
    assert [d.token_ids for d in model.deltas["a"]] == [(5,), (8,)]
    assert model.finish("a") is FinishReason.LENGTH


def reference_output(script: list[int], stops: list[tuple[int, ...]], max_tokens: int) -> list[int]:
    """What the client must see: the script up to the first stop, end or length."""
    out: list[int] = []
    for token in script:
        if token == END:
            return out
        out.append(token)
        for stop in stops:
            if tuple(out[-len(stop) :]) == stop:
                return out[: -len(stop)]
        if len(out) >= max_tokens:
            return out
    raise AssertionError("script too short")


def test_streamed_deltas_never_contain_stop_tokens_randomized() -> None:
    rng = random.Random(1234)
    for case in range(300):
        # Small alphabet so stops and near-misses are frequent; no stop is a suffix of
        # another, which makes the expected cut unambiguous.
        stops: list[tuple[int, ...]] = []
        n_stops = rng.randint(1, 3)
        while len(stops) < n_stops:
            stop = tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 4)))
            if all(stop[-len(o) :] != o and o[-len(stop) :] != stop for o in stops):
                stops.append(stop)
        script = [rng.randint(0 if rng.random() < 0.05 else 1, 3) for _ in range(40)]
        max_tokens = rng.randint(1, 30)
        s = Scheduler(limits())
        model = scripted(a=script)
        s.add(req("a", max_tokens=max_tokens, stops=tuple(stops)))
        model.run(s)
        expected = reference_output(script, stops, max_tokens)
        assert model.tokens("a") == expected, (case, script, stops, max_tokens)
        counts = [d.num_output_tokens for d in model.deltas["a"]]
        running = 0
        for delta, count in zip(model.deltas["a"], counts, strict=True):
            running += len(delta.token_ids)
            assert count == running
        assert [d.finished for d in model.deltas["a"]][-1]
        assert not any(d.finished for d in model.deltas["a"][:-1])


def test_finish_frees_the_slot_and_the_reservation() -> None:
    s = Scheduler(limits(max_active=1, kv_capacity=10, max_seq_len=10))
    model = scripted(a=[5, END], b=[6] * 10)
    s.add(req("a", prompt=(1, 2, 3, 4, 5), max_tokens=5))
    model.run(s)
    assert model.freed == [0]
    # b needs every KV cell and the only slot: both came back.
    s.add(req("b", prompt=(1, 2, 3, 4, 5), max_tokens=5))
    items = model.step(s)
    assert items == [StepItem("b", 0, (1, 2, 3, 4, 5), 0, True)]


def test_complete_ignores_sequences_aborted_during_the_step() -> None:
    s = Scheduler(limits())
    s.add(req("a"))
    s.plan()
    s.abort("a")
    deltas, freed = s.complete({("a", 0): 5}, lambda _t: False)
    assert (deltas, freed) == ([], [])
    assert s.stats().generated_tokens == 0


# -- abort -----------------------------------------------------------------------


def test_abort_waiting_sequence() -> None:
    s = Scheduler(limits(max_active=1))
    s.add(req("a"))
    s.plan()
    s.add(req("b"))
    [(delta, slot)] = s.abort("b")
    assert slot is None
    assert delta == TokenDelta((), 3, 0, FinishReason.CANCELLED)
    assert s.stats().waiting == 0


def test_abort_running_sequence_returns_its_slot_and_pending_tokens() -> None:
    s = Scheduler(limits(max_active=2))
    model = scripted(a=[5, 8, 1], b=[1] * 10)
    s.add(req("a", stops=((8, 9),)))
    s.add(req("b"))
    model.step(s)
    model.step(s)  # a: 5 streamed, 8 held back
    [(delta, slot)] = s.abort("a")
    assert slot == 0
    assert delta == TokenDelta((8,), 3, 2, FinishReason.CANCELLED)
    assert s.abort("a") == []
    # The freed slot goes to the next admitted request.
    s.add(req("c"))
    items = s.plan()
    assert StepItem("c", 0, (11, 12, 13), 0, True) in items
    assert s.stats().active == 2


def test_abort_unknown_request_is_none() -> None:
    assert Scheduler(limits()).abort("nope") == []


def test_abort_all_cancels_waiting_and_running() -> None:
    s = Scheduler(limits(max_active=1))
    s.add(req("a"))
    s.plan()
    s.add(req("b"))
    out = s.abort_all()
    assert sorted(rid for rid, _ in out) == ["a", "b"]
    assert all(d.finish_reason is FinishReason.CANCELLED for _, d in out)
    assert s.idle
    assert s.stats().finished == {"cancelled": 2}


# -- banned tokens -----------------------------------------------------------------


def test_end_tokens_are_banned_until_min_tokens() -> None:
    s = Scheduler(limits())
    model = scripted(a=[6, 7])
    s.add(req("a", min_tokens=2, bad=((9,),)))
    items = s.plan()
    assert s.banned_tokens(("a", 0), frozenset({END, 1})) == {END, 1, 9}
    s.complete(_sampled(items, {"a": 5}), lambda t: t == END)  # one token out
    assert s.banned_tokens(("a", 0), frozenset({END, 1})) == {END, 1, 9}
    model.step(s)  # two tokens out
    assert s.banned_tokens(("a", 0), frozenset({END, 1})) == {9}
    assert s.banned_tokens(("unknown", 0), frozenset({END})) == set()


def test_min_tokens_bans_the_request_end_id() -> None:
    # With end_id set, that id (not the model's end tokens) ends the sequence, so it is
    # the one to mask before min_tokens, as TensorRT-LLM's min-length penalty does.
    s = Scheduler(limits())
    s.add(req("a", min_tokens=2, end_id=42))
    s.plan()
    assert 42 in s.banned_tokens(("a", 0), frozenset({END}))


def test_bad_word_prefix_bans_its_last_token() -> None:
    s = Scheduler(limits())
    model = scripted(a=[5, 6, 7])
    s.add(req("a", bad=((5, 6, 9),)))
    model.step(s)  # output 5
    assert s.banned_tokens(("a", 0), frozenset()) == set()
    model.step(s)  # output 5, 6
    assert s.banned_tokens(("a", 0), frozenset()) == {9}


# -- stats -------------------------------------------------------------------------


def test_stats_count_steps_batches_tokens_and_finishes() -> None:
    s = Scheduler(limits(max_active=3, max_step_tokens=64))
    model = scripted(a=[5, 6, 7], b=[5, END], c=[1, 2, 8, 9])
    s.add(req("a", max_tokens=3))
    s.add(req("b"))
    s.add(req("c", stops=((8, 9),)))
    model.run(s)
    stats = s.stats()
    # Step sizes: 3 (prefills), 3, 2 (a and c), 1 (c).
    assert [len(items) for items in model.steps] == [3, 3, 2, 1]
    assert stats.steps == 4
    assert stats.step_sequences == 9
    assert stats.peak_step_batch == 3
    # a: 3; b: 1 (the end token is not generated output); c: 4 (its stop counted).
    assert stats.generated_tokens == 8
    assert stats.finished == {"length": 1, "stop": 2}
    assert (stats.active, stats.waiting, stats.scheduled, stats.context) == (0, 0, 1, 0)


def _sampled(items: Iterable[StepItem], tokens: Mapping[str, int]) -> dict[SeqKey, int]:
    return {i.key: tokens[i.request_id] for i in items if i.sample}


def test_scheduled_and_context_describe_the_last_step() -> None:
    s = Scheduler(limits(max_step_tokens=4))
    s.add(req("a", prompt=(1, 2)))
    s.complete(_sampled(s.plan(), {"a": 5}), lambda _t: False)
    s.add(req("b", prompt=(1, 2, 3, 4, 5, 6)))
    s.plan()
    stats = s.stats()
    assert (stats.scheduled, stats.context) == (2, 1)


# -- prefix cache ----------------------------------------------------------------

BLOCK = 4


def cache_limits(
    max_active: int = 2, kv_capacity: int = 1000, cache_slots: int = 2
) -> SchedulerLimits:
    return SchedulerLimits(
        max_active=max_active,
        max_waiting=4,
        kv_capacity=kv_capacity,
        max_seq_len=100,
        max_step_tokens=64,
        cache_slots=cache_slots,
        block_tokens=BLOCK,
    )


def finish_alone(scheduler: Scheduler, request: GenerationRequest, token: int = 7) -> FakeModel:
    """Run one request to its end (one output token, then the end token)."""
    model = FakeModel({request.request_id: iter([token, END])})
    scheduler.add(request)
    model.run(scheduler, max_steps=20)
    return model


def cache_twice(scheduler: Scheduler, request: GenerationRequest) -> None:
    """A prefix is cached from its second sight: send the prompt once before."""
    finish_alone(scheduler, req(request.request_id + "-first", prompt=request.prompt_ids))
    finish_alone(scheduler, request)


def test_block_hashes_chain_over_whole_blocks_only() -> None:
    a = block_hashes(range(10), BLOCK)
    assert len(a) == 2  # the two tokens after the second block make no block
    assert block_hashes(range(8), BLOCK) == a
    # A change in the first block changes every later hash, not only the first.
    b = block_hashes([99, *range(1, 10)], BLOCK)
    assert b[0] != a[0]
    assert b[1] != a[1]
    # The same second block after another first block hashes otherwise.
    c = block_hashes([9, 9, 9, 9, *range(4, 8)], BLOCK)
    assert c[1] != a[1]


def test_finished_prompt_blocks_are_cached_and_copied_into_the_next_prompt() -> None:
    s = Scheduler(cache_limits())
    cache_twice(s, req("a", prompt=range(1, 11)))  # 10 tokens: 2 whole blocks
    stored = s.take_copies()
    assert len(stored) == 1
    assert stored[0].tokens == 2 * BLOCK
    assert stored[0].src == 0
    cache_id = stored[0].dst
    assert s.cache_ids() == {cache_id: 8}
    assert cache_id >= s.limits.max_active  # cache ids come after the slots'

    s.add(req("b", prompt=[*range(1, 9), 50, 51, 52]))
    assert s.take_copies() == [CacheCopy(cache_id, 0, 8)]
    items = s.plan()
    # Only the tokens after the cached blocks are fed, at their own positions.
    assert [(i.tokens, i.start_pos) for i in items] == [((50, 51, 52), 8)]
    stats = s.stats()
    assert (stats.prompt_tokens_cached, stats.prompt_tokens_computed) == (8, 10 + 10 + 3)


def test_the_last_prompt_token_is_always_computed() -> None:
    s = Scheduler(cache_limits())
    cache_twice(s, req("a", prompt=range(1, 9)))  # exactly 2 blocks
    s.take_copies()
    s.add(req("b", prompt=range(1, 9)))  # the same prompt again
    (copy,) = s.take_copies()
    assert copy.tokens == BLOCK  # not 8: the last block holds the token to sample from
    (item,) = s.plan()
    assert item.start_pos == BLOCK
    assert item.tokens == (5, 6, 7, 8)
    assert item.sample


def test_delta_reports_the_cached_tokens() -> None:
    s = Scheduler(cache_limits())
    cache_twice(s, req("a", prompt=range(1, 11)))
    second = finish_alone(s, req("b", prompt=[*range(1, 9), 60, 61]))
    assert {d.num_cached_tokens for d in second.deltas["b"]} == {8}


def test_a_longer_prompt_replaces_the_entry_it_extends() -> None:
    s = Scheduler(cache_limits())
    cache_twice(s, req("a", prompt=range(1, 6)))  # 1 block
    cache_twice(s, req("b", prompt=range(1, 14)))  # 3 blocks, extending a's
    assert sorted(s.cache_ids().values()) == [12]


def test_running_sequences_evict_cached_blocks_least_recently_used_first() -> None:
    s = Scheduler(cache_limits(max_active=1, kv_capacity=40, cache_slots=2))
    cache_twice(s, req("a", prompt=range(100, 109), max_tokens=2))  # 8 cached
    cache_twice(s, req("b", prompt=range(200, 209), max_tokens=2))  # 8 cached
    ids = list(s.cache_ids())
    s.take_copies()
    # 30 reserved + 16 cached > 40: the oldest entry (a's) goes, b's stays.
    s.add(req("c", prompt=range(300, 320), max_tokens=10))
    copies = s.take_copies()
    assert CacheCopy(ids[0], ids[0], 0) in copies
    assert list(s.cache_ids()) == [ids[1]]
    assert s.stats().active == 1


def test_cache_never_holds_a_request_back() -> None:
    s = Scheduler(cache_limits(max_active=1, kv_capacity=40, cache_slots=2))
    finish_alone(s, req("a", prompt=range(100, 117), max_tokens=2))  # 16 cached
    s.add(req("b", prompt=range(300, 330), max_tokens=10))  # needs all 40 cells
    assert s.stats().active == 1
    assert s.cache_ids() == {}


def test_a_match_that_does_not_fit_is_given_up_not_the_request() -> None:
    s = Scheduler(cache_limits(max_active=1, kv_capacity=40, cache_slots=2))
    finish_alone(s, req("a", prompt=range(100, 117), max_tokens=2))  # 16 cached
    s.take_copies()
    # Shares a's first block but needs all 40 cells: a's entry is evicted, no copy.
    s.add(req("b", prompt=[*range(100, 104), *range(400, 426)], max_tokens=10))
    copies = s.take_copies()
    assert all(c.tokens == 0 for c in copies)
    assert s.stats().prompt_tokens_cached == 0
    assert s.plan()[0].start_pos == 0


def test_aborted_sequences_cache_only_what_they_computed() -> None:
    s = Scheduler(cache_limits())
    finish_alone(s, req("seen", prompt=range(1, 41)))
    s.add(req("a", prompt=range(1, 41), max_tokens=4))
    s.take_copies()
    items = s.plan()
    assert items[0].tokens == tuple(range(1, 41))  # one chunk: all 40 prompt tokens
    [(_delta, slot)] = s.abort("a")
    assert slot == 0
    (copy,) = s.take_copies()
    assert copy.tokens == 40
    assert copy.src == 0


def test_abort_before_any_prefill_caches_nothing() -> None:
    s = Scheduler(cache_limits())
    s.add(req("a", prompt=range(1, 41), max_tokens=4))
    s.take_copies()
    assert s.abort("a") != []
    assert s.take_copies() == []
    assert s.cache_ids() == {}


def test_without_cache_slots_nothing_is_cached() -> None:
    s = Scheduler(cache_limits(cache_slots=0))
    finish_alone(s, req("a", prompt=range(1, 11)))
    finish_alone(s, req("b", prompt=range(1, 11)))
    assert s.take_copies() == []
    assert s.cache_ids() == {}
    assert s.stats().prompt_tokens_cached == 0


def test_a_prefix_is_cached_from_its_second_sight_and_only_the_shared_blocks() -> None:
    s = Scheduler(cache_limits())
    finish_alone(s, req("a", prompt=[*range(1, 9), *range(20, 28), 5]))  # blocks A B C D
    assert s.cache_ids() == {}  # one sight: distinct prompts keep no cells
    # Shares the first two blocks with "a": those are kept, not its own last ones.
    finish_alone(s, req("b", prompt=[*range(1, 9), *range(40, 48), 6]))
    assert sorted(s.cache_ids().values()) == [8]
    third = finish_alone(s, req("c", prompt=[*range(1, 9), *range(60, 64), 7]))
    assert {d.num_cached_tokens for d in third.deltas["c"]} == {8}


# -- n sequences per request ---------------------------------------------------------


def req_n(
    request_id: str, n: int, prompt: Iterable[int] = (11, 12, 13), max_tokens: int = 4
) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        prompt_ids=tuple(prompt),
        sampling=SamplingParams(max_tokens=max_tokens, n=n),
    )


def step_n(
    s: Scheduler, tokens: Mapping[SeqKey, int]
) -> tuple[list[StepItem], list[tuple[str, TokenDelta]]]:
    """One step; each sampled sequence takes its token from `tokens` (7 if not given)."""
    items = s.plan()
    sampled = {i.key: tokens.get(i.key, 7) for i in items if i.sample}
    deltas, _ = s.complete(sampled, lambda t: t == END)
    return items, deltas


def test_the_prompt_is_computed_once_and_shared_by_copy() -> None:
    s = Scheduler(limits(max_step_tokens=3))
    s.add(req_n("a", 3, prompt=(11, 12, 13, 14, 15)))
    assert s.stats().active == 3
    first, _ = step_n(s, {})
    assert first == [StepItem("a", 0, (11, 12, 13), 0, False)]
    items, deltas = step_n(s, {("a", 0): 5, ("a", 1): 6, ("a", 2): 7})
    # The prompt's last tokens once; the others draw from its logits, with no tokens.
    assert items == [
        StepItem("a", 0, (14, 15), 3, True),
        StepItem("a", 1, (), 5, True, 1, ("a", 0)),
        StepItem("a", 2, (), 5, True, 2, ("a", 0)),
    ]
    assert s.take_copies() == [CacheCopy(0, 1, 5), CacheCopy(0, 2, 5)]
    assert [(d.index, d.token_ids) for _, d in deltas] == [(0, (5,)), (1, (6,)), (2, (7,))]
    # Then each decodes its own token after the shared prompt.
    items, _ = step_n(s, {})
    assert [(i.slot, i.tokens, i.start_pos) for i in items] == [
        (0, (5,), 5),
        (1, (6,), 5),
        (2, (7,), 5),
    ]
    stats = s.stats()
    assert stats.prompt_tokens_computed == 5
    assert stats.generated_tokens == 6


def test_each_sequence_ends_on_its_own() -> None:
    s = Scheduler(limits())
    s.add(req_n("a", 2, max_tokens=3))
    ends: dict[int, FinishReason | None] = {}
    scripts = {("a", 0): iter([5, END]), ("a", 1): iter([6, 6, 6])}
    for _ in range(10):
        if s.idle:
            break
        items = s.plan()
        sampled = {i.key: next(scripts[i.key]) for i in items if i.sample}
        deltas, _freed = s.complete(sampled, lambda t: t == END)
        ends.update({d.index: d.finish_reason for _, d in deltas if d.finished})
    assert ends == {0: FinishReason.STOP, 1: FinishReason.LENGTH}
    assert s.stats().finished == {"stop": 1, "length": 1}


def test_n_sequences_wait_for_n_free_slots() -> None:
    s = Scheduler(limits(max_active=3))
    s.add(req("x"))
    s.add(req_n("a", 3))
    stats = s.stats()
    assert (stats.active, stats.waiting) == (1, 1)
    # Nothing smaller overtakes it (FIFO).
    s.add(req("y"))
    assert s.stats().waiting == 2


def test_n_beyond_the_slots_or_the_kv_cache_is_invalid() -> None:
    s = Scheduler(limits(max_active=2, kv_capacity=20, max_seq_len=20))
    with pytest.raises(InvalidRequestError, match="num_return_sequences is 3") as slots:
        s.add(req_n("a", 3))
    assert slots.value.field == "num_return_sequences"
    with pytest.raises(InvalidRequestError, match="2 \\* 13 = 26 exceeds") as cells:
        s.add(req_n("b", 2, max_tokens=10))
    assert cells.value.field == "num_return_sequences"


def test_abort_ends_every_sequence_of_the_request() -> None:
    s = Scheduler(limits(max_active=3))
    s.add(req_n("a", 2))
    s.add(req_n("b", 2))  # waits: one slot left
    step_n(s, {})
    running = s.abort("a")
    assert sorted((d.index, d.finish_reason, slot) for d, slot in running) == [
        (0, FinishReason.CANCELLED, 0),
        (1, FinishReason.CANCELLED, 1),
    ]
    waiting = s.abort("b")
    assert sorted((d.index, slot) for d, slot in waiting) == [(0, None), (1, None)]
    assert s.idle
    assert s.stats().finished == {"cancelled": 4}


def test_a_sequence_aborted_before_its_copy_caches_nothing() -> None:
    s = Scheduler(cache_limits(max_active=2))
    s.add(req_n("a", 2, prompt=range(1, 11)))
    s.plan()
    s.abort("a")
    # The first sequence computed its blocks; the second never had cells to keep.
    assert [c.src for c in s.take_copies()] == []  # first sight: nothing cached yet
    assert s.cache_ids() == {}


def test_logprobs_follow_their_tokens_and_a_cut_stop_sequence() -> None:
    s = Scheduler(limits())
    request = GenerationRequest(
        request_id="a",
        prompt_ids=(1, 2),
        sampling=SamplingParams(max_tokens=8, logprobs=1),
        stop_sequences=((8, 9),),
    )
    s.add(request)
    seen: list[TokenDelta] = []
    for token in (5, 8, 9):
        items = s.plan()
        key = items[0].key
        logprob = TokenLogprob(-float(token), ((token, -float(token)),))
        deltas, _ = s.complete({key: token}, lambda t: t == END, logprobs={key: logprob})
        seen.extend(d for _, d in deltas)
    assert [(d.token_ids, [lp.logprob for lp in d.logprobs]) for d in seen] == [
        ((5,), [-5.0]),
        ((), []),  # 8 9 matched the stop sequence and went with their logprobs
    ]
    assert seen[-1].finish_reason is FinishReason.STOP


def test_a_failed_request_frees_its_slots_and_caches_nothing() -> None:
    s = Scheduler(cache_limits())
    finish_alone(s, req("seen", prompt=range(1, 11)))  # its blocks seen once already
    s.take_copies()
    s.add(req("a", prompt=range(1, 11)))
    s.add(req("b", prompt=range(1, 11)))
    s.plan()  # both prefill: their cells would be cached on an abort
    assert s.fail("a") == [(0, 0)]
    assert s.take_copies() == []  # the failed step may have left its cells uncomputed
    assert s.cache_ids() == {}
    assert s.fail("a") == []  # already gone
    stats = s.stats()
    assert (stats.active, stats.failed) == (1, 1)
    assert "cancelled" not in stats.finished  # a failure is no finish reason
    assert s.request_ids() == ["b"]


def test_a_failed_waiting_request_leaves_the_queue() -> None:
    s = Scheduler(limits(max_active=1))
    s.add(req("running"))
    s.add(req("waiting"))
    assert s.fail("waiting") == []
    stats = s.stats()
    assert (stats.active, stats.waiting, stats.failed) == (1, 0, 1)
