"""Structural tags: the part of xgrammar's format this stack serves, checked with paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_stack.guided_decoding import GuideType, InvalidGuideError, parse_guide
from llm_stack.model_errors import ErrorCode
from llm_stack.structural_tag import (
    StructuralTag,
    StructuralTagError,
    Tag,
    overlapping,
    parse_structural_tag,
    parse_structural_tag_text,
)

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}}


def triggered(**overrides: Any) -> dict[str, Any]:
    fmt: dict[str, Any] = {
        "type": "triggered_tags",
        "triggers": ["<f="],
        "tags": [
            {
                "begin": "<f=a>",
                "content": {"type": "json_schema", "json_schema": SCHEMA},
                "end": "</f>",
            }
        ],
    }
    fmt.update(overrides)
    return {"type": "structural_tag", "format": fmt}


def test_a_tag_reads_back_as_written() -> None:
    tag = parse_structural_tag(triggered(at_least_one=True))
    assert tag == StructuralTag(
        "triggered_tags", (Tag("<f=a>", SCHEMA, "</f>"),), triggers=("<f=",), at_least_one=True
    )
    assert parse_structural_tag_text(tag.text()) == tag
    separated = {
        "type": "structural_tag",
        "format": {
            "type": "tags_with_separator",
            "separator": ", ",
            "tags": [{"type": "tag", "begin": "[", "content": {"type": "json_schema",
                      "json_schema": SCHEMA}, "end": "]"}],
            "stop_after_first": True,
        },
    }  # fmt: skip
    tag = parse_structural_tag(separated)
    assert (tag.separator, tag.stop_after_first, tag.at_least_one) == (", ", True, False)
    assert parse_structural_tag_text(tag.text()) == tag


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"type": "structural_tag"}, "format"),
        ({"type": "json", "format": {}}, "type"),
        (triggered(type="or"), "format.type"),
        (triggered(extra=1), "format.extra"),
        (triggered(triggers=[]), "format.triggers"),
        (triggered(triggers=["<g="]), "format.tags[0].begin"),
        (triggered(triggers=["<f=", "<f=="]), "format.triggers[1]"),
        (triggered(triggers=["aba"]), "format.triggers[0]"),
        (triggered(at_least_one="yes"), "format.at_least_one"),
        (
            triggered(tags=[{"begin": "<f=a>", "content": {"type": "any_text"}, "end": ""}]),
            "format.tags[0].content.type",
        ),
        (
            triggered(tags=[{"begin": "<f=a>", "content": {"type": "json_schema", "json_schema": {
                "type": "object", "properties": {"x": {"pattern": "a"}}}}, "end": ""}]),
            "format.tags[0].content.json_schema.properties.x.pattern",
        ),
        (triggered(tags=[{"begin": "<f=" + "x" * 300, "content": {"type": "json_schema",
            "json_schema": SCHEMA}, "end": "</f>"}]), "format.tags[0].begin"),
        (triggered(tags=[{"begin": "<f=a>", "content": {"type": "json_schema",
            "json_schema": SCHEMA}, "end": ""}]), "format.tags[0].end"),
        ({"type": "structural_tag", "format": {"type": "tags_with_separator", "separator": "",
          "tags": triggered()["format"]["tags"]}}, "format.separator"),
    ],
    ids=["no-format", "type", "format-type", "extra-key", "no-triggers", "begin-no-trigger",
         "nested-triggers", "self-overlap", "flag", "content-type", "schema",
         "long-begin", "empty-end", "empty-separator"],
)  # fmt: skip
def test_what_is_not_served_is_refused_naming_where(data: dict[str, Any], where: str) -> None:
    with pytest.raises(StructuralTagError) as caught:
        parse_structural_tag(data)
    assert str(caught.value).startswith(where + ": ")


def test_overlap_is_a_trigger_ending_where_one_begins() -> None:
    assert not overlapping("<tool_call>", ["<tool_call>"])
    assert not overlapping('{"name": ', ['{"name": ', "<tool_call>"])
    assert overlapping("abab", ["abab"])  # "ab" ends it and begins it
    assert overlapping("xa", ["xa", "ay"])  # text "x" then "ay..." reads "xa" first
    assert overlapping("xay", ["xay", "a"])  # holds another


def test_parse_guide_takes_a_structural_tag_and_refuses_a_bad_one() -> None:
    text = json.dumps(triggered())
    guide = parse_guide("structural_tag", text)
    assert guide is not None
    assert guide.type is GuideType.STRUCTURAL_TAG
    assert guide.schema == text
    with pytest.raises(InvalidGuideError) as caught:
        parse_guide("structural_tag", json.dumps(triggered(triggers=["<g"])))
    error = caught.value.model_error()
    assert error.code is ErrorCode.INVALID_ARGUMENT
    assert error.field == "guided_decoding_guide"
    assert "format.tags[0].begin" in error.message
    with pytest.raises(InvalidGuideError) as caught:
        parse_guide("structural_tag", "x" * (64 * 1024 + 1))
    assert caught.value.values == {"value": 64 * 1024 + 1, "limit": 64 * 1024}
    with pytest.raises(InvalidGuideError):
        parse_guide("structural_tag", "{not json")
    with pytest.raises(InvalidGuideError):
        parse_guide("structural_tag", "")
