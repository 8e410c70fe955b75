"""Response objects and stream events from hand-made service events, held to the shapes
of the official openai SDK's types (openai.types.responses)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from frontend.apis.responses.mapping import echo
from frontend.apis.responses.protocol import STREAM_EVENTS, ResponsesRequest
from frontend.apis.responses.rendering import ResponseRendering, response_events
from frontend.errors import TritonInternalError
from frontend.event_stream import Collected, CollectedChoice
from frontend.metrics import FrontendMetrics
from frontend.service import (
    Admitted,
    ChoiceFinished,
    Completed,
    FinishReason,
    GenerationEvent,
    TextDelta,
    ToolCallArguments,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from llm_stack.tool_calls import ToolCall

USAGE = Usage(prompt_tokens=9, completion_tokens=3, cached_tokens=4)
EVENTS = TypeAdapter(ResponseStreamEvent)
EVENT_NAMES = {
    name
    for model in STREAM_EVENTS
    for name in model.model_fields["type"].annotation.__args__  # type: ignore[union-attr]
}


def rendering(**fields: Any) -> ResponseRendering:
    body = ResponsesRequest.model_validate({"input": "Hi", **fields})
    return ResponseRendering("resp_1", 1_800_000_000, echo(body, "m"))


def as_sdk(value: dict[str, Any]) -> dict[str, Any]:
    """`value` with the one member the SDK's types require that this server cannot state
    (usage.input_tokens_details.cache_write_tokens: the prefix cache counts no writes)."""
    copy: dict[str, Any] = json.loads(json.dumps(value))
    response = copy.get("response", copy)
    usage = response.get("usage") if isinstance(response, dict) else None
    if usage:
        usage["input_tokens_details"]["cache_write_tokens"] = 0
    return copy


def completed(reason: FinishReason) -> Completed:
    return Completed((reason,), USAGE, "1")


@pytest.mark.parametrize(("reason", "status"), [("stop", "completed"), ("length", "incomplete")])
def test_the_answer_is_a_response_object(reason: FinishReason, status: str) -> None:
    collected = Collected(Admitted({}), (CollectedChoice(" Paris."),), completed(reason))
    answer = rendering(instructions="Be brief.", max_output_tokens=3, metadata={"k": "v"}).answer(
        collected, 1_800_000_001
    )
    dumped = answer.model_dump(mode="json")
    sdk = Response.model_validate(as_sdk(dumped))
    assert sdk.id == "resp_1"
    assert sdk.object == "response"
    assert sdk.status == status
    assert sdk.output_text == " Paris."
    [message] = sdk.output
    assert message.type == "message"
    assert message.status == status
    assert message.id.startswith("msg_")
    assert sdk.usage is not None
    assert (sdk.usage.input_tokens, sdk.usage.output_tokens, sdk.usage.total_tokens) == (9, 3, 12)
    assert sdk.usage.input_tokens_details.cached_tokens == 4
    assert sdk.usage.output_tokens_details.reasoning_tokens == 0
    assert (sdk.created_at, sdk.completed_at) == (1_800_000_000, 1_800_000_001)
    assert (sdk.instructions, sdk.max_output_tokens, sdk.metadata) == ("Be brief.", 3, {"k": "v"})
    assert (sdk.temperature, sdk.top_p, sdk.tools, sdk.tool_choice) == (1.0, 1.0, [], "auto")
    if status == "incomplete":
        assert sdk.incomplete_details is not None
        assert sdk.incomplete_details.reason == "max_output_tokens"
    else:
        assert sdk.incomplete_details is None
    assert "cache_write_tokens" not in dumped["usage"]["input_tokens_details"]


def parse(frames: bytes) -> list[dict[str, Any]]:
    """The events of a Responses stream, each checked against its `event:` name."""
    events = []
    for block in frames.decode().split("\n\n"):
        if not block:
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: "), block
        assert data_line.startswith("data: "), block
        event = json.loads(data_line[len("data: ") :])
        assert event["type"] == name_line[len("event: ") :]
        events.append(event)
    return events


def stream(output: ResponseRendering, events: list[GenerationEvent]) -> list[dict[str, Any]]:
    return parse(b"".join(output.frames(event, 1_800_000_002) for event in events))


@pytest.mark.parametrize(("reason", "status"), [("stop", "completed"), ("length", "incomplete")])
def test_stream_events_come_in_openais_order_and_shapes(reason: FinishReason, status: str) -> None:
    output = rendering()
    events = stream(
        output,
        [TextDelta(" Par"), TextDelta(""), TextDelta("is."), ChoiceFinished(0, reason),
         completed(reason)],
    )  # fmt: skip
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        f"response.{status}",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENTS.validate_python(as_sdk(event))  # each is one of the SDK's event types
        assert event["type"] in EVENT_NAMES  # and one of the document's
    created, in_progress, added, part_added, *deltas, text_done, part_done, item_done, last = events
    for lifecycle in (created, in_progress):
        assert lifecycle["response"]["status"] == "in_progress"
        assert lifecycle["response"]["output"] == []
        assert lifecycle["response"]["usage"] is None
    item_id = added["item"]["id"]
    assert item_id.startswith("msg_")
    assert added["item"] == {
        "id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
        "content": [],
    }  # fmt: skip
    assert part_added["part"] == {"type": "output_text", "text": "", "annotations": []}
    assert [d["delta"] for d in deltas] == [" Par", "is."]
    assert {d["item_id"] for d in deltas} == {item_id}
    assert text_done["text"] == part_done["part"]["text"] == " Paris."
    assert item_done["item"]["status"] == status
    assert item_done["item"]["content"] == [part_done["part"]]
    final = last["response"]
    assert final["id"] == created["response"]["id"] == "resp_1"
    assert final["status"] == status
    assert final["output"] == [item_done["item"]]
    assert final["usage"]["input_tokens"] == 9
    assert final["completed_at"] == 1_800_000_002


def test_a_response_without_text_still_opens_and_closes_its_message() -> None:
    events = stream(rendering(), [ChoiceFinished(0, "stop"), completed("stop")])
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


async def test_a_failure_after_the_start_ends_with_response_failed() -> None:
    async def generation() -> Any:
        yield TextDelta("Half")
        raise TritonInternalError

    events = generation()
    first = await anext(events)
    output = rendering()
    metrics = FrontendMetrics()
    frames = b"".join(
        [frame async for frame in response_events(first, events, output, metrics, lambda: 1.0)]
    )
    parsed = parse(frames)
    assert [e["type"] for e in parsed][-2:] == ["response.output_text.delta", "response.failed"]
    failed = parsed[-1]
    EVENTS.validate_python(as_sdk(failed))
    assert failed["sequence_number"] == len(parsed) - 1
    response = failed["response"]
    assert response["status"] == "failed"
    assert response["error"] == {
        "code": "server_error", "message": "the model server failed to process the request",
    }  # fmt: skip
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "Half"


ARGUMENTS = ('{"city":', ' "Paris"}')


def call_events(call: int, call_id: str, *, complete: bool = True) -> list[GenerationEvent]:
    return [
        ToolCallStart(0, call, call_id, "get_weather"),
        *(ToolCallArguments(0, call, piece) for piece in ARGUMENTS),
        ToolCallEnd(0, call, complete),
    ]


def test_streamed_calls_are_function_call_items_after_the_message() -> None:
    events = stream(
        rendering(tools=[{"type": "function", "name": "get_weather"}]),
        [TextDelta("Checking."), *call_events(0, "call_a"), *call_events(1, "call_b"),
         ChoiceFinished(0, "tool_calls"), completed("tool_calls")],
    )  # fmt: skip
    for event in events:
        EVENTS.validate_python(as_sdk(event))
        assert event["type"] in EVENT_NAMES
    call_stream = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [e["type"] for e in events][2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        *call_stream,
        *call_stream,
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    message, first, second = final["output"]
    assert message["type"] == "message"
    assert message["content"][0]["text"] == "Checking."
    for index, (item, call_id) in enumerate(((first, "call_a"), (second, "call_b")), start=1):
        assert item["type"] == "function_call"
        assert item["id"].startswith("fc_")
        assert (item["call_id"], item["name"], item["status"]) == (
            call_id, "get_weather", "completed"
        )  # fmt: skip
        assert item["arguments"] == "".join(ARGUMENTS)
        deltas = [
            e for e in events
            if e["type"] == "response.function_call_arguments.delta" and e["item_id"] == item["id"]
        ]  # fmt: skip
        assert [d["delta"] for d in deltas] == list(ARGUMENTS)
        assert {d["output_index"] for d in deltas} == {index}
    assert final["tools"] == [{"type": "function", "name": "get_weather"}]


def test_a_call_cut_by_max_output_tokens_is_incomplete() -> None:
    events = stream(
        rendering(), [*call_events(0, "call_a", complete=False), ChoiceFinished(0, "length"),
                      completed("length")],
    )  # fmt: skip
    assert [e["type"] for e in events][2] == "response.output_item.added"
    final = events[-1]
    assert final["type"] == "response.incomplete"
    [item] = final["response"]["output"]  # no message: the output was a call only
    assert (item["type"], item["status"]) == ("function_call", "incomplete")


@pytest.mark.parametrize(("text", "items"), [("", ["function_call"]), ("So:", ["message",
                         "function_call"])])  # fmt: skip
def test_the_answer_lists_the_message_then_the_calls(text: str, items: list[str]) -> None:
    call = ToolCall("call_a", "get_weather", "".join(ARGUMENTS))
    collected = Collected(
        Admitted({}), (CollectedChoice(text, tool_calls=(call,)),), completed("tool_calls")
    )
    answer = rendering().answer(collected, 1).model_dump(mode="json")
    sdk = Response.model_validate(as_sdk(answer))
    assert sdk.status == "completed"
    assert [item.type for item in sdk.output] == items
    last = sdk.output[-1]
    assert last.type == "function_call"
    assert (last.call_id, last.name, last.arguments, last.status) == (
        "call_a", "get_weather", '{"city": "Paris"}', "completed"
    )  # fmt: skip


async def test_a_client_gone_mid_stream_closes_the_generation() -> None:
    closed = []

    async def generation() -> Any:
        try:
            yield TextDelta("one")
            yield TextDelta("two")
        finally:
            closed.append(True)

    events = generation()
    first = await anext(events)
    stream = response_events(first, events, rendering(), FrontendMetrics(), lambda: 1.0)
    await anext(stream)  # the opening events and the first delta went out
    await stream.aclose()  # the server stops the response when the client leaves
    assert closed == [True]
