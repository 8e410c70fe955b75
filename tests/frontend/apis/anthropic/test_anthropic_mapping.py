"""Anthropic bodies → validated requests: the conversation, tools, defaults, and what is
refused by name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from frontend.apis.anthropic.mapping import count_tokens_request, messages_request
from frontend.apis.anthropic.protocol import AnthropicCountTokensRequest, AnthropicMessagesRequest
from frontend.errors import (
    FrontendError,
    InvalidInputError,
    InvalidToolError,
    ModelNotFoundError,
    OutOfRangeError,
    SchemaViolationError,
    UnsupportedParameterError,
    UnsupportedSchemaKeywordError,
    error_kind,
)
from frontend.validation import AssistantToolCall, ChatMessage
from llm_stack.tool_calls import NamedTool
from tests.frontend.apis.conftest import mapping_validator

VALIDATOR = mapping_validator()
USER = {"role": "user", "content": "Hi"}
TOOL = {
    "name": "get_weather",
    "description": "The weather.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALL = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Oslo"}}


def message(**fields: Any) -> Any:
    body = AnthropicMessagesRequest.model_validate(
        {"model": "m", "messages": [USER], "max_tokens": 8, **fields}
    )
    return messages_request(body, VALIDATOR, "m")


def counted(**fields: Any) -> Any:
    body = AnthropicCountTokensRequest.model_validate({"model": "m", "messages": [USER], **fields})
    return count_tokens_request(body, VALIDATOR, "m")


def refusal(error: type[FrontendError], **fields: Any) -> Any:
    with pytest.raises(error) as raised:
        message(**fields)
    return raised.value


def test_defaults_are_anthropics() -> None:
    request = message()
    assert request.messages == (ChatMessage("user", "Hi"),)
    assert (request.max_tokens, request.sampling.temperature, request.stream) == (8, 1.0, False)
    assert request.stop == ()  # stop sequences are this API's to find, not the engine's
    assert request.tools is None
    assert request.sampling.top_p is request.sampling.top_k is None


def test_sampling_and_system_pass_through() -> None:
    request = message(
        output_config={"format": None}, context_management={},
        system="Be brief.", temperature=0.5, top_p=0.9, top_k=20, stream=True,
        stop_sequences=["\n\n"], metadata={"user_id": "u-1"}, service_tier="standard_only",
        speed="standard", thinking={"type": "disabled"}, cache_control={"type": "ephemeral"},
    )  # fmt: skip
    sampling = request.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.5, 0.9, 20)
    assert request.stream is True
    assert request.messages == (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"))


def test_text_blocks_join_and_count_tokens_sees_the_same_conversation() -> None:
    fields: dict[str, Any] = {
        "system": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "a", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": "b", "citations": None},
            ]},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"},
        ],
    }  # fmt: skip
    request = message(**fields)
    assert request.messages == (
        ChatMessage("system", "One.\nTwo."),
        ChatMessage("user", "a\nb"),
        ChatMessage("assistant", "c"),
        ChatMessage("user", "d"),
    )
    assert counted(**fields).messages == request.messages


def test_tools_and_their_blocks_become_the_validators() -> None:
    request = message(
        tools=[TOOL, {**TOOL, "name": "other", "strict": True, "type": "custom"}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[
            USER,
            {"role": "assistant", "content": [{"type": "text", "text": "Let me see."}, CALL]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Sunny"},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
    )  # fmt: skip
    assert request.tools is not None
    assert [tool.name for tool in request.tools.tools] == ["get_weather", "other"]
    assert request.tools.tools[0].parameters == TOOL["input_schema"]
    assert (request.tools.choice, request.tools.parallel) == ("required", False)
    assert request.guide is not None  # the calls are generated under the tools' guide
    assert request.messages[1:] == (
        ChatMessage(
            "assistant",
            "Let me see.",
            tool_calls=(AssistantToolCall("toolu_01", "get_weather", '{"city": "Oslo"}'),),
        ),
        ChatMessage("tool", "Sunny", tool_call_id="toolu_01"),
        ChatMessage("user", "And tomorrow?"),
    )
    named = message(tools=[TOOL], tool_choice={"type": "tool", "name": "get_weather"})
    assert named.tools is not None
    assert named.tools.choice == NamedTool("get_weather")
    assert named.tools.parallel is True
    # count_tokens renders the tools too: they are part of the prompt.
    assert counted(tools=[TOOL]).tools is not None


def test_tool_result_blocks_alone_are_tool_messages() -> None:
    request = message(
        messages=[
            USER,
            {"role": "assistant", "content": [CALL]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                          "content": [{"type": "text", "text": "Rain"}]}]},
        ]
    )  # fmt: skip
    assert request.messages[1:] == (
        ChatMessage(
            "assistant", "", tool_calls=(AssistantToolCall("toolu_01", "get_weather", json.dumps(
                {"city": "Oslo"})),)
        ),
        ChatMessage("tool", "Rain", tool_call_id="toolu_01"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking",
         "thinking is not supported (only type disabled)"),
        ({"output_config": {"effort": None, "format": {"type": "json_schema", "schema": {}}}},
         "output_config.format", "output_config.format is not supported"),
        ({"output_config": {"effort": "low"}}, "output_config.effort",
         "output_config.effort is not supported"),
        ({"mcp_servers": [{"type": "url"}]}, "mcp_servers", "mcp_servers is not supported"),
        ({"container": "c-1"}, "container", "container is not supported"),
        ({"context_management": {"edits": []}}, "context_management.edits",
         "context_management.edits is not supported"),
        ({"speed": "fast"}, "speed", "speed 'fast' is not supported (only standard)"),
        ({"service_tier": "priority"}, "service_tier",
         "service_tier 'priority' is not supported (only auto or standard_only: one tier)"),
        ({"inference_geo": "us"}, "inference_geo", "inference_geo is not supported"),
        ({"workspace_id": "w"}, "workspace_id", "workspace_id is not supported"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
         "messages[0].content[0].type",
         "messages[0].content[0]: content of type 'document' is not supported: only text, "
         "tool_use and tool_result"),
        ({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "a", "citations": [{"type": "char_location"}]}]}]},
         "messages[0].content[0].citations",
         "messages[0].content[0].citations is not supported in a text block"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]},
         "messages[0].content[0].x", "messages[0].content[0].x is not supported in a text block"),
        ({"system": [{"type": "text", "text": "a", "citations": []}]}, "system[0].citations",
         "system[0].citations is not supported"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type",
         "tools[0]: tools of type 'bash_20250124' are not supported: only client tools"),
        ({"tools": [{**TOOL, "defer_loading": True}]}, "tools[0].defer_loading",
         "tools[0].defer_loading is not supported"),
        ({"messages": [USER, {"role": "assistant", "content": [CALL]}, {"role": "user",
          "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "is_error": True}]}]},
         "messages[2].content[0].is_error",
         "messages[2].content[0].is_error true is not supported"),
    ],
)  # fmt: skip
def test_what_is_not_implemented_is_refused_by_name(
    fields: dict[str, Any], field: str, text: str
) -> None:
    error = refusal(UnsupportedParameterError, **fields)
    assert (error.field, error.message) == (field, text)
    assert error_kind(error).status == 400


@pytest.mark.parametrize(
    ("fields", "error_type", "field", "text"),
    [
        ({"temperature": 1.5}, OutOfRangeError, "temperature", "temperature 1.5 is outside 0..1"),
        ({"temperature": -0.1}, OutOfRangeError, "temperature",
         "temperature -0.1 is outside 0..1"),
        ({"top_p": 0.0}, OutOfRangeError, "top_p", "top_p 0.0 is outside (0, 1]"),
        ({"max_tokens": 65}, OutOfRangeError, "max_tokens", "max_tokens 65 is outside 1..64"),
        ({"stop_sequences": ["a"] * 5}, InvalidInputError, "stop_sequences",
         "stop_sequences has 5 sequences, exceeds the 4 limit"),
        ({"stop_sequences": ["x" * 17]}, InvalidInputError, "stop_sequences[0]",
         "stop_sequences[0] of 17 characters exceeds the 16 limit"),
        ({"messages": []}, InvalidInputError, "messages", "messages must not be empty"),
        ({"system": "s", "messages": [USER, {"role": "assistant", "content": "The"}]},
         InvalidInputError, "messages[1].role",
         "messages[1].role: the last message must be the user's or the system's, not the "
         "assistant's"),
        ({"messages": [USER, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_9"}]}]},
         InvalidToolError, "messages[1].content[0].tool_use_id",
         "messages[1].content[0].tool_use_id 'toolu_9' answers no tool_use of the assistant "
         "message before it"),
        ({"messages": [{"role": "user", "content": [CALL]}]}, InvalidToolError,
         "messages[0].content[0].type",
         "messages[0].content[0]: tool_use blocks belong in assistant messages"),
        ({"messages": [USER, {"role": "assistant", "content": [{**CALL, "name": "a b"}]}, USER]},
         InvalidToolError, "messages[1].content[0].name",
         "messages[1].content[0].name must be 1 to 64 letters, digits, underscores or dashes"),
        # Named by block, whatever messages the system prompt and the results make.
        ({"system": "s", "messages": [USER, {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."}, CALL, {**CALL, "id": "a b"}]}, USER]},
         InvalidToolError, "messages[1].content[2].id",
         "messages[1].content[2].id must be 1 to 128 letters, digits or _.:-"),
        ({"system": "s", "messages": [USER, {"role": "assistant", "content": [CALL]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": CALL["id"]}, {"type": "text", "text": "x"},
                {"type": "tool_result", "tool_use_id": "toolu_9"}]}]},
         InvalidToolError, "messages[2].content[2].tool_use_id",
         "messages[2].content[2].tool_use_id 'toolu_9' answers no tool_use of the assistant "
         "message before it"),
        ({"messages": [USER, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "f"}]}, USER]},
         SchemaViolationError, "messages[1].content[0].input",
         "messages[1].content[0].input is required"),
        ({"tools": [{"name": "f"}]}, SchemaViolationError, "tools[0].input_schema",
         "tools[0].input_schema is required"),
        ({"tool_choice": {"type": "any"}}, InvalidToolError, "tool_choice",
         "tool_choice: needs tools to call"),
        ({"tools": [TOOL], "tool_choice": {"type": "tool", "name": "nope"}}, InvalidToolError,
         "tool_choice.name", "tool_choice.name: no tool is named 'nope'"),
        ({"tool_choice": {"type": "tool"}}, InvalidToolError, "tool_choice.name", None),
        ({"model": "claude"}, ModelNotFoundError, "model",
         "the model 'claude' does not exist; this server serves 'm'"),
    ],
)  # fmt: skip
def test_rules_name_anthropics_fields(
    fields: dict[str, Any], error_type: type[FrontendError], field: str, text: str | None
) -> None:
    error = refusal(error_type, **fields)
    assert error.field == field
    if text is not None:
        assert error.message == text


def test_a_schema_keyword_the_grammar_does_not_enforce_names_its_path() -> None:
    tool = {**TOOL, "input_schema": {"type": "object", "properties": {
        "city": {"type": "string", "pattern": "^[A-Z]"}}}}  # fmt: skip
    error = refusal(UnsupportedSchemaKeywordError, tools=[tool])
    assert error.field == "tools[0].input_schema.properties.city.pattern"


def test_unknown_fields_are_schema_violations() -> None:
    with pytest.raises(ValueError, match="n_choices"):
        AnthropicMessagesRequest.model_validate(
            {"model": "m", "messages": [USER], "max_tokens": 1, "n_choices": 2}
        )
    with pytest.raises(ValueError, match="max_tokens"):
        AnthropicMessagesRequest.model_validate({"model": "m", "messages": [USER]})
