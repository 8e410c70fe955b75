"""Tokenizers for pre/post-processing, and stateless incremental detokenization.

The CPU engine's tokenizer is the GGUF file's own vocabulary (llama.cpp with
`vocab_only`), so ids always match the engine. A Hugging Face tokenizer serves
TensorRT-LLM checkpoints.
"""

from __future__ import annotations

import bisect
import codecs
import ctypes
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from llm_stack.llama_loader import load_model

REPLACEMENT = "\ufffd"


class Tokenizer(Protocol):
    """Text to ids and back."""

    @property
    def end_id(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of `text`, a raw prompt (control-token texts in it are those tokens);
        `add_special` adds the model's BOS where it uses one."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; bytes that do not form whole characters become U+FFFD."""
        ...

    def token_bytes(self, token: int) -> bytes:
        """The text of one token as UTF-8 bytes (maybe part of a character); control
        tokens by their names (for logprobs)."""
        ...


@runtime_checkable
class PieceTokenizer(Protocol):
    """A tokenizer whose decoded text is its tokens' byte pieces joined (byte-level BPE,
    SentencePiece with byte fallback, as llama.cpp renders them): streamed text can then
    be cut at bytes, exactly."""

    def text_bytes(self, ids: Sequence[int]) -> bytes:
        """The UTF-8 bytes `ids` add to a text that goes on before them: their pieces
        joined, control tokens as nothing (maybe ending or starting inside a character)."""
        ...


@runtime_checkable
class BatchDecoder(Protocol):
    """A tokenizer that decodes many id lists in one call."""

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """`decode` of each list."""
        ...


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of a prompt, tokenized with the pieces around it.

    `special`: control-token texts in it (`<start_of_turn>`) are those control tokens, as
    in a chat template's own markup; otherwise they are plain text, as in a message's
    content, so a client cannot write the tokens that frame turns.
    """

    text: str
    special: bool = False


class ModelTokenizer(Tokenizer, Protocol):
    """A model's own tokenizer, which also holds its chat template and special tokens."""

    def encode_segments(self, segments: Sequence[Segment]) -> list[int]:
        """Token ids of the segments' texts joined, control tokens only where `special`
        (no BOS added: a chat template writes its own)."""
        ...

    @property
    def max_token_bytes(self) -> int | None:
        """The most bytes of text one token can stand for; None when no bound holds (a
        tokenizer that normalizes text may fold any number of bytes into one token)."""
        ...

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


@runtime_checkable
class Vocabulary(Protocol):
    """A tokenizer that shows its vocabulary: what /tokenize and /detokenize answer."""

    @property
    def vocab_size(self) -> int:
        """Token ids run 0..vocab_size - 1."""
        ...

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """Each id's entry in the vocabulary as it is written there (Hugging Face's
        `convert_ids_to_tokens`: "▁Paris", "<0x0A>", "<bos>")."""
        ...

    def spell(self, ids: Sequence[int]) -> str:
        """The text of `ids` with control tokens written as their texts ("<bos>"), as
        Hugging Face's `decode` without `skip_special_tokens`: a prompt that tokenizes
        back to the ids."""
        ...


# llama_token_attr bits (llama.h).
_ATTR_UNKNOWN = 1 << 0
_ATTR_CONTROL = 1 << 3
_ATTR_USER_DEFINED = 1 << 4
_ATTR_LSTRIP = 1 << 7
_ATTR_RSTRIP = 1 << 8
_VOCAB_SPM, _VOCAB_BPE = 1, 2
# Special tokens one llama_tokenize call may split out of its text. llama.cpp splits them
# off a linked list that it walks from the start for every match, so one call costs the
# square of their number: 49,000 newline tokens (a 98 KB text) took 32 s.
FAST_PATH_SPECIALS = 32


@dataclass(frozen=True, slots=True)
class SpecialToken:
    """A token that llama.cpp splits out of text before tokenizing the rest.

    `control` ones (control and unknown tokens) only where special parsing is on; the
    others (user-defined: whitespace runs, HTML tags) always. `lstrip`/`rstrip`: the
    whitespace beside it is dropped.
    """

    text: bytes
    id: int
    control: bool
    lstrip: bool = False
    rstrip: bool = False


class SpecialTokenIndex:
    """A vocabulary's special tokens, to find where llama.cpp splits them out of a text."""

    # A family of tokens sharing their first two bytes at least this large is looked up
    # at the places those bytes occur, not searched for one token at a time.
    _FAMILY = 16

    def __init__(self, tokens: Sequence[SpecialToken]) -> None:
        # llama.cpp tries them longest first (ties by id here; its sort is not stable).
        self.tokens = tuple(sorted((t for t in tokens if t.text), key=lambda t: -len(t.text)))
        families: dict[bytes, list[bytes]] = {}
        for token in self.tokens:
            families.setdefault(token.text[:2], []).append(token.text)
        self._families = {
            prefix: (frozenset(texts), tuple(sorted({len(text) for text in texts})))
            for prefix, texts in families.items()
        }
        self._prefixes = {
            parse: tuple(dict.fromkeys(t.text[:2] for t in self.tokens if parse or not t.control))
            for parse in (True, False)
        }

    def more_matches_than(self, data: bytes, limit: int, *, parse_special: bool) -> bool:
        """Whether `data` may hold more than `limit` matches (an upper bound, cheap)."""
        bound = 0
        for prefix in self._prefixes[parse_special]:
            # Each match begins with one of these prefixes, at a place of its own.
            bound += data.count(prefix)
            if bound > limit:
                return True
        return False

    def _present(self, data: bytes) -> set[bytes]:
        """The tokens' texts that occur in `data`."""
        found: set[bytes] = set()
        for prefix, (texts, lengths) in self._families.items():
            if prefix not in data:
                continue
            if len(texts) < self._FAMILY:
                found.update(text for text in texts if text in data)
                continue
            pos = 0
            while (at := data.find(prefix, pos)) >= 0:
                found.update(
                    data[at : at + size] for size in lengths if data[at : at + size] in texts
                )
                pos = at + 1
        return found

    def find(
        self, data: bytes, control_spans: Sequence[tuple[int, int]]
    ) -> list[tuple[int, int, SpecialToken]]:
        """Where llama.cpp's tokenizer splits special tokens out of `data`: (start, end,
        token) by start, the range taking in the whitespace a strip attribute drops.

        The same matches as llama.cpp's `tokenizer_st_partition` (each token in turn,
        longest first, takes its leftmost occurrences in the text no earlier token took),
        in time linear in the text and the matches, where llama.cpp's is quadratic in the
        matches. A control token counts only inside one of `control_spans` (sorted,
        disjoint [start, end) byte ranges).
        """
        taken = bytearray(len(data))
        matches: list[tuple[int, int, SpecialToken]] = []
        starts = [start for start, _end in control_spans]
        anywhere = self._present(data)
        # A control token counted must lie inside one span: one of the spans holds it.
        in_spans = self._present(b"\0".join(data[start:end] for start, end in control_spans))

        def allowed(start: int, end: int) -> bool:
            index = bisect.bisect_right(starts, start) - 1
            return index >= 0 and end <= control_spans[index][1]

        for token in self.tokens:
            if token.text not in (in_spans if token.control else anywhere):
                continue
            pos = 0
            while (start := data.find(token.text, pos)) >= 0:
                end = start + len(token.text)
                clash = taken.find(1, start, end)
                if clash >= 0:
                    # Any later occurrence starting before the taken byte overlaps it too.
                    pos = taken.find(0, clash)
                    if pos < 0:
                        break
                    continue
                if token.control and not allowed(start, end):
                    pos = start + 1
                    continue
                if token.lstrip:
                    while start > 0 and not taken[start - 1] and data[start - 1 : start].isspace():
                        start -= 1
                if token.rstrip:
                    while end < len(data) and not taken[end] and data[end : end + 1].isspace():
                        end += 1
                taken[start:end] = b"\x01" * (end - start)
                matches.append((start, end, token))
                pos = end
        matches.sort(key=lambda match: match[0])
        return matches


@dataclass(frozen=True, slots=True)
class _VocabFacts:
    """What one pass over the vocabulary tells: its special tokens and token sizes."""

    specials: SpecialTokenIndex
    max_token_bytes: int | None


class GgufTokenizer:
    """The vocabulary of a GGUF file, through llama.cpp (no weights loaded)."""

    def __init__(self, path: Path) -> None:
        self._lc, self._model = load_model(path, vocab_only=True)
        lc = self._lc
        if not self._model:
            raise ValueError(f"cannot read a GGUF vocabulary from {path}")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self._add_bos = bool(lc.llama_vocab_get_add_bos(self._vocab))
        self._add_eos = bool(lc.llama_vocab_get_add_eos(self._vocab))
        # Each token's piece, read from llama.cpp once: text (control tokens as nothing,
        # as llama_detokenize renders them) and, for logprobs, named control tokens.
        self._text_pieces: dict[int, bytes] = {}
        self._named_pieces: dict[int, bytes] = {}

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

    @property
    def max_token_bytes(self) -> int | None:
        return self._facts.max_token_bytes

    @property
    def special_tokens(self) -> SpecialTokenIndex:
        """The tokens llama.cpp splits out of text before tokenizing the rest."""
        return self._facts.specials

    @functools.cached_property
    def _facts(self) -> _VocabFacts:
        # One pass over the vocabulary (~0.5 s for 262k tokens), only where it is needed.
        lc, vocab = self._lc, self._vocab
        specials: list[SpecialToken] = []
        longest = 0
        for token in range(int(lc.llama_vocab_n_tokens(vocab))):
            text = bytes(lc.llama_vocab_get_text(vocab, token))
            longest = max(longest, len(text))
            attr = int(lc.llama_vocab_get_attr(vocab, token))
            if text and attr & (_ATTR_CONTROL | _ATTR_USER_DEFINED | _ATTR_UNKNOWN):
                specials.append(
                    SpecialToken(
                        text,
                        token,
                        control=bool(attr & (_ATTR_CONTROL | _ATTR_UNKNOWN)),
                        lstrip=bool(attr & _ATTR_LSTRIP),
                        rstrip=bool(attr & _ATTR_RSTRIP),
                    )
                )
        # A vocabulary entry's text is never shorter than the input it matches: SPM writes
        # a space as "▁" (3 bytes), byte-level BPE a byte as 1-2 bytes, a byte token as
        # "<0x0A>". Other kinds normalize text (T5, BERT), and a strip attribute lets a
        # token swallow any run of whitespace: no bound then.
        bounded = int(lc.llama_vocab_type(vocab)) in (_VOCAB_SPM, _VOCAB_BPE) and not any(
            s.lstrip or s.rstrip for s in specials
        )
        return _VocabFacts(SpecialTokenIndex(specials), longest if bounded else None)

    def _token_text(self, token: int) -> str:
        if token < 0:  # LLAMA_TOKEN_NULL: the vocabulary has no such token
            return ""
        return bytes(self._lc.llama_vocab_get_text(self._vocab, token)).decode("utf-8")

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        # A raw prompt: control-token texts in it (e.g. <start_of_turn>) are the tokens.
        return self._encode([Segment(text, special=True)], add_special)

    def encode_segments(self, segments: Sequence[Segment]) -> list[int]:
        return self._encode(segments, add_special=False)

    def _encode(self, segments: Sequence[Segment], add_special: bool) -> list[int]:
        data = b"".join(segment.text.encode("utf-8") for segment in segments)
        add_bos = add_special and self._add_bos
        parse = {segment.special for segment in segments if segment.text}
        parse_special = parse != {False}
        if len(parse) <= 1 and not self.special_tokens.more_matches_than(
            data, FAST_PATH_SPECIALS, parse_special=parse_special
        ):
            return self._tokenize(data, add_bos, parse_special=parse_special)
        # Many special tokens, or parsing on in some segments only: find them here. Control
        # tokens go in as ids; the text between them is tokenized without special parsing
        # (user-defined tokens are still split out there), at most FAST_PATH_SPECIALS
        # matches per call, each call ending where one of them ends, as llama.cpp would.
        spans: list[tuple[int, int]] = []
        offset = 0
        for segment in segments:
            size = len(segment.text.encode("utf-8"))
            if segment.special and size:
                spans.append((offset, offset + size))
            offset += size
        ids = [int(self._lc.llama_vocab_bos(self._vocab))] if add_bos else []
        run_start, run_matches = 0, 0
        for start, end, token in self.special_tokens.find(data, spans):
            if token.control:
                ids += self._tokenize(data[run_start:start], False, parse_special=False)
                ids.append(token.id)
                run_start, run_matches = end, 0
                continue
            run_matches += 1
            if run_matches >= FAST_PATH_SPECIALS:
                ids += self._tokenize(data[run_start:end], False, parse_special=False)
                run_start, run_matches = end, 0
        ids += self._tokenize(data[run_start:], False, parse_special=False)
        if add_bos and self._add_eos:
            ids.append(self.end_id)
        return ids

    def _tokenize(self, data: bytes, add_special: bool, *, parse_special: bool) -> list[int]:
        """One llama_tokenize call (add_special: the vocabulary's BOS/EOS)."""
        if not data and not add_special:
            return []
        capacity = len(data) + 8
        out = (ctypes.c_int32 * capacity)()
        n = self._lc.llama_tokenize(
            self._vocab, data, len(data), out, capacity, add_special, parse_special
        )
        if n < 0:  # pragma: no cover - capacity is always enough for byte-level vocabularies
            raise ValueError(f"tokenization needs {-n} slots")
        return list(out[:n])

    def token_bytes(self, token: int) -> bytes:
        piece = self._named_pieces.get(token)
        if piece is None:
            piece = self._named_pieces[token] = self._piece(token, special=True)
        return piece

    def text_bytes(self, ids: Sequence[int]) -> bytes:
        # The same bytes as llama_detokenize (no space prefix removed, no clean-up: the
        # vocabularies served here have none at the start of a text, e.g. Gemma 3).
        pieces = self._text_pieces
        try:
            return b"".join([pieces[token] for token in ids])
        except KeyError:
            for token in ids:
                if token not in pieces:
                    pieces[token] = self._piece(token, special=False)
            return b"".join([pieces[token] for token in ids])

    def _piece(self, token: int, *, special: bool) -> bytes:
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def decode(self, ids: Sequence[int]) -> str:
        return self._detokenize(ids, unparse_special=False)

    def _detokenize(self, ids: Sequence[int], *, unparse_special: bool) -> str:
        """llama_detokenize (nothing removed); `unparse_special`: control tokens as their
        texts, else as nothing."""
        if not ids:
            return ""
        arr = (ctypes.c_int32 * len(ids))(*ids)
        size = len(ids) * 32 + 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lc.llama_detokenize(
                self._vocab, arr, len(ids), buf, size, False, unparse_special
            )
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n + 16

    @property
    def vocab_size(self) -> int:
        return int(self._lc.llama_vocab_n_tokens(self._vocab))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        lc, vocab = self._lc, self._vocab
        return [
            bytes(lc.llama_vocab_get_text(vocab, token)).decode("utf-8", errors="replace")
            for token in ids
        ]

    def spell(self, ids: Sequence[int]) -> str:
        return self._detokenize(ids, unparse_special=True)


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

    @property
    def max_token_bytes(self) -> int | None:
        # Its normalizer may fold text (NFKC, accents stripped): no bound holds in general.
        return None

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special))

    def encode_segments(self, segments: Sequence[Segment]) -> list[int]:
        # Each segment apart: split_special_tokens reads special tokens' texts as text.
        ids: list[int] = []
        for segment in segments:
            if segment.text:
                ids += self._tok.encode(
                    segment.text, add_special_tokens=False, split_special_tokens=not segment.special
                )
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return str(
            self._tok.decode(
                list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [str(token) for token in self._tok.convert_ids_to_tokens(list(ids))]

    def spell(self, ids: Sequence[int]) -> str:
        return str(
            self._tok.decode(
                list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        )

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        texts = self._tok.batch_decode(
            [list(ids) for ids in batch],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        return [str(text) for text in texts]

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


# Ids of a sequence that a response carries before its new ones (tensorrt_llm's
# `context_ids`): more than the tokens of the at most 3 bytes of a character that a stream
# may hold back (a few control tokens, which render as nothing, may sit between them), and
# context for merges across the boundary.
DETOKENIZE_WINDOW = 8
# The most bytes of an unfinished UTF-8 character (its 4th byte would finish it).
_HELD_BYTES = 3


def text_delta(
    tokenizer: Tokenizer, context: Sequence[int], new: Sequence[int], final: bool
) -> str:
    """Text that the ids `new` add to a stream whose earlier responses carried the ids
    before them, of which `context` are the last few (up to DETOKENIZE_WINDOW).

    Stateless, so any postprocessing instance can serve any response, and each response
    costs the same however long the sequence is. A trailing unfinished character is held
    back until the ids that finish it arrive (it comes with them), or the sequence ends
    (`final`: it comes as U+FFFD).
    """
    return text_deltas(tokenizer, [(context, new, final)])[0]


def text_deltas(
    tokenizer: Tokenizer, items: Sequence[tuple[Sequence[int], Sequence[int], bool]]
) -> list[str]:
    """`text_delta` of each (context, new, final), in one pass: a tokenizer of byte
    pieces cuts the bytes exactly; any other decodes all the ids in one call where it can.
    """
    if isinstance(tokenizer, PieceTokenizer):
        text_bytes = tokenizer.text_bytes
        return [
            _bytes_delta(text_bytes(context), text_bytes(new), final)
            for context, new, final in items
        ]
    lists: list[Sequence[int]] = []
    for context, new, _final in items:
        lists += [context, [*context, *new]]
    texts = _decode_many(tokenizer, lists)
    return [
        _text_after(texts[2 * i], texts[2 * i + 1], final)
        for i, (_context, _new, final) in enumerate(items)
    ]


def _bytes_delta(context: bytes, new: bytes, final: bool) -> str:
    # What an incremental UTF-8 decoder fed every byte so far holds back is decided by
    # the last 3 (the start of an unfinished character, and what of it came): take them
    # up again in front of the new bytes, and hold back what still does not finish.
    tail = context[-_HELD_BYTES:]
    _, used = codecs.utf_8_decode(tail, "replace", False)
    text, _ = codecs.utf_8_decode(tail[used:] + new, "replace", final)
    return text


def _decode_many(tokenizer: Tokenizer, lists: Sequence[Sequence[int]]) -> list[str]:
    if isinstance(tokenizer, BatchDecoder):
        return tokenizer.decode_batch(lists)
    return [tokenizer.decode(ids) if ids else "" for ids in lists]


def _text_after(before: str, text: str, final: bool) -> str:
    """The text `text` adds after `before` (the decode of the context alone), whose
    trailing unfinished characters (U+FFFD) earlier responses held back."""
    before = _complete(before)
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
