"""POST /generate: the /generate wire format over GenerationService.

Non-streaming requests collect the service's events into one JSON body. Streaming
requests wait for the first text (so admission and model errors still get a proper
status), then send Server-Sent Events: one `delta` per piece of text, a `done` event
with usage and finish reason, then `data: [DONE]`. A failure after the first byte
becomes an `error` event, and the stream ends without [DONE].
While the request runs, a client that goes away cancels the generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive

from frontend.deps import CallerDep, ContextDep, StateDep
from frontend.errors import ClientClosedRequestError, FrontendError, error_body, error_kind
from frontend.metrics import FrontendMetrics
from frontend.protocol import (
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    Usage,
)
from frontend.service import Admitted, Completed, GenerationEvent, GenerationRecord, TextDelta

router = APIRouter(tags=["generation"])
T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not JSON."},
    401: {"model": ErrorResponse, "description": "API key missing or unknown (when keys are on)."},
    413: {"model": ErrorResponse, "description": "The body exceeds the configured size."},
    422: {
        "model": ErrorResponse,
        "description": "A field breaks a rule: the message names the field, the limit and "
        "the value (also a prompt with more tokens than the model accepts).",
    },
    429: {
        "model": ErrorResponse,
        "description": "Requests or tokens per minute exceeded; see Retry-After and "
        "X-RateLimit-Limit/Remaining/Reset.",
    },
    502: {"model": ErrorResponse, "description": "The model server failed the request."},
    503: {
        "model": ErrorResponse,
        "description": "At capacity, or the model server is unavailable or its queue is "
        "full; see Retry-After.",
    },
    504: {"model": ErrorResponse, "description": "The model server did not answer in time."},
}
_STREAM_DOC = {
    "description": "With stream false: the completion. With stream true: text/event-stream of "
    "`data:` lines holding DeltaEvent, then DoneEvent, then `[DONE]` (or an ErrorEvent).",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


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


async def _collect(
    events: AsyncGenerator[GenerationEvent, None],
) -> tuple[Admitted, str, Completed]:
    admitted: Admitted | None = None
    pieces: list[str] = []
    async for event in events:
        if isinstance(event, TextDelta):
            pieces.append(event.text)
        elif isinstance(event, Admitted):
            admitted = event
        else:
            assert admitted is not None
            return admitted, "".join(pieces), event
    raise AssertionError("the service ends every generation with Completed or an error")


def _usage(completed: Completed) -> Usage:
    usage = completed.usage
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tokens_used=usage.total_tokens,
    )


def _sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


async def _event_stream(
    first: GenerationEvent,
    events: AsyncGenerator[GenerationEvent, None],
    request_id: str,
    metrics: FrontendMetrics,
) -> AsyncIterator[bytes]:
    try:
        event = first
        while True:
            if isinstance(event, TextDelta):
                yield _sse(DeltaEvent(text=event.text).model_dump_json())
            elif isinstance(event, Completed):
                done = DoneEvent(
                    finish_reason=event.finish_reason,
                    usage=_usage(event),
                    model_version=event.model_version,
                    request_id=request_id,
                )
                yield _sse(done.model_dump_json())
                yield b"data: [DONE]\n\n"
                return
            event = await anext(events)
    except FrontendError as error:
        metrics.rejected.labels(error_kind(error).type).inc()
        yield _sse(ErrorEvent.model_validate(error_body(error, request_id)).model_dump_json())
    finally:
        await events.aclose()


@router.post(
    "/generate",
    response_model=GenerateResponse,
    responses={200: _STREAM_DOC, **_ERRORS},
    summary="Generate a completion (JSON or Server-Sent Events)",
)
async def generate(
    body: GenerateRequest,
    request: Request,
    state: StateDep,
    caller: CallerDep,
    context: ContextDep,
) -> Response:
    validated = state.validator.generation(
        prompt=body.prompt,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=body.stop,
        seed=body.seed,
        stream=body.stream,
    )
    record = GenerationRecord(caller.key_id)
    context.generation = record
    if state.settings.log_prompts:
        context.prompt = body.prompt
    events = state.service.generate(validated, caller, context.request_id, record)
    request_id = context.request_id

    if not validated.stream:
        try:
            admitted, text, completed = await _unless_disconnected(
                request.receive, _collect(events)
            )
        finally:
            await events.aclose()
        usage = completed.usage
        return JSONResponse(
            {
                "text": text,
                "tokens_used": usage.total_tokens,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "finish_reason": completed.finish_reason,
                "model_version": completed.model_version,
                "request_id": request_id,
            },
            headers=admitted.rate_limit_headers,
        )

    async def prime() -> tuple[Admitted, GenerationEvent]:
        admitted = await anext(events)
        assert isinstance(admitted, Admitted)
        return admitted, await anext(events)

    try:
        admitted, first = await _unless_disconnected(request.receive, prime())
    except BaseException:
        await events.aclose()
        raise
    return StreamingResponse(
        _event_stream(first, events, request_id, state.metrics),
        media_type="text/event-stream",
        headers={
            **admitted.rate_limit_headers,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
