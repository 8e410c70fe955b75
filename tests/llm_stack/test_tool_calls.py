"""Tool calling's pure parts: definitions checked per API, the guides per tool choice, the
parser streamed and at once."""

from __future__ import annotations

import itertools
import json
import random
import re
from typing import Any

import pytest

from llm_stack.guided_decoding import GuideType, parse_guide
from llm_stack.structural_tag import (
    TAGS_WITH_SEPARATOR,
    TRIGGERED_TAGS,
    parse_structural_tag_text,
)
from llm_stack.tool_calls import (
    HERMES,
    LLAMA3_JSON,
    ArgumentsDelta,
    FunctionTool,
    NamedTool,
    ParsedOutput,
    TextDelta,
    ToolCall,
    ToolCallFinished,
    ToolCallFormat,
    ToolCallParser,
    ToolCallStarted,
    ToolError,
    check_tool_choice,
    collect,
    new_call_id,
    parse_tool_calls,
    parse_tool_choice,
    parse_tools,
    tool_guide,
    tool_structural_tag,
    tools_text,
)

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"enum": ["C", "F"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 20}},
    "required": ["zone"],
    "additionalProperties": False,
}


def chat_tools() -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
        },
        {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
    ]


# -- definitions ------------------------------------------------------------------------


def test_each_dialect_reads_into_the_same_tools() -> None:
    chat = parse_tools(chat_tools())
    responses = parse_tools(
        [{"type": "function", **t["function"]} for t in chat_tools()], dialect="responses"
    )
    anthropic = parse_tools(
        [
            {"name": "get_weather", "description": "Weather", "input_schema": WEATHER},
            {"name": "get_time", "input_schema": TIME},
        ],
        dialect="anthropic",
    )
    assert chat == responses == anthropic
    assert chat[0] == FunctionTool("get_weather", WEATHER, "Weather")
    assert chat[1].to_openai() == {
        "type": "function",
        "function": {"name": "get_time", "parameters": TIME},
    }


def test_a_tool_without_parameters_takes_the_empty_object() -> None:
    (tool,) = parse_tools([{"type": "function", "function": {"name": "ping"}}])
    assert tool.parameters == {"type": "object", "properties": {}, "additionalProperties": False}


@pytest.mark.parametrize(
    ("tools", "dialect", "field", "unsupported"),
    [
        (
            [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"x": {"type": "string", "pattern": "a+"}}}}}],
            "chat", "tools[0].function.parameters.properties.x.pattern", True,
        ),
        (
            [{"type": "function", "name": "f", "parameters": {
                "type": "object", "properties": {"x": {"type": "strin"}}}}],
            "responses", "tools[0].parameters.properties.x.type", False,
        ),
        (
            [{"name": "f", "input_schema": {"type": "array"}}],
            "anthropic", "tools[0].input_schema.type", False,
        ),
        ([{"type": "function", "function": {"name": "bad name"}}], "chat",
         "tools[0].function.name", False),
        ([{"type": "code_interpreter"}], "chat", "tools[0].type", False),
        ([{"type": "function"}], "chat", "tools[0].function", False),
        (
            [{"type": "function", "function": {"name": "f"}},
             {"type": "function", "function": {"name": "f"}}],
            "chat", "tools[1].function.name", False,
        ),
        ({"name": "f"}, "chat", "tools", False),
        ([{"type": "function", "function": {"name": "f", "strict": "yes"}}], "chat",
         "tools[0].function.strict", False),
    ],
    ids=["unsupported", "invalid", "not-object", "name", "type", "no-function", "twice",
         "not-array", "strict"],
)  # fmt: skip
def test_a_bad_tool_is_refused_naming_its_field(
    tools: object, dialect: Any, field: str, unsupported: bool
) -> None:
    with pytest.raises(ToolError) as caught:
        parse_tools(tools, dialect=dialect)
    assert caught.value.field == field
    assert caught.value.unsupported is unsupported
    assert str(caught.value).startswith(field + ": ")


