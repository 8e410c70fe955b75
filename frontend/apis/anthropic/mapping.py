"""Anthropic request bodies → the one validator, hence the same ValidatedRequest as the
other APIs.

What Anthropic defines and this server does not implement is refused here by name
(UnsupportedParameterError, 400), never ignored. Every value rule is the validator's, but
for those only Anthropic's shapes have: temperature's 0..1, and the stop sequences, which
this API matches itself (frontend.apis.anthropic.stops) under the validator's limits.
"""

from __future__ import annotations

import json
from dataclasses import replace

from frontend.apis.anthropic.protocol import (
    AnthropicContentBlockIn,
    AnthropicCountTokensRequest,
    AnthropicMessageIn,
    AnthropicMessagesRequest,
    AnthropicTextBlockIn,
    AnthropicTool,
    AnthropicToolChoice,
)
from frontend.errors import (
    EmptyMessagesError,
    InvalidToolError,
    OutOfRangeError,
    SchemaViolationError,
    UnsupportedParameterError,
)
from frontend.validation import (
    AssistantToolCall,
    ChatMessage,
    ConversationFields,
    RequestedGeneration,
    RequestValidator,
    ToolFields,
    ValidatedRequest,
    check_model,
    check_stop,
    check_text,
    request_tools,
    sampling_inputs,
)
from llm_stack.tool_calls import ToolChoice, ToolError, parse_tool_choice

# Anthropic's documented default and range.
TEMPERATURE = 1.0
TEMPERATURE_MAX = 1.0
STOP_SEQUENCES = "stop_sequences"
# Values of fields that ask for nothing this server does not do.
SERVICE_TIERS = ("auto", "standard_only")
SPEEDS = ("standard",)


# Where Anthropic's tool fields are, for the validator's errors.
TOOL_FIELDS = ToolFields(
    tools="tools",
    tool_choice="tool_choice",
    tool_choice_name="tool_choice.name",
    parallel_tool_calls="tool_choice.disable_parallel_tool_use",
)
# What a block of each type may hold (cache_control: the prefix cache needs no breakpoints).
TEXT_MEMBERS = frozenset({"type", "text", "cache_control"})
TOOL_USE_MEMBERS = frozenset({"type", "id", "name", "input", "cache_control"})
TOOL_RESULT_MEMBERS = frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"})
TOOL_MEMBERS = frozenset({"name", "description", "input_schema", "type", "cache_control", "strict"})


def messages_request(
    body: AnthropicMessagesRequest, validator: RequestValidator, served_model_name: str
) -> ValidatedRequest:
    """The validated request for a /v1/messages body (its stop sequences apart: the
    generation runs without them, frontend.apis.anthropic.stops finds them)."""
    check_text(body)
    check_model(body.model, served_model_name)
    _refuse_unsupported(body)
    for name, value in (
        ("inference_geo", body.inference_geo),
        ("diagnostics", body.diagnostics),
        ("user_profile_id", body.user_profile_id),
        ("workspace_id", body.workspace_id),
    ):
        if value is not None:
            raise UnsupportedParameterError(name, f"{name} is not supported")
    if body.service_tier is not None and body.service_tier not in SERVICE_TIERS:
        raise UnsupportedParameterError(
            "service_tier",
            f"service_tier {body.service_tier[:40]!r} is not supported (only auto or "
            "standard_only: one tier)",
        )
    temperature = TEMPERATURE if body.temperature is None else body.temperature
    if not 0 <= temperature <= TEMPERATURE_MAX:
        raise OutOfRangeError("temperature", temperature, f"0..{TEMPERATURE_MAX:g}")
    check_stop(body.stop_sequences or (), validator.limits, STOP_SEQUENCES)
    messages, fields = conversation(body)
    requested = RequestedGeneration(
        max_tokens=body.max_tokens,
        sampling=sampling_inputs(body, temperature=temperature),
        stream=bool(body.stream),
    )
    return validator.chat(messages, _with_tools(requested, body), fields)


