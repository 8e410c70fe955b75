"""POST /generate: the /generate wire format over GenerationService.

Non-streaming requests answer one JSON body. Streaming requests send Server-Sent
Events (see frontend.event_stream): one `delta` per piece of text, a `done` event with
usage and finish reason, then `data: [DONE]`, or an `error` event after a late failure.
With `logprobs`, the body and each delta also carry their tokens' log-probabilities
(OpenAI chat's entries); without, the shapes have no such member at all.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from frontend.apis.api import Api
from frontend.apis.generate.protocol import (
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    GenerateUsage,
)
from frontend.apis.openai.logprobs import token_logprob_entries, token_logprobs
from frontend.apis.openai.mapping import output_format
from frontend.deps import CallerDep, ContextDep, StateDep
from frontend.errors import FrontendError, error_body
from frontend.event_stream import (
    ErrorRenderer,
    EventRenderer,
    answer_response,
    collect,
    event_stream_response,
    sse_events,
    start_generation,
    start_stream,
    stream_doc,
)
from frontend.service import (
    Completed,
    GenerationEvent,
    TextDelta,
    text_finish,
)
from frontend.sse import json_frame, sse
from frontend.validation import (
    RequestedGeneration,
    RequestValidator,
    ValidatedRequest,
    check_text,
    sampling_inputs,
)

router = APIRouter(tags=["generation"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "The body is not JSON, or response_format's schema uses a JSON Schema "
        "keyword structured outputs do not enforce (`field` names it).",
    },
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
        "description": "At capacity, the model server unavailable or its queue full, or "
        "this server shutting down before the answer; see Retry-After.",
    },
    504: {"model": ErrorResponse, "description": "The model server did not answer in time."},
}
STREAM_EVENTS = (DeltaEvent, DoneEvent, ErrorEvent)
_STREAM_DOC = stream_doc(
    "With stream false: the completion. With stream true: text/event-stream of "
    "`data:` lines holding DeltaEvent, then DoneEvent, then `[DONE]` (or an ErrorEvent).",
    STREAM_EVENTS,
)


def _usage(completed: Completed) -> GenerateUsage:
    usage = completed.usage
    return GenerateUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tokens_used=usage.total_tokens,
        cached_tokens=usage.cached_tokens,
    )


def _renderer(request_id: str, logprobs: bool) -> EventRenderer:
    def render(event: GenerationEvent) -> bytes:
        if isinstance(event, TextDelta):
            # DeltaEvent's members, without a model per delta (frontend.sse); logprobs
            # only when asked for (the model's dump leaves the null out).
            if logprobs:
                return json_frame(
                    {"type": "delta", "text": event.text,
                     "logprobs": token_logprob_entries(event.logprobs)}
                )  # fmt: skip
            return json_frame({"type": "delta", "text": event.text})
        if isinstance(event, Completed):
            done = DoneEvent(
                finish_reason=text_finish(event.finish_reason),
                usage=_usage(event),
                model_version=event.model_version,
                request_id=request_id,
            )
            return sse(done.model_dump_json())
        return b""

    return render


def _error_event(request_id: str) -> ErrorRenderer:
    def render(error: FrontendError) -> str:
        return ErrorEvent.model_validate(error_body(error, request_id)).model_dump_json()

    return render


def _validated(body: GenerateRequest, validator: RequestValidator) -> ValidatedRequest:
    check_text(body)
    requested = RequestedGeneration(
        max_tokens=body.max_tokens,
        sampling=sampling_inputs(body),
        stop=body.stop,
        stream=body.stream,
        response_format=output_format(body.response_format),
        logprobs=body.logprobs,
    )
    return validator.completion(body.prompt, requested)


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
    validated = await state.service.validated(caller, partial(_validated, body, state.validator))
    _, events = start_generation(state, validated, caller, context)
    request_id = context.request_id
    logprobs = validated.logprobs is not None

    if not validated.stream:
        collected = await collect(request, events)
        usage = collected.completed.usage
        answer = GenerateResponse(
            text=collected.text,
            tokens_used=usage.total_tokens,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            finish_reason=text_finish(collected.completed.finish_reason),
            model_version=collected.completed.model_version,
            request_id=request_id,
            logprobs=token_logprobs(collected.choices[0].logprobs) if logprobs else None,
        )
        return answer_response(answer, collected, exclude_none=True)

    admitted, first = await start_stream(request, events)
    stream = sse_events(
        first, events, _renderer(request_id, logprobs), _error_event(request_id), state.metrics
    )
    return event_stream_response(stream, admitted.rate_limit_headers)


API = Api(router, stream_models=STREAM_EVENTS, ruled_schemas=("GenerateRequest",))