def test_over_the_tool_limit_names_limit_and_value() -> None:
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]
    with pytest.raises(ToolError) as caught:
        parse_tools(tools)
    assert caught.value.field == "tools"
    assert caught.value.values == {"value": 129, "limit": 128}


def test_a_schema_over_a_limit_keeps_its_values() -> None:
    schema = {"type": "object", "properties": {"x": {"enum": list(range(501))}}}
    with pytest.raises(ToolError) as caught:
        parse_tools([{"type": "function", "function": {"name": "f", "parameters": schema}}])
    assert caught.value.field == "tools[0].function.parameters.properties.x.enum"
    assert caught.value.values == {"value": 501, "limit": 500}


def test_a_choice_the_tools_cannot_meet_is_refused() -> None:
    tools = parse_tools(chat_tools())
    with pytest.raises(ToolError) as caught:
        check_tool_choice(NamedTool("nope"), tools)
    assert caught.value.field == "tool_choice.function.name"
    with pytest.raises(ToolError) as caught:
        check_tool_choice(NamedTool("nope"), tools, name_at=("tool_choice", "name"))
    assert caught.value.field == "tool_choice.name"
    with pytest.raises(ToolError) as caught:
        check_tool_choice("required", ())
    assert caught.value.field == "tool_choice"
    check_tool_choice("auto", ())
    check_tool_choice(NamedTool("get_time"), tools)


# -- guides ---------------------------------------------------------------------------


def test_none_has_no_guide() -> None:
    assert tool_guide(parse_tools(chat_tools()), "none") is None
    assert tool_guide((), "auto") is None


def test_auto_allows_text_or_calls_of_every_tool() -> None:
    tools = parse_tools(chat_tools())
    tag = tool_structural_tag(tools, "auto", parallel=True)
    assert tag is not None
    assert tag.format == TRIGGERED_TAGS
    assert tag.triggers == ("<tool_call>",)
    assert [t.begin for t in tag.tags] == [
        '<tool_call>\n{"name": "get_weather", "arguments": ',
        '<tool_call>\n{"name": "get_time", "arguments": ',
    ]
    assert all(t.end == "}\n</tool_call>" for t in tag.tags)
    assert (tag.at_least_one, tag.stop_after_first) == (False, False)
    single = tool_structural_tag(tools, "auto", parallel=False)
    assert single is not None
    assert single.stop_after_first


def test_required_is_calls_only_and_named_is_one_call() -> None:
    tools = parse_tools(chat_tools())
    required = tool_structural_tag(tools, "required", parallel=False)
    assert required is not None
    assert required.format == TAGS_WITH_SEPARATOR
    assert (required.at_least_one, required.stop_after_first) == (True, True)
    assert len(required.tags) == 2
    parallel = tool_structural_tag(tools, "required", parallel=True)
    assert parallel is not None
    assert not parallel.stop_after_first
    named = tool_structural_tag(tools, NamedTool("get_time"), parallel=True)
    assert named is not None
    assert [t.begin for t in named.tags] == ['<tool_call>\n{"name": "get_time", "arguments": ']
    assert (named.at_least_one, named.stop_after_first) == (True, True)
    assert named.tags[0].schema == TIME


def test_a_guide_travels_as_a_structural_tag_the_models_accept() -> None:
    tools = parse_tools(chat_tools())
    for choice in ("auto", "required", NamedTool("get_weather")):
        guide = tool_guide(tools, choice, fmt=LLAMA3_JSON)
        assert guide is not None
        assert guide.schema is not None
        assert guide.type is GuideType.STRUCTURAL_TAG
        assert parse_guide("structural_tag", guide.schema) == guide
        data = json.loads(guide.schema)
        assert data["type"] == "structural_tag"
        assert data["format"]["tags"][0]["content"]["type"] == "json_schema"


