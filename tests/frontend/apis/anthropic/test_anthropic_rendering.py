"""The service's events as Anthropic's message and stream events, read back with the SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from frontend import errors as e
from frontend.apis.anthropic.errors import anthropic_error_body
from frontend.apis.anthropic.rendering import MessageFormat, tool_input, tool_use_id
from frontend.apis.anthropic.stops import StopSequenceScanner
from frontend.event_stream import Collected, CollectedChoice
from frontend.service import (
    Admitted,
    ChoiceFinished,
    Completed,
    FinishReason,
    GenerationEvent,
    GenerationRecord,
    TextDelta,
    ToolCallArguments,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from llm_stack.tool_calls import ToolCall

USAGE = Usage(prompt_tokens=11, completion_tokens=5, cached_tokens=4)
EVENTS = TypeAdapter(RawMessageStreamEvent)


def output(scanner: StopSequenceScanner | None = None) -> MessageFormat:
    record = GenerationRecord("k", prompt_tokens=11, completion_tokens=1)
    return MessageFormat("msg_1", "m", record, scanner)


def collected(text: str, finish: FinishReason, *calls: ToolCall) -> Collected:
    completed = Completed((finish,), USAGE, "1")
    return Collected(Admitted({}), (CollectedChoice(text, (), calls),), completed)


def frames(format_: MessageFormat, events: list[GenerationEvent]) -> list[tuple[str, Any]]:
    """The stream's events as (name, data)."""
    body = b"".join(format_.frames(event) for event in events).decode()
    out = []
    for frame in body.split("\n\n")[:-1]:
        name, data = frame.split("\n")
        out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


@pytest.mark.parametrize(
    ("finish", "matched", "reason"),
    [("stop", None, "end_turn"), ("length", None, "max_tokens"),
     ("tool_calls", None, "tool_use"), ("stop", "END", "stop_sequence")],
)  # fmt: skip
def test_stop_reasons_in_anthropics_terms(
    finish: FinishReason, matched: str | None, reason: str
) -> None:
    scanner = StopSequenceScanner(["END"])
    if matched:
        scanner.feed("xEND")
    message = output(scanner).answer(collected("x", finish))
    assert (message.stop_reason, message.stop_sequence) == (reason, matched)
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (11, 5)
    # The engine's cache figure is cut off with the generation a stop sequence ends.
    assert usage.cache_read_input_tokens == (None if matched else 4)


def test_the_message_holds_text_then_tool_use_blocks() -> None:
    calls = (
        ToolCall("call_abc", "f", '{"city": "Oslo"}'),
        ToolCall("call_def", "g", '{"city": "Ber', complete=False),
    )
    message = output().answer(collected("Let me see.", "length", *calls))
    assert [block.model_dump() for block in message.content] == [
        {"type": "text", "text": "Let me see."},
        {"type": "tool_use", "id": "toolu_abc", "name": "f", "input": {"city": "Oslo"}},
        # Cut by max_tokens: the partial JSON as the SDK reads a streamed one.
        {"type": "tool_use", "id": "toolu_def", "name": "g", "input": {}},
    ]
    assert output().answer(collected("", "stop")).content == []


def test_partial_inputs_read_as_the_sdk_reads_them() -> None:
    assert tool_input('{"a": 1, "b": [2, ') == {"a": 1, "b": [2]}
    assert tool_input('{"a": tr') == {}
    assert tool_input("") == {}
    assert tool_use_id("call_x1") == "toolu_x1"


def test_the_stream_is_anthropics_order_and_the_sdk_rebuilds_the_message() -> None:
    format_ = output()
    events: list[GenerationEvent] = [
        TextDelta("Let me"), TextDelta(""), TextDelta(" see."),
        ToolCallStart(0, 0, "call_abc", "f"), ToolCallArguments(0, 0, '{"city": '),
        ToolCallArguments(0, 0, '"Oslo"}'), ToolCallEnd(0, 0, complete=True),
        ChoiceFinished(0, "tool_calls"), Completed(("tool_calls",), USAGE, "1"),
    ]  # fmt: skip
    stream = frames(format_, events)
    names = [name for name, _ in stream]
    assert names == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert all(data["type"] == name for name, data in stream)
    start = stream[0][1]["message"]
    assert (start["content"], start["stop_reason"], start["usage"]["input_tokens"]) == (
        [],
        None,
        11,
    )
    assert [data.get("index") for _, data in stream[2:10]] == [0, 0, 0, 0, 1, 1, 1, 1]
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in stream:
        if name == "ping":
            continue
        snapshot = accumulate_event(
            event=EVENTS.validate_python(data), current_snapshot=snapshot, json_bufs=json_bufs
        )
    assert snapshot is not None
    call = ToolCall("call_abc", "f", '{"city": "Oslo"}')
    whole = output().answer(collected("Let me see.", "tool_calls", call))
    assert snapshot.model_dump(exclude_none=True) == whole.model_dump(exclude_none=True)


def test_a_stream_without_text_has_no_blocks() -> None:
    stream = frames(output(), [ChoiceFinished(0, "stop"), Completed(("stop",), USAGE, "1")])
    assert [name for name, _ in stream] == [
        "message_start",
        "ping",
        "message_delta",
        "message_stop",
    ]
    assert stream[2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert stream[2][1]["usage"] == {
        "output_tokens": 5, "input_tokens": 11, "cache_read_input_tokens": 4,
    }  # fmt: skip


def test_a_late_failure_is_an_error_event() -> None:
    frame = output().error_frame(e.TritonInternalError(), "r-1")
    name, data = frame.decode().split("\n")[:2]
    assert name == "event: error"
    assert json.loads(data.removeprefix("data: ")) == {
        "type": "error",
        "error": {"type": "api_error", "message": "the model server failed to process the request"},
        "request_id": "r-1",
    }


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (e.UnsupportedParameterError("thinking", "thinking is not supported"),
         "invalid_request_error"),
        (e.OutOfRangeError("temperature", 3.0, "0..1"), "invalid_request_error"),
        (e.UnknownApiKeyError(), "authentication_error"),
        (e.ModelNotFoundError("x", "m"), "not_found_error"),
        (e.BodyTooLargeError(10, 5), "request_too_large"),
        (e.RateLimitedError("requests", "slow down", {}), "rate_limit_error"),
        (e.OverloadedError(1), "overloaded_error"),
        (e.TritonTimeoutError(1.0), "timeout_error"),
        (e.TritonInternalError(), "api_error"),
        (e.InternalError(), "api_error"),
    ],
)  # fmt: skip
def test_error_types_by_status(error: e.FrontendError, kind: str) -> None:
    assert anthropic_error_body(error, "r") == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": "r",
    }
