"""Structured outputs: the guides a request may carry, the JSON Schema subset the engines enforce.

A guide is TensorRT-LLM's pair of tensors `guided_decoding_guide_type` and
`guided_decoding_guide`: `json` (any JSON object, OpenAI's `json_object`), `json_schema`
(the schema as JSON text) or `structural_tag` (free text and tagged JSON values, for tool
calls: `llm_stack.structural_tag`, whose schemas follow the same rules). The supported
keywords are listed here, once: the frontend refuses the others with a 400 naming the
keyword and where it is, the `tensorrt_llm` model refuses them with `invalid_argument`,
and every keyword accepted is one the CPU engine's grammar enforces (TensorRT-LLM's
xgrammar enforces more, never less). A keyword the grammar would silently ignore is
refused, not accepted.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from llm_stack.model_errors import CodedError, ErrorCode


class GuideType(enum.StrEnum):
    """TensorRT-LLM backend's `guided_decoding_guide_type` values this stack serves."""

    JSON = "json"  # any JSON object
    JSON_SCHEMA = "json_schema"  # a value valid against `Guide.schema`
    STRUCTURAL_TAG = "structural_tag"  # text and tags as `Guide.schema` says (xgrammar's)


@dataclass(frozen=True, slots=True)
class Guide:
    """What the output must be; `schema` is JSON text: the schema of JSON_SCHEMA, the
    structural tag of STRUCTURAL_TAG (None for JSON)."""

    type: GuideType
    schema: str | None = None


JSON_TYPES: Final = ("string", "number", "integer", "boolean", "null", "object", "array")
STRING_FORMATS: Final = ("date", "time", "date-time", "uuid")
# Keywords that constrain the value, with what each accepts (for messages and the README).
SUPPORTED_KEYWORDS: Final[Mapping[str, str]] = {
    "type": f"one of {', '.join(JSON_TYPES)}, or a list of them",
    "properties": "an object of schemas",
    "required": "names listed in properties",
    "additionalProperties": "false only",
    "items": "one schema (not a list)",
    "minItems": "an integer",
    "maxItems": "an integer",
    "minLength": "an integer",
    "maxLength": "an integer",
    "format": ", ".join(STRING_FORMATS),
    "enum": "a non-empty list of values",
    "const": "a value",
    "anyOf": "a non-empty list of schemas",
    "$ref": "#/$defs/<name>, not recursive",
    "$defs": "at the root: an object of schemas",
}
# Keywords that only describe; accepted and ignored.
ANNOTATIONS: Final = frozenset(
    {"title", "description", "default", "examples", "$comment", "$schema", "deprecated",
     "readOnly", "writeOnly"}
)  # fmt: skip
_BY_TYPE: Final[Mapping[str, frozenset[str]]] = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "string": frozenset({"minLength", "maxLength", "format"}),
}
_OWNER: Final = {keyword: kind for kind, keywords in _BY_TYPE.items() for keyword in keywords}
# Repetition bounds become grammar rules of that length; nesting becomes recursion.
MAX_REPEAT: Final = 256
MAX_DEPTH: Final = 16
MAX_NODES: Final = 512  # schemas after resolving every $ref
# What a guide may cost before its request is admitted: the CPU engine converts it to a
# grammar in Python and llama.cpp compiles that in time that grows with the square of
# an enum's values (31k values: 2.6 s, 300k: minutes). The frontend and the models
# enforce the same limits, cheapest first: the text's bytes, then the values. With
# them, the costliest guide allowed converts and compiles in tens of milliseconds.
# Enum limits are OpenAI's structured outputs' own (500 values per enum at first,
# 1000 in all; 15,000 characters for a long enum).
MAX_GUIDE_BYTES: Final = 64 * 1024  # the schema as JSON text, UTF-8
MAX_ENUM_VALUES: Final = 500  # values of one enum
MAX_TOTAL_VALUES: Final = 1000  # enum and const values in all, once $ref are resolved
MAX_LITERAL_CHARS: Final = 15_000  # those values' characters as JSON text, in all
# Optional properties of one object: the grammar converter's work grows with the cube
# of their count (64: 2 ms, 500: 400 ms).
MAX_OPTIONAL_PROPERTIES: Final = 64
# The GBNF grammar the CPU engine compiles (checked after conversion): compilation and
# each sequence's copy of the grammar grow with it.
MAX_GRAMMAR_BYTES: Final = 64 * 1024

