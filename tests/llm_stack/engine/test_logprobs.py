"""Log-probabilities from scores: the softmax at a temperature, the likeliest alternatives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm_stack.engine.logprobs import token_logprob


def test_the_token_and_its_alternatives_under_softmax() -> None:
    scores = np.array([1.0, 3.0, 2.0, 0.0], dtype=np.float32)
    total = math.log(sum(math.exp(s) for s in (1.0, 3.0, 2.0, 0.0)))
    result = token_logprob(scores, 2, temperature=1.0, top=2)
    assert result.logprob == pytest.approx(2.0 - total)
    assert [t for t, _ in result.top] == [1, 2]
    assert [v for _, v in result.top] == pytest.approx([3.0 - total, 2.0 - total])


def test_temperature_scales_the_scores_first() -> None:
    scores = np.array([2.0, 0.0], dtype=np.float32)
    result = token_logprob(scores, 0, temperature=0.5, top=0)
    assert result.logprob == pytest.approx(4.0 - math.log(math.exp(4.0) + 1.0))
    assert result.top == ()


def test_banned_tokens_have_no_probability_and_rank_last() -> None:
    scores = np.array([-math.inf, 1.0, 1.0], dtype=np.float32)
    result = token_logprob(scores, 0, temperature=1.0, top=3)
    assert result.logprob == -math.inf
    assert [t for t, _ in result.top] == [1, 2, 0]
    assert result.top[0][1] == pytest.approx(math.log(0.5))


def test_ties_rank_the_lower_id_first_as_a_greedy_pick_does() -> None:
    scores = np.zeros(1000, dtype=np.float32)
    scores[[700, 3, 999]] = 5.0
    result = token_logprob(scores, 3, temperature=1.0, top=2)
    assert [t for t, _ in result.top] == [3, 700]


def test_more_alternatives_than_tokens_gives_every_token() -> None:
    scores = np.array([0.0, 1.0], dtype=np.float32)
    assert [t for t, _ in token_logprob(scores, 0, 1.0, top=5).top] == [1, 0]


@pytest.mark.parametrize("spread", [0.5, 3.0, 60.0])
def test_a_large_vocabulary_ranks_as_a_full_sort_does(spread: float) -> None:
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal(50_000) * spread).astype(np.float32)
    scores[rng.integers(0, 50_000, 30)] = scores.max()  # ties at the top
    result = token_logprob(scores, 11, temperature=0.7, top=20)
    expected = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:20]
    assert [t for t, _ in result.top] == expected
    scaled = scores.astype(np.float64) / 0.7
    log_total = float(np.log(np.sum(np.exp(scaled - scaled.max())))) + scaled.max()
    assert result.logprob == pytest.approx(scaled[11] - log_total, abs=1e-4)
