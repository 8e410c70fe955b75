"""Reading streamed outputs: cumulative `RequestOutput`s become deltas; stop sequences."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from llm_stack.engine.base import EngineError, FinishReason, TokenDelta, TokenLogprob
from llm_stack.engine.trtllm.outputs import (
    UNKNOWN_LOGPROB,
    StopSequenceFilter,
    delta_from_output,
    token_logprob,
)
from tests.llm_stack.engine.trtllm.fakes import (
    FakeCompletion,
    FakeLogprob,
    LogprobEntries,
    readable,
)
from tests.llm_stack.engine.trtllm.helpers import lp, lps


@dataclass
class Output:
    """A RequestOutput's names the adapter reads (each one the release has)."""

    outputs: list[FakeCompletion]
    finished: bool = False
    cached_tokens: int = 0


def test_the_output_fake_has_only_names_of_the_release() -> None:
    assert set(Output.__dataclass_fields__) <= readable("RequestOutput")


def out(token_ids: list[int], reason: str | None = None, finished: bool | None = None) -> Output:
    done = reason is not None if finished is None else finished
    return Output([FakeCompletion(token_ids, reason)], done)


def test_deltas_over_cumulative_outputs() -> None:
    states = [out([]), out([5]), out([5, 6, 7]), out([5, 6, 7]), out([5, 6, 7, 8], "length")]
    received = 0
    deltas = []
    for state in states:
        delta = delta_from_output(received, state, num_input_tokens=3)
        received = delta.num_output_tokens
        deltas.append(delta)
    assert [d.token_ids for d in deltas] == [(), (5,), (6, 7), (), (8,)]
    assert [d.num_output_tokens for d in deltas] == [0, 1, 3, 3, 4]
    assert [d.finish_reason for d in deltas] == [None, None, None, None, FinishReason.LENGTH]
    assert all(d.num_input_tokens == 3 for d in deltas)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("cancelled", FinishReason.CANCELLED),
        ("timeout", FinishReason.CANCELLED),
    ],
)
def test_finish_reasons(reason: str, expected: FinishReason) -> None:
    delta = delta_from_output(2, out([1, 2, 3], reason), num_input_tokens=4)
    assert delta.finish_reason is expected
    assert delta.token_ids == (3,)


def test_stop_token_cut_from_the_final_output_gives_no_tokens() -> None:
    # The LLM API removes the stop token from token_ids in the final output.
    delta = delta_from_output(3, out([1, 2, 3], "stop"), num_input_tokens=1)
    assert delta.token_ids == ()
    assert delta.num_output_tokens == 3
    assert delta.finish_reason is FinishReason.STOP


def test_finished_without_reason_is_cancelled() -> None:
    delta = delta_from_output(0, out([1], None, finished=True), num_input_tokens=1)
    assert delta.finish_reason is FinishReason.CANCELLED


def test_cached_tokens_are_the_largest_reported() -> None:
    first = delta_from_output(0, Output([FakeCompletion([5])], cached_tokens=64), 100)
    assert first.num_cached_tokens == 64
    later = Output([FakeCompletion([5, 6])], cached_tokens=0)  # not set in this response
    assert delta_from_output(1, later, 100, previous_cached=64).num_cached_tokens == 64
    assert delta_from_output(0, out([5]), num_input_tokens=100).num_cached_tokens == 0


def test_missing_token_ids_read_as_none_yet() -> None:
    completion = FakeCompletion()
    completion.token_ids = None
    delta = delta_from_output(0, Output([completion]), num_input_tokens=1)
    assert delta.token_ids == ()
    assert not delta.finished


def test_deltas_follow_the_output_of_their_index() -> None:
    state = Output(
        [FakeCompletion([1, 2], None, index=0), FakeCompletion([7, 8, 9], "length", index=1)]
    )
    first = delta_from_output(1, state, num_input_tokens=3, index=0)
    second = delta_from_output(1, state, num_input_tokens=3, index=1)
    assert first == TokenDelta((2,), 3, 2, index=0)
    assert second == TokenDelta((8, 9), 3, 3, FinishReason.LENGTH, index=1)


