"""OpenAI bodies → validated requests: defaults, aliases, and parameters refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from frontend.apis.openai.mapping import chat_request, completion_request
from frontend.apis.openai.protocol import ChatCompletionRequest, CompletionRequest
from frontend.errors import (
    FieldRuleViolationError,
    InvalidInputError,
    InvalidSchemaError,
    LogprobsOutOfRangeError,
    ModelNotFoundError,
    OutOfRangeError,
    SchemaViolationError,
    TopLogprobsWithoutLogprobsError,
    UnsupportedParameterError,
    UnsupportedSchemaKeywordError,
    error_kind,
)
from frontend.validation import AssistantToolCall, ChatMessage, check_model
from llm_stack.guided_decoding import Guide, GuideType
from llm_stack.tool_calls import FunctionTool, NamedTool
from tests.frontend.apis.conftest import mapping_validator

VALIDATOR = mapping_validator()
USER = {"role": "user", "content": "Hi"}
WEATHER: dict[str, Any] = {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
}  # fmt: skip
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}


def completion(**fields: Any) -> Any:
    body = CompletionRequest.model_validate({"model": "m", "prompt": "Hello", **fields})
    return completion_request(body, VALIDATOR)


def chat(**fields: Any) -> Any:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [USER], **fields})
    return chat_request(body, VALIDATOR)


def test_completion_defaults_are_openais() -> None:
    request = completion()
    sampling = request.sampling
    assert (request.prompt, request.max_tokens, sampling.temperature) == ("Hello", 16, 1.0)
    assert (request.stop, request.stream, request.messages) == ((), False, ())
    assert sampling.top_p is sampling.seed is sampling.min_tokens is None


def test_completion_fields_pass_through() -> None:
    request = completion(
        prompt=["Only one"], max_tokens=5, temperature=0, top_p=0.5, stop="\n", seed=3,
        stream=True, stream_options={"include_usage": True}, presence_penalty=1.0,
        frequency_penalty=-1.0, n=1, best_of=1, logprobs=None, echo=False, logit_bias={},
        user="u-1", top_k=20, repetition_penalty=1.2,
    )  # fmt: skip
    assert request.prompt == "Only one"
    sampling = request.sampling
    assert (request.max_tokens, sampling.temperature, sampling.top_p) == (5, 0.0, 0.5)
    assert (request.stop, sampling.seed, request.stream) == (("\n",), 3, True)
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (1.0, -1.0)
    assert (sampling.top_k, sampling.repetition_penalty) == (20, 1.2)


def test_chat_defaults_to_the_servers_maximum_and_takes_the_alias() -> None:
    assert chat().max_tokens == 64
    assert chat(max_tokens=8).max_tokens == 8
    assert chat(max_tokens=8, max_completion_tokens=4).max_tokens == 4
    assert chat(stop=["a", "b"]).stop == ("a", "b")


def test_chat_messages_map_to_the_template_roles() -> None:
    request = chat(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "one"},
                                         {"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "ok"},
            USER,
        ]
    )  # fmt: skip
    assert request.messages == (
        ChatMessage("system", "Be brief."), ChatMessage("user", "one\ntwo"),
        ChatMessage("assistant", "ok"), ChatMessage("user", "Hi"),
    )  # fmt: skip
    assert request.prompt == ""


def test_ignore_eos_asks_for_every_token() -> None:
    assert chat(max_tokens=12, ignore_eos=True).sampling.min_tokens == 12
    assert completion(min_tokens=3).sampling.min_tokens == 3


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logit_bias": {"1": 5.0}}, "logit_bias"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice.type"),
        ({"function_call": {"name": "f"}}, "function_call"),
        ({"tools": [TOOL], "stop": "x"}, "stop"),
        ({"tools": [TOOL], "logprobs": True}, "top_logprobs"),
        ({"tools": [TOOL], "response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "string", "pattern": "x"}},
        }}}]}, "tools[0].function.parameters.properties.a.pattern"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object",
            "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}]}},
        }}}}, "response_format.json_schema.schema.properties.a.anyOf[1].minimum"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x", "name": "ann"}]}, "messages[0].name"),
        ({"messages": [{"role": "assistant", "content": "x", "refusal": "no"}, USER]},
         "messages[0].refusal"),
        ({"messages": [{"role": "assistant", "content": "x", "annotations": [{}]}, USER]},
         "messages[0].annotations"),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "custom", "custom": {}}]}, USER]},
         "messages[0].tool_calls[0].type"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0]"),
    ],
)  # fmt: skip
def test_chat_refuses_what_it_does_not_implement(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        chat(**fields)
    assert caught.value.field == param
    assert param.split("[")[0] in caught.value.message
    assert error_kind(caught.value).status == 400


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"echo": True}, "echo"),
        ({"best_of": 2}, "best_of"),
        ({"n": 2, "best_of": 3}, "best_of"),
        ({"n": 3, "best_of": 1}, "best_of"),
        ({"suffix": "x"}, "suffix"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [[1, 2]]}, "prompt"),
    ],
)
def test_completion_refuses_what_it_does_not_implement(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        completion(**fields)
    assert caught.value.field == param


def test_harmless_values_of_unsupported_parameters_are_accepted() -> None:
    request = chat(
        n=1, logprobs=False, top_logprobs=0, tools=[], tool_choice="none",
        response_format={"type": "text"}, parallel_tool_calls=False, logit_bias={},
    )  # fmt: skip
    assert request.messages == (ChatMessage("user", "Hi"),)


def test_message_without_content() -> None:
    with pytest.raises(SchemaViolationError) as caught:
        chat(messages=[{"role": "user"}])
    assert caught.value.field == "messages[0].content"


def test_unknown_model() -> None:
    check_model("gemma", "gemma")
    with pytest.raises(ModelNotFoundError) as caught:
        check_model("gpt-4o", "gemma")
    assert caught.value.message == "the model 'gpt-4o' does not exist; this server serves 'gemma'"
    assert caught.value.field == "model"
    kind = error_kind(caught.value)
    assert (kind.status, kind.type) == (404, "model_not_found")


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def json_schema(schema: object, **member: object) -> dict[str, object]:
    return {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, **member}}


def test_response_formats_become_guides() -> None:
    assert chat(response_format={"type": "text"}).guide is None
    assert chat(response_format={"type": "json_object"}).guide == Guide(GuideType.JSON)
    compact = '{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}'
    expected = Guide(GuideType.JSON_SCHEMA, compact)
    assert chat(response_format=json_schema(SCHEMA, strict=True)).guide == expected
    assert completion(response_format=json_schema(SCHEMA)).guide == expected
    no_schema = {"type": "json_schema", "json_schema": {"name": "any"}}
    assert chat(response_format=no_schema).guide == Guide(GuideType.JSON_SCHEMA, "{}")


@pytest.mark.parametrize("request_of", [chat, completion])
def test_an_unsupported_schema_keyword_is_a_400_naming_it(request_of: Any) -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    with pytest.raises(UnsupportedSchemaKeywordError) as caught:
        request_of(response_format=json_schema(schema))
    field = "response_format.json_schema.schema.properties.tags.uniqueItems"
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: keyword 'uniqueItems' is not supported")
    assert error_kind(caught.value).status == 400


@pytest.mark.parametrize(
    ("response_format", "field", "message"),
    [
        (json_schema({"type": "object", "required": ["a"]}),
         "response_format.json_schema.schema.required",
         "response_format.json_schema.schema.required: 'a' is required but not in properties"),
        (json_schema({"enum": []}), "response_format.json_schema.schema.enum",
         "response_format.json_schema.schema.enum: enum must be a non-empty list"),
        (json_schema({"const": float("inf")}), "response_format.json_schema.schema.const",
         "response_format.json_schema.schema.const: numbers must be finite"),
        (json_schema({"type": "string", "default": float("nan")}),
         "response_format.json_schema.schema",
         "response_format.json_schema.schema: numbers must be finite"),
    ],
)  # fmt: skip
def test_a_broken_schema_rule_is_a_422_naming_it(
    response_format: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidSchemaError) as caught:
        chat(response_format=response_format)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert error_kind(caught.value).status == 422


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        ({"type": "json_schema"}, "response_format.json_schema is required with type json_schema"),
        ({"type": "json_object", "json_schema": {"name": "x"}},
         "response_format.json_schema is only allowed with type json_schema"),
    ],
)  # fmt: skip
def test_the_json_schema_member_goes_with_its_type(
    response_format: dict[str, object], message: str
) -> None:
    with pytest.raises(SchemaViolationError) as caught:
        chat(response_format=response_format)
    assert (caught.value.field, caught.value.message) == ("response_format.json_schema", message)
    assert error_kind(caught.value).status == 422


def test_stop_sequences_do_not_go_with_a_json_format() -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        completion(stop="}", response_format={"type": "json_object"})
    assert caught.value.field == "stop"
    assert error_kind(caught.value).status == 400
    assert completion(stop="}", response_format={"type": "text"}).stop == ("}",)


# --- n choices and log-probabilities --------------------------------------------------------


def test_n_reaches_the_request_on_both_apis() -> None:
    assert chat().n == completion().n == 1
    assert chat(n=3).n == 3
    assert completion(n=8).n == 8
    # best_of equal to n asks for nothing to rank.
    assert completion(n=2, best_of=2).n == 2
    assert completion(best_of=1).n == 1


def test_best_of_other_than_n_names_both() -> None:
    with pytest.raises(UnsupportedParameterError) as caught:
        completion(n=2, best_of=4)
    assert caught.value.message == "best_of 4 is not supported: only best_of equal to n (2)"


@pytest.mark.parametrize("request_of", [chat, completion])
@pytest.mark.parametrize(("n", "message"), [(0, "n 0 is outside 1..8"), (9, "n 9 is outside 1..8")])
def test_n_out_of_range_is_a_422_naming_it(request_of: Any, n: int, message: str) -> None:
    with pytest.raises(OutOfRangeError) as caught:
        request_of(n=n)
    assert (caught.value.field, caught.value.message, caught.value.value) == ("n", message, n)
    assert error_kind(caught.value).status == 422


def test_chat_logprobs_is_a_flag_and_top_logprobs_the_alternatives() -> None:
    assert chat().logprobs is None
    assert chat(logprobs=False, top_logprobs=0).logprobs is None
    assert chat(logprobs=True).logprobs == 0
    assert chat(logprobs=True, top_logprobs=20).logprobs == 20


def test_completion_logprobs_is_the_alternatives() -> None:
    assert completion().logprobs is None
    assert completion(logprobs=0).logprobs == 0
    assert completion(logprobs=5).logprobs == 5


@pytest.mark.parametrize(
    ("request_of", "fields", "error_type", "field", "message"),
    [
        (chat, {"logprobs": True, "top_logprobs": 21}, LogprobsOutOfRangeError, "top_logprobs",
         "top_logprobs 21 is outside 0..20"),
        (chat, {"logprobs": True, "top_logprobs": -1}, LogprobsOutOfRangeError, "top_logprobs",
         "top_logprobs -1 is outside 0..20"),
        (chat, {"top_logprobs": 2}, TopLogprobsWithoutLogprobsError, "top_logprobs",
         "top_logprobs 2 is only allowed with logprobs true"),
        (chat, {"logprobs": False, "top_logprobs": 2}, TopLogprobsWithoutLogprobsError,
         "top_logprobs", "top_logprobs 2 is only allowed with logprobs true"),
        (completion, {"logprobs": 6}, LogprobsOutOfRangeError, "logprobs",
         "logprobs 6 is outside 0..5"),
        (completion, {"logprobs": -1}, LogprobsOutOfRangeError, "logprobs",
         "logprobs -1 is outside 0..5"),
    ],
)  # fmt: skip
def test_logprobs_rules_name_the_field_the_limit_and_the_value(
    request_of: Any,
    fields: dict[str, Any],
    error_type: type[FieldRuleViolationError],
    field: str,
    message: str,
) -> None:
    with pytest.raises(error_type) as caught:
        request_of(**fields)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert caught.value.value == fields.get("top_logprobs", fields.get("logprobs"))
    assert caught.value.limit is not None
    assert error_kind(caught.value).status == 422


def test_several_choices_of_structured_output() -> None:
    request = chat(n=4, response_format=json_schema(SCHEMA))
    assert request.n == 4
    assert request.guide is not None


# --- tools --------------------------------------------------------------------------------


def test_chat_tools_and_tool_choice_become_the_requests_tools() -> None:
    request = chat(tools=[TOOL])
    assert request.tools is not None
    assert request.tools.tools == (FunctionTool("get_weather", WEATHER),)
    assert (request.tools.choice, request.tools.parallel) == ("auto", True)
    assert request.guide is not None
    assert request.guide.type is GuideType.STRUCTURAL_TAG
    for choice, expected in (
        ("required", "required"), ("none", "none"), ("auto", "auto"),
        ({"type": "function", "function": {"name": "get_weather"}}, NamedTool("get_weather")),
    ):  # fmt: skip
        chosen = chat(tools=[TOOL], tool_choice=choice, parallel_tool_calls=False)
        assert chosen.tools is not None
        assert (chosen.tools.choice, chosen.tools.parallel) == (expected, False)
    # tool_choice none: no guide, so stop may go with it.
    assert chat(tools=[TOOL], tool_choice="none", stop="x").guide is None
    assert chat(tools=[], function_call="none").tools is None


def test_chat_messages_carry_tool_calls_and_tool_answers() -> None:
    arguments = '{"city": "Paris"}'
    # As the SDK sends back a message of its parse helper: its parse results, nulls.
    call = {"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": arguments, "parsed_arguments": {"city": "Paris"},
    }}  # fmt: skip
    request = chat(messages=[
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None,
         "annotations": None, "audio": None, "function_call": None, "parsed": None},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "Sun"}]},
    ], tools=[TOOL])  # fmt: skip
    assert request.messages == (
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "", (AssistantToolCall("call_1", "get_weather", arguments),)),
        ChatMessage("tool", "Sun", tool_call_id="call_1"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "field", "status"),
    [
        ({"tool_choice": "required"}, "tool_choice", 422),
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
         "tool_choice.function.name", 422),
        ({"tools": [TOOL], "tool_choice": {"type": "function"}}, "tool_choice.function", 422),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]},
         "tools[0].function.name", 422),
        ({"tools": [{"type": "function"}]}, "tools[0].function", 422),
        ({"tools": [{**TOOL, "extra": 1}]}, "tools[0].extra", 422),
        ({"messages": [{"role": "tool", "tool_call_id": "c", "content": "x"}]},
         "messages[0].tool_call_id", 422),
        ({"messages": [{"role": "assistant", "content": None}, USER]},
         "messages[0].content", 422),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "x"}}]}, USER]},
         "messages[0].tool_calls[0].function.arguments", 422),
    ],
)  # fmt: skip
def test_chat_tool_errors_name_the_field(fields: dict[str, Any], field: str, status: int) -> None:
    with pytest.raises(InvalidInputError) as caught:
        chat(**fields)
    assert caught.value.field == field
    assert error_kind(caught.value).status == status
