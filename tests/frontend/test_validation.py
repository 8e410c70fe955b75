"""Every validation rule: its error type, the field it names, and its message."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from frontend.errors import (
    AssistantMessageLastError,
    EmptyMessagesError,
    EmptyPromptError,
    EmptyStopSequenceError,
    FieldRuleViolationError,
    InvalidInputError,
    InvalidToolError,
    LogprobsOutOfRangeError,
    OutOfRangeError,
    PromptTooLongError,
    StopSequenceTooLongError,
    TooManyMessagesError,
    TooManyStopSequencesError,
    UnknownRoleError,
    UnsupportedParameterError,
    UnsupportedSchemaKeywordError,
    error_kind,
)
from frontend.validation import (
    AssistantToolCall,
    ChatMessage,
    ConversationFields,
    OutputFormat,
    RequestedGeneration,
    RequestValidator,
    ToolFields,
    ToolUse,
    ValidatedRequest,
    ValidationLimits,
    field_schemas,
    request_tools,
    sampling_inputs,
)
from llm_stack.guided_decoding import Guide, GuideType
from llm_stack.sampling_contract import (
    SAMPLING_PARAMETERS,
    OtherParameter,
    SamplingInputs,
    SamplingParameter,
    Setting,
)
from llm_stack.tool_calls import HERMES, LLAMA3_JSON, FunctionTool, NamedTool, tool_guide

LIMITS = ValidationLimits(
    max_prompt_chars=100, max_tokens=64, max_stop_sequences=2, max_stop_chars=8, max_top_k=50,
    max_n=4,
)  # fmt: skip
_REQUESTED = set(RequestedGeneration.__dataclass_fields__)


def requested(**changes: Any) -> RequestedGeneration:
    """A RequestedGeneration: max_tokens 16 and temperature 0.7 unless changed; sampling
    parameters by their client names (n), max_tokens_field the API's name for max_tokens."""
    fields: dict[str, Any] = {"max_tokens": 16, "temperature": 0.7, **changes}
    if "max_tokens_field" in fields:
        fields["field_names"] = {"max_tokens": fields.pop("max_tokens_field")}
    sampling = {name: fields.pop(name) for name in list(fields) if name not in _REQUESTED}
    if "n" in sampling:
        sampling["num_return_sequences"] = sampling.pop("n")
    return RequestedGeneration(sampling=SamplingInputs(**sampling), **fields)


def validate(prompt: str = "Hello", **changes: Any) -> ValidatedRequest:
    return RequestValidator(LIMITS).completion(prompt, requested(**changes))


def test_valid_request_becomes_the_internal_type() -> None:
    request = validate(stop=["\n", "END"], top_p=0.9, top_k=40, seed=2**64 - 1, stream=True)
    assert request == ValidatedRequest(
        prompt="Hello", max_tokens=16,
        sampling=SamplingInputs(temperature=0.7, top_p=0.9, top_k=40, seed=2**64 - 1),
        stop=("\n", "END"), stream=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "error_type", "field", "message"),
    [
        ({"prompt": ""}, EmptyPromptError, "prompt", "prompt must not be empty"),
        ({"prompt": "x" * 101}, PromptTooLongError, "prompt",
         "prompt of 101 characters exceeds the 100 limit"),
        ({"max_tokens": 0}, OutOfRangeError, "max_tokens",
         "max_tokens 0 is outside 1..64"),
        ({"max_tokens": 65}, OutOfRangeError, "max_tokens",
         "max_tokens 65 is outside 1..64"),
        ({"temperature": -0.1}, OutOfRangeError, "temperature",
         "temperature -0.1 is outside 0..2"),
        ({"temperature": 2.5}, OutOfRangeError, "temperature",
         "temperature 2.5 is outside 0..2"),
        ({"temperature": math.nan}, OutOfRangeError, "temperature",
         "temperature nan is outside 0..2"),
        ({"top_p": 0.0}, OutOfRangeError, "top_p", "top_p 0.0 is outside (0, 1]"),
        ({"top_p": 1.5}, OutOfRangeError, "top_p", "top_p 1.5 is outside (0, 1]"),
        ({"top_k": -1}, OutOfRangeError, "top_k", "top_k -1 is outside 0..50"),
        ({"top_k": 51}, OutOfRangeError, "top_k", "top_k 51 is outside 0..50"),
        ({"stop": ["a", "b", "c"]}, TooManyStopSequencesError, "stop",
         "stop has 3 sequences, exceeds the 2 limit"),
        ({"stop": ["a", ""]}, EmptyStopSequenceError, "stop[1]", "stop[1] must not be empty"),
        ({"stop": ["123456789"]}, StopSequenceTooLongError, "stop[0]",
         "stop[0] of 9 characters exceeds the 8 limit"),
        ({"seed": -1}, OutOfRangeError, "seed", "seed -1 is outside 0..18446744073709551615"),
        ({"seed": 2**64}, OutOfRangeError, "seed",
         "seed 18446744073709551616 is outside 0..18446744073709551615"),
        ({"logprobs": -1}, LogprobsOutOfRangeError, "logprobs", "logprobs -1 is outside 0..20"),
        ({"logprobs": 21}, LogprobsOutOfRangeError, "logprobs", "logprobs 21 is outside 0..20"),
    ],
)  # fmt: skip
def test_each_rule_has_its_own_error(
    changes: dict[str, Any], error_type: type[FieldRuleViolationError], field: str, message: str
) -> None:
    with pytest.raises(error_type) as caught:
        validate(**changes)
    assert caught.value.field == field
    assert caught.value.message == message
    assert error_kind(caught.value).status == 422