def test_an_index_without_output_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="no output of index 2"):
        delta_from_output(0, Output([FakeCompletion([1], index=0)]), 1, index=2)


def test_logprobs_map_each_token_with_its_likeliest_alternatives() -> None:
    entries: LogprobEntries = [
        lp(t5=-0.5, t6=-1.5, t7=-2.5),  # sampled 5, the likeliest
        lp(t9=-0.2, t4=-3.0, t6=-1.0),  # sampled 4, not among the 2 likeliest
    ]
    state = Output([FakeCompletion([5, 4], None, logprobs=entries)])
    delta = delta_from_output(0, state, num_input_tokens=1, logprobs=2)
    assert delta.token_ids == (5, 4)
    assert delta.logprobs == (
        TokenLogprob(-0.5, ((5, -0.5), (6, -1.5))),
        TokenLogprob(-3.0, ((9, -0.2), (6, -1.0))),
    )
    # Only what is new: the second token's entry.
    assert delta_from_output(1, state, 1, logprobs=2).logprobs == delta.logprobs[1:]
    # Not asked for: none, whatever the output holds.
    assert delta_from_output(0, state, 1).logprobs == ()


def test_zero_alternatives_keep_only_the_sampled_tokens_logprob() -> None:
    state = Output([FakeCompletion([5], None, logprobs=[lp(t5=-0.25, t3=-0.1)])])
    assert delta_from_output(0, state, 1, logprobs=0).logprobs == (TokenLogprob(-0.25),)


def test_logprobs_read_by_position_past_a_stop_token_cut() -> None:
    # The LLM API cuts a stop token from token_ids in the final output, not from logprobs.
    entries: LogprobEntries = [lp(t1=-0.1), lp(t2=-0.2), lp(t7=-0.3)]
    state = Output([FakeCompletion([1, 2], "stop", logprobs=entries)], finished=True)
    delta = delta_from_output(1, state, 1, logprobs=1)
    assert delta.token_ids == (2,)
    assert delta.logprobs == (TokenLogprob(-0.2, ((2, -0.2),)),)


def test_logprobs_tensorrt_llm_did_not_give_read_unknown() -> None:
    entries: LogprobEntries = [-0.75]  # a plain float: the sampled token's only
    state = Output([FakeCompletion([5, 6], None, logprobs=entries)])
    assert delta_from_output(0, state, 1, logprobs=3).logprobs == (
        TokenLogprob(-0.75),
        TokenLogprob(UNKNOWN_LOGPROB),  # no entry for the second token
    )


def test_token_logprob_raises_minus_infinity_and_a_missing_sampled_token() -> None:
    entry = {3: FakeLogprob(float("-inf")), 1: FakeLogprob(-1.0), 2: FakeLogprob(-1.0)}
    # Ties: the lower id first; -inf is no JSON number.
    assert token_logprob(3, entry, 5) == TokenLogprob(
        UNKNOWN_LOGPROB, ((1, -1.0), (2, -1.0), (3, UNKNOWN_LOGPROB))
    )
    # Top-k-only dicts (some versions) may lack the sampled token.
    assert token_logprob(8, entry, 1) == TokenLogprob(UNKNOWN_LOGPROB, ((1, -1.0),))
    assert token_logprob(8, None, 1) == TokenLogprob(UNKNOWN_LOGPROB)


def test_a_sequence_that_ended_before_the_others_ends_with_the_request() -> None:
    # The LLM API gives a sequence its finish reason only in the request's final response:
    # here sequence 1's. Sequence 0 ended earlier, short of max_tokens (4): an end token.
    state = Output(
        [FakeCompletion([5, 6], None, index=0), FakeCompletion([6, 6, 6, 6], None, index=1)],
        finished=True,
    )
    assert delta_from_output(2, state, 3, index=0, max_tokens=4) == TokenDelta(
        (), 3, 2, FinishReason.STOP, index=0
    )
    assert delta_from_output(3, state, 3, index=1, max_tokens=4) == TokenDelta(
        (6,), 3, 4, FinishReason.LENGTH, index=1
    )
    # Without max_tokens (one sequence), an output ending unexplained is cancelled.
    assert delta_from_output(2, state, 3, index=0).finish_reason is FinishReason.CANCELLED
    running = Output([FakeCompletion([5, 6], None)], finished=False)
    assert not delta_from_output(1, running, 3, max_tokens=2).finished


