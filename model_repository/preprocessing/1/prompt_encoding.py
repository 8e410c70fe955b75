"""Pure helpers of the preprocessing model: request limits, prompt and word-list encoding.

Every limit is checked before the work it bounds, the cheap ones first: a request's
size in bytes before it is decoded, parsed, rendered or tokenized.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from llm_stack.model_config import ModelParameters
from llm_stack.model_errors import CodedError, ErrorCode
from llm_stack.tokenizer import ModelTokenizer, Segment, Tokenizer
from llm_stack.word_lists import encode_word_list


class RequestError(CodedError, ValueError):
    """A request that cannot be preprocessed; names the field (an ensemble input)."""

    default_code = ErrorCode.INVALID_ARGUMENT


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may ask of preprocessing (config.pbtxt parameters)."""

    max_input_len: int  # prompt tokens
    max_prompt_bytes: int  # text_input, UTF-8
    max_messages: int
    max_messages_bytes: int  # the messages JSON
    max_messages_depth: int  # its nesting of arrays and objects
    max_words: int  # stop or bad words per request
    max_word_bytes: int  # bytes per word
    max_tools_bytes: int  # the tools JSON
    # Nesting of the tools JSON and of each tool call's arguments (JSON text in messages).
    max_tool_json_depth: int

    @classmethod
    def from_parameters(cls, params: ModelParameters) -> Limits:
        return cls(
            max_input_len=params.get_int("max_input_len", minimum=1),
            max_prompt_bytes=params.get_int("max_prompt_bytes", minimum=1),
            max_messages=params.get_int("max_messages", minimum=1),
            max_messages_bytes=params.get_int("max_messages_bytes", minimum=1),
            max_messages_depth=params.get_int("max_messages_depth", minimum=2),
            max_words=params.get_int("max_words", minimum=0),
            max_word_bytes=params.get_int("max_word_bytes", minimum=1),
            max_tools_bytes=params.get_int("max_tools_bytes", minimum=1),
            max_tool_json_depth=params.get_int("max_tool_json_depth", minimum=4),
        )


def one_request(values: npt.NDArray[Any], field: str) -> npt.NDArray[Any]:
    """The one request's row of an input tensor (its first dimension is the batch).

    The ensemble takes a batch of prompts in one request (its max_batch_size), but its
    engine generates one sequence per request, so a request holds one prompt.
    """
    if values.ndim == 0 or values.shape[0] != 1:
        batch = int(values.shape[0]) if values.ndim else 0
        raise RequestError(
            f"{field}: a request holds one prompt, got a batch of {batch}",
            field=field,
            batch_size=batch,
            limit=1,
        )
    row: npt.NDArray[Any] = values[0]
    return row


def decode_text(value: object, field: str, max_bytes: int) -> str:
    """One BYTES element → str, refused over `max_bytes` before it is decoded."""
    size = len(value) if isinstance(value, bytes) else len(str(value).encode("utf-8"))
    if size > max_bytes:
        raise RequestError(
            f"{field}: {size} bytes exceed the limit of {max_bytes} bytes",
            field=field,
            bytes=size,
            limit=max_bytes,
        )
    return decode_strings([value], field)[0]


def decode_words(
    values: npt.NDArray[Any], field: str, max_words: int, max_word_bytes: int
) -> list[str]:
    """Stop or bad words (one request's BYTES row) → str, counted and sized first."""
    flat = values.reshape(-1)
    count = sum(1 for value in flat if len(value))
    if count > max_words:
        raise RequestError(
            f"{field}: {count} words exceed the limit of {max_words}",
            field=field,
            words=count,
            limit=max_words,
        )
    words = []
    for index, value in enumerate(flat):
        size = len(value) if isinstance(value, bytes) else len(str(value).encode("utf-8"))
        if size > max_word_bytes:
            raise RequestError(
                f"{field}[{index}]: {size} bytes exceed the limit of {max_word_bytes} bytes",
                field=field,
                index=index,
                bytes=size,
                limit=max_word_bytes,
            )
        words.append(value)
    return decode_strings(words, field)


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
    max_token_bytes: int | None = None,
    add_special: bool = True,
    field: str = "text_input",
) -> list[int]:
    """A raw prompt → ids (control-token texts in it are those tokens, as in llama.cpp's
    and vLLM's completions); rejects empty prompts and prompts over `max_input_len` tokens.

    `max_token_bytes` (the most bytes one token stands for) refuses a prompt whose size
    alone proves it too long, before tokenizing it. `field` names the input in errors.
    """
    if not text:
        raise RequestError(f"{field} is empty", field=field)
    _refuse_by_size(len(text.encode("utf-8")), max_input_len, max_token_bytes, field)
    return _within_limit(tokenizer.encode(text, add_special=add_special), max_input_len, field)


def encode_chat(
    tokenizer: ModelTokenizer,
    segments: Sequence[Segment],
    max_input_len: int,
    *,
    max_token_bytes: int | None = None,
    field: str = "messages",
) -> list[int]:
    """A rendered chat (`ChatTemplate.render_segments`) → ids, contents as plain text.

    Refused like `encode_prompt`, by size before tokenizing, then by tokens.
    """
    size = sum(len(segment.text.encode("utf-8")) for segment in segments)
    _refuse_by_size(size, max_input_len, max_token_bytes, field)
    return _within_limit(tokenizer.encode_segments(segments), max_input_len, field)


def _refuse_by_size(size: int, max_input_len: int, max_token_bytes: int | None, field: str) -> None:
    # A token stands for at most max_token_bytes bytes: more bytes than max_input_len
    # such tokens hold proves the prompt too long, for the price of counting them.
    if max_token_bytes is None or size <= max_input_len * max_token_bytes:
        return
    tokens = -(-size // max_token_bytes)
    raise RequestError(
        f"{field}: prompt of {size} bytes has at least {tokens} tokens (one stands for at "
        f"most {max_token_bytes} bytes), exceeds the limit of {max_input_len}",
        code=ErrorCode.PROMPT_TOO_LONG,
        field=field,
        tokens=tokens,
        limit=max_input_len,
        bytes=size,
    )


def _within_limit(ids: list[int], max_input_len: int, field: str) -> list[int]:
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
