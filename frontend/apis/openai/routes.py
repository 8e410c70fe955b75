"""The OpenAI API under /v1: models, completions and chat completions.

A protocol layer only: bodies become the same validated request as /generate
(frontend.apis.openai.mapping), run through the same GenerationService (API keys, rate
limits, overload protection, metrics, the Triton call), and are rendered as OpenAI
objects and chunks (frontend.apis.openai.rendering). Errors keep the frontend's statuses
in OpenAI's body shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from frontend.apis.api import Api
from frontend.apis.openai.document import describe_openai
from frontend.apis.openai.errors import openai_error_body, openai_error_docs
from frontend.apis.openai.mapping import chat_request, completion_request
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
    answer_response,
    collect,
    event_stream_response,
    sse_events,
    start_generation,
    start_stream,
    stream_doc,
)
from frontend.request_context import RequestContext
from frontend.service import Caller
from frontend.validation import RequestValidator, ValidatedRequest, check_model, check_text

OPENAI_PREFIX = "/v1"
router = APIRouter(prefix=OPENAI_PREFIX, tags=["openai"])
# Models streamed as `data:` payloads that no route returns as JSON.
STREAM_EVENTS = (ChatCompletionChunk,)
Body = TypeVar("Body", CompletionRequest, ChatCompletionRequest)

_ERRORS = openai_error_docs(
    {
        400: "The body is not JSON, or asks for a parameter this server does not "
        "implement (echo, best_of other than n, logit_bias, suffix, functions, tools other "
        "than functions; stop, logprobs or a JSON response_format beside tools), or a "
        "response_format or tool parameters schema with a JSON Schema keyword the grammar "
        "does not enforce: `param` names it (e.g. response_format.json_schema.schema."
        "properties.a.pattern, tools[0].function.parameters.properties.a.pattern).",
    }
)


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
    _, events = start_generation(state, validated, caller, context, user)
    if not validated.stream:
        collected = await collect(request, events)
        return answer_response(output.answer(collected), collected)
    admitted, first = await start_stream(request, events)
    stream = sse_events(first, events, output.frames, _error_payload, state.metrics)
    return event_stream_response(stream, admitted.rate_limit_headers)


def _validated(
    mapping: Callable[[Body, RequestValidator], ValidatedRequest], body: Body, state: FrontendState
) -> ValidatedRequest:
    check_text(body)
    check_model(body.model, state.settings.served_model_name)
    return mapping(body, state.validator)


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
    validated = await state.service.validated(
        caller, partial(_validated, completion_request, body, state)
    )
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
    validated = await state.service.validated(
        caller, partial(_validated, chat_request, body, state)
    )
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
