"""The several-choices benchmark's figures: medians, per-round ratios, prompts and the table."""

from __future__ import annotations

import pytest

from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import GgufTokenizer
from loadtest.choices_bench import ChoicesComparison, Round, report, round_prompt


def rounds(*seconds: float) -> list[Round]:
    return [Round(s / 2, s, 40, int(100 * s)) for s in seconds]


def test_medians_and_the_median_round_ratio() -> None:
    c = ChoicesComparison(4, rounds(1.0, 3.0, 2.0), rounds(4.0, 4.0, 10.0))
    assert c.median(c.together, "seconds") == 2.0
    assert c.median(c.apart, "tokens_per_s") == 10.0
    # Rounds: 0.25, 0.75, 0.2 -> the ratio of the median round.
    assert c.ratio("seconds") == pytest.approx(0.25)


def test_report_has_a_row_per_figure() -> None:
    text = report(ChoicesComparison(4, rounds(2.0), rounds(8.0)))
    row = next(line for line in text.splitlines() if "computed" in line)
    assert [cell.strip() for cell in row.split("|")] == [
        "prompt tokens computed",
        "200",
        "800",
        "0.25x",
    ]


def test_each_round_has_a_prompt_of_its_own_of_the_asked_length() -> None:
    tokenizer = GgufTokenizer(resolve_model_path("gemma3-270m"))
    first, second = (round_prompt(tokenizer, i, 128) for i in (1, 2))
    assert 128 <= len(first) < 150
    assert first[:16] != second[:16]  # the prefix cache's first block differs
