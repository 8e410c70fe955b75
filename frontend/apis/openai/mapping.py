"""OpenAI request bodies → the one validator, hence the same ValidatedRequest as /generate.

Chat's function tools, tool_choice and parallel_tool_calls, and messages carrying an
assistant's tool_calls or answering one (role tool), become the RequestedGeneration's
tools; other tool types, the deprecated functions / function_call and role function are
refused by name.

Parameters this server does not implement are refused here by name
(UnsupportedParameterError, 400), never ignored; every value rule is the validator's,
but for the pairs of fields only OpenAI's shapes have (chat's top_logprobs needs its
logprobs flag; best_of must equal n).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from frontend.apis.openai.protocol import (
    ChatCompletionRequest,
    ChatMessageIn,
    ChatTool,
    CompletionRequest,
    NamedToolChoice,
    ResponseFormat,
    ToolCallIn,
)
from frontend.errors import (
    SchemaViolationError,
    TopLogprobsWithoutLogprobsError,
    UnsupportedParameterError,
)
from frontend.validation import (
    COMPLETION_LOGPROBS_MAX,
    TOP_LOGPROBS_MAX,
    AssistantToolCall,
    ChatMessage,
    OutputFormat,
    RequestedGeneration,
    RequestValidator,
    ValidatedRequest,
    request_tools,
    sampling_inputs,
)
from llm_stack.tool_calls import FunctionTool, NamedTool, ToolChoice

# OpenAI's documented defaults.
COMPLETION_MAX_TOKENS = 16
TEMPERATURE = 1.0
# OpenAI's other names for the validator's roles: developer is its newer name for system.
ROLE_ALIASES = {"developer": "system"}


def completion_request(body: CompletionRequest, validator: RequestValidator) -> ValidatedRequest:
    """The validated request for a /v1/completions body."""
    _refuse_shared(body.logit_bias, body.stream, body.stream_options is not None)
    if body.echo:
        raise UnsupportedParameterError("echo", "echo is not supported")
    n = _choices(body.n)
    if body.best_of is not None and body.best_of != n:
        # best_of > n would generate best_of and return the n likeliest: no ranking here.
        raise UnsupportedParameterError(
            "best_of", f"best_of {body.best_of} is not supported: only best_of equal to n ({n})"
        )
    if body.suffix:
        raise UnsupportedParameterError("suffix", "suffix is not supported")
    max_tokens = COMPLETION_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    requested = _requested(body, max_tokens, "max_tokens")
    requested = replace(requested, logprobs=body.logprobs, logprobs_max=COMPLETION_LOGPROBS_MAX)
    return validator.completion(_single_prompt(body.prompt), requested)


def chat_request(body: ChatCompletionRequest, validator: RequestValidator) -> ValidatedRequest:
    """The validated request for a /v1/chat/completions body."""
    _refuse_shared(body.logit_bias, body.stream, body.stream_options is not None)
    top_logprobs = body.top_logprobs
    if not body.logprobs and top_logprobs not in (None, 0):
        raise TopLogprobsWithoutLogprobsError(top_logprobs)
    if body.functions:
        raise UnsupportedParameterError(
            "functions", "functions is deprecated and not supported: use tools"
        )
    if body.function_call not in (None, "none"):
        raise UnsupportedParameterError(
            "function_call", "function_call is deprecated and not supported: use tool_choice"
        )
    tools = _tools(body.tools) if body.tools else None
    tool_choice = _tool_choice(body.tool_choice)
    messages = [_message(index, message) for index, message in enumerate(body.messages)]
    if body.max_completion_tokens is not None:
        max_tokens, field = body.max_completion_tokens, "max_completion_tokens"
    elif body.max_tokens is not None:
        max_tokens, field = body.max_tokens, "max_tokens"
    else:
        max_tokens, field = validator.limits.max_tokens, "max_tokens"
    requested = replace(
        _requested(body, max_tokens, field),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.parallel_tool_calls is not False,
    )
    if body.logprobs:
        # Chat asks for log-probabilities with a flag and for alternatives apart.
        requested = replace(
            requested,
            logprobs=top_logprobs or 0,
            logprobs_field="top_logprobs",
            logprobs_max=TOP_LOGPROBS_MAX,
        )
    return validator.chat(messages, requested)


def _tools(tools: list[ChatTool]) -> tuple[FunctionTool, ...]:
    """Function tools; another type of tool is refused by name."""
    for index, tool in enumerate(tools):
        if tool.type != "function":
            field = f"tools[{index}].type"
            raise UnsupportedParameterError(
                field, f"{field}: tools of type {tool.type[:40]!r} are not supported: only function"
            )
        extra = next(iter(tool.model_extra or {}), None)
        if extra is not None:
            field = f"tools[{index}].{extra[:40]}"
            raise SchemaViolationError(f"{field}: extra inputs are not permitted", field)
    return request_tools([tool.model_dump(exclude_none=True) for tool in tools], field="tools")


def _tool_choice(
    choice: Literal["none", "auto", "required"] | NamedToolChoice | None,
) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        if choice.type != "function":
            raise UnsupportedParameterError(
                "tool_choice.type",
                f"tool_choice.type {choice.type[:40]!r} is not supported: only none, auto, "
                "required or a function",
            )
        extra = next(iter(choice.model_extra or {}), None)
        if extra is not None:
            field = f"tool_choice.{extra[:40]}"
            raise SchemaViolationError(f"{field}: extra inputs are not permitted", field)
        if choice.function is None:
            raise SchemaViolationError(
                "tool_choice.function is required with type function", "tool_choice.function"
            )
        return NamedTool(choice.function.name)
    return choice


def _choices(n: int | None) -> int:
    return 1 if n is None else n


def _refuse_shared(
    logit_bias: dict[str, float] | None, stream: bool | None, has_options: bool
) -> None:
    if logit_bias:
        raise UnsupportedParameterError("logit_bias", "logit_bias is not supported")
    if has_options and not stream:
        raise UnsupportedParameterError(
            "stream_options", "stream_options is only allowed with stream true"
        )


def _requested(
    body: CompletionRequest | ChatCompletionRequest, max_tokens: int, field: str
) -> RequestedGeneration:
    """The body's generation parameters: its sampling fields by their contract names
    (llm_stack.sampling_contract), with OpenAI's defaults and vLLM's ignore_eos."""
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or ())
    # ignore_eos (vLLM's): the end-of-sequence token cannot end it before max_tokens.
    min_tokens = max_tokens if body.ignore_eos else body.min_tokens
    temperature = TEMPERATURE if body.temperature is None else body.temperature
    return RequestedGeneration(
        max_tokens=max_tokens,
        sampling=sampling_inputs(body, temperature=temperature, min_tokens=min_tokens),
        stop=stop,
        stream=bool(body.stream),
        response_format=output_format(body.response_format),
        field_names={"max_tokens": field},
    )


def output_format(response_format: ResponseFormat | None) -> OutputFormat | None:
    """The validator's view of a response_format (shared with /generate)."""
    if response_format is None:
        return None
    member = response_format.json_schema
    return OutputFormat(
        type=response_format.type,
        has_json_schema=member is not None,
        schema=member.schema_ if member is not None else None,
    )


