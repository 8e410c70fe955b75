"""The preprocessing model's helpers: prompt and stop/bad word encoding with limits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from prompt_encoding import RequestError, decode_strings, encode_prompt, encode_words

from llm_stack.tokenizer import GgufTokenizer
from llm_stack.word_lists import decode_word_list


class CharTokenizer:
    """One token per character (code point), BOS 1 with add_special."""

    @property
    def end_id(self) -> int:
        return 2

    @property
    def pad_id(self) -> int:
        return 0

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        return ([1] if add_special else []) + [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(chr(i) for i in ids if i > 2)

    def token_bytes(self, token: int) -> bytes:
        return self.decode([token]).encode("utf-8")


# -- decode_strings ------------------------------------------------------------------


def test_decode_strings() -> None:
    values = np.array([["é".encode(), b"plain"]], dtype=object).reshape(-1)
    assert decode_strings(values, "stop_words") == ["é", "plain"]
    assert decode_strings(["already str"], "stop_words") == ["already str"]


def test_decode_strings_rejects_invalid_utf8_naming_the_field() -> None:
    with pytest.raises(RequestError) as err:
        decode_strings([b"ok", b"\xff\xfe"], "bad_words")
    assert str(err.value) == "bad_words is not valid UTF-8"


# -- encode_prompt -------------------------------------------------------------------


def test_encode_prompt_adds_bos(gguf_tokenizer: GgufTokenizer) -> None:
    ids = encode_prompt(gguf_tokenizer, "The capital of France is", max_input_len=64)
    assert ids == gguf_tokenizer.encode("The capital of France is", add_special=True)
    assert ids[1:] == gguf_tokenizer.encode("The capital of France is", add_special=False)


def test_encode_prompt_empty() -> None:
    with pytest.raises(RequestError) as err:
        encode_prompt(CharTokenizer(), "", max_input_len=8)
    assert str(err.value) == "text_input is empty"


def test_encode_prompt_limit_counts_tokens_with_bos() -> None:
    tok = CharTokenizer()
    assert encode_prompt(tok, "abc", max_input_len=4) == [1, 97, 98, 99]
    with pytest.raises(RequestError) as err:
        encode_prompt(tok, "abcd", max_input_len=4)
    assert str(err.value) == "text_input: prompt has 5 tokens, exceeds the limit of 4"


def test_encode_prompt_limit_with_the_real_tokenizer(gguf_tokenizer: GgufTokenizer) -> None:
    text = "word " * 40
    n = len(gguf_tokenizer.encode(text, add_special=True))
    assert encode_prompt(gguf_tokenizer, text, max_input_len=n)
    with pytest.raises(RequestError, match=rf"prompt has {n} tokens, exceeds the limit of {n - 1}"):
        encode_prompt(gguf_tokenizer, text, max_input_len=n - 1)


# -- encode_words --------------------------------------------------------------------


def test_encode_words_adds_the_leading_space_variant(gguf_tokenizer: GgufTokenizer) -> None:
    out = encode_words(gguf_tokenizer, ["France", " Paris"], max_words=4, field="stop_words")
    assert out.dtype == np.int32
    assert decode_word_list(out) == (
        tuple(gguf_tokenizer.encode("France", add_special=False)),
        tuple(gguf_tokenizer.encode(" France", add_special=False)),
        tuple(gguf_tokenizer.encode(" Paris", add_special=False)),  # already spaced: once
    )
    # " France" is one token that "France" alone would never match.
    assert gguf_tokenizer.encode(" France", add_special=False) != gguf_tokenizer.encode(
        "France", add_special=False
    )


def test_encode_words_no_bos(gguf_tokenizer: GgufTokenizer) -> None:
    words = decode_word_list(encode_words(gguf_tokenizer, ["x"], 1, "bad_words"))
    bos = gguf_tokenizer.encode("x", add_special=True)[0]
    assert all(bos not in w for w in words)


def test_encode_words_deduplicates_variants() -> None:
    class SpaceBlind(CharTokenizer):
        def encode(self, text: str, add_special: bool = True) -> list[int]:
            return super().encode(text.lstrip(), add_special)

    out = encode_words(SpaceBlind(), ["ab", "ab"], max_words=2, field="stop_words")
    assert decode_word_list(out) == ((97, 98),)


def test_encode_words_whitespace_first_is_kept_as_is() -> None:
    out = encode_words(CharTokenizer(), ["\nEnd"], max_words=1, field="stop_words")
    assert decode_word_list(out) == ((10, 69, 110, 100),)


def test_encode_words_ignores_empty_words() -> None:
    out = encode_words(CharTokenizer(), ["", "a", ""], max_words=1, field="stop_words")
    assert decode_word_list(out) == ((97,), (32, 97))


def test_encode_words_empty_list() -> None:
    assert encode_words(CharTokenizer(), [], 4, "stop_words").tolist() == [[0], [-1]]


def test_encode_words_limit_on_word_count() -> None:
    tok = CharTokenizer()
    # The limit counts the client's words, not the space variants added.
    assert len(decode_word_list(encode_words(tok, ["a", "b"], 2, "bad_words"))) == 4
    with pytest.raises(RequestError) as err:
        encode_words(tok, ["a", "b", "c"], max_words=2, field="bad_words")
    assert str(err.value) == "bad_words: 3 words exceed the limit of 2"
