"""The structured-output benchmark's figures: medians of alternating rounds and the table."""

from __future__ import annotations

import pytest

from llm_stack.guided_decoding import check_schema
from loadtest.engine_bench import Run
from loadtest.guided_bench import SCHEMA, GuidedComparison, report


def runs(streams: int, *tokens_per_s: float) -> list[Run]:
    return [Run(streams, int(t * 10), 10.0) for t in tokens_per_s]


def test_comparison_takes_medians_and_the_median_round_ratio() -> None:
    c = GuidedComparison(16, runs(16, 200, 260, 250), runs(16, 100, 200, 150))
    assert (c.free_tokens_per_s, c.guided_tokens_per_s) == (250, 150)
    # Rounds: 0.5, 0.769, 0.6 -> the ratio of the median round.
    assert c.ratio == pytest.approx(0.6)


def test_report_has_a_row_per_concurrency() -> None:
    text = report([GuidedComparison(1, runs(1, 80), runs(1, 40))])
    row = next(line for line in text.splitlines() if line.strip().startswith("1 "))
    assert [cell.strip() for cell in row.split("|")] == ["1", "80.0", "40.0", "0.50x"]


def test_the_benchmark_schema_is_supported() -> None:
    check_schema(SCHEMA)
