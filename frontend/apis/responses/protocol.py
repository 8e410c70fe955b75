"""The OpenAI Responses API's wire format (POST /v1/responses): the body, the response
object, its output items and its stream's events.

Shapes and types only, read from the official `openai` SDK's types
(`openai.types.responses`). Every top-level parameter the API defines is declared, so
that frontend.apis.responses.mapping can refuse the ones this server does not implement
by name (400) instead of ignoring them; fields the API does not have at all are refused
(422).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# OpenAI's metadata: at most 16 pairs, keys up to 64 characters, values up to 512.
METADATA_PAIRS = 16
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = dict[MetadataKey, MetadataValue]

ResponseStatus = Literal["completed", "failed", "in_progress", "incomplete"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]
ErrorCode = Literal["server_error", "rate_limit_exceeded", "invalid_prompt"]


# --- the body ---------------------------------------------------------------------------


class InputContentPart(BaseModel):
    """One part of an input message's content: `input_text` (what a user, system or
    developer said) or `output_text` (what the assistant said, as a previous response's
    output gives it back); other types are refused naming their place."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(description="input_text or output_text.")
    text: str | None = None
    annotations: list[Any] | None = Field(
        default=None, description="Of an output_text part: must be empty."
    )


class InputItem(BaseModel):
    """One item of `input`: a message (`type` message, the default), or, with function
    tools, a `function_call` the assistant made and the `function_call_output` answering
    it (by `call_id`)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(
        default="message", description="message (default), function_call or function_call_output."
    )
    role: Literal["user", "assistant", "system", "developer"] | None = Field(
        default=None,
        description="Of a message: user, assistant, system or developer (the same as system).",
    )
    content: str | list[InputContentPart] | None = Field(
        default=None, description="Of a message: the text, or input_text / output_text parts."
    )
    id: str | None = Field(default=None, description="An item id, as a previous output had it.")
    status: ItemStatus | None = Field(
        default=None, description="As a previous output had it; no effect."
    )
    phase: Literal["commentary", "final_answer"] | None = Field(
        default=None, description="Not supported."
    )
    call_id: str | None = Field(
        default=None,
        description="Of a function_call, its id; of a function_call_output, the call it answers.",
    )
    name: str | None = Field(default=None, description="Of a function_call: the function.")
    arguments: str | None = Field(
        default=None, description="Of a function_call: its arguments, a JSON object as text."
    )
    output: str | list[InputContentPart] | None = Field(
        default=None, description="Of a function_call_output: the result, text or input_text parts."
    )


class JsonSchemaTextFormat(BaseModel):
    """`text.format` of type json_schema: the output is JSON valid against `schema`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["json_schema"]
    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$", description="The schema's name."
    )
    schema_: dict[str, Any] = Field(
        alias="schema",
        description="A JSON Schema of the supported keywords (see the README); others are "
        "refused with 400 naming the keyword.",
    )
    description: str | None = Field(default=None, description="What the output is for.")
    strict: bool | None = Field(
        default=None, description="Accepted; the schema is always enforced."
    )


class PlainTextFormat(BaseModel):
    """`text.format` of type text (the default) or json_object (any JSON object)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object"]


class TextConfig(BaseModel):
    """`text`: the output's format."""

    model_config = ConfigDict(extra="forbid", strict=True)

    format: JsonSchemaTextFormat | PlainTextFormat | None = Field(
        default=None,
        description="text (default), json_object or json_schema; generation stops when the "
        "JSON value is complete.",
    )
    verbosity: Literal["low", "medium", "high"] | None = Field(
        default=None, description="Only medium (the default)."
    )


class ResponsesStreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_obfuscation: bool | None = Field(
        default=None,
        description="Only false: delta events carry no obfuscation field.",
    )


