"""NVIDIA's [2, L] stop/bad word-list format."""

from __future__ import annotations

import numpy as np
import pytest

from llm_stack.word_lists import decode_word_list, encode_word_list


def test_encode_layout() -> None:
    out = encode_word_list([[5, 6], [7]])
    assert out.dtype == np.int32
    assert out.tolist() == [[5, 6, 7], [2, 3, -1]]


def test_encode_one_token_words() -> None:
    assert encode_word_list([[1], [2], [3]]).tolist() == [[1, 2, 3], [1, 2, 3]]


@pytest.mark.parametrize("words", [[], [[]], [[], []]])
def test_empty_list(words: list[list[int]]) -> None:
    out = encode_word_list(words)
    assert out.dtype == np.int32
    assert out.tolist() == [[0], [-1]]
    assert decode_word_list(out) == ()


def test_empty_words_are_dropped() -> None:
    assert decode_word_list(encode_word_list([[1, 2], [], [3]])) == ((1, 2), (3,))


@pytest.mark.parametrize(
    "words",
    [
        ((5,),),
        ((5, 6), (7,)),
        ((1, 2, 3, 4), (5,), (6, 7)),
        ((262143, 0, 17),),
    ],
)
def test_roundtrip(words: tuple[tuple[int, ...], ...]) -> None:
    assert decode_word_list(encode_word_list(words)) == words


def test_batch_dim_accepted() -> None:
    arr = encode_word_list([[5, 6], [7]])
    assert decode_word_list(arr[np.newaxis]) == ((5, 6), (7,))
    assert decode_word_list(arr[np.newaxis, np.newaxis]) == ((5, 6), (7,))


def test_decode_returns_python_ints() -> None:
    words = decode_word_list(np.array([[5, 6], [2, -1]], dtype=np.int64))
    assert words == ((5, 6),)
    assert all(type(t) is int for t in words[0])


def test_decode_stops_at_first_padding_offset() -> None:
    assert decode_word_list(np.array([[5, 6, 7, 0], [1, -1, 3, -1]])) == ((5,),)


@pytest.mark.parametrize(
    "shape",
    [(3, 2), (2,), (2, 2, 2), (2, 1, 2)],
)
def test_wrong_shape_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"a word list must have shape \[2, L\], got") as err:
        decode_word_list(np.zeros(shape, dtype=np.int32))
    assert str(list(shape)) in str(err.value)


@pytest.mark.parametrize(
    "array",
    [
        [[5, 6, 7], [2, 1, -1]],  # decreasing
        [[5, 6, 7], [2, 2, -1]],  # an empty word
        [[5, 6, 7], [0, -1, -1]],  # an empty first word
        [[5, 6, 7], [2, 4, -1]],  # past the ids
    ],
)
def test_malformed_offsets_rejected(array: list[list[int]]) -> None:
    with pytest.raises(ValueError, match="word list offsets are not increasing within bounds"):
        decode_word_list(np.array(array, dtype=np.int32))