def test_rule_errors_carry_the_value_and_the_limit() -> None:
    with pytest.raises(OutOfRangeError) as caught:
        validate(max_tokens=1000)
    assert caught.value.value == 1000
    assert caught.value.limit == "1..64"


def test_bounds_themselves_are_allowed() -> None:
    request = validate(
        prompt="x" * 100, max_tokens=64, temperature=2.0, top_p=1.0, top_k=0,
        stop=["12345678", "a"], seed=0,
    )  # fmt: skip
    assert request.max_tokens == 64
    assert validate(max_tokens=1, temperature=0.0, top_k=50).sampling.top_k == 50
    assert validate(logprobs=0).logprobs == 0
    assert validate(logprobs=20).logprobs == 20
    assert validate().logprobs is None


# --- chat and the OpenAI-only sampling fields ---------------------------------------------

USER = ChatMessage("user", "Hello")


def chat(*messages: ChatMessage, **changes: Any) -> ValidatedRequest:
    return RequestValidator(LIMITS).chat(list(messages), requested(**changes))


def test_chat_request_carries_messages_and_no_prompt() -> None:
    request = chat(
        ChatMessage("system", "Be brief."), USER, presence_penalty=-2.0, frequency_penalty=2.0,
        repetition_penalty=2.0, min_tokens=16,
    )  # fmt: skip
    assert request.prompt == ""
    assert request.messages == (ChatMessage("system", "Be brief."), USER)
    assert request.input_text == "Be brief.\nHello"
    sampling = request.sampling
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (-2.0, 2.0)
    assert (sampling.repetition_penalty, sampling.min_tokens) == (2.0, 16)


def test_completion_keeps_the_prompt_as_input_text() -> None:
    request = RequestValidator(LIMITS).completion("Hello", requested())
    assert request.input_text == "Hello"
    assert request.messages == ()


