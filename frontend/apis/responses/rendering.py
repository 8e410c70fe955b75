"""Response objects and typed stream events from the service's events.

A response's output is a list of items: the assistant's message (one output_text part)
and, with function tools, a `function_call` item per call, in the order generated. A
Responses stream is Server-Sent Events each named by its type (`event: <type>`), with a
`sequence_number` counting from 0, in OpenAI's order: response.created,
response.in_progress; for a message response.output_item.added (empty),
response.content_part.added, response.output_text.delta for each piece of text,
response.output_text.done, response.content_part.done, response.output_item.done; for a
call response.output_item.added, response.function_call_arguments.delta ...,
response.function_call_arguments.done, response.output_item.done; then
response.completed, or response.incomplete when max_output_tokens cut the output. There
is no `[DONE]`. A failure after the stream began ends it with response.failed, whose
response holds the error and the output as far as it came.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

from pydantic_core import to_json

from frontend.apis.responses.mapping import Echo
from frontend.apis.responses.protocol import (
    ErrorCode,
    FunctionCallItem,
    IncompleteDetails,
    InputTokensDetails,
    ItemStatus,
    OutputItem,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ResponseError,
    ResponseObject,
    ResponseStatus,
    ResponseTextConfig,
    ResponseUsage,
)
from frontend.errors import FrontendError, error_kind
from frontend.event_stream import Collected, rendered_events
from frontend.metrics import FrontendMetrics
from frontend.rate_limit import Clock
from frontend.service import (
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

# A message holds one text part.
CONTENT_INDEX = 0


def usage(figures: Usage) -> ResponseUsage:
    """The service's usage in the Responses API's terms (no reasoning tokens apart)."""
    return ResponseUsage(
        input_tokens=figures.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=figures.cached_tokens),
        output_tokens=figures.completion_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
        total_tokens=figures.total_tokens,
    )


def error_code(error: FrontendError) -> ErrorCode:
    """The Responses API's error code for a failure after the stream began."""
    status = error_kind(error).status
    if status == 429:
        return "rate_limit_exceeded"
    if status >= 500:
        return "server_error"
    return "invalid_prompt"


def response_status(reason: FinishReason) -> ResponseStatus:
    """incomplete when max_output_tokens cut the output, else completed."""
    return "incomplete" if reason == "length" else "completed"


def event_frame(event: dict[str, Any]) -> bytes:
    """One Server-Sent Event named by the event's type, its JSON as the data."""
    name: str = event["type"]
    return b"event: " + name.encode() + b"\ndata: " + to_json(event) + b"\n\n"


def _message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def _call_id() -> str:
    return f"fc_{uuid.uuid4().hex}"


