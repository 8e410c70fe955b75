"""Pure helpers of the preprocessing model: prompt and word-list encoding with limits."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from llm_stack.model_errors import CodedError, ErrorCode
from llm_stack.tokenizer import Tokenizer
from llm_stack.word_lists import encode_word_list


class RequestError(CodedError, ValueError):
    """A request that cannot be preprocessed; names the field (an ensemble input)."""

    default_code = ErrorCode.INVALID_ARGUMENT


def decode_strings(values: Iterable[object], field: str) -> list[str]:
    """BYTES tensor elements → str, rejecting invalid UTF-8 with the field's name."""
    out: list[str] = []
    for value in values:
        if isinstance(value, bytes):
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                raise RequestError(f"{field} is not valid UTF-8", field=field) from None
        else:
            out.append(str(value))
    return out


def encode_prompt(
    tokenizer: Tokenizer,
    text: str,
    max_input_len: int,
    *,
    add_special: bool = True,
    field: str = "text_input",
) -> list[int]:
    """Prompt → ids; rejects empty prompts and prompts over `max_input_len` tokens.

    A rendered chat template carries its own BOS, hence `add_special=False` for it;
    `field` names the input the prompt came from in errors.
    """
    if not text:
        raise RequestError(f"{field} is empty", field=field)
    ids = tokenizer.encode(text, add_special=add_special)
    if len(ids) > max_input_len:
        raise RequestError(
            f"{field}: prompt has {len(ids)} tokens, exceeds the limit of {max_input_len}",
            code=ErrorCode.PROMPT_TOO_LONG,
            field=field,
            tokens=len(ids),
            limit=max_input_len,
        )
    return ids


def encode_words(
    tokenizer: Tokenizer, words: list[str], max_words: int, field: str
) -> npt.NDArray[np.int32]:
    """Stop or bad words → NVIDIA's [2, L] word-list array; empty words are ignored.

    Mid-text, a word usually follows a space that the tokenizer folds into the word's
    first token ("▁France"), so a word not starting with whitespace is also listed with
    a leading space; otherwise "France" would never match the generated " France".
    """
    words = [w for w in words if w]
    if len(words) > max_words:
        raise RequestError(
            f"{field}: {len(words)} words exceed the limit of {max_words}",
            field=field,
            words=len(words),
            limit=max_words,
        )
    sequences: list[list[int]] = []
    for word in words:
        variants = [word] if word[0].isspace() else [word, " " + word]
        for variant in variants:
            ids = tokenizer.encode(variant, add_special=False)
            if ids not in sequences:
                sequences.append(ids)
    return encode_word_list(sequences)
