"""Log-probabilities of a sampled token and its likeliest alternatives, from scores."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from llm_stack.engine.base import TokenLogprob

# Widths of the score band below the best score searched for the likeliest tokens.
_BANDS = (8.0, 32.0, 128.0)


def token_logprob(
    scores: npt.NDArray[np.float32], token: int, temperature: float, top: int
) -> TokenLogprob:
    """`token`'s log-probability under softmax(scores / temperature), with the `top`
    likeliest tokens and theirs, likeliest first (ties: the lower id first, as a greedy
    pick takes it). Scores of -inf (banned tokens) have probability 0."""
    scaled = scores / np.float32(temperature)
    peak = float(scaled.max())
    log_total = peak + math.log(float(np.sum(np.exp(scaled - peak), dtype=np.float64)))
    alternatives: tuple[tuple[int, float], ...] = ()
    if top > 0:
        ids = _likeliest(scaled, peak, min(top, len(scaled)))
        alternatives = tuple((int(i), float(scaled[i]) - log_total) for i in ids)
    return TokenLogprob(float(scaled[token]) - log_total, alternatives)


def _likeliest(scaled: npt.NDArray[np.float32], peak: float, k: int) -> npt.NDArray[np.intp]:
    """The ids of the k highest scores, highest first, ties by id.

    A band below the peak wide enough to hold k tokens is found with a few comparisons over
    the vocabulary, cheaper than partitioning it (0.05 ms against 1.3 ms for 262k scores);
    every id at or above the k-th score is inside it, so ties are ranked exactly.
    """
    for width in _BANDS:
        ids = np.flatnonzero(scaled >= peak - width)
        if len(ids) >= k:
            break
    else:  # fewer than k scores near the peak (most banned): rank them all
        ids = np.arange(len(scaled))
    ranked: npt.NDArray[np.intp] = ids[np.argsort(-scaled[ids], kind="stable")[:k]]
    return ranked
