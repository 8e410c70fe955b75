"""Responses API bodies → the one validator, hence the same ValidatedRequest as chat.

`instructions` becomes a system message before the input; a string `input` is one user
message, message items keep their roles (developer is system); `function_call` items are
the calls of the assistant message before them (or of one of their own), and each
`function_call_output` a tool message answering one of them. Function tools and
`tool_choice` are chat's (llm_stack.tool_calls, dialect `responses`). Parameters this
server does not implement are refused here by name (UnsupportedParameterError, 400),
never ignored: `store` true, `previous_response_id`, `background` true and `conversation`
(nothing is stored), `include`, `reasoning`, `top_logprobs`, built-in tools, and the rest
below. The rules on the conversation (not empty, at most max_messages, the last message
not the assistant's, the characters in all, each call's id, name and arguments, each
output answering a call) and on the text.format schema are the validator's, which names
the input items they came from (INPUT_FIELDS) and `text.format.schema`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from frontend.apis.responses.protocol import (
    InputItem,
    JsonSchemaTextFormat,
    ResponsesRequest,
)
from frontend.errors import (
    EmptyMessagesError,
    InvalidToolError,
    SchemaViolationError,
    UnsupportedParameterError,
)
from frontend.validation import (
    AssistantToolCall,
    ChatMessage,
    ConversationFields,
    OutputFormat,
    RequestedGeneration,
    RequestValidator,
    ToolFields,
    ValidatedRequest,
    check_model,
    request_tools,
    sampling_inputs,
)
from llm_stack.tool_calls import (
    FunctionTool,
    ToolChoice,
    ToolError,
    parse_tool_choice,
)

# OpenAI's documented defaults.
TEMPERATURE = 1.0
TOP_P = 1.0
ROLE_ALIASES = {"developer": "system"}
# Text parts by the roles that may hold them: what someone said, what the assistant said.
_TEXT_PARTS = {"input_text", "output_text"}
# Values of declared parameters that ask for nothing this server does not do.
_HARMLESS: dict[str, tuple[object, ...]] = {
    "store": (None, False),
    "background": (None, False),
    "include": (None, []),
    "top_logprobs": (None, 0),
    "truncation": (None, "disabled"),
    "service_tier": (None, "auto", "default"),
}
_WHY = {
    "store": "responses are not stored (send store false or leave it out)",
    "previous_response_id": "responses are not stored: send the conversation as input items",
    "conversation": "conversations are not stored: send the conversation as input items",
    "background": "responses run in the foreground only",
    "background_options": "responses run in the foreground only",
    "include": "no additional output data is available",
    "reasoning": "the model does not reason apart from its output",
    "top_logprobs": "log-probabilities are not available on this API",
    "truncation": "a too long input is refused, never truncated",
    "service_tier": "only the default tier is served",
    "max_tool_calls": "there are no built-in tools",
    "prompt": "stored prompt templates are not supported",
    "prompt_cache_key": "the prefix cache works without a key",
    "prompt_cache_retention": "the prefix cache's retention is the server's",
    "prompt_cache_options": "the prefix cache's options are the server's",
    "context_management": "context management is not supported",
    "access_programs": "access programs are not supported",
    "image": "image options are not supported: the model reads text only",
    "moderation": "moderation is not supported",
}
# A function tool's members (openai.types.responses.FunctionToolParam's that this server
# implements); allowed_callers, defer_loading, ... are refused by name.
_TOOL_MEMBERS = frozenset({"type", "name", "description", "parameters", "strict"})
TOOL_FIELDS = ToolFields(tool_choice_name="tool_choice.name")
# How the validator names the conversation's parts: by the input items they came from
# (conversation() adds where each message and call came from).
INPUT_FIELDS = ConversationFields(
    messages="input",
    counted="messages (instructions included)",
    call_id="call_id",
    call_name="name",
    call_arguments="arguments",
    answer_id="call_id",
    call_noun="function_call",
)


@dataclass(frozen=True, slots=True)
class Echo:
    """What the response object repeats of the request, as it was asked for."""

    model: str
    instructions: str | None
    max_output_tokens: int | None
    temperature: float
    top_p: float
    text_format: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    parallel_tool_calls: bool
    user: str | None
    safety_identifier: str | None
    metadata: dict[str, str]


def responses_request(
    body: ResponsesRequest, validator: RequestValidator, served_model: str
) -> ValidatedRequest:
    """The validated request for a /v1/responses body."""
    check_model(body.model, served_model)
    refuse_unsupported(body)
    messages, fields = conversation(body)
    max_tokens = (
        validator.limits.max_tokens if body.max_output_tokens is None else body.max_output_tokens
    )
    temperature = TEMPERATURE if body.temperature is None else body.temperature
    tools = function_tools(body)
    choice = tool_choice(body)
    response_format = output_format(body)
    json_format = response_format is not None and response_format.type != "text"
    if tools and choice != "none" and json_format:
        raise UnsupportedParameterError(
            "text.format",
            "a JSON text.format is not supported with tools (unless tool_choice is none)",
        )
    requested = RequestedGeneration(
        max_tokens=max_tokens,
        sampling=sampling_inputs(body, temperature=temperature),
        stream=bool(body.stream),
        response_format=response_format,
        field_names={"max_tokens": "max_output_tokens"},
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        tool_fields=TOOL_FIELDS,
    )
    return validator.chat(messages, requested, fields)


def function_tools(body: ResponsesRequest) -> tuple[FunctionTool, ...]:
    """The body's function tools, checked; built-in tools and members this server does
    not implement are refused by name (400)."""
    if not body.tools:
        return ()
    for index, tool in enumerate(body.tools):
        where = f"tools[{index}]"
        kind = tool.get("type")
        if kind != "function":
            shown = str(kind)[:40]
            raise UnsupportedParameterError(
                f"{where}.type",
                f"{where}.type {shown!r} is not supported: only function tools (built-in "
                "tools are not)",
            )
        for name in sorted(set(tool) - _TOOL_MEMBERS):
            value = tool[name]
            if value is None or value is False:
                continue  # asks for nothing
            field = f"{where}.{name[:40]}"
            raise UnsupportedParameterError(field, f"{field} is not supported")
    return request_tools(body.tools, dialect="responses", field="tools")


def tool_choice(body: ResponsesRequest) -> ToolChoice | None:
    """The body's tool_choice (None: the default, auto with tools, none without)."""
    value = body.tool_choice
    if value is None:
        return None
    if isinstance(value, dict) and value.get("type") != "function":
        shown = str(value.get("type"))[:40]
        raise UnsupportedParameterError(
            "tool_choice.type",
            f"tool_choice.type {shown!r} is not supported: only none, auto, required or a function",
        )
    try:
        return parse_tool_choice(value, dialect="responses")
    except ToolError as error:
        raise InvalidToolError(error.field, str(error)) from None


