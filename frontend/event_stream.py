"""What every generation route does with the service's events, whatever its API.

A plain request collects the events into each choice's text and the Completed event. A streamed one
waits for the first text (so admission and model errors still get a proper status),
then sends Server-Sent Events rendered by the route, then `data: [DONE]`; a failure
after the first byte becomes one last error event and the stream ends without [DONE].
While the request runs, a client that goes away cancels the generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive

from frontend.deps import FrontendState
from frontend.errors import ClientClosedRequestError, FrontendError, error_kind
from frontend.metrics import FrontendMetrics
from frontend.request_context import RequestContext
from frontend.service import (
    Admitted,
    Caller,
    Completed,
    GenerationEvent,
    GenerationRecord,
    TextDelta,
    ToolCallArguments,
    ToolCallEnd,
    ToolCallStart,
)
from frontend.sse import DONE, DONE_DATA, sse
from frontend.validation import ValidatedRequest
from llm_stack.ensemble_contract import EnsembleTokenLogprob
from llm_stack.tool_calls import ToolCall

T = TypeVar("T")

Events = AsyncGenerator[GenerationEvent, None]
# Event → the Server-Sent Events it becomes, encoded (none: b""; several: one after the
# other, so that they go out in one write).
EventRenderer = Callable[[GenerationEvent], bytes]
ErrorRenderer = Callable[[FrontendError], str]


@dataclass(frozen=True, slots=True)
class CollectedChoice:
    """One choice's whole text (its content, with tools), its tokens' log-probabilities
    when asked for, and the tool calls it made (in order; the last may be incomplete)."""

    text: str
    logprobs: tuple[EnsembleTokenLogprob, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Collected:
    """A whole generation: its admission, its choices (by index) and how it ended."""

    admitted: Admitted
    choices: tuple[CollectedChoice, ...]
    completed: Completed

    @property
    def text(self) -> str:
        """The first choice's text (the only one without n)."""
        return self.choices[0].text


def start_generation(
    state: FrontendState,
    validated: ValidatedRequest,
    caller: Caller,
    context: RequestContext,
    end_user: str | None = None,
) -> tuple[GenerationRecord, Events]:
    """The service's events for `validated`, with the record the request's log line and
    metrics read (kept in `context`, with the end user and, when allowed, the prompt)."""
    record = GenerationRecord(caller.key_id)
    context.generation = record
    context.end_user = end_user
    if state.settings.log_prompts:
        context.prompt = validated.input_text
    return record, state.service.generate(validated, caller, context.request_id, record)