@pytest.mark.parametrize(
    ("messages", "error_type", "field", "message"),
    [
        ((), EmptyMessagesError, "messages", "messages must not be empty"),
        ((ChatMessage("bot", "x"),), UnknownRoleError, "messages[0].role",
         "messages[0].role must be one of system, user, assistant, tool, got 'bot'"),
        ((USER, ChatMessage("assistant", "Hi")), AssistantMessageLastError, "messages[1].role",
         "messages[1].role: the last message must be the user's or the system's, not the "
         "assistant's"),
        ((USER, ChatMessage("user", "x" * 96)), PromptTooLongError, "messages",
         "messages of 101 characters exceeds the 100 limit"),
        ((USER,) * 1025, TooManyMessagesError, "messages",
         "messages has 1,025 entries, exceeds the 1,024 limit"),
    ],
)  # fmt: skip
def test_chat_rules(
    messages: tuple[ChatMessage, ...],
    error_type: type[FieldRuleViolationError],
    field: str,
    message: str,
) -> None:
    with pytest.raises(error_type) as caught:
        chat(*messages)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert error_kind(caught.value).status == 422


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"presence_penalty": 2.1}, "presence_penalty", "presence_penalty 2.1 is outside -2..2"),
        ({"frequency_penalty": math.inf}, "frequency_penalty",
         "frequency_penalty inf is outside -2..2"),
        ({"repetition_penalty": 0.0}, "repetition_penalty",
         "repetition_penalty 0.0 is outside (0, 2]"),
        ({"min_tokens": 17}, "min_tokens", "min_tokens 17 is outside 0..16"),
        ({"max_tokens": 65, "max_tokens_field": "max_completion_tokens"},
         "max_completion_tokens", "max_completion_tokens 65 is outside 1..64"),
    ],
)  # fmt: skip
def test_sampling_rules_of_the_openai_fields(
    changes: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(FieldRuleViolationError) as caught:
        chat(USER, **changes)
    assert (caught.value.field, caught.value.message) == (field, message)


# --- n choices and log-probabilities --------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error_type", "field", "message", "value", "limit"),
    [
        ({"n": 0}, OutOfRangeError, "n", "n 0 is outside 1..4", 0, "1..4"),
        ({"n": 5}, OutOfRangeError, "n", "n 5 is outside 1..4", 5, "1..4"),
        ({"n": -3}, OutOfRangeError, "n", "n -3 is outside 1..4", -3, "1..4"),
        ({"logprobs": 21, "logprobs_field": "top_logprobs"}, LogprobsOutOfRangeError,
         "top_logprobs", "top_logprobs 21 is outside 0..20", 21, "0..20"),
        ({"logprobs": 6, "logprobs_max": 5}, LogprobsOutOfRangeError, "logprobs",
         "logprobs 6 is outside 0..5", 6, "0..5"),
    ],
)  # fmt: skip
def test_choices_and_logprobs_rules(
    changes: dict[str, Any],
    error_type: type[FieldRuleViolationError],
    field: str,
    message: str,
    value: int,
    limit: str,
) -> None:
    with pytest.raises(error_type) as caught:
        chat(USER, **changes)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert (caught.value.value, caught.value.limit) == (value, limit)
    assert error_kind(caught.value).status == 422


def test_choices_and_logprobs_reach_the_request() -> None:
    assert chat(USER).n == 1
    request = chat(USER, n=4, logprobs=5, logprobs_max=5)
    assert (request.n, request.logprobs) == (4, 5)
    completion = validate(n=2, logprobs=0)
    assert (completion.n, completion.logprobs) == (2, 0)


def test_several_choices_go_with_a_json_format() -> None:
    request = chat(USER, n=3, response_format=OutputFormat("json_object"))
    assert request.n == 3
    assert request.guide == Guide(GuideType.JSON)


# --- the sampling parameters' declarations --------------------------------------------------


def _bound(bound: object, max_tokens: int) -> float:
    if isinstance(bound, Setting):
        value = getattr(LIMITS, bound.name)
        assert isinstance(value, int)
        return value
    if isinstance(bound, OtherParameter):
        assert bound.name == "max_tokens"
        return max_tokens
    assert isinstance(bound, int | float)
    return bound


def _outside(parameter: SamplingParameter) -> list[float]:
    """Values just outside each end (an open end: the bound itself)."""
    low, high = _bound(parameter.minimum, 16), _bound(parameter.maximum, 16)
    step = 0.5 if parameter.python_type is float else 1
    return [
        low if parameter.exclusive_minimum else low - step,
        high if parameter.exclusive_maximum else high + step,
    ]


