"""Checking and timing response bodies: /generate JSON and SSE, OpenAI chat chunks."""

from __future__ import annotations

import json

import pytest

from loadtest.streams import (
    BodyError,
    ChatStream,
    GenerateStream,
    SseStream,
    error_type,
    generate_response,
)


def _data(obj: object) -> str:
    return "data: " + (obj if isinstance(obj, str) else json.dumps(obj))


def _feed(stream: SseStream, lines: list[str]) -> None:
    for at, line in enumerate(lines):
        stream.feed(line, float(at))


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "tokens_used": 8}


def _generate_lines(usage: object = USAGE) -> list[str]:
    return [
        _data({"type": "delta", "text": ""}),
        "",
        _data({"type": "delta", "text": "Hello"}),
        "",
        ": keep-alive comment",
        _data({"type": "delta", "text": " world"}),
        "",
        _data({"type": "delta", "text": "!"}),
        _data({"type": "done", "finish_reason": "length", "usage": usage}),
        _data("[DONE]"),
        "",
    ]


def test_generate_stream_times_first_and_last_text() -> None:
    stream = GenerateStream()
    _feed(stream, _generate_lines())
    result = stream.result()
    assert result.text == "Hello world!"
    assert (result.prompt_tokens, result.completion_tokens) == (5, 3)
    assert result.finish_reason == "length"
    # The empty first delta is not the first token.
    assert (result.first_token_at, result.last_token_at) == (2.0, 7.0)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (_generate_lines()[:-2], "without \\[DONE\\]"),
        ([_data({"type": "delta", "text": "x"}), _data("[DONE]")], "no done event"),
        (_generate_lines({"prompt_tokens": 5}), "usage lacks"),
        (_generate_lines({**USAGE, "tokens_used": 9}), "not prompt_tokens \\+ completion"),
        (_generate_lines({**USAGE, "completion_tokens": 0, "tokens_used": 5}), "no completion"),
        (
            [
                _data({"type": "delta", "text": "  "}),
                _data({"type": "done", "finish_reason": "stop", "usage": USAGE}),
                _data("[DONE]"),
            ],
            "empty completion",
        ),
    ],
)
def test_generate_stream_contract_breaks(lines: list[str], message: str) -> None:
    stream = GenerateStream()
    _feed(stream, lines)
    with pytest.raises(BodyError, match=message):
        stream.result()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (_data({"type": "error", "error": {"type": "timeout", "message": "m"}}), "timeout"),
        (_data({"type": "mystery"}), "unknown event type"),
        (_data({"type": "delta"}), "without text"),
        ("data: {not json", "not JSON"),
        (_data([1, 2]), "not a JSON object"),
    ],
)
def test_generate_stream_bad_events_raise_at_once(line: str, message: str) -> None:
    stream = GenerateStream()
    with pytest.raises(BodyError, match=message):
        stream.feed(line, 0.0)


def test_data_after_done_is_refused() -> None:
    stream = GenerateStream()
    _feed(stream, _generate_lines())
    with pytest.raises(BodyError, match="after \\[DONE\\]"):
        stream.feed(_data({"type": "delta", "text": "late"}), 9.0)


def _chunk(content: str | None, finish: str | None = None, usage: object = None) -> str:
    choices = [] if content is None and finish is None else [
        {"index": 0, "delta": {} if content is None else {"content": content},
         "finish_reason": finish}
    ]  # fmt: skip
    return _data(
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": choices, "usage": usage}
    )  # fmt: skip


CHAT_USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def test_chat_stream_with_usage_chunk() -> None:
    stream = ChatStream()
    _feed(
        stream,
        [
            _chunk(""),  # the role-only first chunk carries no text
            _chunk("Bon"),
            _chunk("jour"),
            _chunk(None, "length"),
            _chunk(None, usage=CHAT_USAGE),
            _data("[DONE]"),
        ],
    )
    result = stream.result()
    assert result.text == "Bonjour"
    assert (result.prompt_tokens, result.completion_tokens) == (7, 2)
    assert result.finish_reason == "length"
    assert (result.first_token_at, result.last_token_at) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([_chunk("Hi"), _chunk(None, "stop"), _data("[DONE]")], "no usage"),
        ([_chunk("Hi"), _chunk(None, usage=CHAT_USAGE), _data("[DONE]")], "finish_reason"),
    ],
)
def test_chat_stream_contract_breaks(lines: list[str], message: str) -> None:
    stream = ChatStream()
    _feed(stream, lines)
    with pytest.raises(BodyError, match=message):
        stream.result()


def test_chat_stream_error_and_foreign_chunks() -> None:
    with pytest.raises(BodyError, match="rate_limited"):
        ChatStream().feed(_data({"error": {"type": "rate_limited"}}), 0.0)
    with pytest.raises(BodyError, match=r"not a chat\.completion\.chunk"):
        ChatStream().feed(_data({"object": "text_completion", "choices": []}), 0.0)


def test_generate_response() -> None:
    body = json.dumps({"text": "Paris.", "finish_reason": "stop", **USAGE}).encode()
    result = generate_response(body)
    assert (result.text, result.completion_tokens, result.finish_reason) == ("Paris.", 3, "stop")
    assert result.first_token_at is None
    with pytest.raises(BodyError, match="no text"):
        generate_response(json.dumps(USAGE).encode())
    with pytest.raises(BodyError, match="usage lacks"):
        generate_response(json.dumps({"text": "x", "prompt_tokens": True}).encode())


def test_error_type() -> None:
    assert error_type(b'{"error": {"type": "overloaded", "message": "m"}}') == "overloaded"
    assert error_type(b"<html>") == ""
    assert error_type(b'{"detail": "x"}') == ""
