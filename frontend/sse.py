"""Server-Sent Event frames, encoded once each, without a pydantic model per chunk.

A stream sends thousands of chunks whose JSON differs only in their choices. Building
and validating a model for each, then dumping it, cost more than the rest of the frame;
here the members that stay the same for the stream (id, object, created, model, usage
null) are rendered once, by the stream's own model, and each chunk encodes only its
choices with pydantic-core's encoder: the bytes a model dump would give (the same
escapes, the same number forms), for a fraction of the work.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

DONE_DATA = "[DONE]"
DONE = f"data: {DONE_DATA}\n\n".encode()
_DATA = b"data: "
_END = b"\n\n"
_CHOICES = b'"choices":[]'


def sse(payload: str | bytes) -> bytes:
    """One Server-Sent Event carrying `payload` (JSON text)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return _DATA + data + _END


def json_frame(value: Any) -> bytes:
    """One event carrying `value` (plain dicts, lists, strings and numbers) as JSON."""
    return _DATA + to_json(value) + _END


class ChoicesFrame:
    """The frames of a stream's chunks, which differ only in their `choices`.

    `empty` is a chunk of the stream rendered with no choices, as the stream would
    render any chunk; each frame puts its choices where that chunk's `[]` stands.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, empty: str) -> None:
        # A `"` in a string is escaped, so `"choices":[]` is found only as the member.
        head, found, tail = empty.encode().partition(_CHOICES)
        if not found:
            raise ValueError("the chunk has no empty choices member")
        self._head = _DATA + head + b'"choices":'
        self._tail = tail + _END

    def frame(self, choices: list[dict[str, Any]]) -> bytes:
        """The event for a chunk holding `choices` (dicts with the members in the
        order the choice's model declares them)."""
        return self._head + to_json(choices) + self._tail
