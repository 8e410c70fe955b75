"""Log-probabilities of a sampled token and its likeliest alternatives, from scores."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from llm_stack.engine.base import TokenLogprob


def token_logprob(
    scores: npt.NDArray[np.float32], token: int, temperature: float, top: int
) -> TokenLogprob:
    """`token`'s log-probability under softmax(scores / temperature), with the `top`
    likeliest tokens and theirs, likeliest first (ties: the lower id first, as a greedy
    pick takes it). Scores of -inf (banned tokens) have probability 0."""
    scaled = scores.astype(np.float64) / temperature
    peak = float(np.max(scaled))
    log_total = peak + float(np.log(np.sum(np.exp(scaled - peak))))
    alternatives: tuple[tuple[int, float], ...] = ()
    if top > 0:
        k = min(top, len(scaled))
        kth = np.partition(-scaled, k - 1)[k - 1]
        ids = np.flatnonzero(-scaled <= kth)  # ascending, ties at the k-th score included
        ids = ids[np.argsort(-scaled[ids], kind="stable")][:k]
        alternatives = tuple((int(i), float(scaled[i] - log_total)) for i in ids)
    return TokenLogprob(float(scaled[token] - log_total), alternatives)