def test_tools_whose_guide_is_over_its_byte_limit_are_refused() -> None:
    big = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "x" * 900} for i in range(20)},
    }
    # Descriptions do not go into the guide's schemas' grammar, but the guide carries them.
    tools = [FunctionTool(f"f{i}", big) for i in range(4)]
    with pytest.raises(ToolError) as caught:
        tool_guide(tools, "auto")
    assert caught.value.field == "tools"
    assert caught.value.values["limit"] == 64 * 1024


# -- parser -----------------------------------------------------------------------------


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def call(text: str, name: str = "get_weather") -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {text}}}\n</tool_call>'


HERMES_CASES: list[tuple[str, ParsedOutput]] = [
    ("Just text.", ParsedOutput("Just text.", ())),
    (
        call('{"city": "Paris", "unit": "C"}'),
        ParsedOutput(None, (ToolCall("call_0", "get_weather", '{"city": "Paris", "unit": "C"}'),)),
    ),
    (
        "Let me check. "
        + call('{"city": "a}b\\"{", "unit": "F"}')
        + "\n"
        + call('{"zone": "UTC"}', "get_time")
        + "\nDone.",
        ParsedOutput(
            "Let me check.Done.",
            (
                ToolCall("call_0", "get_weather", '{"city": "a}b\\"{", "unit": "F"}'),
                ToolCall("call_1", "get_time", '{"zone": "UTC"}'),
            ),
        ),
    ),
    # Whitespace varies where a model's own template puts it differently.
    (
        '<tool_call>{ "name" :"get_time","arguments":{"zone": "x"} }</tool_call>',
        ParsedOutput(None, (ToolCall("call_0", "get_time", '{"zone": "x"}'),)),
    ),
    # A name of no tool, or no call after the trigger: content.
    (call('{"a": 1}', "rm_rf"), ParsedOutput(call('{"a": 1}', "rm_rf"), ())),
    ("a <tool_call> b", ParsedOutput("a <tool_call> b", ())),
    ("a <tool_ca", ParsedOutput("a <tool_ca", ())),
    ("<<tool_call>>", ParsedOutput("<<tool_call>>", ())),
    # Cut short inside the arguments.
    (
        '<tool_call>\n{"name": "get_time", "arguments": {"zone": "U',
        ParsedOutput(None, (ToolCall("call_0", "get_time", '{"zone": "U', complete=False),)),
    ),
    # Cut short after the name, or before it.
    (
        'Hi <tool_call>\n{"name": "get_time", "argu',
        ParsedOutput("Hi", (ToolCall("call_0", "get_time", "", complete=False),)),
    ),
    ('<tool_call>\n{"na', ParsedOutput(None, ())),
    # Cut short in the end markup: the call is whole.
    (
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool',
        ParsedOutput(None, (ToolCall("call_0", "get_time", "{}"),)),
    ),
    ("  text with spaces  \n", ParsedOutput("  text with spaces  \n", ())),
]


@pytest.mark.parametrize(("text", "expected"), HERMES_CASES)
def test_hermes_output_parses_at_once(text: str, expected: ParsedOutput) -> None:
    names = ("get_weather", "get_time")
    assert parse_tool_calls(text, HERMES, tool_names=names, ids=ids()) == expected


@pytest.mark.parametrize(("text", "expected"), HERMES_CASES)
def test_every_split_of_the_stream_reassembles_to_the_one_shot_result(
    text: str, expected: ParsedOutput
) -> None:
    names = ("get_weather", "get_time")
    for size in (1, 2, 3, 7):
        parser = ToolCallParser(HERMES, tool_names=names, ids=ids())
        events = []
        for at in range(0, len(text), size):
            events += parser.feed(text[at : at + size])
        events += parser.finish()
        assert collect(events) == expected, size


