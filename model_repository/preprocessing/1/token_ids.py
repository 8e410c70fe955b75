"""Pure helpers of the preprocessing model's answers to /tokenize and /detokenize: token
ids checked against the vocabulary, ids to text, each id's vocabulary string."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prompt_encoding import RequestError

from llm_stack.tokenizer import Vocabulary

# The ids of TOKEN_IDS as clients name them (vLLM's DetokenizeRequest.tokens).
TOKENS_FIELD = "tokens"


def check_token_ids(ids: Sequence[int], vocab_size: int, field: str = TOKENS_FIELD) -> None:
    """RequestError naming the first id outside 0..vocab_size - 1 (`field[i]`), its value
    and the vocabulary's size; an id outside it must never reach the tokenizer."""
    for index, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            where = f"{field}[{index}]"
            raise RequestError(
                f"{where}: {token} is not a token id of this model (ids 0..{vocab_size - 1})",
                field=where,
                index=index,
                value=int(token),
                limit=vocab_size,
            )


def detokenize(vocabulary: Vocabulary, ids: Sequence[int]) -> str:
    """The text of `ids` with control tokens written as their texts, after the ids are
    checked: tokenized as a prompt (add_special_tokens false), it gives the ids back."""
    check_token_ids(ids, vocabulary.vocab_size)
    return vocabulary.spell(ids)


def token_strings_tensor(vocabulary: Vocabulary, ids: Sequence[int]) -> npt.NDArray[Any]:
    """Each id's vocabulary string as a [1, n] BYTES array (one request's row)."""
    strings = vocabulary.token_strings(ids)
    array = np.empty((1, len(strings)), dtype=np.object_)
    for index, text in enumerate(strings):
        array[0, index] = text.encode("utf-8")
    return array