def answer_response(answer: BaseModel, collected: Collected, **dump: Any) -> JSONResponse:
    """A whole answer as JSON, with the rate limit's headers of its admission."""
    return JSONResponse(
        answer.model_dump(mode="json", **dump), headers=collected.admitted.rate_limit_headers
    )


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work` in this task; a watcher cancels it if the client disconnects first."""
    current = asyncio.current_task()
    assert current is not None
    client_gone = False

    async def watch() -> None:
        nonlocal client_gone
        await _wait_for_disconnect(receive)
        client_gone = True
        current.cancel()

    # The watcher runs only while this task waits inside `work`, so its cancel lands there.
    watcher = asyncio.create_task(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not client_gone:
            raise  # cancelled from outside (shutdown): not ours to absorb
        current.uncancel()
        raise ClientClosedRequestError from None
    finally:
        watcher.cancel()


async def _collect(events: Events) -> Collected:
    admitted: Admitted | None = None
    pieces: dict[int, list[str]] = {}
    logprobs: dict[int, list[EnsembleTokenLogprob]] = {}
    # By choice, then call number: id, name, the arguments' pieces, complete.
    calls: dict[int, dict[int, tuple[str, str, list[str], list[bool]]]] = {}
    async for event in events:
        if isinstance(event, TextDelta):
            pieces.setdefault(event.index, []).append(event.text)
            logprobs.setdefault(event.index, []).extend(event.logprobs)
        elif isinstance(event, ToolCallStart):
            calls.setdefault(event.index, {})[event.call] = (event.id, event.name, [], [False])
        elif isinstance(event, ToolCallArguments):
            calls[event.index][event.call][2].append(event.text)
        elif isinstance(event, ToolCallEnd):
            calls[event.index][event.call][3][0] = event.complete
        elif isinstance(event, Admitted):
            admitted = event
        elif isinstance(event, Completed):
            assert admitted is not None
            choices = tuple(
                CollectedChoice(
                    "".join(pieces.get(i, ())),
                    tuple(logprobs.get(i, ())),
                    tuple(
                        ToolCall(call_id, name, "".join(arguments), done[0])
                        for _, (call_id, name, arguments, done) in sorted(calls.get(i, {}).items())
                    ),
                )
                for i in range(len(event.finish_reasons))
            )
            return Collected(admitted, choices, event)
    raise AssertionError("the service ends every generation with Completed or an error")


async def collect(request: Request, events: Events) -> Collected:
    """Run the generation to its end (cancelled if the client leaves); closes `events`."""
    try:
        return await _unless_disconnected(request.receive, _collect(events))
    finally:
        await events.aclose()


async def start_stream(request: Request, events: Events) -> tuple[Admitted, GenerationEvent]:
    """Admission and the first event after it; `events` is closed if this fails."""

    async def prime() -> tuple[Admitted, GenerationEvent]:
        admitted = await anext(events)
        assert isinstance(admitted, Admitted)
        return admitted, await anext(events)

    try:
        return await _unless_disconnected(request.receive, prime())
    except BaseException:
        await events.aclose()
        raise


def stream_doc(description: str, events: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """OpenAPI entry for a 200 that is JSON, or a stream of `events` when `stream` is true.

    Before OpenAPI 3.2 an event stream's schema describes one event; each `data:` holds one
    of `events` as JSON, the last one `[DONE]`. The models must be components of the
    document (frontend.openapi adds the ones no route returns as JSON).
    """
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{event.__name__}"} for event in events]}
    data = {
        "anyOf": [
            {"const": DONE_DATA},
            {"type": "string", "contentMediaType": "application/json", "contentSchema": payload},
        ]
    }
    event_schema = {"type": "object", "required": ["data"], "properties": {"data": data}}
    return {"description": description, "content": {"text/event-stream": {"schema": event_schema}}}


async def rendered_events(
    first: GenerationEvent,
    events: Events,
    render: EventRenderer,
    render_failure: Callable[[FrontendError], bytes],
    metrics: FrontendMetrics,
    *,
    end: bytes = b"",
) -> AsyncGenerator[bytes, None]:
    """The stream's bytes: rendered events from `first` on, the Completed event's frames
    followed by `end`; a failure becomes `render_failure`'s bytes, the stream's last.
    `events` is closed however it ends (a client gone cancels the generation)."""
    try:
        event = first
        while True:
            frames = render(event)
            done = isinstance(event, Completed)
            if done:
                frames += end
            if frames:
                yield frames
            if done:
                return
            event = await anext(events)
    except FrontendError as error:
        metrics.rejected.labels(error_kind(error).type).inc()
        yield render_failure(error)
    finally:
        await events.aclose()


def sse_events(
    first: GenerationEvent,
    events: Events,
    render: EventRenderer,
    render_error: ErrorRenderer,
    metrics: FrontendMetrics,
) -> AsyncIterator[bytes]:
    """The stream's bytes: rendered events from `first` on, then [DONE] (or an error)."""
    return rendered_events(
        first, events, render, lambda error: sse(render_error(error)), metrics, end=DONE
    )


def event_stream_response(
    body: AsyncIterator[bytes], headers: Mapping[str, str]
) -> StreamingResponse:
    """A text/event-stream response that proxies pass through unbuffered."""
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
