"""Token-level stop sequences (match, holdback) and bad-word masking."""

from __future__ import annotations

import pytest

from llm_stack.engine.stops import StopMatcher, banned_next_tokens


@pytest.mark.parametrize(
    ("stops", "output", "expected"),
    [
        ([(8, 9)], [5, 8, 9], 2),
        ([(8, 9)], [8, 9, 5], 0),  # only a match at the end counts
        ([(8, 9)], [9], 0),  # shorter than the stop
        ([(8, 9)], [], 0),
        ([(7,), (8, 9)], [1, 8, 9], 2),
        ([(7,), (8, 9)], [1, 7], 1),
        ([(), (8,)], [8], 1),  # an empty stop is ignored, not a match everywhere
        ([()], [1, 2], 0),
        ([], [1, 2], 0),
    ],
)
def test_matched_stop(stops: list[tuple[int, ...]], output: list[int], expected: int) -> None:
    assert StopMatcher(stops).matched_stop(output) == expected


@pytest.mark.parametrize(
    ("stops", "output", "expected"),
    [
        ([(8, 9)], [5, 8], 1),
        ([(8, 9)], [5, 9], 0),
        ([(8, 9)], [], 0),
        ([(7, 8, 9)], [7, 8], 2),
        ([(7, 8, 9)], [1, 7], 1),
        ([(7, 8, 9)], [7, 8, 9], 0),  # a whole match is matched_stop's business
        ([(1, 1, 2)], [1, 1, 1], 2),  # overlapping prefixes: the longest one
        ([(8,)], [8], 0),  # a one-token stop never needs holding back
        ([(8, 9), (5, 6, 8)], [5, 6], 2),  # the longest over all stops
        ([(5, 6, 8), (6, 7)], [5, 6], 2),
        ([(6, 7), (5, 6, 8)], [5, 6], 2),
        ([], [1, 2], 0),
    ],
)
def test_holdback(stops: list[tuple[int, ...]], output: list[int], expected: int) -> None:
    assert StopMatcher(stops).holdback(output) == expected


def test_matcher_copies_its_stops() -> None:
    stop = [8, 9]
    matcher = StopMatcher([stop])
    stop.append(10)
    assert matcher.matched_stop([8, 9]) == 2


@pytest.mark.parametrize(
    ("output", "bad", "expected"),
    [
        ([], [(9,)], {9}),  # a one-token bad word is always banned
        ([1, 2], [(9,), (4,)], {9, 4}),
        ([], [(5, 9)], set()),
        ([1, 5], [(5, 9)], {9}),
        ([5, 1], [(5, 9)], set()),
        ([3, 5, 6], [(5, 6, 9), (6, 7)], {9, 7}),
        ([5], [(4, 5, 9)], set()),  # output shorter than the prefix
        ([1, 2], [], set()),
    ],
)
def test_banned_next_tokens(
    output: list[int], bad: list[tuple[int, ...]], expected: set[int]
) -> None:
    assert banned_next_tokens(output, bad) == expected