Path = tuple[str | int, ...]


class SchemaError(ValueError):
    """A schema this stack cannot enforce: an unsupported keyword, a broken rule or a limit.

    `path` leads from the schema's root to the offending keyword (unsupported) or value,
    `rule` says what is wrong there; str() is both, the path as a JSON pointer. Over a
    limit, `values` holds the limit and the value that passed it, for coded errors.
    """

    def __init__(
        self,
        rule: str,
        path: Path,
        *,
        unsupported: bool,
        values: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(f"{pointer(path)}: {rule}")
        self.rule = rule
        self.path = path
        self.unsupported = unsupported
        self.values: Mapping[str, int] = values or {}


class PathErrorType(Protocol):
    """An error class of a rule broken at a path, with the limit and value over it."""

    def __call__(
        self, rule: str, path: Path, *, values: Mapping[str, int] | None = None
    ) -> ValueError: ...


def check_limit(value: int, limit: int, what: str, path: Path, error: PathErrorType) -> None:
    """`error` at `path` when `value` is over `limit`; `what` says what it counts, e.g.
    "130 tools", "is 300 characters"."""
    if value > limit:
        raise error(
            f"{what}, over the limit of {limit}", path, values={"value": value, "limit": limit}
        )


def pointer(path: Path) -> str:
    """`path` as a JSON pointer (RFC 6901), for messages."""
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in path)
    return "/" + "/".join(parts) if path else "/"


def _unsupported(keyword: str, path: Path, rule: str = "") -> SchemaError:
    """`keyword` of the schema at `path`."""
    shown = keyword if len(keyword) <= 40 else keyword[:40] + "..."
    text = rule or (
        f"keyword {shown!r} is not supported; supported: {', '.join(SUPPORTED_KEYWORDS)}, "
        "and annotations such as title and description"
    )
    return SchemaError(text, (*path, keyword), unsupported=True)


def _invalid(path: Path, rule: str) -> SchemaError:
    return SchemaError(rule, path, unsupported=False)


def _over(path: Path, what: str, value: int, limit: int) -> SchemaError:
    """`what` (e.g. "enum has 600 values") passes `limit`."""
    return SchemaError(
        f"{what}, over the limit of {limit}",
        path,
        unsupported=False,
        values={"value": value, "limit": limit},
    )


def utf8_size(text: str) -> int:
    """`text`'s bytes in UTF-8 (a lone surrogate counts as 3 rather than failing)."""
    return len(text.encode("utf-8", "surrogatepass"))


def check_schema(schema: object) -> None:
    """Raise SchemaError unless every part of `schema` is supported, well formed and
    within this module's limits (MAX_GUIDE_BYTES, MAX_ENUM_VALUES, ...)."""
    if not isinstance(schema, dict):
        raise _invalid((), "the schema must be a JSON object")
    defs = schema.get("$defs", {})
    if not isinstance(defs, dict):
        raise _invalid(("$defs",), "$defs must be an object of schemas")
    try:
        # Cheapest first: the text the schema travels as, measured in C, before the walk.
        try:
            text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError):  # not JSON: a Python caller's object or a cycle
            raise _invalid((), "the schema must be JSON") from None
        size = utf8_size(text)
        if size > MAX_GUIDE_BYTES:
            raise _over((), f"the schema is {size} bytes as JSON", size, MAX_GUIDE_BYTES)
        _check(schema, (), defs, depth=0)
        for name, sub in defs.items():
            _check(sub, ("$defs", name), defs, depth=1)
        resolve_refs(schema)  # recursion and size
    except RecursionError:  # values nested deeper than Python recurses
        raise _invalid((), "the schema nests too deep") from None