# -- StopSequenceFilter -----------------------------------------------------------------


def raw(tokens: tuple[int, ...], finish: FinishReason | None = None) -> TokenDelta:
    return TokenDelta(tokens, num_input_tokens=2, num_output_tokens=0, finish_reason=finish)


def test_filter_holds_back_a_possible_stop_and_cuts_it() -> None:
    stops = StopSequenceFilter([(7, 8, 9), (4,)])
    assert stops.push(raw((1, 7))) == TokenDelta((1,), 2, 1)
    assert stops.push(raw((8,))) is None
    final = stops.push(raw((9, 10)))
    assert final == TokenDelta((), 2, 1, FinishReason.STOP)


def test_filter_releases_a_prefix_that_did_not_become_a_stop() -> None:
    stops = StopSequenceFilter([(7, 8)])
    assert stops.push(raw((7,))) is None
    assert stops.push(raw((7,))) == TokenDelta((7,), 2, 1)
    assert stops.push(raw((5,))) == TokenDelta((7, 5), 2, 3)


def test_filter_flushes_held_tokens_when_the_engine_finishes() -> None:
    stops = StopSequenceFilter([(7, 8)])
    assert stops.push(raw((3, 7))) == TokenDelta((3,), 2, 1)
    assert stops.push(raw((), FinishReason.LENGTH)) == TokenDelta((7,), 2, 2, FinishReason.LENGTH)


def test_filter_keeps_the_cached_token_count() -> None:
    stops = StopSequenceFilter([(7, 8)])
    delta = TokenDelta((3, 7), 2, 0, num_cached_tokens=32)
    assert stops.push(delta) == TokenDelta((3,), 2, 1, num_cached_tokens=32)


def test_filter_without_multi_token_stops_passes_deltas_through() -> None:
    stops = StopSequenceFilter([(4,)])
    assert stops.push(raw((4, 4))) == TokenDelta((4, 4), 2, 2)
    assert stops.push(raw(())) is None


def with_logprobs(tokens: tuple[int, ...], *values: float, index: int = 0) -> TokenDelta:
    return TokenDelta(tokens, 2, 0, index=index, logprobs=lps(*values))


def test_filter_holds_back_and_cuts_logprobs_with_their_tokens() -> None:
    stops = StopSequenceFilter([(7, 8, 9)])
    assert stops.push(with_logprobs((1, 7), -0.1, -0.7)) == TokenDelta(
        (1,), 2, 1, logprobs=lps(-0.1)
    )
    assert stops.push(with_logprobs((8,), -0.8)) is None
    final = stops.push(with_logprobs((9, 10), -0.9, -1.0))
    assert final == TokenDelta((), 2, 1, FinishReason.STOP)


def test_filter_releases_held_logprobs_with_their_tokens() -> None:
    stops = StopSequenceFilter([(7, 8)])
    assert stops.push(with_logprobs((3, 7), -0.3, -0.7)) == TokenDelta(
        (3,), 2, 1, logprobs=lps(-0.3)
    )
    assert stops.push(with_logprobs((5,), -0.5)) == TokenDelta(
        (7, 5), 2, 3, logprobs=lps(-0.7, -0.5)
    )
    flushed = stops.push(with_logprobs((7,), -0.71))
    assert flushed is None
    last = stops.push(TokenDelta((), 2, 0, FinishReason.LENGTH))
    assert last == TokenDelta((7,), 2, 4, FinishReason.LENGTH, logprobs=lps(-0.71))


def test_filter_keeps_the_sequence_index() -> None:
    stops = StopSequenceFilter([(7, 8)])
    assert stops.push(with_logprobs((4,), -0.4, index=2)) == TokenDelta(
        (4,), 2, 1, index=2, logprobs=lps(-0.4)
    )