def test_random_splits_reassemble_to_the_one_shot_result() -> None:
    # Seeded: the same splits every run. Texts mixing content, calls, escapes and
    # partial triggers, cut into pieces of 1 to 12 characters at random.
    rng = random.Random(20)
    names = ("get_weather", "get_time")
    texts = [text for text, _ in HERMES_CASES]
    texts.append("A <tool_call x " + call('{"city": "<tool_call>", "unit": "C"}') + " B <tool")
    for text in texts:
        expected = parse_tool_calls(text, HERMES, tool_names=names, ids=ids())
        for _ in range(50):
            parser = ToolCallParser(HERMES, tool_names=names, ids=ids())
            events, at = [], 0
            while at < len(text):
                size = rng.randint(1, 12)
                events += parser.feed(text[at : at + size])
                at += size
            events += parser.finish()
            assert collect(events) == expected, text


# Only calls allowed (tool_choice required or a named function): the output cut short in
# the trigger ends in markup; the same text is content where text is allowed.
CALLS_ONLY_CASES: list[tuple[str, ParsedOutput, ParsedOutput]] = [
    ("<", ParsedOutput(None, ()), ParsedOutput("<", ())),
    ("<tool_ca", ParsedOutput(None, ()), ParsedOutput("<tool_ca", ())),
    ("\n <tool", ParsedOutput(None, ()), ParsedOutput("\n <tool", ())),
    (
        call("{}", "get_time") + "\n<tool_c",
        ParsedOutput(None, (ToolCall("call_0", "get_time", "{}"),)),
        ParsedOutput("<tool_c", (ToolCall("call_0", "get_time", "{}"),)),
    ),
    # Cut short after the trigger: markup either way.
    ('<tool_call>\n{"na', ParsedOutput(None, ()), ParsedOutput(None, ())),
    # Text that cannot begin the trigger stays content (a call of no tool, say).
    ("x <", ParsedOutput("x", ()), ParsedOutput("x <", ())),
    ("x", ParsedOutput("x", ()), ParsedOutput("x", ())),
]


@pytest.mark.parametrize(("text", "calls_only", "text_allowed"), CALLS_ONLY_CASES)
def test_where_only_calls_are_allowed_a_trigger_cut_short_is_not_content(
    text: str, calls_only: ParsedOutput, text_allowed: ParsedOutput
) -> None:
    names = ("get_weather", "get_time")
    assert parse_tool_calls(text, HERMES, tool_names=names, ids=ids(), calls_only=True) == (
        calls_only
    )
    assert parse_tool_calls(text, HERMES, tool_names=names, ids=ids()) == text_allowed
    for size in (1, 2, 3):
        parser = ToolCallParser(HERMES, tool_names=names, ids=ids(), calls_only=True)
        events = []
        for at in range(0, len(text), size):
            events += parser.feed(text[at : at + size])
        events += parser.finish()
        assert collect(events) == calls_only, size


def test_llama3_json_calls_only_drops_its_trigger_cut_short() -> None:
    assert parse_tool_calls('{"na', LLAMA3_JSON, calls_only=True) == ParsedOutput(None, ())
    assert parse_tool_calls('{"na', LLAMA3_JSON) == ParsedOutput('{"na', ())


def test_streamed_events_come_as_the_text_decides_them() -> None:
    parser = ToolCallParser(HERMES, ids=ids())
    assert parser.feed("Hi <tool") == [TextDelta("Hi")]  # the space may be markup
    assert parser.feed('_call>\n{"name": "get_') == []
    assert parser.feed('time", "arguments": {"zone"') == [
        ToolCallStarted(0, "call_0", "get_time"),
        ArgumentsDelta(0, '{"zone"'),
    ]
    assert parser.feed(': "UTC"}}\n</tool_call>') == [
        ArgumentsDelta(0, ': "UTC"}'),
        ToolCallFinished(0, complete=True),
    ]
    assert parser.finish() == []