def _check(node: object, path: Path, defs: Mapping[str, Any], depth: int) -> None:
    if isinstance(node, bool):
        raise SchemaError("boolean schemas are not supported", path, unsupported=True)
    if not isinstance(node, dict):
        raise _invalid(path, "a schema must be a JSON object")
    if depth > MAX_DEPTH:
        raise _invalid(path, f"schemas nest deeper than {MAX_DEPTH} levels")
    for keyword in node:
        if keyword not in SUPPORTED_KEYWORDS and keyword not in ANNOTATIONS:
            raise _unsupported(keyword, path)
        if keyword == "$defs" and path:
            raise _unsupported(keyword, path, "$defs is supported at the root only")
    structural = [k for k in node if k not in ANNOTATIONS and k != "$defs"]
    for combinator in ("$ref", "anyOf"):
        if combinator in node:
            others = [k for k in structural if k != combinator]
            if others:
                raise _unsupported(
                    others[0],
                    path,
                    f"{combinator} cannot be combined with {others[0]!r}",
                )
    if "$ref" in node:
        _check_ref(node["$ref"], (*path, "$ref"), defs)
        return
    if "anyOf" in node:
        options = node["anyOf"]
        if not isinstance(options, list) or not options:
            raise _invalid((*path, "anyOf"), "anyOf must be a non-empty list of schemas")
        for index, option in enumerate(options):
            _check(option, (*path, "anyOf", index), defs, depth + 1)
        return
    kind = _kind(node, path)
    if "enum" in node or "const" in node:
        _check_values(node, path, structural)
        return
    if kind == "object":
        _check_object(node, path, defs, depth)
    elif kind == "array":
        _check_array(node, path, defs, depth)
    elif kind == "string":
        _check_string(node, path)


def _kind(node: Mapping[str, Any], path: Path) -> str | None:
    """The one type the node's keywords apply to (None: any, or a list of types)."""
    declared = node.get("type")
    owners = {_OWNER[k] for k in node if k in _OWNER}
    if declared is None:
        if len(owners) > 1:
            raise _invalid(path, f"keywords of {' and '.join(sorted(owners))} mixed without a type")
        return next(iter(owners), None)
    if isinstance(declared, list):
        if (
            not declared
            or any(t not in JSON_TYPES for t in declared)
            or len(set(declared)) != len(declared)
        ):
            raise _invalid(
                (*path, "type"), f"type must list distinct types of {', '.join(JSON_TYPES)}"
            )
        if owners:
            keyword = next(k for k in node if k in _OWNER)
            raise _unsupported(
                keyword,
                path,
                f"type as a list cannot be combined with {keyword!r}",
            )
        return None
    if declared not in JSON_TYPES:
        raise _invalid((*path, "type"), f"type must be one of {', '.join(JSON_TYPES)}")
    foreign = [k for k in node if k in _OWNER and _OWNER[k] != declared]
    if foreign:
        raise _invalid(
            path, f"{foreign[0]} applies to {_OWNER[foreign[0]]}s, but type is {declared}"
        )
    return str(declared)


def _check_ref(ref: object, path: Path, defs: Mapping[str, Any]) -> None:
    prefix = "#/$defs/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or "/" in ref[len(prefix) :]:
        raise _unsupported(
            "$ref",
            path[:-1],
            "only local references #/$defs/<name> are supported",
        )
    if ref[len(prefix) :] not in defs:
        raise _invalid(path, f"{ref} is not defined in $defs")


def _check_values(node: Mapping[str, Any], path: Path, structural: list[str]) -> None:
    keyword = "enum" if "enum" in node else "const"
    others = [k for k in structural if k not in (keyword, "type")]
    if others:
        raise _unsupported(others[0], path, f"{keyword} cannot be combined with {others[0]!r}")
    values = node["enum"] if keyword == "enum" else [node["const"]]
    if keyword == "enum" and (not isinstance(values, list) or not values):
        raise _invalid((*path, "enum"), "enum must be a non-empty list")
    if len(values) > MAX_ENUM_VALUES:  # before the values are looked at
        count = len(values)
        raise _over((*path, "enum"), f"enum has {count} values", count, MAX_ENUM_VALUES)
    declared = node.get("type")
    types = declared if isinstance(declared, list) else [declared] if declared else None
    for index, value in enumerate(values):
        where = (*path, "enum", index) if keyword == "enum" else (*path, "const")
        if not _finite(value):
            raise _invalid(where, "numbers must be finite")
        if types is not None and not any(_is_type(value, t) for t in types):
            raise _invalid(where, f"the value is not of type {' or '.join(types)}")


