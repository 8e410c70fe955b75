"""Responses bodies → validated requests: input and instructions as chat messages,
defaults, text.format as the structured-output guide, rules naming `input`, and every
parameter this server does not implement refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from frontend.apis.responses.mapping import echo, responses_request
from frontend.apis.responses.protocol import ResponsesRequest
from frontend.errors import (
    FieldRuleViolationError,
    InvalidSchemaError,
    ModelNotFoundError,
    OutOfRangeError,
    PromptTooLongError,
    SchemaViolationError,
    UnsupportedParameterError,
    UnsupportedSchemaKeywordError,
    error_kind,
)
from frontend.validation import (
    AssistantToolCall,
    ChatMessage,
)
from llm_stack.guided_decoding import Guide, GuideType, schema_text
from llm_stack.tool_calls import NamedTool
from tests.frontend.apis.conftest import mapping_validator

VALIDATOR = mapping_validator(max_prompt_chars=100, max_messages=5)
SERVED = "m"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def body(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"input": "Hi", **fields})


def request(**fields: Any) -> Any:
    return responses_request(body(**fields), VALIDATOR, SERVED)


def test_a_string_input_is_one_user_message_with_openais_defaults() -> None:
    validated = request()
    assert validated.messages == (ChatMessage("user", "Hi"),)
    assert validated.prompt == ""
    assert validated.max_tokens == 64  # the server's maximum
    assert validated.sampling.temperature == 1.0
    assert validated.sampling.top_p is None
    assert validated.guide is None
    assert validated.stream is False
    assert validated.n == 1


def test_instructions_come_first_and_items_keep_their_roles() -> None:
    validated = request(
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Answer in French."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Capital"},
                {"type": "input_text", "text": "of Italy?"},
            ]},
            {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Rome.", "annotations": [],
                          "logprobs": []}]},
            {"role": "user", "content": "And Spain?"},
        ],
        max_output_tokens=7, temperature=0, top_p=0.5, stream=True,
    )  # fmt: skip
    assert validated.messages == (
        ChatMessage("system", "Be brief."),
        ChatMessage("system", "Answer in French."),
        ChatMessage("user", "Capital\nof Italy?"),
        ChatMessage("assistant", "Rome."),
        ChatMessage("user", "And Spain?"),
    )
    assert validated.max_tokens == 7
    assert (validated.sampling.temperature, validated.sampling.top_p) == (0, 0.5)
    assert validated.stream is True


def test_the_model_is_optional_but_must_be_the_served_one() -> None:
    assert request(model=SERVED).messages
    with pytest.raises(ModelNotFoundError):
        request(model="gpt-5")


def test_text_formats_become_guides() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert request(text={"format": {"type": "text"}}).guide is None
    assert request(text={"format": {"type": "json_object"}}).guide == Guide(GuideType.JSON)
    guided = request(
        text={"format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}}
    ).guide
    assert guided == Guide(GuideType.JSON_SCHEMA, schema_text(schema))


def test_schema_errors_name_their_place_under_text_format() -> None:
    def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
        return {"format": {"type": "json_schema", "name": "s", "schema": schema}}

    unsupported = {"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}
    with pytest.raises(UnsupportedSchemaKeywordError) as keyword:
        request(text=schema_format(unsupported))
    assert keyword.value.field == "text.format.schema.properties.a.pattern"
    assert error_kind(keyword.value).status == 400
    broken = {"type": "object", "properties": {}, "required": ["b"]}
    with pytest.raises(InvalidSchemaError) as rule:
        request(text=schema_format(broken))
    assert str(rule.value.field).startswith("text.format.schema")
    assert error_kind(rule.value).status == 422


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"truncation": "auto"}, "truncation"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"prompt_cache_key": "k"}, "prompt_cache_key"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [dict(WEATHER, defer_loading=True)]}, "tools[0].defer_loading"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
        (
            {"tools": [WEATHER], "text": {"format": {"type": "json_object"}}},
            "text.format",
        ),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
        ),
        (
            {"input": [{"type": "reasoning", "summary": []}]},
            "input[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"role": "user", "content": "Hi", "phase": "commentary"}]}, "input[0].phase"),
        (
            {"input": [{"role": "user", "content": [
                {"type": "output_text", "text": "x", "annotations": [{"type": "file_path"}]}
            ]}]},
            "input[0].content[0].annotations",
        ),
    ],
)  # fmt: skip
def test_what_is_not_implemented_is_refused_by_name(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameterError) as refused:
        request(**fields)
    assert refused.value.field == param
    assert param in refused.value.message
    assert error_kind(refused.value).status == 400


def test_values_that_ask_for_nothing_more_are_accepted() -> None:
    validated = request(
        store=False, background=False, include=[], reasoning={}, top_logprobs=0,
        truncation="disabled", service_tier="auto", tools=[], tool_choice="auto",
        parallel_tool_calls=False, metadata={"k": "v"}, user="u", safety_identifier="s",
        text={"format": {"type": "text"}, "verbosity": "medium"}, stream=True,
        stream_options={"include_obfuscation": False},
    )  # fmt: skip
    assert validated.messages == (ChatMessage("user", "Hi"),)


@pytest.mark.parametrize(
    ("fields", "field", "status"),
    [
        ({"input": []}, "input", 422),
        ({"input": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
         "input[1].role", 422),
        ({"input": "x" * 101}, "input", 422),
        ({"instructions": "x" * 60, "input": "y" * 41}, "input", 422),
        ({"instructions": "i", "input": [{"role": "user", "content": "Hi"}] * 5}, "input", 422),
        ({"input": [{"role": "user", "content": "Hi", "name": "n"}]}, "input[0].name", 422),
        ({"input": [{"role": "user"}]}, "input[0].content", 422),
        ({"input": [{"content": "Hi"}]}, "input[0].role", 422),
        # The item, whatever messages instructions and calls make before it.
        ({"instructions": "i", "input": [{"role": "user", "content": "Hi"},
          {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
          {"type": "function_call_output", "call_id": "c", "output": "x"},
          {"type": "function_call_output", "call_id": "e", "output": "x"}]},
         "input[3].call_id", 422),
        ({"input": [{"role": "user", "content": "Hi"},
          {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
          {"type": "function_call", "call_id": "d", "name": "f", "arguments": "[]"},
          {"type": "function_call_output", "call_id": "c", "output": "x"}]},
         "input[2].arguments", 422),
        ({"max_output_tokens": 65}, "max_output_tokens", 422),
        ({"max_output_tokens": 0}, "max_output_tokens", 422),
        ({"temperature": 2.5}, "temperature", 422),
    ],
)  # fmt: skip
def test_rules_name_what_the_client_sent(fields: dict[str, Any], field: str, status: int) -> None:
    with pytest.raises((FieldRuleViolationError, SchemaViolationError)) as broken:
        request(**fields)
    assert getattr(broken.value, "field", None) == field
    assert field in broken.value.message
    assert error_kind(broken.value).status == status


def test_the_limits_errors_say_the_limit_and_the_value() -> None:
    with pytest.raises(PromptTooLongError) as long:
        request(input="x" * 101)
    assert long.value.message == "input of 101 characters exceeds the 100 limit"
    with pytest.raises(OutOfRangeError) as out:
        request(max_output_tokens=65)
    assert out.value.message == "max_output_tokens 65 is outside 1..64"


def test_the_echo_fills_in_openais_defaults() -> None:
    plain = echo(body(), SERVED)
    assert (plain.model, plain.temperature, plain.top_p) == (SERVED, 1.0, 1.0)
    assert plain.text_format == {"type": "text"}
    assert (plain.tool_choice, plain.parallel_tool_calls, plain.metadata) == ("auto", True, {})
    schema = {"type": "boolean"}
    asked = echo(
        body(
            model=SERVED, instructions="i", max_output_tokens=5, temperature=0.5, top_p=0.9,
            text={"format": {"type": "json_schema", "name": "b", "schema": schema}},
            metadata={"k": "v"}, user="u",
        ),
        SERVED,
    )  # fmt: skip
    assert asked.text_format == {"type": "json_schema", "name": "b", "schema": schema}
    assert (asked.instructions, asked.max_output_tokens) == ("i", 5)
    assert (asked.temperature, asked.top_p, asked.metadata, asked.user) == (
        0.5, 0.9, {"k": "v"}, "u"
    )  # fmt: skip


def call(call_id: str = "call_1", **fields: Any) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "get_weather",
            "arguments": '{"city": "Paris"}', **fields}  # fmt: skip


def output(call_id: str = "call_1") -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "18 C"}


def test_function_tools_and_the_choice_reach_the_request() -> None:
    validated = request(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"},
                        parallel_tool_calls=False)  # fmt: skip
    assert validated.tools is not None
    [tool] = validated.tools.tools
    assert (tool.name, tool.description, tool.strict) == (
        "get_weather",
        WEATHER["description"],
        True,
    )
    assert tool.parameters == WEATHER["parameters"]
    assert validated.tools.choice == NamedTool("get_weather")
    assert validated.tools.parallel is False
    assert validated.guide is not None
    assert validated.guide.type == GuideType.STRUCTURAL_TAG
    assert request(tools=[WEATHER]).tools.choice == "auto"
    assert request(tools=[WEATHER], tool_choice="none").guide is None
    assert request().tools is None


def test_calls_and_their_outputs_continue_the_conversation() -> None:
    validated = request(
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"type": "message", "role": "assistant", "content": "Looking."},
            call("call_1", id="fc_1", status="completed"),
            call("call_2"),
            output("call_2"),
            {"type": "function_call_output", "call_id": "call_1",
             "output": [{"type": "input_text", "text": "20 C"}]},
        ],
    )  # fmt: skip
    arguments = '{"city": "Paris"}'
    assert validated.messages == (
        ChatMessage("user", "Weather in Paris and Rome?"),
        ChatMessage(
            "assistant",
            "Looking.",
            (AssistantToolCall("call_1", "get_weather", arguments),
             AssistantToolCall("call_2", "get_weather", arguments)),
        ),
        ChatMessage("tool", "18 C", tool_call_id="call_2"),
        ChatMessage("tool", "20 C", tool_call_id="call_1"),
    )  # fmt: skip
    alone = request(input=[{"role": "user", "content": "Hi"}, call(), output()])
    assert alone.messages[1] == ChatMessage(
        "assistant", "", (AssistantToolCall("call_1", "get_weather", arguments),)
    )


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([call(), output("call_9")], "input[2].call_id"),
        ([output()], "input[1].call_id"),
        ([call(arguments="[1]"), output()], "input[1].arguments"),
        ([call(name="no spaces"), output()], "input[1].name"),
        ([call("call 1"), output("call 1")], "input[1].call_id"),
        ([call()], "input[1].role"),  # the assistant's calls cannot come last
        ([call(), {"role": "assistant", "content": "x"}, output()], "input[2].role"),
    ],
)
def test_call_rules_name_the_item(items: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(FieldRuleViolationError) as broken:
        request(input=[{"role": "user", "content": "Hi"}, *items])
    assert broken.value.field == field
    assert error_kind(broken.value).status == 422


def test_a_member_of_another_item_type_is_a_422_naming_it() -> None:
    with pytest.raises(SchemaViolationError) as wrong:
        request(input=[{"role": "user", "content": "Hi", "call_id": "c"}])
    assert wrong.value.field == "input[0].call_id"
    with pytest.raises(SchemaViolationError) as missing:
        request(input=[{"role": "user", "content": "Hi"}, {"type": "function_call", "name": "f"}])
    assert missing.value.field == "input[1].call_id"


def test_tool_rules_name_the_tool() -> None:
    with pytest.raises(FieldRuleViolationError) as unknown:
        request(tools=[WEATHER], tool_choice={"type": "function", "name": "nope"})
    assert unknown.value.field == "tool_choice.name"
    with pytest.raises(FieldRuleViolationError) as required:
        request(tool_choice="required")
    assert required.value.field == "tool_choice"
    bad = dict(WEATHER, parameters={"type": "object", "properties": {"a": {"pattern": "x"}}})
    with pytest.raises(UnsupportedSchemaKeywordError) as keyword:
        request(tools=[bad])
    assert keyword.value.field == "tools[0].parameters.properties.a.pattern"


def test_null_members_of_an_item_ask_for_nothing() -> None:
    validated = request(
        tools=[WEATHER],
        input=[{"role": "user", "content": "Hi"}, call(caller=None, namespace=None), output()],
    )
    assert validated.messages[1].tool_calls[0].id == "call_1"
