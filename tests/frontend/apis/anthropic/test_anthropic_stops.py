"""Stop sequences found in the streamed text: what goes out, what is held, which one ends it."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Sequence

import pytest

from frontend.apis.anthropic.stops import StopSequenceScanner, stop_at_sequences
from frontend.service import (
    Admitted,
    ChoiceFinished,
    Completed,
    GenerationEvent,
    GenerationRecord,
    TextDelta,
    ToolCallStart,
    Usage,
)


def scan(sequences: Sequence[str], pieces: Sequence[str]) -> tuple[list[str], str | None]:
    """What the scanner lets out per piece (the held rest at the end), and the match."""
    scanner = StopSequenceScanner(sequences)
    out = []
    for piece in pieces:
        text, stopped = scanner.feed(piece)
        out.append(text)
        if stopped:
            return out, scanner.matched
    out.append(scanner.flush())
    return out, scanner.matched


def test_text_that_may_begin_a_sequence_is_held_until_it_does_not() -> None:
    assert scan(["END"], ["the E", "N", "d"]) == (["the ", "", "ENd", ""], None)
    assert scan(["END"], ["the E", "N", "D and more"]) == (["the ", "", ""], "END")
    # At the end of the generation the held text goes out.
    assert scan(["END"], ["the EN"]) == (["the ", "EN"], None)


def test_the_first_sequence_to_end_wins_and_ties_go_to_the_longest() -> None:
    # "b" ends before "abc" does, though "abc" starts first.
    assert scan(["abc", "b"], ["xabc"]) == (["xa"], "b")
    assert scan(["bc", "abc"], ["xabcd"]) == (["x"], "abc")
    assert scan(["z"], ["no match here"]) == (["no match here", ""], None)


@pytest.mark.parametrize("seed", range(20))
def test_the_result_does_not_depend_on_how_the_text_is_split(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab \n"
    text = "".join(rng.choice(alphabet) for _ in range(60))
    sequences = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(3)]
    whole, matched = scan(sequences, [text])
    cuts = sorted(rng.sample(range(1, len(text)), 12))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    split, split_matched = scan(sequences, pieces)
    assert "".join(split) == "".join(whole)
    assert split_matched == matched
    assert ("".join(whole), matched) == _first_match(text, sequences)


def _first_match(text: str, sequences: Sequence[str]) -> tuple[str, str | None]:
    """The oracle: a character-by-character scan, the longest of those ending first."""
    for end in range(1, len(text) + 1):
        ending = [s for s in sequences if text[:end].endswith(s)]
        if ending:
            longest = max(ending, key=len)
            return text[: end - len(longest)], longest
    return text, None


async def _events(
    items: list[GenerationEvent], closed: list[bool]
) -> AsyncGenerator[GenerationEvent, None]:
    try:
        for item in items:
            yield item
    finally:
        closed.append(True)


async def _run(
    items: list[GenerationEvent], sequences: list[str]
) -> tuple[list[GenerationEvent], StopSequenceScanner, list[bool]]:
    closed: list[bool] = []
    record = GenerationRecord("k", prompt_tokens=7, completion_tokens=3, model_version="1")
    scanner = StopSequenceScanner(sequences)
    out = [event async for event in stop_at_sequences(_events(items, closed), scanner, record)]
    return out, scanner, closed


async def test_a_match_finishes_the_choice_and_completes_with_the_tokens_so_far() -> None:
    items: list[GenerationEvent] = [
        Admitted({}), TextDelta("Paris is"), TextDelta(" the capital"), TextDelta(" of"),
    ]  # fmt: skip
    out, scanner, closed = await _run(items, ["capital"])
    assert out == [
        Admitted({}),
        TextDelta("Paris is"),
        TextDelta(" the "),
        ChoiceFinished(0, "stop"),
        Completed(("stop",), Usage(7, 3), "1"),
    ]
    assert scanner.matched == "capital"
    assert closed == [True]  # the generation was closed: the Triton call stops


async def test_held_text_goes_out_before_a_tool_call_and_at_the_end() -> None:
    call = ToolCallStart(0, 0, "call_1", "f")
    finished = ChoiceFinished(0, "stop")
    items: list[GenerationEvent] = [TextDelta("a ST"), call, TextDelta("x S"), finished]
    out, scanner, _ = await _run(items, ["STOP"])
    assert out == [TextDelta("a "), TextDelta("ST"), call, TextDelta("x "), TextDelta("S"),
                   finished]  # fmt: skip
    assert scanner.matched is None
