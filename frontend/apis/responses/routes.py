"""The OpenAI Responses API: POST /v1/responses.

A protocol layer only: a body becomes the same validated chat request as
/v1/chat/completions (frontend.apis.responses.mapping), runs through the same
GenerationService (API keys, rate limits, admission, metrics, the Triton call), and is
rendered as a response object or its typed events (frontend.apis.responses.rendering).
Errors take OpenAI's body shape (the /v1 prefix's).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from frontend.apis.api import Api
from frontend.apis.openai.errors import openai_error_docs
from frontend.apis.responses.document import describe_responses
from frontend.apis.responses.mapping import echo, responses_request
from frontend.apis.responses.protocol import STREAM_EVENTS, ResponseObject, ResponsesRequest
from frontend.apis.responses.rendering import ResponseRendering, response_events
from frontend.deps import CallerDep, ContextDep, FrontendState, StateDep
from frontend.event_stream import (
    answer_response,
    collect,
    event_stream_response,
    start_generation,
    start_stream,
)
from frontend.validation import ValidatedRequest, check_text

router = APIRouter(prefix="/v1", tags=["responses"])


_ERRORS = openai_error_docs(
    {
        400: "The body is not JSON, or asks for what this server does not implement: `param` "
        "names it (store true, previous_response_id, background true, conversation, "
        "include, reasoning, top_logprobs, tools, a tool_choice other than none or auto, "
        "input items other than messages, content parts other than text, a text.format "
        "schema keyword structured outputs do not enforce, ...).",
        422: "A value breaks a rule: the message names the parameter, the limit and the value "
        "(also an input with more tokens than the model accepts).",
    }
)


def _stream_doc() -> dict[str, Any]:
    """The 200: a response object, or with stream true Server-Sent Events each named by
    its event's type, whose `data` is that event as JSON (no `[DONE]`)."""
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in STREAM_EVENTS]}
    event = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "description": "The event's type."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": payload,
            },
        },
    }
    return {
        "description": "With stream false: the response. With stream true: text/event-stream "
        "of typed events, response.created first and response.completed (or "
        "response.incomplete, or response.failed) last.",
        "content": {"text/event-stream": {"schema": event}},
    }


def _validate(body: ResponsesRequest, state: FrontendState) -> ValidatedRequest:
    check_text(body)
    return responses_request(body, state.validator, state.settings.served_model_name)


@router.post(
    "/responses",
    response_model=ResponseObject,
    responses={200: _stream_doc(), **_ERRORS},
    summary="Answer an input, rendered with the model's chat template (OpenAI Responses)",
)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    state: StateDep,
    caller: CallerDep,
    context: ContextDep,
) -> Response:
    validated = await state.service.validated(caller, partial(_validate, body, state))
    served = state.settings.served_model_name
    rendering = ResponseRendering(
        f"resp_{context.request_id}", int(state.clock()), echo(body, served)
    )
    end_user = body.user or body.safety_identifier
    _, events = start_generation(state, validated, caller, context, end_user)
    if not validated.stream:
        collected = await collect(request, events)
        return answer_response(rendering.answer(collected, int(state.clock())), collected)
    admitted, first = await start_stream(request, events)
    stream = response_events(first, events, rendering, state.metrics, state.clock)
    return event_stream_response(stream, admitted.rate_limit_headers)


API = Api(
    router,
    stream_models=STREAM_EVENTS,
    ruled_schemas=("ResponsesRequest",),
    document=describe_responses,
)
