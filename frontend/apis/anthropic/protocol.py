"""Anthropic's Messages wire format (/v1/messages): pydantic models for bodies, the message,
its stream's events and errors.

Shapes and types only, as the anthropic SDK's types spell them. What Anthropic defines and
this server does not implement is still declared, so that frontend.apis.anthropic.mapping
refuses it by name (400) instead of ignoring it; fields Anthropic does not have at all are
refused (422). Component names carry `Anthropic`, so they share the OpenAPI document with
the other APIs' models without clashing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AnthropicStopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class AnthropicCacheControl(BaseModel):
    """A prompt-cache breakpoint: accepted, the prefix cache reuses prompts without one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class AnthropicTextBlockIn(BaseModel):
    """A text block of `system`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text"]
    text: str
    cache_control: AnthropicCacheControl | None = None
    citations: list[Any] | None = Field(default=None, description="Not supported.")


class AnthropicContentBlockIn(BaseModel):
    """One block of a message's content: `text`; `tool_use` (an assistant's call) and
    `tool_result` (the user's answer to one) with tools. Other types (image, document,
    thinking, server tools' blocks...) are refused naming the block's type."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None
    # tool_use
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    # tool_result
    tool_use_id: str | None = None
    content: str | list[AnthropicTextBlockIn] | None = None
    is_error: bool | None = None
    cache_control: AnthropicCacheControl | None = None
    citations: list[Any] | None = Field(default=None, description="Not supported.")


class AnthropicMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant", "system"] = Field(
        description="user or assistant (system as the top-level system does); the last "
        "message is the user's."
    )
    content: str | list[AnthropicContentBlockIn] = Field(description="The text, or content blocks.")


class AnthropicMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: str | None = Field(
        default=None, max_length=256, description="End-user id; logged with the request."
    )


class AnthropicTool(BaseModel):
    """A client tool: its name, description and the JSON Schema of its input. Server
    tools (a `type` other than custom) are refused naming it."""

    model_config = ConfigDict(extra="allow", strict=True)

    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = Field(
        default=None, description="Required: the JSON Schema of the tool's input."
    )
    type: str | None = Field(
        default=None, description="custom (or absent): server tools are not supported."
    )
    cache_control: AnthropicCacheControl | None = None
    strict: bool | None = Field(
        default=None, description="Accepted; the schema is always enforced."
    )


class AnthropicToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, description="With type tool: the tool to call.")
    disable_parallel_tool_use: bool | None = Field(
        default=None, description="At most one call (exactly one with any or tool)."
    )


class _InputBase(BaseModel):
    """What messages and count_tokens share: the conversation and its tools."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="The served model's id.")
    messages: list[AnthropicMessageIn] = Field(
        description="The conversation, rendered with the model's chat template."
    )
    system: str | list[AnthropicTextBlockIn] | None = Field(
        default=None, description="The system prompt: text, or text blocks."
    )
    tools: list[AnthropicTool] | None = Field(
        default=None, description="Client tools the model may call."
    )
    tool_choice: AnthropicToolChoice | None = Field(
        default=None, description="auto (the default with tools), any, a named tool, or none."
    )
    cache_control: AnthropicCacheControl | None = Field(
        default=None, description="Accepted: the prefix cache needs no breakpoints."
    )
    thinking: dict[str, Any] | None = Field(
        default=None, description="Not supported (only type disabled)."
    )
    output_config: dict[str, Any] | None = Field(default=None, description="Not supported.")
    mcp_servers: list[Any] | None = Field(default=None, description="Not supported.")
    context_management: dict[str, Any] | None = Field(default=None, description="Not supported.")
    container: str | dict[str, Any] | None = Field(default=None, description="Not supported.")
    speed: str | None = Field(default=None, description="Only standard.")


class AnthropicMessagesRequest(_InputBase):
    """POST /v1/messages body."""

    max_tokens: int = Field(description="The most tokens to generate.")
    stop_sequences: list[str] | None = Field(
        default=None,
        description="Texts that end the message when generated (not returned; "
        "stop_reason stop_sequence names the one found).",
    )
    temperature: float | None = Field(default=None, description="0..1; default 1; 0 is greedy.")
    top_p: float | None = Field(default=None, description="Nucleus sampling mass, (0, 1].")
    top_k: int | None = Field(default=None, description="Sample from the k likeliest tokens.")
    metadata: AnthropicMetadata | None = None
    stream: bool | None = Field(default=False, description="Answer with Server-Sent Events.")
    service_tier: str | None = Field(
        default=None, description="auto or standard_only (one tier here)."
    )
    inference_geo: str | None = Field(default=None, description="Not supported.")
    diagnostics: dict[str, Any] | None = Field(default=None, description="Not supported.")
    user_profile_id: str | None = Field(default=None, description="Not supported.")
    workspace_id: str | None = Field(default=None, description="Not supported.")


class AnthropicCountTokensRequest(_InputBase):
    """POST /v1/messages/count_tokens body: a message's input, without generation settings."""