@pytest.mark.parametrize("parameter", SAMPLING_PARAMETERS, ids=lambda p: p.name)
def test_every_declared_parameter_is_held_to_its_bounds(parameter: SamplingParameter) -> None:
    low, high = _bound(parameter.minimum, 16), _bound(parameter.maximum, 16)
    for value in _outside(parameter):
        changes: dict[str, Any] = {parameter.client_name: value}
        if parameter.name != "max_tokens":
            changes["max_tokens"] = 16
        with pytest.raises(OutOfRangeError) as caught:
            validate(**changes)
        assert caught.value.field == parameter.client_name
        assert caught.value.value == value
        assert caught.value.limit == parameter.interval(low, high)
    if parameter.python_type is float:
        nan: dict[str, Any] = {parameter.client_name: math.nan}
        with pytest.raises(OutOfRangeError):
            validate(**nan)


@pytest.mark.parametrize("parameter", SAMPLING_PARAMETERS, ids=lambda p: p.name)
def test_every_declared_parameter_is_in_the_document(parameter: SamplingParameter) -> None:
    json_type = "number" if parameter.python_type is float else "integer"
    keywords = field_schemas(LIMITS)[parameter.client_name][json_type]
    low = "exclusiveMinimum" if parameter.exclusive_minimum else "minimum"
    # min_tokens's bound is max_tokens: the document states max_tokens' own.
    assert keywords[low] == _bound(parameter.minimum, LIMITS.max_tokens)
    assert keywords["maximum"] == _bound(parameter.maximum, LIMITS.max_tokens)


def test_settings_bounds_name_limits_of_the_settings() -> None:
    named = [
        bound.name
        for p in SAMPLING_PARAMETERS
        for bound in (p.minimum, p.maximum)
        if isinstance(bound, Setting)
    ]
    assert named
    assert set(named) <= set(ValidationLimits.__dataclass_fields__)


def test_an_apis_body_gives_its_sampling_fields_by_client_name() -> None:
    class Body:
        n = 3
        top_k = 7
        prompt = "not sampling"

    sampling = sampling_inputs(Body(), temperature=0.2)
    assert sampling == SamplingInputs(num_return_sequences=3, top_k=7, temperature=0.2)


# --- tools --------------------------------------------------------------------------------

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
}  # fmt: skip
WEATHER = FunctionTool("get_weather", WEATHER_SCHEMA)


def test_tools_default_to_auto_with_their_guide_in_the_configured_format() -> None:
    request = chat(USER, tools=[WEATHER])
    assert request.tools == ToolUse((WEATHER,), "auto", True, HERMES)
    assert request.parses_tool_calls
    assert request.guide == tool_guide([WEATHER], "auto", parallel=True, fmt=HERMES)
    limits = replace(LIMITS, tool_call_parser="llama3_json")
    named = RequestValidator(limits).chat(
        [USER],
        requested(tools=[WEATHER], tool_choice=NamedTool("get_weather"), parallel_tool_calls=False),
    )
    assert named.tools == ToolUse((WEATHER,), NamedTool("get_weather"), False, LLAMA3_JSON)
    assert named.guide == tool_guide(
        [WEATHER], NamedTool("get_weather"), parallel=False, fmt=LLAMA3_JSON
    )


def test_tool_choice_none_keeps_the_tools_without_guide_or_parser() -> None:
    request = chat(USER, tools=[WEATHER], tool_choice="none", stop=["x"])
    assert request.tools is not None
    assert not request.parses_tool_calls
    assert request.guide is None
    assert chat(USER).tools is None