class ResponseRendering:
    """One response: the whole object (stream false), or its stream's events."""

    def __init__(self, ident: str, created_at: int, echo: Echo) -> None:
        self.ident = ident
        self.created_at = created_at
        self.echo = echo
        self._sequence = 0
        self._started = False
        # The output as it stands: each item's latest state, by output index.
        self._items: list[OutputItem] = []
        self._message: int | None = None  # output index of the message being streamed
        self._pieces: list[str] = []  # its text so far
        self._calls: dict[int, int] = {}  # call number → output index
        self._arguments: dict[int, list[str]] = {}  # output index → arguments so far

    def response(
        self,
        status: ResponseStatus,
        output: list[OutputItem],
        *,
        figures: Usage | None = None,
        completed_at: int | None = None,
        error: ResponseError | None = None,
    ) -> ResponseObject:
        """The response object in `status`, holding `output`."""
        echo = self.echo
        return ResponseObject(
            id=self.ident,
            created_at=self.created_at,
            status=status,
            completed_at=completed_at,
            error=error,
            incomplete_details=(
                IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None
            ),
            instructions=echo.instructions,
            max_output_tokens=echo.max_output_tokens,
            model=echo.model,
            output=output,
            parallel_tool_calls=echo.parallel_tool_calls,
            temperature=echo.temperature,
            top_p=echo.top_p,
            text=ResponseTextConfig(format=echo.text_format),
            tool_choice=echo.tool_choice,
            tools=echo.tools,
            usage=usage(figures) if figures is not None else None,
            user=echo.user,
            safety_identifier=echo.safety_identifier,
            metadata=echo.metadata,
        )

    def answer(self, collected: Collected, completed_at: int) -> ResponseObject:
        """The whole response (stream false): the message (when there is text, or no
        call), then the calls."""
        completed = collected.completed
        choice = collected.choices[0]
        status = response_status(completed.finish_reason)
        output: list[OutputItem] = []
        if choice.text or not choice.tool_calls:
            # Cut by max_output_tokens, the message is incomplete unless calls followed it.
            cut = status == "incomplete" and not choice.tool_calls
            output.append(
                OutputMessage(
                    id=_message_id(),
                    status="incomplete" if cut else "completed",
                    content=[OutputText(text=choice.text)],
                )
            )
        output.extend(
            FunctionCallItem(
                id=_call_id(),
                call_id=call.id,
                name=call.name,
                arguments=call.arguments,
                status="completed" if call.complete else "incomplete",
            )
            for call in choice.tool_calls
        )
        return self.response(status, output, figures=completed.usage, completed_at=completed_at)

    # --- streaming ------------------------------------------------------------------------

    def _event(self, event_type: str, **members: Any) -> bytes:
        frame = event_frame({"type": event_type, "sequence_number": self._sequence, **members})
        self._sequence += 1
        return frame

    def _lifecycle(self, event_type: str, response: ResponseObject) -> bytes:
        return self._event(event_type, response=response.model_dump(mode="json"))

    def _item_event(self, event_type: str, index: int) -> bytes:
        item = self._items[index].model_dump(mode="json")
        return self._event(event_type, output_index=index, item=item)

    def _part_event(self, event_type: str, index: int, text: str) -> bytes:
        item_id = self._items[index].id
        part = OutputText(text=text).model_dump(mode="json")
        return self._event(
            event_type,
            item_id=item_id,
            output_index=index,
            content_index=CONTENT_INDEX,
            part=part,
        )

    def frames(self, event: GenerationEvent, completed_at: int) -> bytes:
        """The events (encoded) that `event` becomes; the first call opens the stream."""
        out = b""
        if not self._started:
            self._started = True
            in_progress = self.response("in_progress", [])
            out = self._lifecycle("response.created", in_progress) + self._lifecycle(
                "response.in_progress", in_progress
            )
        if isinstance(event, TextDelta):
            if event.text:
                out += self._text(event.text)
        elif isinstance(event, ToolCallStart):
            out += self._close_message("completed") + self._start_call(event)
        elif isinstance(event, ToolCallArguments):
            index = self._calls[event.call]
            self._arguments[index].append(event.text)
            item_id = self._items[index].id
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=index,
                delta=event.text,
            )
        elif isinstance(event, ToolCallEnd):
            out += self._end_call(event)
        elif isinstance(event, ChoiceFinished):
            status: ItemStatus = "incomplete" if event.finish_reason == "length" else "completed"
            if not self._items:
                out += self._open_message()  # a response of no text still has its message
            out += self._close_message(status)
        elif isinstance(event, Completed):
            status_now = response_status(event.finish_reason)
            response = self.response(
                status_now, list(self._items), figures=event.usage, completed_at=completed_at
            )
            out += self._lifecycle(f"response.{status_now}", response)
        return out

    def _open_message(self) -> bytes:
        index = len(self._items)
        self._items.append(OutputMessage(id=_message_id(), status="in_progress", content=[]))
        self._message = index
        self._pieces = []
        return self._item_event("response.output_item.added", index) + self._part_event(
            "response.content_part.added", index, ""
        )

    def _text(self, text: str) -> bytes:
        out = b"" if self._message is not None else self._open_message()
        index = self._message
        assert index is not None
        self._pieces.append(text)
        return out + self._event(
            "response.output_text.delta",
            item_id=self._items[index].id,
            output_index=index,
            content_index=CONTENT_INDEX,
            delta=text,
            logprobs=[],
        )

    def _close_message(self, status: ItemStatus) -> bytes:
        index = self._message
        if index is None:
            return b""
        self._message = None
        text = "".join(self._pieces)
        item_id = self._items[index].id
        self._items[index] = OutputMessage(
            id=item_id, status=status, content=[OutputText(text=text)]
        )
        return (
            self._event(
                "response.output_text.done",
                item_id=item_id,
                output_index=index,
                content_index=CONTENT_INDEX,
                text=text,
                logprobs=[],
            )
            + self._part_event("response.content_part.done", index, text)
            + self._item_event("response.output_item.done", index)
        )

    def _start_call(self, event: ToolCallStart) -> bytes:
        index = len(self._items)
        self._items.append(
            FunctionCallItem(
                id=_call_id(),
                call_id=event.id,
                name=event.name,
                arguments="",
                status="in_progress",
            )
        )
        self._calls[event.call] = index
        self._arguments[index] = []
        return self._item_event("response.output_item.added", index)

    def _call_item(self, index: int, status: ItemStatus) -> FunctionCallItem:
        item = self._items[index]
        assert isinstance(item, FunctionCallItem)
        arguments = "".join(self._arguments[index])
        return item.model_copy(update={"arguments": arguments, "status": status})

    def _end_call(self, event: ToolCallEnd) -> bytes:
        index = self._calls[event.call]
        item = self._items[index] = self._call_item(
            index, "completed" if event.complete else "incomplete"
        )
        return self._event(
            "response.function_call_arguments.done",
            item_id=item.id,
            output_index=index,
            arguments=item.arguments,
        ) + self._item_event("response.output_item.done", index)

    def _unfinished(self) -> list[OutputItem]:
        """The output as it stands, each item not done marked incomplete."""
        items = list(self._items)
        for index, item in enumerate(items):
            if item.status != "in_progress":
                continue
            if isinstance(item, FunctionCallItem):
                items[index] = self._call_item(index, "incomplete")
            else:
                text = OutputText(text="".join(self._pieces))
                items[index] = item.model_copy(update={"status": "incomplete", "content": [text]})
        return items

    def failed(self, error: FrontendError) -> bytes:
        """response.failed: the stream broke off; the output as far as it came."""
        opening = b""
        if not self._started:
            self._started = True
            in_progress = self.response("in_progress", [])
            opening = self._lifecycle("response.created", in_progress)
        response = self.response(
            "failed",
            self._unfinished(),
            error=ResponseError(code=error_code(error), message=error.message),
        )
        return opening + self._lifecycle("response.failed", response)


def response_events(
    first: GenerationEvent,
    events: AsyncGenerator[GenerationEvent, None],
    rendering: ResponseRendering,
    metrics: FrontendMetrics,
    clock: Clock,
) -> AsyncGenerator[bytes, None]:
    """The stream's bytes from `first` on: each event's frames, to response.completed (or
    .incomplete), or response.failed when the generation fails; `events` closed however
    it ends (a client gone cancels the generation)."""
    return rendered_events(
        first,
        events,
        lambda event: rendering.frames(event, int(clock())),
        rendering.failed,
        metrics,
    )