def count_tokens_request(
    body: AnthropicCountTokensRequest, validator: RequestValidator, served_model_name: str
) -> ValidatedRequest:
    """The validated request whose prompt /v1/messages/count_tokens counts: the same
    conversation and tools as a /v1/messages body with the same input gives."""
    check_text(body)
    check_model(body.model, served_model_name)
    _refuse_unsupported(body)
    messages, fields = conversation(body)
    return validator.chat(messages, _with_tools(RequestedGeneration(max_tokens=1), body), fields)


def _refuse_unsupported(body: AnthropicMessagesRequest | AnthropicCountTokensRequest) -> None:
    thinking = body.thinking
    if thinking is not None and thinking != {"type": "disabled"}:
        raise UnsupportedParameterError(
            "thinking", "thinking is not supported (only type disabled)"
        )
    for name, config in (
        ("output_config", body.output_config),
        ("context_management", body.context_management),
    ):
        # Named by the member that asks for something (an empty one asks for nothing).
        for member, value in (config or {}).items():
            if value is not None:
                field = f"{name}.{member[:40]}"
                raise UnsupportedParameterError(field, f"{field} is not supported")
    for name, value in (("mcp_servers", body.mcp_servers), ("container", body.container)):
        if value:
            raise UnsupportedParameterError(name, f"{name} is not supported")
    if body.speed is not None and body.speed not in SPEEDS:
        raise UnsupportedParameterError(
            "speed", f"speed {body.speed[:40]!r} is not supported (only standard)"
        )


def _with_tools(
    requested: RequestedGeneration, body: AnthropicMessagesRequest | AnthropicCountTokensRequest
) -> RequestedGeneration:
    """`requested` with the body's tools and tool choice (the validator checks them
    against each other and builds their guide)."""
    tools = request_tools(
        [_tool(index, tool) for index, tool in enumerate(body.tools or ())],
        dialect="anthropic",
        field="tools",
    )
    choice = body.tool_choice
    return replace(
        requested,
        tools=tools,
        tool_choice=_tool_choice(choice),
        parallel_tool_calls=not (choice is not None and choice.disable_parallel_tool_use),
        tool_fields=TOOL_FIELDS,
    )


def _tool(index: int, tool: AnthropicTool) -> dict[str, object]:
    """A client tool as llm_stack.tool_calls reads Anthropic's (strict is accepted: the
    grammar always enforces the schema)."""
    where = f"tools[{index}]"
    if tool.type not in (None, "custom"):
        raise UnsupportedParameterError(
            f"{where}.type",
            f"{where}: tools of type {tool.type[:40]!r} are not supported: only client tools",
        )
    for name, value in (tool.model_extra or {}).items():
        if name not in TOOL_MEMBERS and value is not None:
            raise UnsupportedParameterError(f"{where}.{name}", f"{where}.{name} is not supported")
    if tool.input_schema is None:
        raise SchemaViolationError(f"{where}.input_schema is required", f"{where}.input_schema")
    return tool.model_dump(include={"name", "description", "input_schema"}, exclude_none=True)


def _tool_choice(choice: AnthropicToolChoice | None) -> ToolChoice | None:
    if choice is None:
        return None
    try:
        return parse_tool_choice(choice.model_dump(exclude_none=True), dialect="anthropic")
    except ToolError as error:
        raise InvalidToolError(error.field, str(error)) from None


