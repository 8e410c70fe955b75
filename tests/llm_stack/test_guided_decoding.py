"""The JSON Schema subset of structured outputs: what is accepted, what is refused and where."""

from __future__ import annotations

from typing import Any

import pytest

from llm_stack.guided_decoding import (
    MAX_NODES,
    Guide,
    GuideType,
    InvalidGuideError,
    Path,
    SchemaError,
    check_schema,
    parse_guide,
    pointer,
    resolve_refs,
    schema_text,
)

PERSON: dict[str, Any] = {
    "title": "Person",
    "description": "annotations are accepted and ignored",
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer"},
        "height": {"type": "number"},
        "member": {"type": "boolean"},
        "nothing": {"type": "null"},
        "colour": {"enum": ["red", "green", 3, None]},
        "kind": {"const": "person"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
        "born": {"type": "string", "format": "date"},
        "nick": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "address": {"$ref": "#/$defs/Address"},
        "either": {"type": ["string", "integer"]},
        "anything": {},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        }
    },
}


def test_every_supported_keyword_is_accepted() -> None:
    check_schema(PERSON)


def test_refs_are_inlined_and_annotations_dropped() -> None:
    resolved = resolve_refs(PERSON)
    assert "$defs" not in resolved
    assert "title" not in resolved
    assert resolved["properties"]["address"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    assert "default" not in resolved["properties"]["nick"]


def refused(schema: object) -> SchemaError:
    with pytest.raises(SchemaError) as caught:
        check_schema(schema)
    return caught.value


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "string", "pattern": "^a$"}, ("pattern",)),
        ({"type": "number", "minimum": 0}, ("minimum",)),
        ({"type": "number", "maximum": 1}, ("maximum",)),
        ({"type": "integer", "exclusiveMinimum": 0}, ("exclusiveMinimum",)),
        ({"type": "integer", "multipleOf": 2}, ("multipleOf",)),
        ({"oneOf": [{"type": "string"}]}, ("oneOf",)),
        ({"allOf": [{"type": "string"}]}, ("allOf",)),
        ({"not": {"type": "string"}}, ("not",)),
        ({"if": {}, "then": {}}, ("if",)),
        ({"type": "object", "patternProperties": {}}, ("patternProperties",)),
        ({"type": "object", "minProperties": 1}, ("minProperties",)),
        ({"type": "array", "uniqueItems": True}, ("uniqueItems",)),
        ({"type": "array", "prefixItems": []}, ("prefixItems",)),
        ({"definitions": {}}, ("definitions",)),
        ({"type": "object", "additionalProperties": True}, ("additionalProperties",)),
        ({"type": "object", "additionalProperties": {"type": "string"}}, ("additionalProperties",)),
        ({"type": "array", "items": [{"type": "string"}]}, ("items",)),
        ({"type": "string", "format": "email"}, ("format",)),
        ({"type": "string", "format": "date", "maxLength": 4}, ("maxLength",)),
        ({"type": ["string", "null"], "maxLength": 3}, ("maxLength",)),
        ({"anyOf": [{"type": "string"}], "type": "string"}, ("type",)),
        ({"enum": ["a"], "maxLength": 3}, ("maxLength",)),
        ({"$ref": "#/$defs/A", "type": "object", "$defs": {"A": {}}}, ("type",)),
        ({"$ref": "https://example.com/s.json"}, ("$ref",)),
        ({"$ref": "#/properties/a"}, ("$ref",)),
        ({"properties": {"a": {"$defs": {}}}}, ("properties", "a", "$defs")),
        ({"properties": {"": {"type": "string"}}}, ("properties", "")),
        (
            {"$ref": "#/$defs/A", "$defs": {"A": {"properties": {"a": {"$ref": "#/$defs/A"}}}}},
            ("$defs", "A", "properties", "a", "$ref"),
        ),
        (
            {"type": "object", "properties": {"a": {"items": {"type": "string", "pattern": "x"}}}},
            ("properties", "a", "items", "pattern"),
        ),
        ({"anyOf": [{"type": "string"}, {"uniqueItems": True}]}, ("anyOf", 1, "uniqueItems")),
        ({"$defs": {"A": {"type": "string", "pattern": "x"}}}, ("$defs", "A", "pattern")),
    ],
)
def test_unsupported_keywords_are_refused_by_name_and_place(schema: object, path: Path) -> None:
    error = refused(schema)
    assert error.unsupported
    assert error.path == path
    assert str(error).startswith(f"{pointer(path)}: ")


