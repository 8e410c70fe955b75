"""The OpenAI wire format (/v1): pydantic models for bodies, responses, chunks and errors.

Shapes and types only, as in frontend.apis.generate.protocol. Parameters this server does not
implement are still declared, so that frontend.apis.openai.mapping can refuse them by name
(400) instead of ignoring them; fields OpenAI does not have at all are refused (422).
`top_k`, `repetition_penalty`, `min_tokens` and `ignore_eos` are vLLM's extensions,
which benchmark clients send.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

OpenAIFinishReason = Literal["stop", "length"]
# Chat's: tool_calls when the choice ended after calling tools.
ChatFinishReason = Literal["stop", "length", "tool_calls"]


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$", description="The schema's name."
    )
    description: str | None = Field(default=None, description="What the output is for.")
    schema_: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="A JSON Schema of the supported keywords (see the README); others are "
        "refused with 400 naming the keyword. Absent: any JSON value.",
    )
    strict: bool | None = Field(
        default=None, description="Accepted; the schema is always enforced."
    )


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: text, any JSON object, or JSON valid against a schema."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"] = Field(
        description="json_object: a JSON object; json_schema: a value valid against "
        "json_schema.schema. Generation stops (finish_reason stop) when the value is complete."
    )
    json_schema: JsonSchemaFormat | None = Field(
        default=None, description="Required with type json_schema, refused otherwise."
    )


class TopLogprob(BaseModel):
    """One of the likeliest tokens at a position (OpenAI chat's shape)."""

    token: str = Field(
        description="The token's text; a token that is not whole UTF-8 characters reads "
        "`bytes:` and its bytes escaped, e.g. `bytes:\\xe2\\x80`."
    )
    logprob: float = Field(description="Natural log of its probability (-9999.0: about 0).")
    bytes: list[int] = Field(description="The token's UTF-8 bytes.")


class ChatCompletionTokenLogprob(TopLogprob):
    """One output token: its log-probability and the likeliest tokens at its position."""

    top_logprobs: list[TopLogprob] = Field(description="Likeliest first; as many as asked for.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = Field(
        default=False, description="Send a last chunk with the usage (and no choices)."
    )


class _RequestBase(BaseModel):
    """The fields completions and chat completions share."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="The served model's id (see GET /v1/models).")
    temperature: float | None = Field(default=None, description="0..2; default 1; 0 is greedy.")
    top_p: float | None = Field(default=None, description="Nucleus sampling mass, (0, 1].")
    stop: str | list[str] | None = Field(
        default=None, description="Sequences that end the completion (not returned)."
    )
    seed: int | None = Field(default=None, description="Sampling seed, unsigned 64-bit.")
    stream: bool | None = Field(default=False, description="Answer with Server-Sent Events.")
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, description="-2..2")
    frequency_penalty: float | None = Field(default=None, description="-2..2")
    user: str | None = Field(
        default=None, max_length=256, description="End-user id; logged with the request."
    )
    n: int | None = Field(
        default=None, description="Choices to generate from the prompt (default 1)."
    )
    logit_bias: dict[str, float] | None = Field(default=None, description="Not supported.")
    top_k: int | None = Field(default=None, description="Extension: the k likeliest tokens.")
    repetition_penalty: float | None = Field(default=None, description="Extension: (0, 2].")
    min_tokens: int | None = Field(
        default=None, description="Extension: completion tokens at least."
    )
    ignore_eos: bool | None = Field(
        default=None, description="Extension: generate exactly max_tokens tokens."
    )
    response_format: ResponseFormat | None = Field(
        default=None, description="Structured output (on completions too, as vLLM has it)."
    )


class CompletionRequest(_RequestBase):
    """POST /v1/completions body."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="The text to continue. One string (a list holding one string is taken "
        "as that string; several prompts and token ids are not supported)."
    )
    max_tokens: int | None = Field(default=None, description="Default 16.")
    logprobs: int | None = Field(
        default=None,
        description="Each output token's log-probability, with this many likeliest "
        "alternatives (0..5).",
    )
    echo: bool | None = Field(default=None, description="Not supported.")
    best_of: int | None = Field(
        default=None, description="Only equal to n: choices are not ranked."
    )
    suffix: str | None = Field(default=None, description="Not supported.")


class ContentPart(BaseModel):
    """One part of a message's content; only `text` parts are supported."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class FunctionCallIn(BaseModel):
    """The function an assistant's earlier tool call called."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    arguments: str = Field(description="The arguments: a JSON object as text.")
    parsed_arguments: Any = Field(
        default=None,
        description="The openai SDK's parse of the arguments, which it sends back with the "
        "message: accepted, not read (arguments hold them).",
    )


class ToolCallIn(BaseModel):
    """A tool call of an earlier assistant message."""

    # Other call types (custom) bring other members: refused by name.
    model_config = ConfigDict(extra="allow", strict=True)

    id: str = Field(description="The call's id; the tool message answering it names it.")
    type: str = Field(description="function (other types are refused, 400).")
    function: FunctionCallIn | None = Field(default=None, description="Required.")


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: str = Field(description="system, user, assistant or tool (developer counts as system).")
    content: str | list[ContentPart] | None = Field(
        default=None,
        description="The text (or text parts); required but for an assistant's message "
        "of tool calls, where it may be null.",
    )
    name: str | None = Field(default=None, description="Not supported.")
    tool_calls: list[ToolCallIn] | None = Field(
        default=None, description="An assistant's tool calls (its content may be null)."
    )
    tool_call_id: str | None = Field(
        default=None,
        description="A tool message's: the call it answers, one of the assistant message "
        "before it.",
    )
    function_call: dict[str, Any] | None = Field(
        default=None, description="Not supported (deprecated): use tool_calls."
    )
    # What an answer's message holds besides, so that one goes back as it came.
    refusal: str | None = Field(default=None, description="Only null.")
    annotations: list[Any] | None = Field(default=None, description="Only null or empty.")
    audio: dict[str, Any] | None = Field(default=None, description="Only null.")
    parsed: Any = Field(
        default=None,
        description="The openai SDK's parse of the content, which it sends back with the "
        "message: accepted, not read (content holds it).",
    )


class FunctionDefinition(BaseModel):
    """A function the model may call."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(description="1 to 64 letters, digits, underscores or dashes.")
    description: str | None = Field(default=None, description="What it does, for the model.")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema of an object, with the keywords of structured outputs "
        "(others are refused, 400). Absent: no parameters.",
    )
    strict: bool | None = Field(
        default=None, description="Accepted; calls always follow the schema."
    )


class ChatTool(BaseModel):
    """A tool the model may call; only function tools are supported."""

    # Other tool types (OpenAI's custom tools) bring other members: refused by name.
    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(description="function (other types are refused, 400).")
    function: FunctionDefinition | None = Field(default=None, description="Required.")


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str


class NamedToolChoice(BaseModel):
    """tool_choice naming the function the model must call."""

    # Other choice types (allowed_tools, custom) bring other members: refused by name.
    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(description="function (other types are refused, 400).")
    function: FunctionName | None = Field(default=None, description="Required.")


class ChatCompletionRequest(_RequestBase):
    """POST /v1/chat/completions body."""

    messages: list[ChatMessageIn] = Field(
        description="The conversation, rendered with the model's chat template."
    )
    max_tokens: int | None = Field(default=None, description="Default: the server's maximum.")
    max_completion_tokens: int | None = Field(
        default=None, description="The same as max_tokens (wins when both are given)."
    )
    logprobs: bool | None = Field(
        default=None, description="Return each output token's log-probability."
    )
    top_logprobs: int | None = Field(
        default=None,
        description="With logprobs: this many likeliest alternatives per token (0..20).",
    )
    tools: list[ChatTool] | None = Field(
        default=None,
        description="Functions the model may call (at most 128). Calls come back as "
        "message.tool_calls, their arguments valid against the function's parameters.",
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None,
        description="none: text only; auto (the default with tools): text or calls; "
        "required: calls only; a named function: one call to it.",
    )
    parallel_tool_calls: bool | None = Field(
        default=None, description="Whether a response may hold several calls (default true)."
    )
    functions: list[Any] | None = Field(
        default=None, description="Not supported (deprecated): use tools."
    )
    function_call: str | dict[str, Any] | None = Field(
        default=None, description="Not supported (deprecated): use tool_choice."
    )


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Prompt tokens reused from the prefix cache.")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens of the prompt as the model counted them.")
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class CompletionLogprobs(BaseModel):
    """The completions API's log-probabilities of a choice's tokens: one entry per token."""

    tokens: list[str] = Field(
        description="The tokens' texts (`bytes:` and escaped bytes for pieces of a character)."
    )
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] = Field(
        description="Per token: the likeliest tokens and the sampled one, by text."
    )
    text_offset: list[int] = Field(
        description="Where each token starts, in characters from the start of the prompt."
    )


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: CompletionLogprobs | None = None
    finish_reason: OpenAIFinishReason | None


class CompletionResponse(BaseModel):
    """POST /v1/completions answer (stream false); with stream true, chunks of this shape."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(
        description="The arguments as generated: a JSON object's text, valid against the "
        "function's parameters (a prefix of one when max_tokens cut the call short)."
    )


