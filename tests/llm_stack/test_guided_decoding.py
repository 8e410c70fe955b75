"""The JSON Schema subset of structured outputs: what is accepted, what is refused and where."""

from __future__ import annotations

from typing import Any

import pytest

from llm_stack.guided_decoding import (
    MAX_ENUM_VALUES,
    MAX_GUIDE_BYTES,
    MAX_LITERAL_CHARS,
    MAX_NODES,
    MAX_OPTIONAL_PROPERTIES,
    MAX_TOTAL_VALUES,
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
from llm_stack.model_errors import ErrorCode

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


# The findings of issue 21: a 62 KB schema (an enum of 31k zeros) and a 3.2 MB guide (an
# enum of 300k strings) each took seconds to minutes to compile.
ZEROS: dict[str, Any] = {"enum": [0] * 31_000}


def limit_refused(schema: object, limit: int) -> SchemaError:
    error = refused(schema)
    assert not error.unsupported
    assert error.values["limit"] == limit
    assert error.values["value"] > limit
    assert f"over the limit of {limit}" in error.rule
    return error


def test_an_enum_over_its_limit_is_refused_before_its_values_are_read() -> None:
    error = limit_refused(ZEROS, MAX_ENUM_VALUES)
    assert error.path == ("enum",)
    assert error.rule == f"enum has 31000 values, over the limit of {MAX_ENUM_VALUES}"
    check_schema({"enum": list(range(MAX_ENUM_VALUES))})


def test_enum_and_const_values_are_bounded_in_all_once_refs_are_resolved() -> None:
    # Each enum within its own limit; the same definition used three times is three
    # copies in the grammar.
    half: dict[str, Any] = {"enum": list(range(MAX_ENUM_VALUES))}
    check_schema({"anyOf": [half, {"$ref": "#/$defs/H"}], "$defs": {"H": half}})
    schema = {"anyOf": [half, {"$ref": "#/$defs/H"}, {"const": 1}], "$defs": {"H": half}}
    error = limit_refused(schema, MAX_TOTAL_VALUES)
    assert error.values["value"] == MAX_TOTAL_VALUES + 1
    assert "enum and const values once $ref are resolved" in error.rule


def test_the_characters_of_enum_and_const_values_are_bounded() -> None:
    check_schema({"const": "x" * (MAX_LITERAL_CHARS - 2)})  # quotes included
    error = limit_refused({"const": "x" * (MAX_LITERAL_CHARS - 1)}, MAX_LITERAL_CHARS)
    assert error.path == ("const",)
    words = [f"{i:0100d}" for i in range(200)]  # 102 characters each as JSON
    error = limit_refused({"properties": {"a": {"enum": words}}}, MAX_LITERAL_CHARS)
    assert error.path == ("properties", "a", "enum")


def test_the_schema_text_is_bounded_before_it_is_walked() -> None:
    # Annotations cost no grammar, but the text still travels and is parsed.
    schema = {"type": "string", "description": "d" * MAX_GUIDE_BYTES}
    error = limit_refused(schema, MAX_GUIDE_BYTES)
    assert error.path == ()
    # Bytes, not characters: each é is two.
    check_schema({"type": "string", "description": "é" * (MAX_GUIDE_BYTES // 2 - 40)})
    limit_refused({"type": "string", "description": "é" * (MAX_GUIDE_BYTES // 2)}, MAX_GUIDE_BYTES)
    # A lone surrogate is measured, not a crash.
    check_schema({"type": "string", "description": "\ud800"})


def test_optional_properties_are_bounded_per_object() -> None:
    def props(n: int) -> dict[str, Any]:
        return {f"p{i}": {"type": "integer"} for i in range(n)}

    check_schema({"type": "object", "properties": props(MAX_OPTIONAL_PROPERTIES)})
    # Required properties cost the converter nothing extra.
    many = props(MAX_OPTIONAL_PROPERTIES + 10)
    check_schema({"type": "object", "properties": many, "required": list(many)[:10]})
    error = limit_refused({"type": "object", "properties": many}, MAX_OPTIONAL_PROPERTIES)
    assert error.path == ("properties",)


def test_a_typical_schema_with_a_few_hundred_enum_values_passes() -> None:
    countries = [f"Country {i}" for i in range(250)]
    schema = {
        "type": "object",
        "properties": {
            "country": {"type": "string", "enum": countries},
            "currency": {"enum": [f"C{i:02d}" for i in range(180)]},
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                    "required": ["explanation", "output"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["country", "currency", "steps"],
        "additionalProperties": False,
    }
    check_schema(schema)


def test_parse_guide_refuses_an_oversized_guide_before_parsing_it() -> None:
    # Not even JSON: refused for its size, before json.loads could say so.
    guide = "[" * (MAX_GUIDE_BYTES + 1)
    with pytest.raises(InvalidGuideError) as caught:
        parse_guide("json_schema", guide)
    error = caught.value.model_error()
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, "guided_decoding_guide")
    assert error.values == {"value": MAX_GUIDE_BYTES + 1, "limit": MAX_GUIDE_BYTES}
    assert error.message == (
        f"guided_decoding_guide is {MAX_GUIDE_BYTES + 1} bytes, over the limit of {MAX_GUIDE_BYTES}"
    )


def test_parse_guide_names_the_limit_and_the_value() -> None:
    with pytest.raises(InvalidGuideError) as caught:
        parse_guide("json_schema", schema_text(ZEROS))
    error = caught.value.model_error()
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, "guided_decoding_guide")
    assert error.values == {"value": 31_000, "limit": MAX_ENUM_VALUES}
    assert error.message == (
        f"guided_decoding_guide: /enum: enum has 31000 values, over the limit of {MAX_ENUM_VALUES}"
    )
