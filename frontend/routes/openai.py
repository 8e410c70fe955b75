"""The OpenAI API under /v1: models, completions and chat completions.

A protocol layer only: bodies become the same validated GenerationRequest as /generate
(frontend.openai_mapping), run through the same GenerationService (API keys, rate
limits, overload protection, metrics, the Triton call), and are rendered here as
OpenAI objects and chunks. Errors keep the frontend's statuses in OpenAI's body shape.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from frontend.deps import CallerDep, ContextDep, FrontendState, StateDep
from frontend.errors import FrontendError, openai_error_body
from frontend.logprobs import CompletionLogprobsWriter, token_logprob_entries, token_logprobs
from frontend.openai_mapping import chat_request, check_model, completion_request
from frontend.openai_protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
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
    Collected,
    collect,
    event_stream_response,
    sse_events,
    start_stream,
    stream_doc,
)
from frontend.service import (
    Caller,
    ChoiceFinished,
    Completed,
    GenerationEvent,
    GenerationRecord,
    TextDelta,
)
from frontend.sse import ChoicesFrame, sse
from frontend.validation import GenerationRequest, check_text

router = APIRouter(prefix="/v1", tags=["openai"])
# Models streamed as `data:` payloads that no route returns as JSON.
STREAM_EVENTS = (ChatCompletionChunk,)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OpenAIErrorResponse,
        "description": "The body is not JSON, or asks for a parameter this server does not "
        "implement (echo, best_of other than n, logit_bias, suffix, tools), or a "
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


class OpenAIFormat(ABC):
    """One object type's rendering of a generation: the whole answer, or its chunks.

    With n choices, each has its index; streamed, each gets its own last chunk (its
    finish_reason) as it ends, and the usage chunk comes after all of them. Chunks are
    rendered as Server-Sent Events with no model built per chunk (frontend.sse): the
    bytes are those the chunk's model would dump.
    """

    def __init__(
        self,
        ident: str,
        created: int,
        model: str,
        options: StreamOptions | None,
        *,
        logprobs: bool = False,
    ):
        self.ident = ident
        self.created = created
        self.model = model
        self.include_usage = options is not None and options.include_usage
        self.logprobs = logprobs
        self._frame = ChoicesFrame(self.dump(self._chunk_model([])))

    @abstractmethod
    def answer(self, collected: Collected) -> BaseModel:
        """The whole answer (stream false)."""

    @abstractmethod
    def frames(self, event: GenerationEvent) -> bytes:
        """The events (SSE, encoded) an event becomes when streaming; b"" for none."""

    @abstractmethod
    def _chunk_model(self, choices: list[Any], usage: Usage | None = None) -> BaseModel:
        """A chunk as its model: for the stream's stable members, and the usage chunk."""

    def dump(self, chunk: BaseModel) -> str:
        # With include_usage, OpenAI sends `"usage": null` on every chunk but the last.
        return chunk.model_dump_json(exclude=None if self.include_usage else {"usage"})

    def _usage_frame(self, completed: Completed) -> bytes:
        if not self.include_usage:
            return b""
        return sse(self.dump(self._chunk_model([], _usage(completed))))


