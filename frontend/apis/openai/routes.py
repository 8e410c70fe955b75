"""The OpenAI API under /v1: models, completions and chat completions.

A protocol layer only: bodies become the same validated request as /generate
(frontend.apis.openai.mapping), run through the same GenerationService (API keys, rate
limits, overload protection, metrics, the Triton call), and are rendered as OpenAI
objects and chunks (frontend.apis.openai.rendering). Errors keep the frontend's statuses
in OpenAI's body shape.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from frontend.apis.api import Api
from frontend.apis.openai.document import describe_openai
from frontend.apis.openai.errors import openai_error_body
from frontend.apis.openai.mapping import chat_request, check_model, completion_request
from frontend.apis.openai.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    OpenAIErrorResponse,
)
from frontend.apis.openai.rendering import ChatFormat, CompletionFormat, OpenAIFormat
from frontend.deps import CallerDep, ContextDep, FrontendState, StateDep
from frontend.errors import FrontendError
from frontend.event_stream import (
    collect,
    event_stream_response,
    sse_events,
    start_stream,
    stream_doc,
)
from frontend.request_context import RequestContext
from frontend.service import Caller, GenerationRecord
from frontend.validation import ValidatedRequest, check_text

OPENAI_PREFIX = "/v1"
router = APIRouter(prefix=OPENAI_PREFIX, tags=["openai"])
# Models streamed as `data:` payloads that no route returns as JSON.
STREAM_EVENTS = (ChatCompletionChunk,)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OpenAIErrorResponse,
        "description": "The body is not JSON, or asks for a parameter this server does not "
        "implement (echo, best_of other than n, logit_bias, suffix, functions, tools other "
        "than functions; stop, logprobs or a JSON response_format beside tools), or a "
        "response_format or tool parameters schema with a JSON Schema keyword the grammar "
        "does not enforce: `param` names it (e.g. response_format.json_schema.schema."
        "properties.a.pattern, tools[0].function.parameters.properties.a.pattern).",
    },
    401: {
        "model": OpenAIErrorResponse,
        "description": "API key missing or unknown: send Authorization: Bearer <key>.",
    },
    404: {"model": OpenAIErrorResponse, "description": "Unknown model (code model_not_found)."},
    413: {"model": OpenAIErrorResponse, "description": "The body exceeds the configured size."},
    422: {
        "model": OpenAIErrorResponse,
        "description": "A value breaks a rule: the message names the parameter, the limit "
        "and the value (also a prompt with more tokens than the model accepts).",
    },
    429: {
        "model": OpenAIErrorResponse,
        "description": "Requests or tokens per minute exceeded; see Retry-After.",
    },
    502: {"model": OpenAIErrorResponse, "description": "The model server failed the request."},
    503: {
        "model": OpenAIErrorResponse,
        "description": "At capacity, the model server unavailable or its queue full, or "
        "this server shutting down before the answer; see Retry-After.",
    },
    504: {
        "model": OpenAIErrorResponse,
        "description": "The model server did not answer in time.",
    },
}


def _stream_doc(chunk: type[BaseModel]) -> dict[str, Any]:
    return stream_doc(
        f"With stream false: the answer. With stream true: text/event-stream of `data:` "
        f"lines holding {chunk.__name__} objects, then `[DONE]` (or an error object).",
        (chunk, OpenAIErrorResponse),
    )


def _card(state: FrontendState) -> ModelCard:
    settings = state.settings
    return ModelCard(
        id=settings.served_model_name,
        created=state.started_at,
        owned_by=settings.served_model_owner,
    )


@router.get(
    "/models",
    response_model=ModelList,
    responses={401: _ERRORS[401]},
    summary="The served model",
)
async def list_models(state: StateDep, _caller: CallerDep) -> ModelList:
    return ModelList(data=[_card(state)])


@router.get(
    "/models/{model_id:path}",
    response_model=ModelCard,
    responses={401: _ERRORS[401], 404: _ERRORS[404]},
    summary="One model, by id",
)
async def retrieve_model(model_id: str, state: StateDep, _caller: CallerDep) -> ModelCard:
    check_model(model_id, state.settings.served_model_name)
    return _card(state)


def _error_payload(error: FrontendError) -> str:
    return json.dumps(openai_error_body(error, ""))


async def _run(
    validated: ValidatedRequest,
    output: OpenAIFormat,
    request: Request,
    state: FrontendState,
    caller: Caller,
    context: RequestContext,
    user: str | None,
) -> Response:
    record = GenerationRecord(caller.key_id)
    context.generation = record
    context.end_user = user
    if state.settings.log_prompts:
        context.prompt = validated.input_text
    events = state.service.generate(validated, caller, context.request_id, record)
    if not validated.stream:
        collected = await collect(request, events)
        return JSONResponse(
            output.answer(collected).model_dump(mode="json"),
            headers=collected.admitted.rate_limit_headers,
        )
    admitted, first = await start_stream(request, events)
    stream = sse_events(first, events, output.frames, _error_payload, state.metrics)
    return event_stream_response(stream, admitted.rate_limit_headers)


def _completion(body: CompletionRequest, state: FrontendState) -> ValidatedRequest:
    check_text(body)
    check_model(body.model, state.settings.served_model_name)
    return completion_request(body, state.validator)


def _chat(body: ChatCompletionRequest, state: FrontendState) -> ValidatedRequest:
    check_text(body)
    check_model(body.model, state.settings.served_model_name)
    return chat_request(body, state.validator)


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses={200: _stream_doc(CompletionResponse), **_ERRORS},
    summary="Complete a prompt (OpenAI completions)",
)
async def completions(
    body: CompletionRequest,
    request: Request,
    state: StateDep,
    caller: CallerDep,
    context: ContextDep,
) -> Response:
    validated = await state.service.validated(caller, partial(_completion, body, state))
    output = CompletionFormat(
        f"cmpl-{context.request_id}",
        int(state.clock()),
        body.model,
        body.stream_options,
        logprobs=validated.logprobs is not None,
        prompt_chars=len(validated.prompt),
    )
    return await _run(validated, output, request, state, caller, context, body.user)


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={200: _stream_doc(ChatCompletionChunk), **_ERRORS},
    summary="Answer a conversation, rendered with the model's chat template (OpenAI chat)",
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    state: StateDep,
    caller: CallerDep,
    context: ContextDep,
) -> Response:
    validated = await state.service.validated(caller, partial(_chat, body, state))
    output = ChatFormat(
        f"chatcmpl-{context.request_id}",
        int(state.clock()),
        body.model,
        body.stream_options,
        logprobs=validated.logprobs is not None,
    )
    return await _run(validated, output, request, state, caller, context, body.user)


API = Api(
    router,
    stream_models=STREAM_EVENTS,
    error_prefix=OPENAI_PREFIX,
    error_body=openai_error_body,
    ruled_schemas=("CompletionRequest", "ChatCompletionRequest", "ChatMessageIn"),
    document=describe_openai,
)
