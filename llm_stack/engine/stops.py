"""Token-level stop and bad-word handling for one sequence.

Stop sequences are cut from the output, so a streamed token that might start a stop
sequence is held back until the next tokens show whether it does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class StopMatcher:
    """Tracks one sequence's output against its stop sequences."""

    def __init__(self, stop_sequences: Iterable[Sequence[int]]) -> None:
        self._stops = [tuple(s) for s in stop_sequences if s]
        self._longest = max((len(s) for s in self._stops), default=0)

    def matched_stop(self, output: Sequence[int]) -> int:
        """Length of the stop sequence that `output` ends with, or 0."""
        for stop in self._stops:
            n = len(stop)
            if len(output) >= n and tuple(output[-n:]) == stop:
                return n
        return 0

    def holdback(self, output: Sequence[int]) -> int:
        """How many trailing tokens could still become a stop sequence."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(output)), best, -1):
                if tuple(output[-n:]) == stop[:n]:
                    best = n
                    break
        return best


def banned_next_tokens(output: Sequence[int], bad_sequences: Iterable[Sequence[int]]) -> set[int]:
    """Tokens that would complete a bad sequence if sampled next."""
    banned: set[int] = set()
    for bad in bad_sequences:
        prefix = tuple(bad[:-1])
        if not prefix or (len(output) >= len(prefix) and tuple(output[-len(prefix) :]) == prefix):
            banned.add(bad[-1])
    return banned