class CompletionFormat(OpenAIFormat):
    def __init__(
        self,
        ident: str,
        created: int,
        model: str,
        options: StreamOptions | None,
        *,
        logprobs: bool = False,
        prompt_chars: int = 0,
    ):
        super().__init__(ident, created, model, options, logprobs=logprobs)
        self._prompt_chars = prompt_chars  # where text_offset starts
        self._writers: dict[int, CompletionLogprobsWriter] = {}

    def answer(self, collected: Collected) -> BaseModel:
        completed = collected.completed
        choices = [
            CompletionChoice(
                text=choice.text,
                index=index,
                logprobs=(
                    CompletionLogprobs.model_validate(self._writer(index).write(choice.logprobs))
                    if self.logprobs
                    else None
                ),
                finish_reason=completed.finish_reasons[index],
            )
            for index, choice in enumerate(collected.choices)
        ]
        return self._chunk_model(choices, _usage(completed))

    def frames(self, event: GenerationEvent) -> bytes:
        # The members in CompletionChoice's order.
        if isinstance(event, TextDelta):
            logprobs = self._writer(event.index).write(event.logprobs) if self.logprobs else None
            return self._frame.frame(
                [{"text": event.text, "index": event.index, "logprobs": logprobs,
                  "finish_reason": None}]
            )  # fmt: skip
        if isinstance(event, ChoiceFinished):
            return self._frame.frame(
                [{"text": "", "index": event.index, "logprobs": None,
                  "finish_reason": event.finish_reason}]
            )  # fmt: skip
        if isinstance(event, Completed):
            return self._usage_frame(event)
        return b""

    def _writer(self, index: int) -> CompletionLogprobsWriter:
        writer = self._writers.get(index)
        if writer is None:
            writer = self._writers[index] = CompletionLogprobsWriter(self._prompt_chars)
        return writer

    def _chunk_model(self, choices: list[Any], usage: Usage | None = None) -> BaseModel:
        return CompletionResponse(
            id=self.ident, created=self.created, model=self.model, choices=choices, usage=usage
        )


# A choice's first chunk names the speaker, as OpenAI's does (ChatDelta leaves out what
# is unset: the later deltas carry their content only, the last one nothing).
_ROLE_DELTA = {"role": "assistant", "content": ""}
_LAST_DELTA: dict[str, str] = {}


class ChatFormat(OpenAIFormat):
    def __init__(
        self,
        ident: str,
        created: int,
        model: str,
        options: StreamOptions | None,
        *,
        logprobs: bool = False,
    ):
        super().__init__(ident, created, model, options, logprobs=logprobs)
        self._started: set[int] = set()  # choices whose role chunk has gone out

    def answer(self, collected: Collected) -> BaseModel:
        completed = collected.completed
        choices = [
            ChatChoice(
                index=index,
                message=AssistantMessage(content=choice.text),
                logprobs=(
                    ChatLogprobs(content=token_logprobs(choice.logprobs)) if self.logprobs else None
                ),
                finish_reason=completed.finish_reasons[index],
            )
            for index, choice in enumerate(collected.choices)
        ]
        return ChatCompletionResponse(
            id=self.ident,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=_usage(completed),
        )

    def frames(self, event: GenerationEvent) -> bytes:
        if isinstance(event, Completed):
            return self._usage_frame(event)
        if not isinstance(event, TextDelta | ChoiceFinished):
            return b""
        index = event.index
        role = b""
        if index not in self._started:
            self._started.add(index)
            role = self._choice(index, _ROLE_DELTA)
        if isinstance(event, TextDelta):
            logprobs = (
                {"content": token_logprob_entries(event.logprobs), "refusal": None}
                if self.logprobs
                else None
            )
            return role + self._choice(index, {"content": event.text}, logprobs=logprobs)
        return role + self._choice(index, _LAST_DELTA, finish=event.finish_reason)

    def _choice(
        self,
        index: int,
        delta: dict[str, str],
        *,
        finish: FinishReasonName | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> bytes:
        # The members in ChatChunkChoice's order.
        return self._frame.frame(
            [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
        )

    def _chunk_model(self, choices: list[Any], usage: Usage | None = None) -> BaseModel:
        return ChatCompletionChunk(
            id=self.ident, created=self.created, model=self.model, choices=choices, usage=usage
        )


def _error_payload(error: FrontendError) -> str:
    return json.dumps(openai_error_body(error))


async def _run(
    validated: GenerationRequest,
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


def _completion(body: CompletionRequest, state: FrontendState) -> GenerationRequest:
    check_text(body)
    check_model(body.model, state.settings.served_model_name)
    return completion_request(body, state.validator)


def _chat(body: ChatCompletionRequest, state: FrontendState) -> GenerationRequest:
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