class ResponsesRequest(BaseModel):
    """POST /v1/responses body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(
        default=None, description="The served model's id (see GET /v1/models); default it."
    )
    input: str | list[InputItem] = Field(
        description="A user message as text, or the conversation as message items, rendered "
        "with the model's chat template."
    )
    instructions: str | None = Field(
        default=None, description="A system message put before the input."
    )
    max_output_tokens: int | None = Field(
        default=None, description="Output tokens at most; default the server's maximum."
    )
    temperature: float | None = Field(default=None, description="0..2; default 1; 0 is greedy.")
    top_p: float | None = Field(default=None, description="Nucleus sampling mass, (0, 1].")
    text: TextConfig | None = Field(default=None, description="The output's format.")
    stream: bool | None = Field(
        default=False, description="Answer with Server-Sent Events, one per typed event."
    )
    stream_options: ResponsesStreamOptions | None = Field(
        default=None, description="Only with stream true."
    )
    store: bool | None = Field(
        default=None,
        description="Only false (or absent): responses are not stored, so there is nothing to "
        "retrieve or continue from.",
    )
    metadata: Metadata | None = Field(
        default=None,
        max_length=METADATA_PAIRS,
        description="Up to 16 pairs, returned with the response.",
    )
    user: str | None = Field(
        default=None, max_length=256, description="End-user id; logged with the request."
    )
    safety_identifier: str | None = Field(
        default=None,
        max_length=128,
        description="End-user id; logged with the request when user is absent.",
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None,
        description="Function tools ({type: function, name, description, parameters, "
        "strict}); built-in tools are not supported.",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None,
        description="none, auto (the default with tools), required, or {type: function, name}.",
    )
    parallel_tool_calls: bool | None = Field(
        default=None, description="Whether a response may hold several calls (default true)."
    )
    previous_response_id: str | None = Field(
        default=None, description="Not supported: responses are not stored."
    )
    conversation: str | dict[str, Any] | None = Field(default=None, description="Not supported.")
    background: bool | None = Field(default=None, description="Only false.")
    background_options: dict[str, Any] | None = Field(default=None, description="Not supported.")
    include: list[str] | None = Field(default=None, description="Only empty.")
    reasoning: dict[str, Any] | None = Field(
        default=None, description="Not supported: the model does not reason apart."
    )
    top_logprobs: int | None = Field(default=None, description="Not supported (only 0).")
    truncation: Literal["auto", "disabled"] | None = Field(
        default=None, description="Only disabled (the default): a too long input is refused."
    )
    service_tier: str | None = Field(default=None, description="Only auto or default.")
    max_tool_calls: int | None = Field(default=None, description="Not supported.")
    prompt: dict[str, Any] | None = Field(default=None, description="Not supported.")
    prompt_cache_key: str | None = Field(
        default=None, description="Not supported: the prefix cache needs no key."
    )
    prompt_cache_retention: str | None = Field(default=None, description="Not supported.")
    prompt_cache_options: dict[str, Any] | None = Field(default=None, description="Not supported.")
    context_management: list[Any] | None = Field(default=None, description="Not supported.")
    access_programs: dict[str, Any] | None = Field(default=None, description="Not supported.")
    image: dict[str, Any] | None = Field(default=None, description="Not supported.")
    moderation: dict[str, Any] | None = Field(default=None, description="Not supported.")


# --- the response object ----------------------------------------------------------------


class OutputText(BaseModel):
    """A message's text."""

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list, description="Always empty.")


class OutputMessage(BaseModel):
    """The assistant's message: one output_text part."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class FunctionCallItem(BaseModel):
    """A call of a function tool; `arguments` is the generated JSON text, valid against
    the tool's parameters (incomplete when max_output_tokens cut it)."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


OutputItem = OutputMessage | FunctionCallItem


class InputTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Input tokens reused from the prefix cache.")


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = Field(description="Always 0: the model does not reason apart.")


class ResponseUsage(BaseModel):
    input_tokens: int = Field(description="Tokens of the rendered input as the model counted them.")
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    """Why a streamed response failed after it started."""

    code: ErrorCode
    message: str


class ResponseTextConfig(BaseModel):
    """The output's format, as asked for (default text)."""

    format: dict[str, Any]


class ResponseObject(BaseModel):
    """POST /v1/responses answer (stream false), and the response the stream's lifecycle
    events carry."""

    id: str = Field(description="resp_ and the request's id.")
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus = Field(
        description="completed; incomplete when max_output_tokens cut the output; in_progress "
        "in the stream's first events; failed when a stream fails after it started."
    )
    completed_at: int | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: None = None
    reasoning: None = None
    background: bool = False
    service_tier: Literal["default"] = "default"
    temperature: float
    top_p: float
    text: ResponseTextConfig
    tool_choice: str | dict[str, Any]
    tools: list[Any]
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    safety_identifier: str | None = None
    metadata: Metadata = Field(default_factory=dict)


# --- the stream's events ----------------------------------------------------------------


class ResponseLifecycleEvent(BaseModel):
    """response.created, response.in_progress, then response.completed (or
    response.incomplete, or response.failed): the response as it stands."""

    type: Literal[
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ]
    sequence_number: int
    response: ResponseObject


class OutputItemEvent(BaseModel):
    """response.output_item.added (a message or a call, empty) and
    response.output_item.done (whole)."""

    type: Literal["response.output_item.added", "response.output_item.done"]
    sequence_number: int
    output_index: int
    item: OutputItem


class ContentPartEvent(BaseModel):
    """response.content_part.added (empty text) and response.content_part.done (whole)."""

    type: Literal["response.content_part.added", "response.content_part.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class OutputTextDeltaEvent(BaseModel):
    """response.output_text.delta: new text of the message."""

    type: Literal["response.output_text.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = Field(description="Always empty.")


class OutputTextDoneEvent(BaseModel):
    """response.output_text.done: the message's whole text."""

    type: Literal["response.output_text.done"]
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = Field(description="Always empty.")


class FunctionCallArgumentsDeltaEvent(BaseModel):
    """response.function_call_arguments.delta: more of a call's arguments."""

    type: Literal["response.function_call_arguments.delta"]
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDoneEvent(BaseModel):
    """response.function_call_arguments.done: the call's whole arguments."""

    type: Literal["response.function_call_arguments.done"]
    sequence_number: int
    item_id: str
    output_index: int
    arguments: str


STREAM_EVENTS: tuple[type[BaseModel], ...] = (
    ResponseLifecycleEvent,
    OutputItemEvent,
    ContentPartEvent,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    FunctionCallArgumentsDeltaEvent,
    FunctionCallArgumentsDoneEvent,
)