def echo(body: ResponsesRequest, served_model: str) -> Echo:
    """The request's settings as the response object states them (defaults filled in)."""
    return Echo(
        model=body.model or served_model,
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        temperature=TEMPERATURE if body.temperature is None else body.temperature,
        top_p=TOP_P if body.top_p is None else body.top_p,
        text_format=_format_echo(body),
        tool_choice=_choice_echo(body),
        tools=list(body.tools or ()),
        parallel_tool_calls=True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        user=body.user,
        safety_identifier=body.safety_identifier,
        metadata=dict(body.metadata or {}),
    )


def refuse_unsupported(body: ResponsesRequest) -> None:
    """UnsupportedParameterError naming the first parameter asking for what this server
    does not do."""
    for name, why in _WHY.items():
        value = getattr(body, name)
        if value in _HARMLESS.get(name, (None,)):
            continue
        if name == "tools" and value == []:
            continue
        if name == "reasoning" and isinstance(value, dict) and not any(value.values()):
            continue  # {} or every member null asks for nothing
        raise UnsupportedParameterError(name, f"{name} is not supported: {why}")
    if body.stream_options is not None:
        if not body.stream:
            raise UnsupportedParameterError(
                "stream_options", "stream_options is only allowed with stream true"
            )
        if body.stream_options.include_obfuscation:
            field = "stream_options.include_obfuscation"
            raise UnsupportedParameterError(field, f"{field} is not supported: only false")
    if body.text is not None and body.text.verbosity not in (None, "medium"):
        raise UnsupportedParameterError(
            "text.verbosity", "text.verbosity is not supported: only medium"
        )


def conversation(body: ResponsesRequest) -> tuple[list[ChatMessage], ConversationFields]:
    """The chat messages of `instructions` and `input`, and how the validator names their
    parts: each message by the item it came from (an assistant's turn of calls by its last
    item), each call by its item."""
    messages = [] if body.instructions is None else [ChatMessage("system", body.instructions)]
    at = [] if body.instructions is None else ["instructions"]
    calls: list[tuple[str, ...]] = [()] * len(messages)
    if isinstance(body.input, str):
        messages.append(ChatMessage("user", body.input))
        return messages, replace(INPUT_FIELDS, at=[*at, "input"], calls=[*calls, ()])
    if not body.input:
        raise EmptyMessagesError("input")
    for index, item in enumerate(body.input):
        where = f"input[{index}]"
        if item.type == "function_call":
            call = _call(where, item)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                # The same turn: its text, then its calls.
                messages[-1] = ChatMessage("assistant", last.content, (*last.tool_calls, call))
                at[-1] = where
                calls[-1] = (*calls[-1], where)
            else:
                messages.append(ChatMessage("assistant", "", (call,)))
                at.append(where)
                calls.append((where,))
            continue
        if item.type == "function_call_output":
            message = _call_output(where, item)
        else:
            message = _message(where, item)
            if message.role == "assistant" and messages and messages[-1].tool_calls:
                field = f"{where}.role"
                raise InvalidToolError(
                    field,
                    f"{field}: an assistant message after function calls needs their "
                    "function_call_output items before it",
                )
        messages.append(message)
        at.append(where)
        calls.append(())
    return messages, replace(INPUT_FIELDS, at=at, calls=calls)