@pytest.mark.parametrize(
    ("changes", "error_type", "field", "message"),
    [
        ({"tool_choice": "required"}, InvalidToolError, "tool_choice",
         "tool_choice: needs tools to call"),
        ({"tools": [WEATHER], "tool_choice": NamedTool("get_time")}, InvalidToolError,
         "tool_choice.function.name", "tool_choice.function.name: no tool is named 'get_time'"),
        ({"tools": [WEATHER], "tool_choice": NamedTool("x"),
          "tool_fields": ToolFields(tool_choice_name="tool_choice.name")}, InvalidToolError,
         "tool_choice.name", "tool_choice.name: no tool is named 'x'"),
        ({"tools": [WEATHER], "stop": ["x"]}, UnsupportedParameterError, "stop",
         "stop is not supported with tools (unless tool_choice is none)"),
        ({"tools": [WEATHER], "logprobs": 0, "logprobs_field": "top_logprobs"},
         UnsupportedParameterError, "top_logprobs",
         "top_logprobs is not supported with tools (unless tool_choice is none)"),
        ({"tools": [WEATHER], "response_format": OutputFormat("json_object")},
         UnsupportedParameterError, "response_format",
         "a JSON response_format is not supported with tools (unless tool_choice is none)"),
    ],
)  # fmt: skip
def test_tool_rules(
    changes: dict[str, Any], error_type: type[InvalidInputError], field: str, message: str
) -> None:
    with pytest.raises(error_type) as caught:
        chat(USER, **changes)
    assert (caught.value.field, caught.value.message) == (field, message)
    status = 400 if error_type is UnsupportedParameterError else 422
    assert error_kind(caught.value).status == status


def test_request_tools_name_the_field_with_their_status() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": WEATHER_SCHEMA}}
    assert request_tools([tool]) == (FunctionTool("f", WEATHER_SCHEMA),)
    bad = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "pattern": "a"}},
    }}}  # fmt: skip
    with pytest.raises(UnsupportedSchemaKeywordError) as unsupported:
        request_tools([tool, bad])
    assert unsupported.value.field == "tools[1].function.parameters.properties.x.pattern"
    assert error_kind(unsupported.value).status == 400
    with pytest.raises(InvalidToolError) as invalid:
        request_tools([tool, tool], field="tools")
    assert invalid.value.field == "tools[1].function.name"
    assert invalid.value.message == "tools[1].function.name: function name 'f' is defined twice"
    assert error_kind(invalid.value).status == 422
    with pytest.raises(InvalidToolError) as anthropic:
        request_tools([{"name": "a b"}], dialect="anthropic")
    assert anthropic.value.field == "tools[0].name"


CALL = AssistantToolCall("call_1", "get_weather", '{"city": "Paris"}')


def test_a_conversation_with_tool_calls_and_answers_is_valid() -> None:
    messages = (
        USER, ChatMessage("assistant", "", (CALL,)),
        ChatMessage("tool", "Sunny", tool_call_id="call_1"),
    )  # fmt: skip
    request = chat(*messages, tools=[WEATHER])
    assert request.messages == messages
    assert request.input_text == 'Hello\n{"city": "Paris"}\nSunny'


@pytest.mark.parametrize(
    ("messages", "field", "message"),
    [
        ((USER, ChatMessage("tool", "x", tool_call_id="call_1")), "messages[1].tool_call_id",
         "messages[1].tool_call_id 'call_1' answers no call of the assistant message before it"),
        ((USER, ChatMessage("assistant", "", (CALL,)), USER,
          ChatMessage("tool", "x", tool_call_id="call_1")), "messages[3].tool_call_id",
         "messages[3].tool_call_id 'call_1' answers no call of the assistant message before it"),
        ((USER, ChatMessage("assistant", "", (CALL,)), ChatMessage("tool", "x")),
         "messages[2].tool_call_id", "messages[2].tool_call_id is required in a tool message"),
        ((ChatMessage("user", "x", tool_call_id="a"),), "messages[0].tool_call_id",
         "messages[0].tool_call_id: only a tool message has one"),
        ((ChatMessage("user", "x", (CALL,)),), "messages[0].tool_calls",
         "messages[0].tool_calls: only an assistant message has them"),
        ((ChatMessage("assistant", "", (replace(CALL, id="a b"),)), USER),
         "messages[0].tool_calls[0].id",
         "messages[0].tool_calls[0].id must be 1 to 128 letters, digits or _.:-"),
        ((ChatMessage("assistant", "", (replace(CALL, name="a.b"),)), USER),
         "messages[0].tool_calls[0].function.name",
         "messages[0].tool_calls[0].function.name must be 1 to 64 letters, digits, "
         "underscores or dashes"),
        ((ChatMessage("assistant", "", (replace(CALL, arguments="[1]"),)), USER),
         "messages[0].tool_calls[0].function.arguments",
         "messages[0].tool_calls[0].function.arguments must be a JSON object as text"),
    ],
)  # fmt: skip
def test_tool_message_rules(messages: tuple[ChatMessage, ...], field: str, message: str) -> None:
    with pytest.raises(InvalidToolError) as caught:
        chat(*messages)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert error_kind(caught.value).status == 422


