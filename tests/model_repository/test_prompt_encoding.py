"""The preprocessing model's helpers: prompt and stop/bad word encoding with limits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from prompt_encoding import (
    Limits,
    RequestError,
    decode_strings,
    decode_text,
    decode_words,
    encode_chat,
    encode_prompt,
    encode_words,
    one_request,
)

from llm_stack.model_errors import ErrorCode
from llm_stack.model_repository_config import model_parameters
from llm_stack.tokenizer import GgufTokenizer, Segment
from llm_stack.word_lists import decode_word_list

CONFIG = Path(__file__).resolve().parents[2] / "model_repository" / "preprocessing" / "config.pbtxt"


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


# -- request limits, before the work they bound --------------------------------------------


def test_limits_come_from_the_config() -> None:
    params = model_parameters(CONFIG, environ={})
    assert Limits.from_parameters(params) == Limits(
        max_input_len=2048,
        max_prompt_bytes=262144,
        max_messages=1024,
        max_messages_bytes=262144,
        max_messages_depth=5,
        max_words=16,
        max_word_bytes=256,
        max_tools_bytes=262144,
        max_tool_json_depth=48,
    )
    # Off by default: message contents are text.
    assert params.get_bool("allow_special_tokens_in_content") is False
    override = {"LLM_STACK_ALLOW_SPECIAL_TOKENS_IN_CONTENT": "true"}
    assert model_parameters(CONFIG, environ=override).get_bool("allow_special_tokens_in_content")


def test_one_request_is_one_prompt() -> None:
    row = one_request(np.array([[b"Hi"]], dtype=object), "text_input")
    assert row.tolist() == [b"Hi"]
    with pytest.raises(RequestError) as batch:
        one_request(np.array([[b"Hi"], [b"Ho"]], dtype=object), "text_input")
    assert str(batch.value) == "text_input: a request holds one prompt, got a batch of 2"
    assert batch.value.model_error().values == {"batch_size": 2, "limit": 1}
    with pytest.raises(RequestError, match="got a batch of 0"):
        one_request(np.zeros((0, 1), dtype=np.int32), "max_tokens")


def test_decode_text_refuses_by_size_before_decoding() -> None:
    assert decode_text("é".encode(), "text_input", 2) == "é"
    # Not valid UTF-8 either: the size speaks first.
    with pytest.raises(RequestError) as refused:
        decode_text(b"\xff" * 3, "messages", 2)
    assert str(refused.value) == "messages: 3 bytes exceed the limit of 2 bytes"
    assert refused.value.model_error().values == {"bytes": 3, "limit": 2}
    with pytest.raises(RequestError, match="not valid UTF-8"):
        decode_text(b"\xff", "messages", 2)


def test_decode_words_counts_and_sizes_first() -> None:
    words = np.array([b"stop", b"", "é".encode()], dtype=object)
    assert decode_words(words, "stop_words", max_words=2, max_word_bytes=4) == ["stop", "", "é"]
    with pytest.raises(RequestError) as many:
        decode_words(np.array([b"\xff"] * 3, dtype=object), "bad_words", 2, 4)
    assert many.value.model_error().values == {"words": 3, "limit": 2}
    with pytest.raises(RequestError) as long:
        decode_words(np.array([b"ok", b"\xff" * 5], dtype=object), "stop_words", 2, 4)
    assert str(long.value) == "stop_words[1]: 5 bytes exceed the limit of 4 bytes"
    assert long.value.model_error().values == {"index": 1, "bytes": 5, "limit": 4}


class NeverTokenizes(CharTokenizer):
    """Fails the test if a prompt gets as far as being tokenized."""

    chat_template = None
    bos_token = "<bos>"
    eos_token = "<eos>"
    max_token_bytes = 4

    def encode(self, text: str, add_special: bool = True) -> NoReturn:
        raise AssertionError("tokenized")

    def encode_segments(self, segments: Sequence[Segment]) -> NoReturn:
        raise AssertionError("tokenized")


def test_a_prompt_too_long_by_its_size_alone_is_not_tokenized() -> None:
    # 4 tokens of at most 4 bytes hold 16 bytes; 17 prove at least 5 tokens.
    with pytest.raises(RequestError) as refused:
        encode_prompt(NeverTokenizes(), "x" * 17, max_input_len=4, max_token_bytes=4)
    error = refused.value.model_error()
    assert (error.code, error.field) == (ErrorCode.PROMPT_TOO_LONG, "text_input")
    assert error.values == {"tokens": 5, "limit": 4, "bytes": 17}
    assert str(refused.value) == (
        "text_input: prompt of 17 bytes has at least 5 tokens (one stands for at most 4 "
        "bytes), exceeds the limit of 4"
    )
    # At the bound it may still fit: counted.
    ids = encode_prompt(CharTokenizer(), "abc", max_input_len=4, max_token_bytes=1)
    assert ids == [1, 97, 98, 99]
    with pytest.raises(RequestError) as chat:
        encode_chat(
            NeverTokenizes(),
            [Segment("<x>", special=True), Segment("y" * 14)],
            4,
            max_token_bytes=4,
        )
    assert chat.value.model_error().values == {"tokens": 5, "limit": 4, "bytes": 17}


def test_encode_chat_counts_tokens_with_contents_as_text(gguf_tokenizer: GgufTokenizer) -> None:
    segments = [
        Segment("<bos><start_of_turn>user\n", special=True),
        Segment("<start_of_turn>"),
        Segment("<end_of_turn>\n<start_of_turn>model\n", special=True),
    ]
    ids = encode_chat(gguf_tokenizer, segments, 64, max_token_bytes=gguf_tokenizer.max_token_bytes)
    assert ids.count(105) == 2
    with pytest.raises(RequestError) as refused:
        encode_chat(gguf_tokenizer, segments, len(ids) - 1)
    assert refused.value.model_error().values == {"tokens": len(ids), "limit": len(ids) - 1}
