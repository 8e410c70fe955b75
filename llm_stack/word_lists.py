"""NVIDIA's word-list tensor format for stop and bad words.

A [2, L] int32 array per request: row 0 holds all words' token ids concatenated, row 1
the cumulative end offset of each word, padded with -1. An empty list is [[0], [-1]].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def encode_word_list(words: Sequence[Sequence[int]]) -> npt.NDArray[np.int32]:
    """Token-id sequences → the [2, L] word-list array."""
    ids: list[int] = []
    offsets: list[int] = []
    for word in words:
        if word:
            ids.extend(word)
            offsets.append(len(ids))
    if not ids:
        return np.array([[0], [-1]], dtype=np.int32)
    width = max(len(ids), len(offsets))
    out = np.full((2, width), -1, dtype=np.int32)
    out[0, : len(ids)] = ids
    out[0, len(ids) :] = 0
    out[1, : len(offsets)] = offsets
    return out


def decode_word_list(array: npt.NDArray[np.integer[Any]]) -> tuple[tuple[int, ...], ...]:
    """The [2, L] word-list array (a leading batch dim of 1 allowed) → token-id sequences."""
    arr = np.asarray(array)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[0] != 2:
        raise ValueError(f"a word list must have shape [2, L], got {list(np.asarray(array).shape)}")
    ids, offsets = arr[0].tolist(), arr[1].tolist()
    words: list[tuple[int, ...]] = []
    start = 0
    for end in offsets:
        if end < 0:
            break
        if end <= start or end > len(ids):
            raise ValueError(f"word list offsets are not increasing within bounds: {offsets}")
        words.append(tuple(int(t) for t in ids[start:end]))
        start = end
    return tuple(words)
