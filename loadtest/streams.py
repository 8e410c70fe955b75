"""Response bodies of the frontend's APIs, checked and timed event by event.

`/generate` answers JSON, or Server-Sent Events of `delta`, `done` (with usage) and
`[DONE]`; `/v1/chat/completions` streams OpenAI `chat.completion.chunk`s, the usage in a
last chunk when asked for with `stream_options.include_usage`. A body that breaks its
contract (no text, no usage, an error event, no end marker) raises BodyError.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, TypeGuard


class BodyError(Exception):
    """A 200 response whose body breaks the API's contract."""


@dataclass(frozen=True)
class Completion:
    """What one request produced; token times are `time.perf_counter()` readings."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    first_token_at: float | None = None
    last_token_at: float | None = None


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _usage_counts(usage: object, total_key: str) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) from a usage object, checked for consistency."""
    if not isinstance(usage, dict):
        raise BodyError("no usage in the response")
    prompt, completion, total = (
        usage.get(k) for k in ("prompt_tokens", "completion_tokens", total_key)
    )
    if not (_count(prompt) and _count(completion) and _count(total)):
        raise BodyError("usage lacks token counts")
    if completion < 1:
        raise BodyError("usage reports no completion tokens")
    if total != prompt + completion:
        raise BodyError(f"usage {total_key} is not prompt_tokens + completion_tokens")
    return prompt, completion


def _check_text(text: str) -> None:
    if not text.strip():
        raise BodyError("empty completion text")


def _json_object(payload: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        raise BodyError("a body or event that is not JSON") from None
    if not isinstance(value, dict):
        raise BodyError("a body or event that is not a JSON object")
    return value


def generate_response(body: bytes) -> Completion:
    """Check a non-streamed /generate answer."""
    data = _json_object(body)
    text = data.get("text")
    if not isinstance(text, str):
        raise BodyError("no text in the response")
    _check_text(text)
    prompt, completion = _usage_counts(data, "tokens_used")
    return Completion(text, prompt, completion, str(data.get("finish_reason", "")))


def error_type(body: bytes) -> str:
    """The `error.type` of an error body, for grouping failures; "" when there is none."""
    try:
        data = _json_object(body)
    except BodyError:
        return ""
    error = data.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else ""


class SseStream(ABC):
    """Feed an SSE body line by line with each line's arrival time; then read `result()`."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._done = False

    def feed(self, line: str, at: float) -> None:
        """One line of the body (without its newline), received at `at`."""
        line = line.rstrip("\r")
        if not line.startswith("data:"):
            return  # blank separators, comments, `event:`/`id:` fields
        payload = line[len("data:") :].strip()
        if self._done:
            raise BodyError("data after [DONE]")
        if payload == "[DONE]":
            self._done = True
            return
        self._event(_json_object(payload), at)

    def _text(self, text: str, at: float) -> None:
        if text:
            self._pieces.append(text)
            if self._first_at is None:
                self._first_at = at
            self._last_at = at

    @abstractmethod
    def _event(self, event: dict[str, Any], at: float) -> None: ...

    @abstractmethod
    def _finish(self) -> tuple[int, int, str]:
        """(prompt_tokens, completion_tokens, finish_reason) once the stream ended."""

    def result(self) -> Completion:
        """The completion; BodyError when the stream broke its contract."""
        if not self._done:
            raise BodyError("the stream ended without [DONE]")
        text = "".join(self._pieces)
        _check_text(text)
        prompt, completion, reason = self._finish()
        return Completion(text, prompt, completion, reason, self._first_at, self._last_at)


class GenerateStream(SseStream):
    """/generate with stream=true: `delta` events, one `done` with usage, `[DONE]`."""

    def __init__(self) -> None:
        super().__init__()
        self._done_event: dict[str, Any] | None = None

    def _event(self, event: dict[str, Any], at: float) -> None:
        kind = event.get("type")
        if kind == "delta":
            text = event.get("text")
            if not isinstance(text, str):
                raise BodyError("a delta event without text")
            self._text(text, at)
        elif kind == "done":
            self._done_event = event
        elif kind == "error":
            error = event.get("error")
            name = error.get("type") if isinstance(error, dict) else None
            raise BodyError(f"error event in the stream: {name or 'unknown'}")
        else:
            raise BodyError(f"unknown event type {kind!r}")

    def _finish(self) -> tuple[int, int, str]:
        if self._done_event is None:
            raise BodyError("no done event before [DONE]")
        prompt, completion = _usage_counts(self._done_event.get("usage"), "tokens_used")
        return prompt, completion, str(self._done_event.get("finish_reason", ""))


class ChatStream(SseStream):
    """/v1/chat/completions with stream=true and stream_options.include_usage."""

    def __init__(self) -> None:
        super().__init__()
        self._usage: object = None
        self._finish_reason: str | None = None

    def _event(self, event: dict[str, Any], at: float) -> None:
        if "error" in event:
            error = event["error"]
            name = error.get("type") if isinstance(error, dict) else None
            raise BodyError(f"error event in the stream: {name or 'unknown'}")
        if event.get("object") != "chat.completion.chunk":
            raise BodyError("a chunk that is not a chat.completion.chunk")
        if event.get("usage") is not None:
            self._usage = event["usage"]
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise BodyError("a chunk without choices")
        for choice in choices:
            if not isinstance(choice, dict):
                raise BodyError("a choice that is not an object")
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                self._text(content, at)
            if choice.get("finish_reason"):
                self._finish_reason = str(choice["finish_reason"])

    def _finish(self) -> tuple[int, int, str]:
        if self._finish_reason is None:
            raise BodyError("no chunk with a finish_reason")
        prompt, completion = _usage_counts(self._usage, "total_tokens")
        return prompt, completion, self._finish_reason
