"""The benchmark's figures: medians of alternating rounds and the table."""

from __future__ import annotations

import pytest

from loadtest.engine_bench import Comparison, Run, prompts, report


def runs(streams: int, *tokens_per_s: float) -> list[Run]:
    return [Run(streams, int(t * 10), 10.0) for t in tokens_per_s]


def test_comparison_takes_medians_and_the_median_round_ratio() -> None:
    c = Comparison(16, runs(16, 200, 260, 250), runs(16, 190, 220, 230))
    assert c.engine_tokens_per_s == 250
    assert c.triton_tokens_per_s == 220
    # Rounds: 0.95, 0.846, 0.92 -> the ratio of the median round, not of the medians.
    assert c.ratio == pytest.approx(0.92)


def test_report_shows_each_level_scaling_and_rounds() -> None:
    results = [
        Comparison(1, runs(1, 100, 100), runs(1, 80, 90)),
        Comparison(16, runs(16, 300, 280), runs(16, 270, 268)),
    ]
    text = report(results)
    rows = [line.split("|") for line in text.splitlines() if line.strip().startswith(("1 ", "16 "))]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["1", "100.0", "85.0", "0.85x"],
        ["16", "290.0", "269.0", "0.93x"],
    ]
    assert "engine 2.90x, Triton 3.16x" in text
    assert "at 16 streams: 0.90, 0.96" in text


def test_prompts_are_distinct() -> None:
    texts = prompts(16)
    assert len(set(texts)) == 16
