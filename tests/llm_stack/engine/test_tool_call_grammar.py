"""Structural tags as llama.cpp grammars: what each tool choice's grammar takes and refuses,
checked by llama.cpp itself on the default model's vocabulary."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from llm_stack.engine.grammar import GRAMMAR_ROOT, guide_gbnf, structural_tag_gbnf
from llm_stack.llama_loader import load_model
from llm_stack.model_source import resolve_model_path
from llm_stack.structural_tag import TRIGGERED_TAGS, StructuralTag, Tag
from llm_stack.tool_calls import (
    HERMES,
    LLAMA3_JSON,
    FunctionTool,
    NamedTool,
    ToolCallFormat,
    ToolChoice,
    tool_guide,
    tool_structural_tag,
)

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["C", "F"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 10}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = (FunctionTool("get_weather", WEATHER), FunctionTool("get_time", TIME))


def hermes(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


PARIS = hermes("get_weather", '{"city": "Paris", "unit": "C"}')
UTC = hermes("get_time", '{"zone": "UTC"}')
BAD_UNIT = hermes("get_weather", '{"city": "Paris", "unit": "K"}')
NO_TOOL = hermes("rm", "{}")


@pytest.fixture(scope="module")
def vocab() -> Iterator[tuple[Any, Any]]:
    lc, model = load_model(resolve_model_path("gemma3-270m"), vocab_only=True)
    assert model
    yield lc, lc.llama_model_get_vocab(model)
    lc.llama_model_free(model)


def allowed(lc: Any, sampler: Any, token: int) -> bool:
    data = np.zeros(1, dtype=_TOKEN_DATA)
    data["id"] = [token]
    array = lc.llama_token_data_array(
        data=data.ctypes.data_as(lc.llama_token_data_p), size=1, selected=-1, sorted=False
    )
    lc.llama_sampler_apply(sampler, ctypes.byref(array))
    return bool(data["logit"][0] > -1e30)


def takes(vocab: tuple[Any, Any], gbnf: str, text: str) -> bool:
    """Whether the grammar takes exactly `text`, token by token as the model would write
    it, and then allows the end of generation."""
    lc, voc = vocab
    sampler = lc.llama_sampler_init_grammar(voc, gbnf.encode(), GRAMMAR_ROOT.encode())
    assert sampler, gbnf
    try:
        size = len(text.encode()) + 8
        ids = (ctypes.c_int32 * size)()
        n = lc.llama_tokenize(voc, text.encode(), len(text.encode()), ids, size, False, False)
        assert n >= 0
        for token in ids[:n]:
            if not allowed(lc, sampler, token):
                return False
            lc.llama_sampler_accept(sampler, token)
        return allowed(lc, sampler, lc.llama_vocab_eos(voc))
    finally:
        lc.llama_sampler_free(sampler)


def grammar(choice: ToolChoice, *, parallel: bool = True, fmt: ToolCallFormat = HERMES) -> str:
    tag = tool_structural_tag(TOOLS, choice, parallel=parallel, fmt=fmt)
    assert tag is not None
    return structural_tag_gbnf(tag)


@pytest.mark.parametrize(
    ("choice", "parallel", "taken", "refused"),
    [
        (
            "auto", True,
            ["", "Sunny today.", "a < b and <tool_cal", PARIS, "Checking.\n" + PARIS,
             PARIS + "\n" + UTC + "\nDone.", "x" + PARIS + "y" + UTC],
            [BAD_UNIT, NO_TOOL, "<tool_call>", "text <tool_call> more", PARIS + "<tool_call>x"],
        ),
        (
            "auto", False,
            ["Sunny.", PARIS, "Checking. " + UTC],
            [PARIS + "\n" + UTC, PARIS + " done"],
        ),
        (
            "required", True,
            [PARIS, PARIS + "\n" + UTC, UTC + "\n" + UTC],
            ["", "Sunny.", "Checking. " + PARIS, PARIS + " done", PARIS + UTC, BAD_UNIT],
        ),
        ("required", False, [PARIS, UTC], [PARIS + "\n" + UTC, ""]),
        (NamedTool("get_time"), True, [UTC], [PARIS, UTC + "\n" + UTC, "", "Sure."]),
    ],
    ids=["auto-parallel", "auto-one", "required-parallel", "required-one", "named"],
)  # fmt: skip
def test_each_choice_takes_its_outputs_and_refuses_others(
    vocab: tuple[Any, Any], choice: ToolChoice, parallel: bool, taken: list[str], refused: list[str]
) -> None:
    gbnf = grammar(choice, parallel=parallel)
    for text in taken:
        assert takes(vocab, gbnf, text), text
    for text in refused:
        assert not takes(vocab, gbnf, text), text


def test_llama3_json_calls(vocab: tuple[Any, Any]) -> None:
    call = '{"name": "get_time", "parameters": {"zone": "UTC"}}'
    required = grammar("required", fmt=LLAMA3_JSON)
    assert takes(vocab, required, call + "; " + call)
    assert not takes(vocab, required, '{"name": "get_time", "parameters": {"zone": 5}}')
    auto = grammar("auto", fmt=LLAMA3_JSON)
    assert takes(vocab, auto, 'The value {"a": 1} is JSON.')
    assert takes(vocab, auto, "Let me see. " + call)
    assert not takes(vocab, auto, '{"name": "other", "parameters": {}}')


def test_free_text_excludes_every_trigger_of_several(vocab: tuple[Any, Any]) -> None:
    schema = {"type": "object", "properties": {}, "additionalProperties": False}
    tag = StructuralTag(
        TRIGGERED_TAGS,
        (Tag("<a>", schema, "</a>"), Tag("[[b", schema, "]]")),
        triggers=("<a>", "[[b"),
    )
    gbnf = structural_tag_gbnf(tag)
    for text in ("<a [b [[c <<a", "x<a>{}</a>y[[b{}]]", "[[[b{}]]", "<<a>{}</a>"):
        assert takes(vocab, gbnf, text), text
    for text in ("<a>", "x [[b y", "<a>{}</a>[[b"):
        assert not takes(vocab, gbnf, text), text


def test_the_guide_converts_through_the_engines_path() -> None:
    guide = tool_guide(TOOLS, "required")
    assert guide is not None
    gbnf = guide_gbnf(guide)
    assert gbnf == grammar("required")
    assert "root ::= " in gbnf