# --- responses ------------------------------------------------------------------------------


class AnthropicTextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class AnthropicToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str = Field(description="The call's id (toolu_...), for its tool_result.")
    name: str
    input: dict[str, Any] = Field(description="The arguments, valid against input_schema.")


class AnthropicUsage(BaseModel):
    input_tokens: int = Field(description="Prompt tokens as the model counted them.")
    output_tokens: int
    cache_creation_input_tokens: int | None = Field(
        default=None, description="Not reported: the prefix cache writes as it goes."
    )
    cache_read_input_tokens: int | None = Field(
        default=None,
        description="Prompt tokens reused from the prefix cache (null when not known: a "
        "message ended by a stop sequence).",
    )


class AnthropicMessage(BaseModel):
    """POST /v1/messages answer (stream false); the message_start event's `message`."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[AnthropicTextBlock | AnthropicToolUseBlock]
    model: str
    stop_reason: AnthropicStopReason | None
    stop_sequence: str | None = None
    usage: AnthropicUsage


class AnthropicTokensCount(BaseModel):
    """POST /v1/messages/count_tokens answer."""

    input_tokens: int = Field(
        description="The prompt's tokens as the model sees them (the chat template applied)."
    )


# --- stream events --------------------------------------------------------------------------


class AnthropicMessageStartEvent(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: AnthropicMessage


class AnthropicContentBlockStartEvent(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: AnthropicTextBlock | AnthropicToolUseBlock


class AnthropicPingEvent(BaseModel):
    type: Literal["ping"] = "ping"


class AnthropicTextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class AnthropicInputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class AnthropicContentBlockDeltaEvent(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: AnthropicTextDelta | AnthropicInputJsonDelta


class AnthropicContentBlockStopEvent(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class AnthropicMessageDelta(BaseModel):
    stop_reason: AnthropicStopReason
    stop_sequence: str | None = None


class AnthropicMessageDeltaUsage(BaseModel):
    output_tokens: int = Field(description="The message's output tokens in all.")
    input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class AnthropicMessageDeltaEvent(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: AnthropicMessageDelta
    usage: AnthropicMessageDeltaUsage


class AnthropicMessageStopEvent(BaseModel):
    type: Literal["message_stop"] = "message_stop"


# --- errors ---------------------------------------------------------------------------------


class AnthropicErrorDetail(BaseModel):
    type: str = Field(
        description="invalid_request_error, authentication_error, not_found_error, "
        "request_too_large, rate_limit_error, api_error, overloaded_error or timeout_error."
    )
    message: str = Field(description="Human-readable; names the field, the limit and the value.")


class AnthropicErrorResponse(BaseModel):
    """Every error response's body under /v1/messages, and a failed stream's `error` event."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail
    request_id: str | None = None