def _only(where: str, item: InputItem, members: frozenset[str]) -> None:
    """SchemaViolationError naming the first member `item` has beyond its type's."""
    given = {name for name in item.model_fields_set if getattr(item, name) is not None}
    extra = {name for name, value in (item.model_extra or {}).items() if value is not None}
    for name in sorted(given - members - {"type"}) + sorted(extra):
        field = f"{where}.{name[:40]}"
        raise SchemaViolationError(f"{field} is not a member of a {item.type} item", field)


_MESSAGE_MEMBERS = frozenset({"role", "content", "id", "status", "phase"})
_CALL_MEMBERS = frozenset({"call_id", "name", "arguments", "id", "status"})
_OUTPUT_MEMBERS = frozenset({"call_id", "output", "id", "status"})


def _required(where: str, name: str, value: str | None) -> str:
    if value is None:
        raise SchemaViolationError(f"{where}.{name} is required", f"{where}.{name}")
    return value


def _call(where: str, item: InputItem) -> AssistantToolCall:
    """A function_call item: an assistant's call (the validator's rules, named here)."""
    _only(where, item, _CALL_MEMBERS)
    call_id = _required(where, "call_id", item.call_id)
    name = _required(where, "name", item.name)
    arguments = _required(where, "arguments", item.arguments)
    return AssistantToolCall(call_id, name, arguments)


def _call_output(where: str, item: InputItem) -> ChatMessage:
    """A function_call_output item: the tool message answering a call of the turn before
    (the validator checks that it does)."""
    _only(where, item, _OUTPUT_MEMBERS)
    call_id = _required(where, "call_id", item.call_id)
    output = item.output
    if output is None:
        raise SchemaViolationError(f"{where}.output is required", f"{where}.output")
    text = output if isinstance(output, str) else "\n".join(_texts(f"{where}.output", output))
    return ChatMessage("tool", text, tool_call_id=call_id)


def _message(where: str, item: InputItem) -> ChatMessage:
    if item.type != "message":
        field = f"{where}.type"
        raise UnsupportedParameterError(
            field,
            f"{field} {item.type[:40]!r} is not supported: only message, function_call and "
            "function_call_output items",
        )
    _only(where, item, _MESSAGE_MEMBERS)
    if item.phase is not None:
        raise UnsupportedParameterError(f"{where}.phase", f"{where}.phase is not supported")
    role = _required(where, "role", item.role)
    role = ROLE_ALIASES.get(role, role)
    if item.content is None:
        raise SchemaViolationError(f"{where}.content is required", f"{where}.content")
    if isinstance(item.content, str):
        return ChatMessage(role, item.content)
    return ChatMessage(role, "\n".join(_texts(f"{where}.content", item.content)))


def _texts(where: str, parts: Sequence[Any]) -> list[str]:
    texts = []
    for index, part in enumerate(parts):
        field = f"{where}[{index}]"
        if part.type not in _TEXT_PARTS:
            raise UnsupportedParameterError(
                f"{field}.type",
                f"{field}.type {part.type[:40]!r} is not supported: only input_text and "
                "output_text",
            )
        for name, value in sorted((part.model_extra or {}).items()):
            if value is None or (name == "logprobs" and part.type == "output_text"):
                continue  # what a previous output reported of its tokens: no request
            raise SchemaViolationError(
                f"{field}.{name} is not a member of a {part.type} part", f"{field}.{name}"
            )
        if part.annotations:
            raise UnsupportedParameterError(
                f"{field}.annotations", f"{field}.annotations is not supported: only empty"
            )
        if part.text is None:
            raise SchemaViolationError(f"{field}.text is required", f"{field}.text")
        texts.append(part.text)
    return texts


def output_format(body: ResponsesRequest) -> OutputFormat | None:
    """The validator's view of `text.format` (its schema's errors name
    `text.format.schema...`)."""
    fmt = body.text.format if body.text is not None else None
    if fmt is None:
        return None
    if isinstance(fmt, JsonSchemaTextFormat):
        return OutputFormat(
            type="json_schema",
            has_json_schema=True,
            schema=fmt.schema_,
            field="text.format",
            schema_field="text.format.schema",
        )
    return OutputFormat(type=fmt.type, field="text.format")


def _choice_echo(body: ResponsesRequest) -> str | dict[str, Any]:
    if body.tool_choice is not None:
        return body.tool_choice
    return "auto"


def _format_echo(body: ResponsesRequest) -> dict[str, Any]:
    fmt = body.text.format if body.text is not None else None
    if fmt is None:
        return {"type": "text"}
    return fmt.model_dump(mode="json", by_alias=True, exclude_none=True)
