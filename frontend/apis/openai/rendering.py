"""OpenAI objects and chunks from the service's events: the whole answer, or its stream.

Chunks are rendered as Server-Sent Events with no model built per chunk (frontend.sse):
the bytes are those the chunk's model would dump.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pydantic import BaseModel

from frontend.apis.openai.logprobs import (
    CompletionLogprobsWriter,
    token_logprob_entries,
    token_logprobs,
)
from frontend.apis.openai.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatFinishReason,
    ChatLogprobs,
    ChatToolCall,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    FunctionCall,
    PromptTokensDetails,
    StreamOptions,
    Usage,
)
from frontend.event_stream import Collected, CollectedChoice
from frontend.service import (
    ChoiceFinished,
    Completed,
    GenerationEvent,
    TextDelta,
    ToolCallArguments,
    ToolCallEnd,
    ToolCallStart,
    text_finish,
)
from frontend.sse import ChoicesFrame, sse


def _message(choice: CollectedChoice) -> AssistantMessage:
    """A choice's message: its text, and its tool calls (then null content without text)."""
    if not choice.tool_calls:
        return AssistantMessage(content=choice.text)
    return AssistantMessage(
        content=choice.text or None,
        tool_calls=[
            ChatToolCall(
                id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments)
            )
            for call in choice.tool_calls
        ],
    )


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
                finish_reason=text_finish(completed.finish_reasons[index]),
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
                  "finish_reason": text_finish(event.finish_reason)}]
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
                message=_message(choice),
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
        if isinstance(event, ToolCallEnd) or not isinstance(
            event, TextDelta | ChoiceFinished | ToolCallStart | ToolCallArguments
        ):
            return b""  # a call's end shows in the next call, the content or the finish
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
        if isinstance(event, ToolCallStart):
            # OpenAI's first delta of a call: its index, id, type and name.
            call = {"index": event.call, "id": event.id, "type": "function",
                    "function": {"name": event.name, "arguments": ""}}  # fmt: skip
            return role + self._choice(index, {"tool_calls": [call]})
        if isinstance(event, ToolCallArguments):
            piece = {"index": event.call, "function": {"arguments": event.text}}
            return role + self._choice(index, {"tool_calls": [piece]})
        return role + self._choice(index, _LAST_DELTA, finish=event.finish_reason)

    def _choice(
        self,
        index: int,
        delta: dict[str, Any],
        *,
        finish: ChatFinishReason | None = None,
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
