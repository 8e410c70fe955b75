"""The one validation step: what an API asks for in, a `ValidatedRequest` out.

It knows no wire format, so every API feeds it the same `RequestedGeneration`: a prompt
(`completion`) or chat messages (`chat`) with the sampling parameters. Each rule raises
its own error naming the field, the limit and the value; the sampling parameters' rules
are their declarations' (llm_stack.sampling_contract), so a new parameter brings its
rule, its error and its OpenAPI bounds with it. The prompt's length in tokens is the
model's business: Triton's tokenizer checks it (after rendering messages with the
model's chat template).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel

from frontend.errors import (
    AssistantMessageLastError,
    EmptyMessagesError,
    EmptyPromptError,
    EmptyStopSequenceError,
    InvalidSchemaError,
    InvalidTextError,
    InvalidToolError,
    LogprobsOutOfRangeError,
    ModelNotFoundError,
    OutOfRangeError,
    PromptTooLongError,
    SchemaViolationError,
    StopSequenceTooLongError,
    TooManyMessagesError,
    TooManyStopSequencesError,
    UnknownRoleError,
    UnsupportedParameterError,
    UnsupportedSchemaKeywordError,
)
from llm_stack.ensemble_contract import MAX_NUM_TOP_LOG_PROBS
from llm_stack.guided_decoding import Guide, GuideType, Path, SchemaError, check_schema, schema_text
from llm_stack.sampling_contract import (
    OPTIONAL_PARAMETERS,
    PARAMETERS,
    SAMPLING_PARAMETERS,
    Limit,
    OtherParameter,
    SamplingInputs,
    SamplingParameter,
    Setting,
)
from llm_stack.tool_calls import (
    DEFAULT_FORMAT,
    NAME_PATTERN,
    FunctionTool,
    NamedTool,
    ToolCallFormat,
    ToolChoice,
    ToolError,
    check_tool_choice,
    parse_tools,
    tool_call_format,
    tool_guide,
    tools_text,
)
from llm_stack.tool_calls.definitions import Dialect

ROLES = ("system", "user", "assistant", "tool")
# Call ids as clients send them back (OpenAI's `call_...`, vLLM's, Anthropic's `toolu_...`):
# the preprocessing model's rule, so a chat the frontend lets through is not refused there.
CALL_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# Likeliest alternatives per token: what the ensemble's num_top_log_probs takes (OpenAI
# chat's top_logprobs limit); OpenAI's completions allow 5 (their `logprobs`).
TOP_LOGPROBS_MAX = MAX_NUM_TOP_LOG_PROBS
COMPLETION_LOGPROBS_MAX = 5


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """The configurable bounds (from the settings); sampling parameters name theirs as
    `Setting`s (llm_stack.sampling_contract)."""

    max_prompt_chars: int
    max_tokens: int
    max_stop_sequences: int
    max_stop_chars: int
    max_top_k: int
    max_n: int
    max_messages: int = 1024
    # How the model writes tool calls (llm_stack.tool_calls.FORMATS), as vLLM's
    # --tool-call-parser: the grammar writes it, the service's parser reads it.
    tool_call_parser: str = DEFAULT_FORMAT.name


# JSON Schema keywords by JSON type, e.g. {"integer": {"minimum": 1}}; see field_schemas.
TypedKeywords = dict[str, dict[str, Any]]
# Those keywords by field name.
FieldRules = dict[str, TypedKeywords]


def _setting(limits: ValidationLimits, bound: Setting) -> int:
    value = getattr(limits, bound.name)
    assert isinstance(value, int), bound
    return value


def _documented(bound: Limit, limits: ValidationLimits) -> float:
    """A bound as the document states it: another parameter's bound stands for its value."""
    if isinstance(bound, Setting):
        return _setting(limits, bound)
    if isinstance(bound, OtherParameter):
        return _documented(PARAMETERS[bound.name].maximum, limits)
    return bound