class _Conversation:
    """The chat messages being made of a body, with where each one and each call came
    from (for the validator's errors)."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self.at: list[str] = []
        self.calls: list[tuple[str, ...]] = []

    def add(self, message: ChatMessage, at: str, calls: tuple[str, ...] = ()) -> None:
        self.messages.append(message)
        self.at.append(at)
        self.calls.append(calls)


def conversation(
    body: AnthropicMessagesRequest | AnthropicCountTokensRequest,
) -> tuple[list[ChatMessage], ConversationFields]:
    """The body's system prompt and messages as the validator's chat messages, and how
    the validator names their parts: an assistant's tool_use blocks become its tool calls
    (named by block), a user's tool_result blocks tool messages (before the user's text,
    named by block)."""
    if not body.messages:
        raise EmptyMessagesError  # a system prompt alone is not a conversation
    made = _Conversation()
    if body.system is not None:
        made.add(ChatMessage("system", _system_text(body.system)), "system")
    for index, message in enumerate(body.messages):
        _message(index, message, made)
    fields = ConversationFields(
        at=made.at,
        calls=made.calls,
        call_name="name",
        call_arguments="input",
        answer_id="tool_use_id",
        call_noun="tool_use",
    )
    return made.messages, fields


def _system_text(system: str | list[AnthropicTextBlockIn]) -> str:
    if isinstance(system, str):
        return system
    for index, block in enumerate(system):
        if block.citations is not None:
            field = f"system[{index}].citations"
            raise UnsupportedParameterError(field, f"{field} is not supported")
    return "\n".join(block.text for block in system)


def _message(index: int, message: AnthropicMessageIn, made: _Conversation) -> None:
    where = f"messages[{index}]"
    content = message.content
    if isinstance(content, str):
        made.add(ChatMessage(message.role, content), where)
        return
    texts: list[str] = []
    tool_calls: list[AssistantToolCall] = []
    call_blocks: list[str] = []
    answers = False
    for number, block in enumerate(content):
        at = f"{where}.content[{number}]"
        if block.type == "text":
            texts.append(_block_text(at, block))
        elif block.type == "tool_use":
            _expect_role(at, block.type, message.role, "assistant")
            tool_calls.append(_tool_use(at, block))
            call_blocks.append(at)
        elif block.type == "tool_result":
            # A user's answers to calls come before what the user says besides.
            _expect_role(at, block.type, message.role, "user")
            made.add(_tool_result(at, block), at)
            answers = True
        else:
            raise UnsupportedParameterError(
                f"{at}.type",
                f"{at}: content of type {block.type[:40]!r} is not supported: only text, "
                "tool_use and tool_result",
            )
    if message.role == "assistant" or not answers or texts:
        text = "\n".join(texts)
        made.add(ChatMessage(message.role, text, tuple(tool_calls)), where, tuple(call_blocks))


def _expect_role(at: str, kind: str, role: str, expected: str) -> None:
    if role != expected:
        raise InvalidToolError(f"{at}.type", f"{at}: {kind} blocks belong in {expected} messages")


def _block_text(where: str, block: AnthropicContentBlockIn) -> str:
    if block.text is None:
        raise SchemaViolationError(f"{where}.text is required", f"{where}.text")
    _refuse_members(where, block, TEXT_MEMBERS)
    return block.text


def _tool_use(where: str, block: AnthropicContentBlockIn) -> AssistantToolCall:
    _refuse_members(where, block, TOOL_USE_MEMBERS)
    call_id, name, arguments = block.id, block.name, block.input
    if call_id is None or name is None or arguments is None:
        missing = "id" if call_id is None else "name" if name is None else "input"
        raise SchemaViolationError(f"{where}.{missing} is required", f"{where}.{missing}")
    return AssistantToolCall(call_id, name, json.dumps(arguments, ensure_ascii=False))


def _tool_result(where: str, block: AnthropicContentBlockIn) -> ChatMessage:
    _refuse_members(where, block, TOOL_RESULT_MEMBERS)
    call_id = block.tool_use_id
    if call_id is None:
        raise SchemaViolationError(f"{where}.tool_use_id is required", f"{where}.tool_use_id")
    if block.is_error:
        # The chat template has no way to mark a result as an error.
        raise UnsupportedParameterError(
            f"{where}.is_error", f"{where}.is_error true is not supported"
        )
    content = block.content
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        for number, part in enumerate(content):
            if part.citations is not None:
                field = f"{where}.content[{number}].citations"
                raise UnsupportedParameterError(field, f"{field} is not supported")
        text = "\n".join(part.text for part in content)
    return ChatMessage("tool", text, tool_call_id=call_id)


def _refuse_members(where: str, block: AnthropicContentBlockIn, allowed: frozenset[str]) -> None:
    """UnsupportedParameterError naming the first member set that its block type lacks
    (or this server does not implement, such as citations)."""
    extra = block.model_extra or {}
    for name in (*type(block).model_fields, *extra):
        if name in allowed:
            continue
        value = extra[name] if name in extra else getattr(block, name)
        if value is not None:
            field = f"{where}.{name}"
            raise UnsupportedParameterError(
                field, f"{field} is not supported in a {block.type[:40]} block"
            )
