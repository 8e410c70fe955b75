"""Figures of one load level from its request records: throughput, latency percentiles, goodput.

The measurement window starts once every user has sent its first request and ends with the
earliest of the users' last finished requests: after that, some tokens belong to requests
Locust cut off when the level ended, which leave no record. Output tokens count where they
were generated, spread evenly over each request from its first token to its end; requests
count when they finished inside the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from loadtest.records import RequestRecord


@dataclass(frozen=True)
class Slo:
    """Latency objectives of one request: time to first token and mean inter-token latency."""

    ttft_s: float
    itl_s: float

    def met(self, record: RequestRecord) -> bool:
        """Whether a successful request met both objectives.

        A non-streamed request delivers every token at the end, so it must finish by the
        time a streamed one meeting both objectives would have: TTFT + ITL * (tokens - 1).
        """
        if record.outcome != "ok":
            return False
        if record.ttft_s is None:
            budget = self.ttft_s + self.itl_s * max(record.completion_tokens - 1, 0)
            return record.e2e_s <= budget
        return record.ttft_s <= self.ttft_s and (record.itl_s or 0.0) <= self.itl_s


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation); None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass(frozen=True)
class LevelStats:
    """One load level. Latencies in seconds; rates per second of the window."""

    users: int
    window_s: float
    attempts: int
    ok: int
    failed: int
    rejected: int
    requests_per_s: float
    output_tokens_per_s: float
    goodput_per_s: float
    mean_output_tokens: float
    ttft_p50: float | None
    ttft_p95: float | None
    itl_p50: float | None
    itl_p95: float | None
    e2e_p50: float | None
    e2e_p95: float | None

    @property
    def error_rate(self) -> float:
        return self.failed / self.attempts if self.attempts else 0.0

    @property
    def rejection_rate(self) -> float:
        return self.rejected / self.attempts if self.attempts else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        data: dict[str, float | int | None] = asdict(self)
        data["error_rate"] = self.error_rate
        data["rejection_rate"] = self.rejection_rate
        return data


@dataclass(frozen=True)
class Window:
    """The measurement window, wall-clock seconds."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return max(self.end - self.start, 0.0)

    def holds(self, record: RequestRecord) -> bool:
        """Whether the request finished inside the window."""
        return self.start < record.ended <= self.end

    def tokens(self, record: RequestRecord) -> float:
        """The request's output tokens generated inside the window."""
        first = record.started + (record.ttft_s or 0.0)
        if record.ended <= first:
            return float(record.completion_tokens) if self.holds(record) else 0.0
        overlap = min(record.ended, self.end) - max(first, self.start)
        return record.completion_tokens * max(overlap, 0.0) / (record.ended - first)


def measurement_window(records: Sequence[RequestRecord], ramp_s: float) -> Window:
    """The window of a level; records without user ids: from the ramp's end to the last end."""
    if not records:
        return Window(0.0, 0.0)
    if all(r.user for r in records):
        by_user: dict[str, list[RequestRecord]] = {}
        for r in records:
            by_user.setdefault(r.user, []).append(r)
        start = max(min(r.started for r in rs) for rs in by_user.values())
        end = min(max(r.ended for r in rs) for rs in by_user.values())
        if end > start:
            return Window(start, end)
    return Window(min(r.started for r in records) + ramp_s, max(r.ended for r in records))


def in_window(records: Sequence[RequestRecord], ramp_s: float) -> tuple[list[RequestRecord], float]:
    """The records that finished inside the measurement window, and its length in seconds."""
    window = measurement_window(records, ramp_s)
    return [r for r in records if window.holds(r)], window.length


def level_stats(
    records: Sequence[RequestRecord], users: int, ramp_s: float, slo: Slo
) -> LevelStats:
    """The figures of one load level from every record it wrote."""
    window = measurement_window(records, ramp_s)
    chosen = [r for r in records if window.holds(r)]
    ok = [r for r in chosen if r.outcome == "ok"]
    streamed = [r for r in ok if r.ttft_s is not None]
    per_s = 1.0 / window.length if window.length > 0 else 0.0
    tokens = sum(window.tokens(r) for r in records if r.outcome == "ok")
    return LevelStats(
        users=users,
        window_s=window.length,
        attempts=len(chosen),
        ok=len(ok),
        failed=sum(r.outcome == "failed" for r in chosen),
        rejected=sum(r.outcome == "rejected" for r in chosen),
        requests_per_s=len(ok) * per_s,
        output_tokens_per_s=tokens * per_s,
        goodput_per_s=sum(slo.met(r) for r in ok) * per_s,
        mean_output_tokens=(sum(r.completion_tokens for r in ok) / len(ok)) if ok else 0.0,
        ttft_p50=percentile([r.ttft_s for r in streamed if r.ttft_s is not None], 50),
        ttft_p95=percentile([r.ttft_s for r in streamed if r.ttft_s is not None], 95),
        itl_p50=percentile([r.itl_s for r in streamed if r.itl_s is not None], 50),
        itl_p95=percentile([r.itl_s for r in streamed if r.itl_s is not None], 95),
        e2e_p50=percentile([r.e2e_s for r in ok], 50),
        e2e_p95=percentile([r.e2e_s for r in ok], 95),
    )