def test_an_unknown_keyword_is_named_with_the_supported_list() -> None:
    error = refused({"type": "string", "contentEncoding": "base64"})
    assert error.rule.startswith("keyword 'contentEncoding' is not supported; supported: type, ")


def test_a_boolean_schema_is_refused() -> None:
    error = refused({"properties": {"a": True}})
    assert (error.unsupported, error.path) == (True, ("properties", "a"))


@pytest.mark.parametrize(
    ("schema", "path", "rule"),
    [
        ([], (), "the schema must be a JSON object"),
        ({"type": "str"}, ("type",), "type must be one of"),
        ({"type": []}, ("type",), "type must list distinct types"),
        ({"type": ["string", "string"]}, ("type",), "type must list distinct types"),
        ({"type": "object", "required": ["a"]}, ("required",), "'a' is required but not in"),
        (
            {"properties": {"a": {}}, "required": ["a", "a"]},
            ("required",),
            "required must not repeat",
        ),
        ({"properties": {"a": {}}, "required": "a"}, ("required",), "required must be a list"),
        ({"properties": []}, ("properties",), "properties must be an object"),
        ({"properties": {"a": 3}}, ("properties", "a"), "a schema must be a JSON object"),
        ({"enum": []}, ("enum",), "enum must be a non-empty list"),
        ({"type": "string", "enum": ["a", 1]}, ("enum", 1), "the value is not of type string"),
        ({"type": "integer", "const": 1.5}, ("const",), "the value is not of type integer"),
        ({"const": float("nan")}, ("const",), "numbers must be finite"),
        ({"anyOf": []}, ("anyOf",), "anyOf must be a non-empty list"),
        ({"type": "array", "minItems": -1}, ("minItems",), "minItems must be an integer in 0..256"),
        ({"type": "array", "maxItems": 257}, ("maxItems",), "maxItems must be an integer"),
        ({"type": "array", "maxItems": True}, ("maxItems",), "maxItems must be an integer"),
        ({"type": "string", "minLength": 3, "maxLength": 2}, ("minLength",), "minLength exceeds"),
        ({"type": "string", "properties": {}}, (), "properties applies to objects"),
        ({"items": {}, "properties": {}}, (), "keywords of array and object mixed"),
        ({"$ref": "#/$defs/B", "$defs": {"A": {}}}, ("$ref",), "#/$defs/B is not defined"),
        ({"$defs": []}, ("$defs",), "$defs must be an object"),
    ],
)
def test_broken_rules_are_named(schema: object, path: Path, rule: str) -> None:
    error = refused(schema)
    assert not error.unsupported
    assert error.path == path
    assert error.rule.startswith(rule)


def test_depth_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(20):
        deep = {"type": "array", "items": deep}
    assert "nest deeper" in refused(deep).rule
    # Each definition used twice by the next: resolving doubles the size at each level.
    defs: dict[str, Any] = {"D0": {"type": "string"}}
    for i in range(1, 12):
        prev = f"#/$defs/D{i - 1}"
        defs[f"D{i}"] = {"type": "array", "items": {"anyOf": [{"$ref": prev}, {"$ref": prev}]}}
    error = refused({"$ref": "#/$defs/D11", "$defs": defs})
    assert f"over {MAX_NODES} parts" in error.rule


def test_values_nested_past_pythons_recursion_are_refused() -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    assert "nests too deep" in refused({"const": value}).rule


def test_parse_guide() -> None:
    assert parse_guide(None, None) is None
    assert parse_guide("", "") is None
    assert parse_guide("json", None) == Guide(GuideType.JSON)
    text = schema_text({"type": "string"})
    assert parse_guide("json_schema", text) == Guide(GuideType.JSON_SCHEMA, text)
    with pytest.raises(InvalidGuideError) as caught:
        parse_guide("json_schema", '{"type": "string", "pattern": "a"}')
    assert caught.value.field == "guided_decoding_guide"
    assert "'pattern' is not supported" in str(caught.value)
