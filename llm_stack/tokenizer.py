"""Tokenizers for pre/post-processing, and stateless incremental detokenization.

The CPU engine's tokenizer is the GGUF file's own vocabulary (llama.cpp with
`vocab_only`), so ids always match the engine. A Hugging Face tokenizer serves
TensorRT-LLM checkpoints.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from llm_stack.llama_loader import load_model

REPLACEMENT = "\ufffd"


class Tokenizer(Protocol):
    """Text to ids and back."""

    @property
    def end_id(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of `text`; `add_special` adds the model's BOS where it uses one."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; bytes that do not form whole characters become U+FFFD."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The text of one token as UTF-8 bytes (maybe part of a character); control
        tokens by their names (for logprobs)."""
        ...


class ModelTokenizer(Tokenizer, Protocol):
    """A model's own tokenizer, which also holds its chat template and special tokens."""

    @property
    def chat_template(self) -> str | None:
        """The chat template stored with the model, if it has one."""
        ...

    @property
    def bos_token(self) -> str:
        """The text of the BOS token ("" when the model has none)."""
        ...

    @property
    def eos_token(self) -> str:
        """The text of the EOS token."""
        ...


class GgufTokenizer:
    """The vocabulary of a GGUF file, through llama.cpp (no weights loaded)."""

    def __init__(self, path: Path) -> None:
        self._lc, self._model = load_model(path, vocab_only=True)
        lc = self._lc
        if not self._model:
            raise ValueError(f"cannot read a GGUF vocabulary from {path}")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self._add_bos = bool(lc.llama_vocab_get_add_bos(self._vocab))

    @property
    def end_id(self) -> int:
        return int(self._lc.llama_vocab_eos(self._vocab))

    @property
    def pad_id(self) -> int:
        pad = int(self._lc.llama_vocab_pad(self._vocab))
        return pad if pad >= 0 else self.end_id

    @property
    def chat_template(self) -> str | None:
        # GGUF metadata `tokenizer.chat_template`; None when the file has none.
        raw = self._lc.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8") if raw else None

    @property
    def bos_token(self) -> str:
        return self._token_text(int(self._lc.llama_vocab_bos(self._vocab)))

    @property
    def eos_token(self) -> str:
        return self._token_text(self.end_id)

    def _token_text(self, token: int) -> str:
        if token < 0:  # LLAMA_TOKEN_NULL: the vocabulary has no such token
            return ""
        return bytes(self._lc.llama_vocab_get_text(self._vocab, token)).decode("utf-8")

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        out = (ctypes.c_int32 * capacity)()
        # parse_special: chat templates' control tokens (e.g. <start_of_turn>) are tokens.
        n = self._lc.llama_tokenize(
            self._vocab, data, len(data), out, capacity, add_special and self._add_bos, True
        )
        if n < 0:  # pragma: no cover - capacity is always enough for byte-level vocabularies
            raise ValueError(f"tokenization needs {-n} slots")
        return list(out[:n])

    def token_bytes(self, token: int) -> bytes:
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, size, 0, True)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def decode(self, ids: Sequence[int]) -> str:
        if not ids:
            return ""
        arr = (ctypes.c_int32 * len(ids))(*ids)
        size = len(ids) * 32 + 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lc.llama_detokenize(self._vocab, arr, len(ids), buf, size, False, False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n + 16


class HfTokenizer:
    """A Hugging Face tokenizer from a local checkpoint directory."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self._tok: Any = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    @property
    def end_id(self) -> int:
        return int(self._tok.eos_token_id)

    @property
    def pad_id(self) -> int:
        pad = self._tok.pad_token_id
        return int(pad) if pad is not None else self.end_id

    @property
    def chat_template(self) -> str | None:
        template = self._tok.chat_template
        return template if isinstance(template, str) else None

    @property
    def bos_token(self) -> str:
        return str(self._tok.bos_token or "")

    @property
    def eos_token(self) -> str:
        return str(self._tok.eos_token or "")

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special))

    def decode(self, ids: Sequence[int]) -> str:
        return str(
            self._tok.decode(
                list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    def token_bytes(self, token: int) -> bytes:
        # Decoded alone: a token holding part of a character reads as U+FFFD here.
        text = self._tok.decode([token], clean_up_tokenization_spaces=False)
        return str(text).encode("utf-8")


def load_tokenizer(kind: str, path: Path) -> ModelTokenizer:
    """`gguf` or `hf`."""
    if kind == "gguf":
        return GgufTokenizer(path)
    if kind == "hf":
        return HfTokenizer(path)
    raise ValueError(f"unknown tokenizer kind {kind!r}: expected gguf or hf")


# Tokens decoded before the new ones: context for merges across the boundary, and more
# than the 4 byte tokens one UTF-8 character can span.
DETOKENIZE_WINDOW = 8


def text_delta(tokenizer: Tokenizer, ids: Sequence[int], offset: int, final: bool) -> str:
    """Text that `ids[offset:]` adds after `ids[:offset]` was streamed.

    Stateless, so any postprocessing instance can serve any response: it decodes a few
    tokens before `offset` with and without the new ones (so each response costs the
    same however long the sequence is) and holds back a trailing incomplete character
    (U+FFFD) until the tokens that finish it arrive, or the sequence ends.
    """
    start = max(0, offset - DETOKENIZE_WINDOW)
    prefix = tokenizer.decode(ids[start:offset])
    while start > 0 and not prefix.lstrip(REPLACEMENT):  # no whole character to anchor on
        start = max(0, start - DETOKENIZE_WINDOW)
        prefix = tokenizer.decode(ids[start:offset])
    before = _complete(prefix)
    text = tokenizer.decode(ids[start:])
    if not final:
        text = _complete(text)
    if text.startswith(before):
        return text[len(before) :]
    # Decoding is not always prefix-stable (e.g. merged spaces): emit past the common part.
    common = 0
    for a, b in zip(before, text, strict=False):
        if a != b:
            break
        common += 1
    return text[common:]


def logprob_texts(
    tokenizer: Tokenizer, new_ids: Sequence[int], top_ids: Sequence[Sequence[int]]
) -> tuple[list[bytes], list[list[bytes]]]:
    """The texts of a response's new tokens and of each one's alternatives (for logprobs)."""
    texts: dict[int, bytes] = {}

    def text(token: int) -> bytes:
        if token not in texts:
            texts[token] = tokenizer.token_bytes(token)
        return texts[token]

    return [text(t) for t in new_ids], [[text(t) for t in row] for row in top_ids]


def _complete(text: str) -> str:
    return text.rstrip(REPLACEMENT)