class ChatToolCall(BaseModel):
    id: str = Field(description="`call_` and 24 letters and digits.")
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The text; null when the answer is tool calls only.")
    tool_calls: list[ChatToolCall] | None = Field(
        default=None, description="The calls the model made (absent when none)."
    )

    @model_serializer(mode="wrap")
    def _without_absent_calls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("tool_calls") is None:
            data.pop("tool_calls", None)
        return data


class ChatLogprobs(BaseModel):
    """A chat choice's log-probabilities: one entry per content token."""

    content: list[ChatCompletionTokenLogprob] | None
    refusal: list[ChatCompletionTokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: ChatFinishReason


class ChatCompletionResponse(BaseModel):
    """POST /v1/chat/completions answer (stream false)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChoiceDeltaFunction(BaseModel):
    name: str | None = Field(default=None, description="In a call's first delta.")
    arguments: str | None = Field(default=None, description="The next piece of the arguments.")


class ChoiceDeltaToolCall(BaseModel):
    """A piece of a tool call: the first has its id, type and name, the next ones pieces
    of its arguments; `index` says which call of the choice."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChoiceDeltaFunction | None = None


class ChatDelta(BaseModel):
    """What a chunk adds: the role first, then content or tool calls; the last delta is
    empty."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None

    @model_serializer(mode="wrap")
    def _only_set_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: ChatFinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One streamed `data:` line of a chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="When this server started serving it (Unix seconds).")
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorDetail(BaseModel):
    message: str = Field(description="Human-readable; names the parameter, limit and value.")
    type: str = Field(
        description="invalid_request_error, authentication_error, rate_limit_error or server_error."
    )
    param: str | None = Field(description="The offending parameter, when there is one.")
    code: str = Field(description="Stable machine-readable code (e.g. model_not_found).")


class OpenAIErrorResponse(BaseModel):
    """Every error response's body under /v1, and a failed stream's last `data:` line."""

    error: OpenAIErrorDetail