def _check_object(node: Mapping[str, Any], path: Path, defs: Mapping[str, Any], depth: int) -> None:
    properties = node.get("properties", {})
    if not isinstance(properties, dict):
        raise _invalid((*path, "properties"), "properties must be an object of schemas")
    for name, sub in properties.items():
        if not name:
            # The grammar converter names rules after properties: "" would be the root's.
            raise _unsupported(
                name,
                (*path, "properties"),
                "an empty property name is not supported",
            )
        _check(sub, (*path, "properties", name), defs, depth + 1)
    required = node.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _invalid((*path, "required"), "required must be a list of property names")
    if len(set(required)) != len(required):
        raise _invalid((*path, "required"), "required must not repeat a name")
    missing = [r for r in required if r not in properties]
    if missing:
        raise _invalid((*path, "required"), f"{missing[0]!r} is required but not in properties")
    if "additionalProperties" in node and node["additionalProperties"] is not False:
        raise _unsupported(
            "additionalProperties",
            path,
            "only false is supported",
        )
    optional = len(properties) - len(required)
    if optional > MAX_OPTIONAL_PROPERTIES:
        raise _over(
            (*path, "properties"),
            f"the object has {optional} optional properties (not in required)",
            optional,
            MAX_OPTIONAL_PROPERTIES,
        )


def _check_array(node: Mapping[str, Any], path: Path, defs: Mapping[str, Any], depth: int) -> None:
    if "items" in node:
        items = node["items"]
        if isinstance(items, list):
            raise _unsupported(
                "items",
                path,
                "a list of schemas (tuples) is not supported",
            )
        _check(items, (*path, "items"), defs, depth + 1)
    _check_bounds(node, path, "minItems", "maxItems")


def _check_string(node: Mapping[str, Any], path: Path) -> None:
    if "format" in node:
        fmt = node["format"]
        if fmt not in STRING_FORMATS:
            raise _unsupported(
                "format",
                path,
                f"only {', '.join(STRING_FORMATS)} are supported",
            )
        bound = next((k for k in ("minLength", "maxLength") if k in node), None)
        if bound:
            raise _unsupported(bound, path, f"format cannot be combined with {bound!r}")
    _check_bounds(node, path, "minLength", "maxLength")


def _check_bounds(node: Mapping[str, Any], path: Path, low_key: str, high_key: str) -> None:
    values: dict[str, int] = {}
    for key in (low_key, high_key):
        if key not in node:
            continue
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPEAT:
            raise _invalid((*path, key), f"{key} must be an integer in 0..{MAX_REPEAT}")
        values[key] = value
    if len(values) == 2 and values[low_key] > values[high_key]:
        raise _invalid((*path, low_key), f"{low_key} exceeds {high_key}")


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _is_type(value: object, kind: str) -> bool:
    match kind:
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "null":
            return value is None
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "integer":
            if isinstance(value, float):
                return value.is_integer()
            return isinstance(value, int) and not isinstance(value, bool)
        case _:  # number
            return isinstance(value, int | float) and not isinstance(value, bool)


