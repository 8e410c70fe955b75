"""The OpenAI API under /v1: models, completions and chat completions.

A protocol layer only: bodies become the same validated GenerationRequest as /generate
(frontend.openai_mapping), run through the same GenerationService (API keys, rate
limits, overload protection, metrics, the Triton call), and are rendered here as
OpenAI objects and chunks. Errors keep the frontend's statuses in OpenAI's body shape.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from frontend.deps import CallerDep, ContextDep, FrontendState, StateDep
from frontend.errors import FrontendError, openai_error_body
from frontend.openai_mapping import chat_request, check_model, completion_request
from frontend.openai_protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    FinishReasonName,
    ModelCard,
    ModelList,
    OpenAIErrorResponse,
    PromptTokensDetails,
    StreamOptions,
    Usage,
)
from frontend.request_context import RequestContext
from frontend.routes.events import (
    collect,
    event_stream_response,
    sse_events,
    start_stream,
    stream_doc,
)
from frontend.service import Caller, Completed, GenerationEvent, GenerationRecord, TextDelta
from frontend.validation import GenerationRequest

router = APIRouter(prefix="/v1", tags=["openai"])
# Models streamed as `data:` payloads that no route returns as JSON.
STREAM_EVENTS = (ChatCompletionChunk,)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OpenAIErrorResponse,
        "description": "The body is not JSON, or asks for a parameter this server does not "
        "implement (n > 1, logprobs, echo, best_of, logit_bias, suffix, tools), or a "
        "response_format schema with a JSON Schema keyword structured outputs do not "
        "enforce: `param` names it (e.g. response_format.json_schema.schema.properties.a."
        "pattern).",
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


def _usage(completed: Completed) -> Usage:
    usage = completed.usage
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


class _Format(ABC):
    """One object type's rendering of a generation: the whole answer, or its chunks."""

    def __init__(self, ident: str, created: int, model: str, options: StreamOptions | None):
        self.ident = ident
        self.created = created
        self.model = model
        self.include_usage = options is not None and options.include_usage

    @abstractmethod
    def answer(self, text: str, completed: Completed) -> BaseModel:
        """The whole answer (stream false)."""

    @abstractmethod
    def chunks(self, event: GenerationEvent) -> Iterable[str]:
        """The chunks (JSON) an event becomes when streaming."""

    def dump(self, chunk: BaseModel) -> str:
        # With include_usage, OpenAI sends `"usage": null` on every chunk but the last.
        return chunk.model_dump_json(exclude=None if self.include_usage else {"usage"})


class _CompletionFormat(_Format):
    def answer(self, text: str, completed: Completed) -> BaseModel:
        choice = CompletionChoice(text=text, finish_reason=completed.finish_reason)
        return self._object([choice], _usage(completed))

    def chunks(self, event: GenerationEvent) -> Iterable[str]:
        if isinstance(event, TextDelta):
            piece = CompletionChoice(text=event.text, finish_reason=None)
            return [self.dump(self._object([piece]))]
        if isinstance(event, Completed):
            last = self._object([CompletionChoice(text="", finish_reason=event.finish_reason)])
            if not self.include_usage:
                return [self.dump(last)]
            return [self.dump(last), self.dump(self._object([], _usage(event)))]
        return []

    def _object(self, choices: list[CompletionChoice], usage: Usage | None = None) -> BaseModel:
        return CompletionResponse(
            id=self.ident, created=self.created, model=self.model, choices=choices, usage=usage
        )


class _ChatFormat(_Format):
    def __init__(self, ident: str, created: int, model: str, options: StreamOptions | None):
        super().__init__(ident, created, model, options)
        self._role_sent = False

    def answer(self, text: str, completed: Completed) -> BaseModel:
        choice = ChatChoice(
            message=AssistantMessage(content=text), finish_reason=completed.finish_reason
        )
        return ChatCompletionResponse(
            id=self.ident,
            created=self.created,
            model=self.model,
            choices=[choice],
            usage=_usage(completed),
        )

    def chunks(self, event: GenerationEvent) -> Iterable[str]:
        out = []
        if not self._role_sent:
            # The first chunk names the speaker, as OpenAI's does.
            self._role_sent = True
            out.append(self.dump(self._chunk(ChatDelta(role="assistant", content=""))))
        if isinstance(event, TextDelta):
            out.append(self.dump(self._chunk(ChatDelta(content=event.text))))
        elif isinstance(event, Completed):
            out.append(self.dump(self._chunk(ChatDelta(), event.finish_reason)))
            if self.include_usage:
                usage = ChatCompletionChunk(
                    id=self.ident,
                    created=self.created,
                    model=self.model,
                    choices=[],
                    usage=_usage(event),
                )
                out.append(self.dump(usage))
        return out

    def _chunk(
        self, delta: ChatDelta, finish: FinishReasonName | None = None
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.ident,
            created=self.created,
            model=self.model,
            choices=[ChatChunkChoice(delta=delta, finish_reason=finish)],
        )


def _error_payload(error: FrontendError) -> str:
    return json.dumps(openai_error_body(error))


async def _run(
    validated: GenerationRequest,
    output: _Format,
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
            output.answer(collected.text, collected.completed).model_dump(mode="json"),
            headers=collected.admitted.rate_limit_headers,
        )
    admitted, first = await start_stream(request, events)
    stream = sse_events(first, events, output.chunks, _error_payload, state.metrics)
    return event_stream_response(stream, admitted.rate_limit_headers)


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
    check_model(body.model, state.settings.served_model_name)
    validated = completion_request(body, state.validator)
    output = _CompletionFormat(
        f"cmpl-{context.request_id}", int(state.clock()), body.model, body.stream_options
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
    check_model(body.model, state.settings.served_model_name)
    validated = chat_request(body, state.validator)
    output = _ChatFormat(
        f"chatcmpl-{context.request_id}", int(state.clock()), body.model, body.stream_options
    )
    return await _run(validated, output, request, state, caller, context, body.user)