def test_llama3_json_calls_separated_by_semicolons() -> None:
    text = (
        '{"name": "get_time", "parameters": {"zone": "UTC"}}; '
        '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}'
    )
    expected = ParsedOutput(
        None,
        (
            ToolCall("call_0", "get_time", '{"zone": "UTC"}'),
            ToolCall("call_1", "get_weather", '{"city": "Oslo", "unit": "C"}'),
        ),
    )
    assert parse_tool_calls(text, LLAMA3_JSON, ids=ids()) == expected
    parser = ToolCallParser(LLAMA3_JSON, ids=ids())
    events = [e for char in text for e in parser.feed(char)] + parser.finish()
    assert collect(events) == expected
    plain = 'A JSON value: {"a": 1}'
    assert parse_tool_calls(plain, LLAMA3_JSON) == ParsedOutput(plain, ())


def test_guide_and_parser_agree_on_each_format() -> None:
    # What each tag's begin and end write around arguments reads back as that call.
    tools = parse_tools(chat_tools())
    fmt: ToolCallFormat
    for fmt in (HERMES, LLAMA3_JSON):
        tag = tool_structural_tag(tools, "required", fmt=fmt)
        assert tag is not None
        arguments = ['{"city": "Rome", "unit": "C"}', '{"zone": "CET"}']
        text = fmt.separator.join(
            t.begin + a + t.end for t, a in zip(tag.tags, arguments, strict=True)
        )
        parsed = parse_tool_calls(text, fmt, ids=ids())
        assert parsed == ParsedOutput(
            None,
            (
                ToolCall("call_0", "get_weather", arguments[0]),
                ToolCall("call_1", "get_time", arguments[1]),
            ),
        ), fmt.name
        assert parse_structural_tag_text(tag.text()) == tag


def test_call_ids_are_openai_shaped_and_distinct() -> None:
    made = {new_call_id() for _ in range(100)}
    assert len(made) == 100
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in made)


def test_a_finished_parser_takes_no_more() -> None:
    parser = ToolCallParser(HERMES)
    parser.finish()
    assert parser.finish() == []
    with pytest.raises(RuntimeError):
        parser.feed("x")


@pytest.mark.parametrize(
    ("value", "dialect", "choice"),
    [
        (None, "chat", "auto"),
        ("required", "chat", "required"),
        ({"type": "function", "function": {"name": "get_time"}}, "chat", NamedTool("get_time")),
        ("none", "responses", "none"),
        ({"type": "function", "name": "get_time"}, "responses", NamedTool("get_time")),
        ({"type": "any"}, "anthropic", "required"),
        ({"type": "tool", "name": "get_time"}, "anthropic", NamedTool("get_time")),
    ],
)
def test_tool_choice_in_each_dialect(value: object, dialect: Any, choice: object) -> None:
    assert parse_tool_choice(value, dialect=dialect) == choice


@pytest.mark.parametrize(
    ("value", "dialect", "field"),
    [
        ("sometimes", "chat", "tool_choice"),
        ({"type": "function", "function": "get_time"}, "chat", "tool_choice.function"),
        ({"type": "function", "function": {"name": "a b"}}, "chat", "tool_choice.function.name"),
        ({"type": "function"}, "responses", "tool_choice.name"),
        ({"type": "required"}, "anthropic", "tool_choice.type"),
        ({"type": "tool"}, "anthropic", "tool_choice.name"),
    ],
)
def test_a_bad_tool_choice_is_refused_naming_its_field(
    value: object, dialect: Any, field: str
) -> None:
    with pytest.raises(ToolError) as caught:
        parse_tool_choice(value, dialect=dialect)
    assert caught.value.field == field


def test_tools_text_is_what_preprocessing_takes() -> None:
    tools = parse_tools(chat_tools())
    assert json.loads(tools_text(tools)) == [t.to_openai() for t in tools]
    assert parse_tools(json.loads(tools_text(tools))) == tools
