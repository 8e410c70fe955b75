"""Figures of a load level from request records: window, rates, percentiles, goodput."""

from __future__ import annotations

import pytest

from loadtest.records import RequestRecord
from loadtest.stats import Slo, in_window, level_stats, measurement_window, percentile

SLO = Slo(ttft_s=0.5, itl_s=0.05)


def _ok(
    started: float, e2e: float, tokens: int, ttft: float | None, itl: float | None
) -> RequestRecord:
    return RequestRecord(
        endpoint="/generate [stream]" if ttft is not None else "/generate",
        stream=ttft is not None,
        started=started,
        e2e_s=e2e,
        outcome="ok",
        status=200,
        prompt_tokens=10,
        completion_tokens=tokens,
        ttft_s=ttft,
        itl_s=itl,
    )


def _bad(started: float, outcome: str, status: int) -> RequestRecord:
    return RequestRecord("/generate", False, started, 0.01, outcome, status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "met"),
    [
        (_ok(0, 2.0, 10, 0.4, 0.04), True),
        (_ok(0, 2.0, 10, 0.6, 0.04), False),  # TTFT over
        (_ok(0, 2.0, 10, 0.4, 0.06), False),  # ITL over
        (_ok(0, 2.0, 1, 0.4, None), True),  # one token: no gap to judge
        # Not streamed: the whole answer within 0.5 + 0.05 * (10 - 1) = 0.95 s.
        (_ok(0, 0.9, 10, None, None), True),
        (_ok(0, 1.0, 10, None, None), False),
        (_bad(0, "failed", 502), False),
        (_bad(0, "rejected", 429), False),
    ],
)
def test_slo(record: RequestRecord, met: bool) -> None:
    assert SLO.met(record) is met


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0


def test_window_drops_requests_finished_during_the_ramp() -> None:
    records = [
        _ok(100.0, 0.5, 5, 0.1, 0.01),  # ends at 100.5, inside the 1 s ramp
        _ok(100.2, 2.0, 5, 0.1, 0.01),  # ends at 102.2
        _ok(101.5, 9.5, 5, 0.1, 0.01),  # ends at 111.0: the window's end
    ]
    chosen, window = in_window(records, ramp_s=1.0)
    assert chosen == records[1:]
    assert window == pytest.approx(10.0)
    assert in_window([], 1.0) == ([], 0.0)


def test_level_stats() -> None:
    records = [
        _ok(0.0, 0.1, 1, 0.05, None),  # in the ramp: ignored
        _ok(0.5, 2.0, 20, 0.2, 0.02),  # meets the SLO
        _ok(1.0, 3.0, 30, 0.8, 0.03),  # TTFT over the SLO
        _ok(1.0, 4.0, 40, None, None),  # not streamed, 4.0 s > 0.5 + 0.05 * 39
        _bad(2.0, "failed", 502),
        _bad(3.0, "rejected", 429),
        _ok(1.0, 10.0, 10, 0.3, 0.04),  # ends at 11.0: window = 11.0 - 1.0 = 10 s
    ]
    stats = level_stats(records, users=4, ramp_s=1.0, slo=SLO)
    assert stats.users == 4
    assert stats.window_s == pytest.approx(10.0)
    assert (stats.attempts, stats.ok, stats.failed, stats.rejected) == (6, 4, 1, 1)
    assert stats.requests_per_s == pytest.approx(0.4)
    # Tokens where they were generated: the second request's, from its first token at
    # 0.7 s to its end at 2.5 s, fall 1.5 / 1.8 inside the window; the others wholly.
    assert stats.output_tokens_per_s == pytest.approx((20 * 1.5 / 1.8 + 30 + 40 + 10) / 10)
    assert stats.goodput_per_s == pytest.approx(0.2)
    assert stats.mean_output_tokens == pytest.approx(25.0)
    assert stats.ttft_p50 == pytest.approx(0.3)  # streamed only: 0.2, 0.3, 0.8
    assert stats.itl_p50 == pytest.approx(0.03)
    assert stats.e2e_p50 == pytest.approx(3.5)  # 2, 3, 4, 10
    assert stats.error_rate == pytest.approx(1 / 6)
    assert stats.rejection_rate == pytest.approx(1 / 6)
    summary = stats.as_dict()
    assert summary["error_rate"] == pytest.approx(1 / 6)
    assert summary["output_tokens_per_s"] == stats.output_tokens_per_s


def _user(user: str, started: float, ended: float) -> RequestRecord:
    return RequestRecord(
        "/generate [stream]", True, started, ended - started, "ok", 200, 5, 10, 0.0, 0.01,
        user=user,
    )  # fmt: skip


def test_window_of_users_ends_with_the_first_user_to_stop() -> None:
    # Closed loops: A's requests 0-2, 2-4, 4-6 s; B's 0.5-3, 3-5.5 s, then B's next one was
    # cut off by the end of the level: its tokens after 5.5 s have no record.
    records = [_user("a", 0, 2), _user("a", 2, 4), _user("a", 4, 6)]
    records += [_user("b", 0.5, 3), _user("b", 3, 5.5)]
    window = measurement_window(records, ramp_s=10.0)  # the ramp only matters without users
    assert (window.start, window.end) == (0.5, 5.5)
    assert [window.tokens(r) for r in records] == pytest.approx([7.5, 10, 7.5, 10, 10])
    stats = level_stats(records, users=2, ramp_s=10.0, slo=SLO)
    assert stats.window_s == pytest.approx(5.0)
    assert stats.output_tokens_per_s == pytest.approx(45 / 5)
    assert stats.ok == 4  # those that ended at 2, 3, 4 and 5.5 s
    assert stats.requests_per_s == pytest.approx(4 / 5)


def test_a_request_without_duration_counts_where_it_ended() -> None:
    window = measurement_window([_user("a", 0, 1), _user("a", 1, 3)], ramp_s=0.0)
    instant = RequestRecord("/generate", False, 2.0, 0.0, "ok", 200, 1, 7, user="a")
    late = RequestRecord("/generate", False, 9.0, 0.0, "ok", 200, 1, 7, user="a")
    assert (window.tokens(instant), window.tokens(late)) == (7.0, 0.0)


def test_level_stats_of_nothing() -> None:
    stats = level_stats([], users=1, ramp_s=1.0, slo=SLO)
    assert (stats.attempts, stats.requests_per_s, stats.error_rate) == (0, 0.0, 0.0)
    assert stats.ttft_p50 is None
