"""Anthropic's message and its stream's events from the service's events.

A stream goes as Anthropic's does: `message_start` (the message with no content, its
input tokens), `ping`, then each content block as `content_block_start`, its
`content_block_delta`s and `content_block_stop`, then `message_delta` (the stop reason and
the usage so far) and `message_stop`; a failure after the first byte is one `error` event.
Each is a Server-Sent Event named by its type. Frames are encoded from plain values with
pydantic-core's encoder, as frontend.sse does: no model built per delta.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import from_json, to_json

from frontend.apis.anthropic.errors import anthropic_error_body
from frontend.apis.anthropic.protocol import (
    AnthropicMessage,
    AnthropicStopReason,
    AnthropicTextBlock,
    AnthropicToolUseBlock,
    AnthropicUsage,
)
from frontend.apis.anthropic.stops import StopSequenceScanner
from frontend.errors import FrontendError
from frontend.event_stream import Collected
from frontend.service import (
    ChoiceFinished,
    Completed,
    FinishReason,
    GenerationEvent,
    GenerationRecord,
    TextDelta,
    ToolCallArguments,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from llm_stack.tool_calls import ToolCall

# A tool_use block's id as Anthropic spells it (the service's calls have OpenAI's `call_`).
TOOL_USE_ID_PREFIX = "toolu_"


def tool_use_id(call_id: str) -> str:
    """A call's id in Anthropic's shape: `toolu_` and the same letters and digits."""
    return TOOL_USE_ID_PREFIX + call_id.removeprefix("call_")


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as its `input`: a call cut short by max_tokens reads as the
    partial JSON it is, as the anthropic SDK reads a streamed one."""
    try:
        value = from_json(arguments, allow_partial=True)
    except ValueError:  # cut inside a literal (`tru`): nothing of it reads yet
        return {}
    return value if isinstance(value, dict) else {}


def tool_use_block(call: ToolCall) -> AnthropicToolUseBlock:
    return AnthropicToolUseBlock(
        id=tool_use_id(call.id), name=call.name, input=tool_input(call.arguments)
    )


def sse_event(name: str, value: Any) -> bytes:
    """One Server-Sent Event named `name` carrying `value` as JSON."""
    return b"event: " + name.encode() + b"\ndata: " + to_json(value) + b"\n\n"


_TEXT_BLOCK = {"type": "text", "text": ""}


class MessageFormat:
    """One message's rendering: the whole answer, or its stream's events.

    `record` is the generation's (filled in as it runs: the stream's first event reports
    its prompt tokens); `scanner`, when the request has stop sequences, the one that cut
    the text.
    """

    def __init__(
        self,
        ident: str,
        model: str,
        record: GenerationRecord,
        scanner: StopSequenceScanner | None = None,
    ) -> None:
        self.ident = ident
        self.model = model
        self._record = record
        self._scanner = scanner
        self._started = False  # message_start sent
        self._blocks = 0  # content blocks started
        self._open: str | None = None  # the type of the block being streamed

    @property
    def stop_sequence(self) -> str | None:
        """The stop sequence that ended the message, if one did."""
        return self._scanner.matched if self._scanner is not None else None

    def stop_reason(self, finish: FinishReason) -> AnthropicStopReason:
        """The service's finish reason in Anthropic's terms."""
        if finish == "length":
            return "max_tokens"
        if finish == "tool_calls":
            return "tool_use"
        return "stop_sequence" if self.stop_sequence is not None else "end_turn"

    def usage(self, usage: Usage) -> AnthropicUsage:
        # The prefix cache's figure comes with the engine's last response, which a stop
        # sequence found here cuts off.
        cached = usage.cached_tokens if self.stop_sequence is None else None
        return AnthropicUsage(
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            cache_read_input_tokens=cached,
        )

    def answer(self, collected: Collected) -> AnthropicMessage:
        """The whole message (stream false)."""
        completed = collected.completed
        choice = collected.choices[0]
        # No text, no block: as the stream, which starts a block with its first text.
        content: list[AnthropicTextBlock | AnthropicToolUseBlock] = (
            [AnthropicTextBlock(text=choice.text)] if choice.text else []
        )
        content += [tool_use_block(call) for call in choice.tool_calls]
        return AnthropicMessage(
            id=self.ident,
            content=content,
            model=self.model,
            stop_reason=self.stop_reason(completed.finish_reason),
            stop_sequence=self.stop_sequence,
            usage=self.usage(completed.usage),
        )

    def frames(self, event: GenerationEvent) -> bytes:
        """The events (encoded) that `event` becomes in the stream; b"" for none."""
        out = b"" if self._started else self._start()
        if isinstance(event, TextDelta):
            if event.text:
                out += self._open_block("text", _TEXT_BLOCK) + sse_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._blocks - 1,
                        "delta": {"type": "text_delta", "text": event.text},
                    },
                )
        elif isinstance(event, ToolCallStart):
            block = {
                "type": "tool_use",
                "id": tool_use_id(event.id),
                "name": event.name,
                "input": {},
            }
            out += self._open_block("tool_use", block)
        elif isinstance(event, ToolCallArguments):
            if event.text:
                out += sse_event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._blocks - 1,
                        "delta": {"type": "input_json_delta", "partial_json": event.text},
                    },
                )
        elif isinstance(event, ToolCallEnd | ChoiceFinished):
            out += self._close_block()
        elif isinstance(event, Completed):
            out += self._close_block() + self._end(event)
        return out

    def error_frame(self, error: FrontendError, request_id: str) -> bytes:
        """The `error` event a stream ends with when the generation fails after its start."""
        return sse_event("error", anthropic_error_body(error, request_id))

    def _start(self) -> bytes:
        self._started = True
        record = self._record
        message = AnthropicMessage(
            id=self.ident,
            content=[],
            model=self.model,
            stop_reason=None,
            usage=AnthropicUsage(
                input_tokens=record.prompt_tokens, output_tokens=record.completion_tokens
            ),
        )
        start = {"type": "message_start", "message": message.model_dump(mode="json")}
        return sse_event("message_start", start) + sse_event("ping", {"type": "ping"})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        """The start of a block of `kind`, unless one is open (text goes on in it; each
        call has its own block)."""
        if self._open == kind == "text":
            return b""
        out = self._close_block()
        self._open = kind
        self._blocks += 1
        return out + sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": self._blocks - 1, "content_block": block},
        )

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse_event(
            "content_block_stop", {"type": "content_block_stop", "index": self._blocks - 1}
        )

    def _end(self, completed: Completed) -> bytes:
        usage = self.usage(completed.usage)
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": self.stop_reason(completed.finish_reason),
                "stop_sequence": self.stop_sequence,
            },
            "usage": {
                "output_tokens": usage.output_tokens,
                "input_tokens": usage.input_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
            },
        }
        return sse_event("message_delta", delta) + sse_event(
            "message_stop", {"type": "message_stop"}
        )