def _parameter_schema(parameter: SamplingParameter, limits: ValidationLimits) -> TypedKeywords:
    low = "exclusiveMinimum" if parameter.exclusive_minimum else "minimum"
    high = "exclusiveMaximum" if parameter.exclusive_maximum else "maximum"
    json_type = "number" if parameter.python_type is float else "integer"
    return {
        json_type: {
            low: _documented(parameter.minimum, limits),
            high: _documented(parameter.maximum, limits),
        }
    }


def field_schemas(limits: ValidationLimits) -> FieldRules:
    """The rules below that concern one field alone, as JSON Schema keywords for the API document.

    Built from the same declarations and limits as the checks, so the document cannot drift
    from them; rules across fields (min_tokens within max_tokens, the messages' total
    length, the last role) stay in the descriptions. The validator remains the one place
    rules are applied.
    """
    text = {"minLength": 1, "maxLength": limits.max_prompt_chars}
    stop_sequence = {"minLength": 1, "maxLength": limits.max_stop_chars}
    sampling = {p.client_name: _parameter_schema(p, limits) for p in SAMPLING_PARAMETERS}
    return {
        "prompt": {"string": text},
        **sampling,
        # OpenAI chat's other name for max_tokens.
        "max_completion_tokens": sampling["max_tokens"],
        "stop": {
            "array": {"maxItems": limits.max_stop_sequences, "items": stop_sequence},
            "string": stop_sequence,
        },
        # /v1/completions allows fewer (frontend.apis.openai narrows its `logprobs`); chat's
        # `logprobs` is a boolean, which an integer rule leaves alone.
        "logprobs": {"integer": {"minimum": 0, "maximum": TOP_LOGPROBS_MAX}},
        "top_logprobs": {"integer": {"minimum": 0, "maximum": TOP_LOGPROBS_MAX}},
        "messages": {"array": {"minItems": 1, "maxItems": limits.max_messages}},
        "role": {"string": {"enum": list(ROLES)}},
        "content": {"string": {"maxLength": limits.max_prompt_chars}},
    }


def sampling_inputs(body: object, **values: Any) -> SamplingInputs:
    """The sampling parameters a wire model holds under their client names (absent: None),
    with `values` (by the parameters' names) over them: an API's own defaults and fields."""
    found = {p.name: getattr(body, p.client_name, None) for p in OPTIONAL_PARAMETERS}
    return SamplingInputs(**{**found, **values})


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A requested response format before validation, in OpenAI's terms."""

    type: str  # text, json_object or json_schema
    has_json_schema: bool = False  # whether response_format.json_schema was sent
    schema: Any = None  # response_format.json_schema.schema (None: absent)
    field: str = "response_format"
    # Where the schema is, where the API keeps it elsewhere (Responses' text.format.schema).
    schema_field: str | None = None


