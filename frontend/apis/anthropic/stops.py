"""Anthropic's stop sequences, found in the text as it streams.

Anthropic reports which sequence ended a message (`stop_reason` stop_sequence and its
`stop_sequence`), and matches them on text. The engine's own stop words are token
sequences and its answer does not say which one ended it, so this API finds them here: the
generation runs without them, text that may begin one is held back until the next text
shows whether it does, and the first one completed ends the message (its text cut before
it, the generation stopped). Completed in the order a character-by-character scan would
find them, so the result does not depend on how the text was split into deltas.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from frontend.service import (
    ChoiceFinished,
    Completed,
    GenerationEvent,
    GenerationRecord,
    TextDelta,
    Usage,
)


class StopSequenceScanner:
    """The text up to the first of `sequences` completed; `matched` names it once found."""

    def __init__(self, sequences: Sequence[str]) -> None:
        self.sequences = tuple(sequences)
        self.matched: str | None = None
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """What of the text so far can go out now, and whether a stop sequence ended it
        (the text is then what comes before it)."""
        buffer = self._held + text
        # (end, start, sequence): the first to end; of those ending together, the longest.
        found: tuple[int, int, str] | None = None
        for sequence in self.sequences:
            start = buffer.find(sequence)
            if start >= 0:
                key = (start + len(sequence), start, sequence)
                if found is None or key < found:
                    found = key
        if found is not None:
            _, start, self.matched = found
            self._held = ""
            return buffer[:start], True
        hold = 0
        for sequence in self.sequences:
            # The longest end of the buffer that begins this sequence.
            for size in range(min(len(sequence) - 1, len(buffer)), hold, -1):
                if buffer.endswith(sequence[:size]):
                    hold = size
                    break
        self._held = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """The text held back when the generation ends by itself."""
        held, self._held = self._held, ""
        return held


async def stop_at_sequences(
    events: AsyncGenerator[GenerationEvent, None],
    scanner: StopSequenceScanner,
    record: GenerationRecord,
) -> AsyncGenerator[GenerationEvent, None]:
    """`events` (one choice) with its content text cut at the first stop sequence: then the choice
    finishes with `stop` and the generation completes with the tokens generated so far
    (`record`'s), and closing `events` stops the Triton call. Its prefix-cache figure is
    not known then (0 here; the scanner's `matched` says why)."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextDelta):
                text, stopped = scanner.feed(event.text)
                if text:
                    yield TextDelta(text, event.index)
                if stopped:
                    record.stopped_by_api()
                    yield ChoiceFinished(event.index, "stop")
                    usage = Usage(record.prompt_tokens, record.completion_tokens)
                    yield Completed(("stop",), usage, record.model_version)
                    return
            else:
                # Text no longer continues where it was held (the choice ended, or a tool
                # call came between): it goes out before what follows.
                held = scanner.flush()
                if held:
                    yield TextDelta(held)
                yield event
