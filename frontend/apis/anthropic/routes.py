"""Anthropic's Messages API: POST /v1/messages and POST /v1/messages/count_tokens.

A protocol layer only: bodies become the same validated request as the other APIs'
(frontend.apis.anthropic.mapping), run through the same GenerationService (API keys, also
as `x-api-key`; rate limits, overload protection, metrics, the Triton call), and are
rendered as Anthropic's message or its stream's events (frontend.apis.anthropic.rendering).
Errors keep the frontend's statuses in Anthropic's body shape. The `anthropic-version`
and `anthropic-beta` headers are accepted and not read: every field a version or beta
adds that this server does not implement is refused by name.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from frontend.apis.anthropic.document import describe_anthropic
from frontend.apis.anthropic.errors import anthropic_error_body
from frontend.apis.anthropic.mapping import count_tokens_request, messages_request
from frontend.apis.anthropic.protocol import (
    AnthropicContentBlockDeltaEvent,
    AnthropicContentBlockStartEvent,
    AnthropicContentBlockStopEvent,
    AnthropicCountTokensRequest,
    AnthropicErrorResponse,
    AnthropicMessage,
    AnthropicMessageDeltaEvent,
    AnthropicMessagesRequest,
    AnthropicMessageStartEvent,
    AnthropicMessageStopEvent,
    AnthropicPingEvent,
    AnthropicTokensCount,
)
from frontend.apis.anthropic.rendering import MessageFormat
from frontend.apis.anthropic.stops import StopSequenceScanner, stop_at_sequences
from frontend.apis.api import Api
from frontend.deps import CallerDep, ContextDep, StateDep
from frontend.event_stream import (
    answer_response,
    collect,
    event_stream_response,
    rendered_events,
    start_generation,
    start_stream,
)
from frontend.tokenization import charge_request, checked, tokenize

ANTHROPIC_PREFIX = "/v1/messages"
router = APIRouter(prefix="/v1", tags=["anthropic"])
# The stream's events (each also names itself in its `event:` line).
STREAM_EVENTS: tuple[type[BaseModel], ...] = (
    AnthropicMessageStartEvent,
    AnthropicPingEvent,
    AnthropicContentBlockStartEvent,
    AnthropicContentBlockDeltaEvent,
    AnthropicContentBlockStopEvent,
    AnthropicMessageDeltaEvent,
    AnthropicMessageStopEvent,
    AnthropicErrorResponse,
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": AnthropicErrorResponse,
        "description": "The body is not JSON, or asks for what this server does not "
        "implement (thinking, images and documents, server tools, output_config, "
        "mcp_servers, container, ...): the message names the field "
        "(type invalid_request_error).",
    },
    401: {
        "model": AnthropicErrorResponse,
        "description": "API key missing or unknown: send x-api-key: <key> or "
        "Authorization: Bearer <key> (type authentication_error).",
    },
    404: {
        "model": AnthropicErrorResponse,
        "description": "Unknown model (type not_found_error).",
    },
    413: {
        "model": AnthropicErrorResponse,
        "description": "The body exceeds the configured size (type request_too_large).",
    },
    422: {
        "model": AnthropicErrorResponse,
        "description": "A value breaks a rule: the message names the field, the limit and "
        "the value (type invalid_request_error; Anthropic would answer 400).",
    },
    429: {
        "model": AnthropicErrorResponse,
        "description": "Requests or tokens per minute exceeded; see Retry-After "
        "(type rate_limit_error).",
    },
    502: {
        "model": AnthropicErrorResponse,
        "description": "The model server failed the request (type api_error).",
    },
    503: {
        "model": AnthropicErrorResponse,
        "description": "At capacity, the model server unavailable or its queue full, or "
        "this server shutting down before the answer; see Retry-After (type "
        "overloaded_error; Anthropic's status for it is 529).",
    },
    504: {
        "model": AnthropicErrorResponse,
        "description": "The model server did not answer in time (type timeout_error).",
    },
}


def _stream_doc() -> dict[str, Any]:
    """A 200 that is the message, or with stream true Anthropic's named events."""
    payload = {
        "anyOf": [{"$ref": f"#/components/schemas/{model.__name__}"} for model in STREAM_EVENTS]
    }
    data = {"type": "string", "contentMediaType": "application/json", "contentSchema": payload}
    event_schema = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {"event": {"type": "string"}, "data": data},
    }
    return {
        "description": "With stream false: the message. With stream true: text/event-stream "
        "of events named by their type (`event: message_start` ...), each `data:` the event "
        "as JSON: message_start, ping, content_block_start, content_block_delta, "
        "content_block_stop per block, message_delta, message_stop; or an error event.",
        "content": {"text/event-stream": {"schema": event_schema}},
    }


@router.post(
    "/messages",
    response_model=AnthropicMessage,
    responses={200: _stream_doc(), **_ERRORS},
    summary="Answer a conversation (Anthropic Messages)",
)
async def messages(
    body: AnthropicMessagesRequest,
    request: Request,
    state: StateDep,
    caller: CallerDep,
    context: ContextDep,
) -> Response:
    served = state.settings.served_model_name
    validated = await state.service.validated(
        caller, partial(messages_request, body, state.validator, served)
    )
    end_user = body.metadata.user_id if body.metadata else None
    record, events = start_generation(state, validated, caller, context, end_user)
    scanner = None
    if body.stop_sequences:
        scanner = StopSequenceScanner(body.stop_sequences)
        events = stop_at_sequences(events, scanner, record)
    output = MessageFormat(f"msg_{context.request_id}", body.model, record, scanner)
    if not validated.stream:
        collected = await collect(request, events)
        return answer_response(output.answer(collected), collected)
    admitted, first = await start_stream(request, events)
    stream = rendered_events(
        first,
        events,
        output.frames,
        partial(output.error_frame, request_id=context.request_id),
        state.metrics,
    )
    return event_stream_response(stream, admitted.rate_limit_headers)


@router.post(
    "/messages/count_tokens",
    response_model=AnthropicTokensCount,
    responses={code: _ERRORS[code] for code in (400, 401, 404, 413, 422, 429, 502, 503, 504)},
    summary="Count a message's input tokens (Anthropic count_tokens)",
)
async def count_tokens(
    body: AnthropicCountTokensRequest, state: StateDep, caller: CallerDep, context: ContextDep
) -> Response:
    """The prompt's tokens as a message with the same input reports them (`input_tokens`):
    the chat template applied and tokenized by Triton's preprocessing model; nothing is
    generated, so it counts one request and no tokens against the caller's budgets."""
    served = state.settings.served_model_name
    validated = await checked(
        state.limiter,
        state.metrics,
        caller,
        partial(count_tokens_request, body, state.validator, served),
    )
    headers = await charge_request(state.limiter, state.metrics, caller)
    tokenized = await tokenize(state.pool, validated, context.request_id)
    return JSONResponse(
        AnthropicTokensCount(input_tokens=tokenized.count).model_dump(mode="json"),
        headers=headers,
    )


API = Api(
    router,
    stream_models=STREAM_EVENTS,
    error_prefix=ANTHROPIC_PREFIX,
    error_body=anthropic_error_body,
    ruled_schemas=("AnthropicMessagesRequest", "AnthropicCountTokensRequest"),
    document=describe_anthropic,
)
