"""The preprocessing model's /tokenize and /detokenize helpers: ids checked against the
vocabulary, ids to text, vocabulary strings; on the default model's own vocabulary."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prompt_encoding import RequestError
from token_ids import check_token_ids, detokenize, token_strings_tensor

from llm_stack.model_errors import ErrorCode
from llm_stack.tokenizer import GgufTokenizer, Vocabulary

TEXT = "Paris, ünïcödé 😀 and <start_of_turn> as text\n"


class TinyVocabulary:
    """Four tokens: a control token and three letters."""

    vocab_size = 4
    _strings = ("<s>", "a", "b", "c")

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self._strings[token] for token in ids]

    def spell(self, ids: Sequence[int]) -> str:
        return "".join(self.token_strings(ids))


def test_ids_within_the_vocabulary_pass() -> None:
    check_token_ids([0, 1, 3], 4)
    check_token_ids([], 4)


@pytest.mark.parametrize(
    ("ids", "index", "value"), [([0, 4], 1, 4), ([-1], 0, -1), ([2, 2, 99], 2, 99)]
)
def test_the_first_id_outside_is_named_with_its_value(
    ids: list[int], index: int, value: int
) -> None:
    with pytest.raises(RequestError) as caught:
        check_token_ids(ids, 4)
    error = caught.value.model_error()
    assert error.code == ErrorCode.INVALID_ARGUMENT
    assert error.field == f"tokens[{index}]"
    assert error.values == {"index": index, "value": value, "limit": 4}
    assert (
        str(caught.value) == f"tokens[{index}]: {value} is not a token id of this model (ids 0..3)"
    )


def test_detokenize_checks_before_it_spells() -> None:
    vocabulary = TinyVocabulary()
    assert isinstance(vocabulary, Vocabulary)
    assert detokenize(vocabulary, [0, 1, 3]) == "<s>ac"
    with pytest.raises(RequestError):
        detokenize(vocabulary, [1, 7])


def test_token_strings_tensor_is_one_row_of_utf8() -> None:
    array = token_strings_tensor(TinyVocabulary(), [2, 0])
    assert array.shape == (1, 2)
    assert array.tolist() == [[b"b", b"<s>"]]
    assert token_strings_tensor(TinyVocabulary(), []).shape == (1, 0)


def test_the_models_vocabulary_round_trips(gguf_tokenizer: GgufTokenizer) -> None:
    assert isinstance(gguf_tokenizer, Vocabulary)
    assert gguf_tokenizer.vocab_size == 262_144
    bare = gguf_tokenizer.encode(TEXT, add_special=False)
    assert detokenize(gguf_tokenizer, bare) == TEXT
    with_bos = gguf_tokenizer.encode(TEXT)
    spelled = detokenize(gguf_tokenizer, with_bos)
    # The control tokens by their texts, where decode leaves them out.
    assert spelled == "<bos>" + TEXT
    assert gguf_tokenizer.decode(with_bos) == TEXT.replace("<start_of_turn>", "")
    assert gguf_tokenizer.encode(spelled, add_special=False) == with_bos


def test_the_models_vocabulary_strings(gguf_tokenizer: GgufTokenizer) -> None:
    ids = gguf_tokenizer.encode("Hello world\n")
    assert gguf_tokenizer.token_strings(ids) == ["<bos>", "Hello", "▁world", "\n"]
    row = token_strings_tensor(gguf_tokenizer, ids)
    assert [value.decode() for value in row[0]] == ["<bos>", "Hello", "▁world", "\n"]
