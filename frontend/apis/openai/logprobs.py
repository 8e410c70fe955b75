"""Token log-probabilities in the wire shapes: OpenAI chat's (which /generate shares) and
the completions API's.

The engine gives each token's text as UTF-8 bytes, and a token may hold part of a
character. Such a token reads as OpenAI writes it, `bytes:` then its bytes escaped
(`bytes:\\xe2\\x80`), while `bytes` always lists the values themselves; a whole-character
token reads as its text.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterable
from typing import Any

from frontend.apis.openai.protocol import ChatCompletionTokenLogprob
from llm_stack.ensemble_contract import EnsembleTokenLogprob

# OpenAI's log-probability for a token too unlikely to tell; JSON has no -Infinity.
UNLIKELY = -9999.0


def token_text(token: bytes) -> str:
    """The token as a string: its text, or `bytes:` and its escaped bytes when they are
    not whole UTF-8 characters."""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(
            chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in token
        )


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else UNLIKELY


def token_logprob_entries(entries: Iterable[EnsembleTokenLogprob]) -> list[dict[str, Any]]:
    """Chat's `logprobs.content` (and /generate's `logprobs`) for these tokens, as the
    JSON values a stream encodes (members in ChatCompletionTokenLogprob's order)."""
    return [
        {
            "token": token_text(entry.token),
            "logprob": _finite(entry.logprob),
            "bytes": list(entry.token),
            "top_logprobs": [
                {"token": token_text(text), "logprob": _finite(value), "bytes": list(text)}
                for text, value in entry.top
            ],
        }
        for entry in entries
    ]


def token_logprobs(entries: Iterable[EnsembleTokenLogprob]) -> list[ChatCompletionTokenLogprob]:
    """The same entries as models, for whole answers."""
    return [
        ChatCompletionTokenLogprob.model_validate(entry) for entry in token_logprob_entries(entries)
    ]


class CompletionLogprobsWriter:
    """The completions API's `logprobs` of one choice, a piece at a time as it streams.

    `text_offset` counts characters from the start of the prompt, as OpenAI's does
    without echo; a token that completes a character starts where that character does.
    """

    def __init__(self, prompt_chars: int) -> None:
        self._chars = prompt_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, entries: Iterable[EnsembleTokenLogprob]) -> dict[str, Any]:
        """The logprobs of the next tokens of the choice: CompletionLogprobs' members,
        as the JSON values a stream encodes."""
        tokens: list[str] = []
        logprobs: list[float] = []
        tops: list[dict[str, float]] = []
        offsets: list[int] = []
        for entry in entries:
            text = token_text(entry.token)
            logprob = _finite(entry.logprob)
            top = {token_text(t): _finite(v) for t, v in entry.top}
            # OpenAI lists the sampled token too, so up to logprobs + 1 entries.
            top.setdefault(text, logprob)
            tokens.append(text)
            logprobs.append(logprob)
            tops.append(top)
            offsets.append(self._chars)
            self._chars += len(self._decoder.decode(entry.token))
        return {
            "tokens": tokens,
            "token_logprobs": logprobs,
            "top_logprobs": tops,
            "text_offset": offsets,
        }