def resolve_refs(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A checked schema with every `$ref` replaced by its definition and `$defs` dropped.

    Raises SchemaError for a recursive reference or a result over MAX_NODES schemas,
    MAX_TOTAL_VALUES enum and const values or MAX_LITERAL_CHARS of them: each copy of
    a definition is a copy in the grammar too.
    """
    defs: Mapping[str, Any] = schema.get("$defs", {})
    count = 0
    values = 0
    chars = 0

    def count_values(key: str, literals: list[Any], path: Path) -> None:
        nonlocal values, chars
        values += len(literals)
        for value in literals:
            # As the grammar holds it: the converter writes json.dumps of the value.
            chars += len(json.dumps(value))
            if chars > MAX_LITERAL_CHARS:  # stop counting: a huge value costs its length
                raise _over(
                    (*path, key),
                    f"enum and const values reach {chars} characters as JSON once $ref are "
                    "resolved",
                    chars,
                    MAX_LITERAL_CHARS,
                )

    def inline(node: Any, path: Path, active: tuple[str, ...]) -> Any:
        nonlocal count
        if isinstance(node, list):
            return [inline(v, (*path, i), active) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        count += 1
        if count > MAX_NODES:
            raise _invalid(path, f"the schema has over {MAX_NODES} parts once $ref are resolved")
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name in active:
                raise _unsupported("$ref", path, "recursive $ref is not supported")
            return inline(defs[name], ("$defs", name), (*active, name))
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$defs" or key in ANNOTATIONS:
                continue
            if key in ("enum", "const"):
                out[key] = value  # values, not schemas
                count_values(key, value if key == "enum" else [value], path)
            elif key == "properties":
                out[key] = {n: inline(s, (*path, key, n), active) for n, s in value.items()}
            else:
                out[key] = inline(value, (*path, key), active)
        return out

    resolved = inline(schema, (), ())
    assert isinstance(resolved, dict)
    if values > MAX_TOTAL_VALUES:
        raise _over(
            (),
            f"the schema has {values} enum and const values once $ref are resolved",
            values,
            MAX_TOTAL_VALUES,
        )
    return resolved


class InvalidGuideError(CodedError):
    """A guide the model cannot serve; the field is the tensor it came in."""

    default_code = ErrorCode.INVALID_ARGUMENT


GUIDE_TYPE_FIELD: Final = "guided_decoding_guide_type"
GUIDE_FIELD: Final = "guided_decoding_guide"


def parse_guide(guide_type: str | None, guide: str | None) -> Guide | None:
    """The guide of the two tensors' values (None: unconstrained); raises InvalidGuideError."""
    if not guide_type:
        if guide:
            raise InvalidGuideError(
                f"{GUIDE_FIELD} needs {GUIDE_TYPE_FIELD}", field=GUIDE_TYPE_FIELD
            )
        return None
    if guide_type not in GuideType.__members__.values():
        shown = guide_type[:40]
        raise InvalidGuideError(
            f"{GUIDE_TYPE_FIELD} {shown!r} is not supported: only "
            f"{', '.join(t.value for t in GuideType)}",
            field=GUIDE_TYPE_FIELD,
        )
    kind = GuideType(guide_type)
    if kind is GuideType.JSON:
        return Guide(kind)
    if not guide:
        raise InvalidGuideError(f"{GUIDE_FIELD} is required for {kind}", field=GUIDE_FIELD)
    # Before parsing: a text of more characters has at least as many bytes.
    size = len(guide) if len(guide) > MAX_GUIDE_BYTES else utf8_size(guide)
    if size > MAX_GUIDE_BYTES:
        raise InvalidGuideError(
            f"{GUIDE_FIELD} is {size} bytes, over the limit of {MAX_GUIDE_BYTES}",
            field=GUIDE_FIELD,
            value=size,
            limit=MAX_GUIDE_BYTES,
        )
    if kind is GuideType.STRUCTURAL_TAG:
        # Here, not at the top: structural_tag checks its schemas with this module.
        from llm_stack.structural_tag import StructuralTagError, parse_structural_tag_text

        try:
            parse_structural_tag_text(guide)
        except StructuralTagError as exc:
            error = InvalidGuideError(f"{GUIDE_FIELD}: {exc}", field=GUIDE_FIELD)
            error.values = dict(exc.values)
            raise error from None
        return Guide(kind, guide)
    try:
        schema = json.loads(guide)
    except (json.JSONDecodeError, RecursionError):
        raise InvalidGuideError(f"{GUIDE_FIELD} is not JSON", field=GUIDE_FIELD) from None
    try:
        check_schema(schema)
    except SchemaError as exc:
        error = InvalidGuideError(f"{GUIDE_FIELD}: {exc}", field=GUIDE_FIELD)
        error.values = dict(exc.values)  # over a limit: the limit and the value
        raise error from None
    return Guide(kind, guide)


def schema_text(schema: Mapping[str, Any]) -> str:
    """The compact JSON text a schema travels as."""
    return json.dumps(schema, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


__all__ = [
    "ANNOTATIONS",
    "MAX_ENUM_VALUES",
    "MAX_GRAMMAR_BYTES",
    "MAX_GUIDE_BYTES",
    "MAX_LITERAL_CHARS",
    "MAX_OPTIONAL_PROPERTIES",
    "MAX_TOTAL_VALUES",
    "SUPPORTED_KEYWORDS",
    "Guide",
    "GuideType",
    "InvalidGuideError",
    "SchemaError",
    "check_schema",
    "parse_guide",
    "resolve_refs",
]