@dataclass(frozen=True, slots=True)
class AssistantToolCall:
    """A call an assistant message of the conversation made; `arguments` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str  # "" for an assistant's message of tool calls only
    tool_calls: tuple[AssistantToolCall, ...] = ()  # an assistant's
    tool_call_id: str | None = None  # a tool message's: the call it answers


@dataclass(frozen=True, slots=True)
class ConversationFields:
    """How an API names its conversation's parts, so that the rules on a conversation
    name what the client sent (chat's names by default).

    `messages` is the list as a whole (`counted` what its count counts); `at`, where each
    message came from (one per message, e.g. `input[3]`: an API whose items do not map
    one to one onto messages), and `calls`, where each call of each message came from (a
    tuple per message); unset, chat's `messages[i]` and `messages[i].tool_calls[j]`. Then
    the members of a call (its id, function name and arguments) and of an answer (the id
    of the call it answers), and what the API calls a call.
    """

    messages: str = "messages"
    counted: str = "entries"
    at: Sequence[str] | None = None
    calls: Sequence[Sequence[str]] | None = None
    call_id: str = "id"
    call_name: str = "function.name"
    call_arguments: str = "function.arguments"
    answer_id: str = "tool_call_id"
    call_noun: str = "call"

    def message(self, index: int) -> str:
        """Where message `index` came from."""
        return f"{self.messages}[{index}]" if self.at is None else self.at[index]

    def call(self, index: int, number: int) -> str:
        """Where call `number` of message `index` came from."""
        if self.calls is None:
            return f"{self.message(index)}.tool_calls[{number}]"
        return self.calls[index][number]


CHAT_FIELDS: Final = ConversationFields()


@dataclass(frozen=True, slots=True)
class ToolFields:
    """Where an API's request keeps its tool fields, for errors that name them."""

    tools: str = "tools"
    tool_choice: str = "tool_choice"
    tool_choice_name: str = "tool_choice.function.name"
    parallel_tool_calls: str = "parallel_tool_calls"


@dataclass(frozen=True, slots=True)
class ToolUse:
    """A validated request's tools: what the model may call, how, and in which format
    (the frontend's tool_call_parser setting). With choice `none` there is no guide and
    the output is text; otherwise the service reads calls out of it."""

    tools: tuple[FunctionTool, ...]
    choice: ToolChoice
    parallel: bool
    format: ToolCallFormat

    @property
    def parses_calls(self) -> bool:
        """Whether the output is read for calls (any choice but `none`)."""
        return self.choice != "none"

    @property
    def calls_only(self) -> bool:
        """Whether the guide allows calls and no text (`required`, a named function)."""
        return self.choice == "required" or isinstance(self.choice, NamedTool)


@dataclass(frozen=True, slots=True)
class RequestedGeneration:
    """What an API asks to generate, before validation (the prompt or messages apart)."""

    max_tokens: int
    sampling: SamplingInputs = field(default_factory=SamplingInputs)
    stop: Sequence[str] = ()
    stream: bool = False
    response_format: OutputFormat | None = None
    # Alternatives per token (None: no log-probabilities), the field the count came from
    # (OpenAI chat calls it top_logprobs) and that API's largest count.
    logprobs: int | None = None
    logprobs_field: str = "logprobs"
    logprobs_max: int = TOP_LOGPROBS_MAX
    # The API's names for parameters where they differ from their client names, so that
    # errors name what the client sent (e.g. OpenAI chat's max_completion_tokens).
    field_names: Mapping[str, str] = field(default_factory=dict)
    # Function tools, checked by `request_tools` (None or empty: none); the choice (None:
    # `auto` with tools, `none` without, as OpenAI's default) and whether a response may
    # hold several calls.
    tools: Sequence[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    tool_fields: ToolFields = field(default_factory=ToolFields)


@dataclass(frozen=True, slots=True)
class ValidatedRequest:
    """A generation request that passed every rule; the service accepts only this.

    A chat request has `messages` (the model's template makes them the prompt) and an
    empty `prompt`; a completion request has a `prompt` and no messages. `n` choices are
    generated from the one prompt; `logprobs` (None: off) asks for each output token's
    log-probability with that many likeliest alternatives.
    """

    prompt: str
    max_tokens: int
    sampling: SamplingInputs = field(default_factory=SamplingInputs)
    stop: tuple[str, ...] = ()
    stream: bool = False
    messages: tuple[ChatMessage, ...] = ()
    guide: Guide | None = None  # structured output, or the tools' guide
    logprobs: int | None = None
    tools: ToolUse | None = None  # None: the request has no tools

    @property
    def parses_tool_calls(self) -> bool:
        """Whether the service reads tool calls out of the generated text."""
        return self.tools is not None and self.tools.parses_calls

    @property
    def n(self) -> int:
        """How many choices."""
        return self.sampling.num_return_sequences or 1

    @property
    def input_text(self) -> str:
        """The text the caller sent as input (for estimates and logs)."""
        if self.messages:
            return "\n".join(
                message.content + "".join(call.arguments for call in message.tool_calls)
                for message in self.messages
            )
        return self.prompt

    @property
    def tools_text(self) -> str | None:
        """The tools as the chat template gets them (a JSON array); None without tools."""
        return None if self.tools is None else tools_text(self.tools.tools)

    @property
    def estimated_text(self) -> str:
        """What the prompt's tokens are estimated from before the model counts them (the
        rate limits' reservation): the input, and the tools, which the chat template
        writes into the prompt (under tool_choice none too)."""
        tools = self.tools_text
        return self.input_text if tools is None else f"{self.input_text}\n{tools}"


class RequestValidator:
    """Applies the rules in a fixed order and reports the first one broken."""

    def __init__(self, limits: ValidationLimits) -> None:
        self.limits = limits
        # A bad setting fails here, at start-up.
        self.tool_call_format = tool_call_format(limits.tool_call_parser)

    def completion(self, prompt: str, requested: RequestedGeneration) -> ValidatedRequest:
        """Validate a prompt and its generation parameters."""
        limits = self.limits
        if not prompt:
            raise EmptyPromptError
        if len(prompt) > limits.max_prompt_chars:
            raise PromptTooLongError(len(prompt), limits.max_prompt_chars)
        return self._with_sampling(prompt, (), requested)

    def chat(
        self,
        messages: Sequence[ChatMessage],
        requested: RequestedGeneration,
        fields: ConversationFields = CHAT_FIELDS,
    ) -> ValidatedRequest:
        """Validate chat messages and their generation parameters; errors name the
        conversation's parts by `fields`."""
        limit = self.limits.max_messages
        if not messages:
            raise EmptyMessagesError(fields.messages)
        if len(messages) > limit:
            raise TooManyMessagesError(len(messages), limit, fields.messages, fields.counted)
        for index, message in enumerate(messages):
            if message.role not in ROLES:
                raise UnknownRoleError(fields.message(index), message.role, ROLES)
        if messages[-1].role == "assistant":
            raise AssistantMessageLastError(fields.message(len(messages) - 1))
        _check_tool_messages(messages, fields)
        chars = sum(
            len(message.content) + sum(len(call.arguments) for call in message.tool_calls)
            for message in messages
        )
        if chars > self.limits.max_prompt_chars:
            raise PromptTooLongError(chars, self.limits.max_prompt_chars, fields.messages)
        return self._with_sampling("", tuple(messages), requested)

    def _bound(self, bound: Limit, values: Mapping[str, Any]) -> float:
        if isinstance(bound, Setting):
            return _setting(self.limits, bound)
        if isinstance(bound, OtherParameter):
            value = values[bound.name]
            assert isinstance(value, int | float), bound
            return value
        return bound

    def check_sampling(self, requested: RequestedGeneration) -> None:
        """Each set sampling parameter within its declared bounds (OutOfRangeError naming
        the field as the client sent it, the bounds and the value)."""
        values = {
            **{p.name: getattr(requested.sampling, p.name) for p in OPTIONAL_PARAMETERS},
            SAMPLING_PARAMETERS[0].name: requested.max_tokens,
        }
        for parameter in SAMPLING_PARAMETERS:
            value = values[parameter.name]
            if value is None:
                continue
            low = self._bound(parameter.minimum, values)
            high = self._bound(parameter.maximum, values)
            if not parameter.admits(value, low, high):
                name = requested.field_names.get(parameter.name, parameter.client_name)
                raise OutOfRangeError(name, value, parameter.interval(low, high))

    def _with_sampling(
        self, prompt: str, messages: tuple[ChatMessage, ...], requested: RequestedGeneration
    ) -> ValidatedRequest:
        limits = self.limits
        r = requested
        self.check_sampling(r)
        if r.logprobs is not None and not 0 <= r.logprobs <= r.logprobs_max:
            raise LogprobsOutOfRangeError(r.logprobs_field, r.logprobs, f"0..{r.logprobs_max}")
        check_stop(r.stop, limits)
        guide = guide_for(r.response_format) if r.response_format else None
        if guide is not None and r.stop:
            # A stop sequence inside the value would cut it short, and `stop` promises a
            # complete value; the value's own end already ends the generation.
            raise UnsupportedParameterError(
                "stop", "stop is not supported with a JSON response_format"
            )
        tools = self._tools(r, has_format=guide is not None)
        if tools is not None and tools.parses_calls:
            guide = _tools_guide(tools, r.tool_fields)
        return ValidatedRequest(
            prompt=prompt,
            max_tokens=r.max_tokens,
            sampling=r.sampling,
            stop=tuple(r.stop),
            stream=r.stream,
            messages=messages,
            guide=guide,
            logprobs=r.logprobs,
            tools=tools,
        )

    def _tools(self, r: RequestedGeneration, *, has_format: bool) -> ToolUse | None:
        """The request's tools and choice, checked against each other and against the
        parameters that cannot go with calls; None without tools."""
        fields = r.tool_fields
        tools = tuple(r.tools or ())
        choice: ToolChoice = r.tool_choice or ("auto" if tools else "none")
        try:
            check_tool_choice(
                choice,
                tools,
                at=_path(fields.tool_choice),
                name_at=_path(fields.tool_choice_name),
            )
        except ToolError as error:
            raise InvalidToolError(error.field, str(error)) from None
        if not tools:
            return None
        use = ToolUse(tools, choice, r.parallel_tool_calls, self.tool_call_format)
        if not use.parses_calls:
            return use
        # Calls are generated under the tools' guide and read out of the text: nothing
        # may take the guide's place or cut a call short. tool_choice none lifts this.
        why = f"with tools (unless {fields.tool_choice} is none)"
        if has_format:
            raise UnsupportedParameterError(
                "response_format", f"a JSON response_format is not supported {why}"
            )
        if r.stop:
            raise UnsupportedParameterError("stop", f"stop is not supported {why}")
        if r.logprobs is not None:
            raise UnsupportedParameterError(
                r.logprobs_field, f"{r.logprobs_field} is not supported {why}"
            )
        return use


def check_stop(sequences: Sequence[str], limits: ValidationLimits, field: str = "stop") -> None:
    """The limits on stop sequences (their number, each one's length), naming `field`:
    the API's name for them (Anthropic's stop_sequences)."""
    if len(sequences) > limits.max_stop_sequences:
        raise TooManyStopSequencesError(len(sequences), limits.max_stop_sequences, field)
    for index, sequence in enumerate(sequences):
        if not sequence:
            raise EmptyStopSequenceError(index, field)
        if len(sequence) > limits.max_stop_chars:
            raise StopSequenceTooLongError(index, len(sequence), limits.max_stop_chars, field)


def request_tools(
    data: object, *, dialect: Dialect = "chat", field: str = "tools"
) -> tuple[FunctionTool, ...]:
    """The checked function tools of a request's `tools` array (as decoded JSON, in the
    API's `dialect`); errors name the field as the request spells it: a JSON Schema
    keyword the grammar does not enforce is a 400, any other broken rule a 422."""
    try:
        return parse_tools(data, dialect=dialect, at=_path(field))
    except ToolError as error:
        if error.unsupported:
            raise UnsupportedSchemaKeywordError(error.field, str(error)) from None
        raise InvalidToolError(error.field, str(error)) from None


def _tools_guide(tools: ToolUse, fields: ToolFields) -> Guide:
    try:
        guide = tool_guide(tools.tools, tools.choice, parallel=tools.parallel, fmt=tools.format)
    except ToolError as error:
        # The guide's limits over the tools as a whole (each tool passed its own).
        raise InvalidToolError(fields.tools, f"{fields.tools}: {error.rule}") from None
    assert guide is not None  # a choice other than none, with tools
    return guide


def _check_tool_messages(messages: Sequence[ChatMessage], fields: ConversationFields) -> None:
    """Tool calling's rules on a conversation (the preprocessing model's, named here by
    field): calls only on assistant messages, each with an id, a function's name and its
    arguments as a JSON object's text; a tool message answers, by id, a call of the
    assistant message before it (tool messages between them aside)."""
    answerable: set[str] = set()
    for index, message in enumerate(messages):
        where = fields.message(index)
        answer = f"{where}.{fields.answer_id}"
        if message.tool_calls and message.role != "assistant":
            raise InvalidToolError(
                f"{where}.tool_calls", f"{where}.tool_calls: only an assistant message has them"
            )
        if message.role == "tool":
            call_id = message.tool_call_id
            if call_id is None:
                raise InvalidToolError(answer, f"{answer} is required in a tool message")
            if call_id not in answerable:
                shown = call_id[:40]
                raise InvalidToolError(
                    answer,
                    f"{answer} {shown!r} answers no {fields.call_noun} of the assistant message "
                    "before it",
                )
            continue
        if message.tool_call_id is not None:
            raise InvalidToolError(answer, f"{answer}: only a tool message has one")
        for number, call in enumerate(message.tool_calls):
            _check_call(call, fields.call(index, number), fields)
        answerable = {call.id for call in message.tool_calls}


def _check_call(call: AssistantToolCall, at: str, fields: ConversationFields) -> None:
    if not CALL_ID_PATTERN.fullmatch(call.id):
        where = f"{at}.{fields.call_id}"
        raise InvalidToolError(where, f"{where} must be 1 to 128 letters, digits or _.:-")
    if not NAME_PATTERN.fullmatch(call.name):
        where = f"{at}.{fields.call_name}"
        raise InvalidToolError(
            where, f"{where} must be 1 to 64 letters, digits, underscores or dashes"
        )
    where = f"{at}.{fields.call_arguments}"
    try:
        arguments = json.loads(call.arguments)
    except (ValueError, RecursionError):
        arguments = None
    if not isinstance(arguments, dict):
        raise InvalidToolError(where, f"{where} must be a JSON object as text")


def _path(field: str) -> Path:
    """A field's name (`tool_choice.function.name`, `tools[2]`) as a path."""
    parts: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", field):
        parts.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(parts)


def check_model(model: str | None, served_model_name: str) -> None:
    """ModelNotFoundError unless `model` is the one this server serves (None: the API lets
    the client leave it out)."""
    if model is not None and model != served_model_name:
        raise ModelNotFoundError(model, served_model_name)


def check_text(body: BaseModel) -> None:
    """InvalidTextError naming the first string of `body` (a key, a value, at any depth,
    in declared and extra fields) that is not Unicode text.

    The first check of every request that carries text: a lone surrogate, which JSON's
    \\u escapes can spell, fails wherever text is encoded (the token estimate, the Triton
    request, the logs). Iterative, so no nesting the JSON parser took can exhaust the stack.
    """
    pending: list[tuple[str, object]] = [("", body)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if not _is_text(value):
                raise InvalidTextError(path)
            continue
        children: list[tuple[str, object]]
        if isinstance(value, BaseModel):
            fields = type(value).model_fields
            children = [
                (_member(path, field.alias or name), getattr(value, name))
                for name, field in fields.items()
            ]
            children += [(_member(path, k), v) for k, v in (value.model_extra or {}).items()]
        elif isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and not _is_text(key):
                    # A member name cannot name itself: the object holding it is named.
                    raise InvalidTextError(path)
            children = [(_member(path, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list | tuple):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        pending.extend(reversed(children))  # depth first, in the order the body has them


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")  # strict UTF-8 refuses exactly the surrogates
    except UnicodeEncodeError:
        return False
    return True


def _member(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def guide_for(fmt: OutputFormat) -> Guide | None:
    """The engine's guide for a response format (None for text); raises naming the field.

    The schema's keywords are checked against the list both engines enforce
    (llm_stack.guided_decoding): an unsupported one is a 400 naming it and its path.
    """
    member = f"{fmt.field}.json_schema"
    if fmt.type != "json_schema":
        if fmt.has_json_schema:
            raise SchemaViolationError(f"{member} is only allowed with type json_schema", member)
        return Guide(GuideType.JSON) if fmt.type == "json_object" else None
    if not fmt.has_json_schema:
        raise SchemaViolationError(f"{member} is required with type json_schema", member)
    schema = {} if fmt.schema is None else fmt.schema
    field = fmt.schema_field or f"{member}.schema"
    try:
        check_schema(schema)
        text = schema_text(schema)
    except SchemaError as error:
        where = field + _dotted(error.path)
        if error.unsupported:
            raise UnsupportedSchemaKeywordError(where, f"{where}: {error.rule}") from None
        raise InvalidSchemaError(where, f"{where}: {error.rule}") from None
    except ValueError:  # NaN or Infinity somewhere: JSON has no such numbers
        raise InvalidSchemaError(field, f"{field}: numbers must be finite") from None
    return Guide(GuideType.JSON_SCHEMA, text)


def _dotted(path: Path) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