# Names as an API whose items do not map one to one onto messages would give them: a
# system message from `instructions`, an assistant turn of two calls from two items.
ITEMS = ConversationFields(
    messages="input",
    counted="messages (instructions included)",
    at=("instructions", "input[0]", "input[2]", "input[3]"),
    calls=((), (), ("input[1]", "input[2]"), ()),
    call_id="call_id",
    call_name="name",
    call_arguments="arguments",
    answer_id="call_id",
    call_noun="function_call",
)
SYSTEM = ChatMessage("system", "Be brief.")


@pytest.mark.parametrize(
    ("messages", "error_type", "field", "message"),
    [
        ((SYSTEM, ChatMessage("bot", "x"), USER, USER), UnknownRoleError, "input[0].role",
         "input[0].role must be one of system, user, assistant, tool, got 'bot'"),
        ((SYSTEM, USER, USER, ChatMessage("assistant", "Hi")), AssistantMessageLastError,
         "input[3].role",
         "input[3].role: the last message must be the user's or the system's, not the "
         "assistant's"),
        ((SYSTEM, USER, ChatMessage("assistant", "", (CALL, replace(CALL, id="a b"))), USER),
         InvalidToolError, "input[2].call_id",
         "input[2].call_id must be 1 to 128 letters, digits or _.:-"),
        ((SYSTEM, USER, ChatMessage("assistant", "", (replace(CALL, name="a.b"), CALL)), USER),
         InvalidToolError, "input[1].name",
         "input[1].name must be 1 to 64 letters, digits, underscores or dashes"),
        ((SYSTEM, USER, ChatMessage("assistant", "", (CALL, replace(CALL, arguments="1"))),
          USER),
         InvalidToolError, "input[2].arguments",
         "input[2].arguments must be a JSON object as text"),
        ((SYSTEM, USER, ChatMessage("assistant", "", (CALL, CALL)),
          ChatMessage("tool", "x", tool_call_id="call_9")),
         InvalidToolError, "input[3].call_id",
         "input[3].call_id 'call_9' answers no function_call of the assistant message before it"),
        ((SYSTEM, USER, USER, ChatMessage("user", "x" * 82)), PromptTooLongError, "input",
         "input of 101 characters exceeds the 100 limit"),
    ],
)  # fmt: skip
def test_chat_rules_name_the_parts_as_the_api_spells_them(
    messages: tuple[ChatMessage, ...],
    error_type: type[FieldRuleViolationError],
    field: str,
    message: str,
) -> None:
    with pytest.raises(error_type) as caught:
        RequestValidator(LIMITS).chat(list(messages), requested(), ITEMS)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert error_kind(caught.value).status == 422


def test_the_conversation_limits_name_the_apis_list() -> None:
    validator = RequestValidator(LIMITS)
    with pytest.raises(EmptyMessagesError) as empty:
        validator.chat([], requested(), ITEMS)
    assert (empty.value.field, empty.value.message) == ("input", "input must not be empty")
    with pytest.raises(TooManyMessagesError) as many:
        validator.chat([USER] * 1025, requested(), replace(ITEMS, at=None, calls=None))
    assert (many.value.field, many.value.message) == (
        "input",
        "input has 1,025 messages (instructions included), exceeds the 1,024 limit",
    )


def test_a_schema_kept_elsewhere_is_named_where_it_is() -> None:
    fmt = OutputFormat(
        type="json_schema",
        has_json_schema=True,
        schema={"type": "string", "pattern": "a+"},
        field="text.format",
        schema_field="text.format.schema",
    )
    with pytest.raises(UnsupportedSchemaKeywordError) as caught:
        RequestValidator(LIMITS).completion("Hello", requested(response_format=fmt))
    assert caught.value.field == "text.format.schema.pattern"
    assert caught.value.message.startswith("text.format.schema.pattern: ")
