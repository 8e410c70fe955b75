"""OpenAI request bodies → the one validator, hence the same ValidatedRequest as /generate.

Parameters this server does not implement are refused here by name
(UnsupportedParameterError, 400), never ignored; every value rule is the validator's,
but for the pairs of fields only OpenAI's shapes have (chat's top_logprobs needs its
logprobs flag; best_of must equal n).
"""

from __future__ import annotations

from dataclasses import replace

from frontend.apis.openai.protocol import (
    ChatCompletionRequest,
    ChatMessageIn,
    CompletionRequest,
    ResponseFormat,
)
from frontend.errors import (
    ModelNotFoundError,
    SchemaViolationError,
    TopLogprobsWithoutLogprobsError,
    UnsupportedParameterError,
)
from frontend.validation import (
    COMPLETION_LOGPROBS_MAX,
    TOP_LOGPROBS_MAX,
    ChatMessage,
    OutputFormat,
    RequestedGeneration,
    RequestValidator,
    ValidatedRequest,
    sampling_inputs,
)

# OpenAI's documented defaults.
COMPLETION_MAX_TOKENS = 16
TEMPERATURE = 1.0
# OpenAI's other names for the validator's roles: developer is its newer name for system.
ROLE_ALIASES = {"developer": "system"}


def check_model(model: str, served_model_name: str) -> None:
    """ModelNotFoundError unless `model` is the one this server serves."""
    if model != served_model_name:
        raise ModelNotFoundError(model, served_model_name)


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
    for name, value in (("tools", body.tools), ("functions", body.functions)):
        if value:
            raise UnsupportedParameterError(name, f"{name} are not supported")
    for name, choice in (("tool_choice", body.tool_choice), ("function_call", body.function_call)):
        if choice not in (None, "none"):
            raise UnsupportedParameterError(name, f'{name} is not supported (only "none")')
    messages = [_message(index, message) for index, message in enumerate(body.messages)]
    if body.max_completion_tokens is not None:
        max_tokens, field = body.max_completion_tokens, "max_completion_tokens"
    elif body.max_tokens is not None:
        max_tokens, field = body.max_tokens, "max_tokens"
    else:
        max_tokens, field = validator.limits.max_tokens, "max_tokens"
    requested = _requested(body, max_tokens, field)
    if body.logprobs:
        # Chat asks for log-probabilities with a flag and for alternatives apart.
        requested = replace(
            requested,
            logprobs=top_logprobs or 0,
            logprobs_field="top_logprobs",
            logprobs_max=TOP_LOGPROBS_MAX,
        )
    return validator.chat(messages, requested)


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
    if role in ("tool", "function"):
        raise UnsupportedParameterError(
            f"{where}.role", f"{where}.role {role!r} is not supported: tools are not"
        )
    for name, value in (
        ("name", message.name),
        ("tool_calls", message.tool_calls),
        ("tool_call_id", message.tool_call_id),
        ("function_call", message.function_call),
    ):
        if value is not None:
            raise UnsupportedParameterError(f"{where}.{name}", f"{where}.{name} is not supported")
    content = message.content
    if content is None:
        raise SchemaViolationError(f"{where}.content is required", f"{where}.content")
    if isinstance(content, str):
        return ChatMessage(role, content)
    texts = []
    for part_index, part in enumerate(content):
        if part.type != "text" or part.text is None:
            field = f"{where}.content[{part_index}]"
            raise UnsupportedParameterError(
                field, f"{field}: content of type {part.type[:40]!r} is not supported: only text"
            )
        texts.append(part.text)
    return ChatMessage(role, "\n".join(texts))