def _single_prompt(prompt: str | list[str] | list[int] | list[list[int]]) -> str:
    if isinstance(prompt, str):
        return prompt
    if not prompt:
        return ""
    if not all(isinstance(item, str) for item in prompt):
        raise UnsupportedParameterError(
            "prompt", "prompt as token ids is not supported: send the text"
        )
    if len(prompt) > 1:
        raise UnsupportedParameterError(
            "prompt", f"a list of {len(prompt)} prompts is not supported: send one per request"
        )
    first = prompt[0]
    assert isinstance(first, str)
    return first


def _message(index: int, message: ChatMessageIn) -> ChatMessage:
    where = f"messages[{index}]"
    role = ROLE_ALIASES.get(message.role, message.role)
    if role == "function":
        raise UnsupportedParameterError(
            f"{where}.role",
            f"{where}.role 'function' is not supported (deprecated): use tool messages",
        )
    for name, value in (
        ("name", message.name),
        ("function_call", message.function_call),
        ("refusal", message.refusal),
        ("annotations", message.annotations or None),
        ("audio", message.audio),
    ):
        if value is not None:
            raise UnsupportedParameterError(f"{where}.{name}", f"{where}.{name} is not supported")
    calls = _calls(where, message.tool_calls or ())
    content = message.content
    if content is None:
        if calls:
            return ChatMessage(role, "", calls, message.tool_call_id)
        raise SchemaViolationError(f"{where}.content is required", f"{where}.content")
    if isinstance(content, str):
        return ChatMessage(role, content, calls, message.tool_call_id)
    texts = []
    for part_index, part in enumerate(content):
        if part.type != "text" or part.text is None:
            field = f"{where}.content[{part_index}]"
            raise UnsupportedParameterError(
                field, f"{field}: content of type {part.type[:40]!r} is not supported: only text"
            )
        texts.append(part.text)
    return ChatMessage(role, "\n".join(texts), calls, message.tool_call_id)


def _calls(where: str, calls: Sequence[ToolCallIn]) -> tuple[AssistantToolCall, ...]:
    out = []
    for number, call in enumerate(calls):
        at = f"{where}.tool_calls[{number}]"
        if call.type != "function":
            raise UnsupportedParameterError(
                f"{at}.type", f"{at}.type: calls of type {call.type[:40]!r} are not supported"
            )
        extra = next(iter(call.model_extra or {}), None)
        if extra is not None:
            field = f"{at}.{extra[:40]}"
            raise SchemaViolationError(f"{field}: extra inputs are not permitted", field)
        if call.function is None:
            raise SchemaViolationError(f"{at}.function is required", f"{at}.function")
        out.append(AssistantToolCall(call.id, call.function.name, call.function.arguments))
    return tuple(out)
