"""Structural tags: free text and tagged, schema-constrained JSON, as one guide.

A structural tag is xgrammar's format of the same name (the `structural_tag` guide type
of TensorRT-LLM's `GuidedDecodingParams`, whose OpenAI server builds its tool-call guides
with it): `{"type": "structural_tag", "format": {...}}`. This stack serves the part of it
that tool calling needs, and every part it accepts is one the CPU engine's grammar
enforces:

- `triggered_tags`: any text until one of `triggers` appears, then one of `tags` (whose
  `begin` starts with that trigger), then text again; `at_least_one` makes the output
  start with a tag, `stop_after_first` ends it after the first tag.
- `tags_with_separator`: tags only, `separator` between them; `at_least_one` and
  `stop_after_first` as above.
- A tag is `{"begin", "content": {"type": "json_schema", "json_schema": ...}, "end"}`
  (`"type": "tag"` may be given); its schema follows `llm_stack.guided_decoding`'s rules.
  Begins, ends, triggers and separators are non-empty, as xgrammar's parser requires.

Triggers must not overlap (no trigger's end begins a trigger, none holds another): text
that ends in part of a trigger and goes on into a tag then reads the same to a parser
that looks for the first trigger as to the grammar.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Final, Literal

from llm_stack.guided_decoding import (
    MAX_GUIDE_BYTES,
    Path,
    SchemaError,
    check_limit,
    check_schema,
    utf8_size,
)

STRUCTURAL_TAG: Final = "structural_tag"
TRIGGERED_TAGS: Final = "triggered_tags"
TAGS_WITH_SEPARATOR: Final = "tags_with_separator"
FormatType = Literal["triggered_tags", "tags_with_separator"]
# Each tag is a grammar rule of its own and each trigger a set of states of the free
# text's automaton: both are bounded, as are the literals around them.
MAX_TAGS: Final = 128  # OpenAI's limit on a request's tools
MAX_TRIGGERS: Final = 16
MAX_LITERAL_CHARS: Final = 256  # a begin, end, trigger or separator


@dataclass(frozen=True, slots=True)
class Tag:
    """`begin`, a JSON value valid against `schema`, then `end`."""

    begin: str
    schema: Mapping[str, Any]
    end: str


@dataclass(frozen=True, slots=True)
class StructuralTag:
    """A checked structural tag (see the module's docstring for what each field means)."""

    format: FormatType
    tags: tuple[Tag, ...]
    triggers: tuple[str, ...] = ()  # triggered_tags
    separator: str = ""  # tags_with_separator
    at_least_one: bool = False
    stop_after_first: bool = False

    def to_json(self) -> dict[str, Any]:
        """The tag as xgrammar reads it."""
        fmt: dict[str, Any] = {"type": self.format}
        if self.format == TRIGGERED_TAGS:
            fmt["triggers"] = list(self.triggers)
        fmt["tags"] = [
            {
                "begin": tag.begin,
                "content": {"type": "json_schema", "json_schema": tag.schema},
                "end": tag.end,
            }
            for tag in self.tags
        ]
        if self.format == TAGS_WITH_SEPARATOR:
            fmt["separator"] = self.separator
        fmt["at_least_one"] = self.at_least_one
        fmt["stop_after_first"] = self.stop_after_first
        return {"type": STRUCTURAL_TAG, "format": fmt}

    def text(self) -> str:
        """The compact JSON text the tag travels as (the guide tensor's value)."""
        return json.dumps(
            self.to_json(), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )


class StructuralTagError(ValueError):
    """A structural tag this stack cannot enforce; `path` leads to the offending part
    from the tag's root, `values` holds a limit and the value over it."""

    def __init__(self, rule: str, path: Path, *, values: Mapping[str, int] | None = None) -> None:
        super().__init__(f"{dotted(path)}: {rule}")
        self.rule = rule
        self.path = path
        self.values: Mapping[str, int] = values or {}


def dotted(path: Path) -> str:
    """`path` as the fields of a request are named: `format.tags[2].begin`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(root)"


def parse_structural_tag(data: object) -> StructuralTag:
    """The checked tag of decoded JSON `data`; raises StructuralTagError."""
    if not isinstance(data, dict):
        raise StructuralTagError("a structural tag must be a JSON object", ())
    _keys(data, (), required={"type", "format"}, optional=set())
    if data["type"] != STRUCTURAL_TAG:
        raise StructuralTagError(f'type must be "{STRUCTURAL_TAG}"', ("type",))
    fmt = data["format"]
    path: Path = ("format",)
    if not isinstance(fmt, dict):
        raise StructuralTagError("format must be an object", path)
    kind = fmt.get("type")
    if kind == TRIGGERED_TAGS:
        _keys(fmt, path, required={"type", "triggers", "tags"}, optional=_FLAGS)
    elif kind == TAGS_WITH_SEPARATOR:
        _keys(fmt, path, required={"type", "tags", "separator"}, optional=_FLAGS)
    else:
        raise StructuralTagError(
            f"format type must be {TRIGGERED_TAGS} or {TAGS_WITH_SEPARATOR} (the others "
            "are not supported)",
            (*path, "type"),
        )
    flags = {}
    for flag in _FLAGS:
        value = fmt.get(flag, False)
        if not isinstance(value, bool):
            raise StructuralTagError(f"{flag} must be a boolean", (*path, flag))
        flags[flag] = value
    tags = _tags(fmt["tags"], (*path, "tags"))
    triggers: tuple[str, ...] = ()
    separator = ""
    if kind == TRIGGERED_TAGS:
        triggers = _triggers(fmt["triggers"], (*path, "triggers"))
        for index, tag in enumerate(tags):
            matching = [t for t in triggers if tag.begin.startswith(t)]
            if len(matching) != 1:
                raise StructuralTagError(
                    "begin must start with exactly one of the triggers",
                    (*path, "tags", index, "begin"),
                )
    else:
        separator = _literal(fmt["separator"], (*path, "separator"))
    return StructuralTag(
        kind,
        tags,
        triggers=triggers,
        separator=separator,
        at_least_one=flags["at_least_one"],
        stop_after_first=flags["stop_after_first"],
    )


def parse_structural_tag_text(text: str) -> StructuralTag:
    """The checked tag of its JSON text, refused over MAX_GUIDE_BYTES before parsing."""
    size = len(text) if len(text) > MAX_GUIDE_BYTES else utf8_size(text)
    check_limit(
        size, MAX_GUIDE_BYTES, f"the structural tag is {size} bytes", (), StructuralTagError
    )
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise StructuralTagError("the structural tag is not JSON", ()) from None
    return parse_structural_tag(data)


_FLAGS: Final = frozenset({"at_least_one", "stop_after_first"})


def _keys(
    node: Mapping[str, Any], path: Path, *, required: AbstractSet[str], optional: AbstractSet[str]
) -> None:
    for key in node:
        if key not in required and key not in optional:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise StructuralTagError(f"{shown!r} is not supported here", (*path, key))
    missing = sorted(required - set(node))
    if missing:
        raise StructuralTagError(f"{missing[0]} is required", (*path, missing[0]))


def _literal(value: object, path: Path) -> str:
    # Non-empty, as xgrammar requires of begins, ends, triggers and separators.
    if not isinstance(value, str):
        raise StructuralTagError("must be a string", path)
    if not value:
        raise StructuralTagError("must not be empty", path)
    check_limit(
        len(value), MAX_LITERAL_CHARS, f"is {len(value)} characters", path, StructuralTagError
    )
    return value


def _tags(value: object, path: Path) -> tuple[Tag, ...]:
    if not isinstance(value, list) or not value:
        raise StructuralTagError("tags must be a non-empty list", path)
    check_limit(len(value), MAX_TAGS, f"{len(value)} tags", path, StructuralTagError)
    tags = []
    for index, item in enumerate(value):
        where = (*path, index)
        if not isinstance(item, dict):
            raise StructuralTagError("a tag must be an object", where)
        _keys(item, where, required={"begin", "content", "end"}, optional={"type"})
        if item.get("type", "tag") != "tag":
            raise StructuralTagError('type must be "tag"', (*where, "type"))
        content = item["content"]
        if not isinstance(content, dict):
            raise StructuralTagError("content must be an object", (*where, "content"))
        if content.get("type") != "json_schema":
            raise StructuralTagError(
                "content type must be json_schema (the others are not supported)",
                (*where, "content", "type"),
            )
        _keys(content, (*where, "content"), required={"type", "json_schema"}, optional=set())
        schema = content["json_schema"]
        try:
            check_schema(schema)
        except SchemaError as exc:
            raise StructuralTagError(
                exc.rule, (*where, "content", "json_schema", *exc.path), values=exc.values
            ) from None
        tags.append(
            Tag(
                _literal(item["begin"], (*where, "begin")),
                schema,
                _literal(item["end"], (*where, "end")),
            )
        )
    return tuple(tags)


def _triggers(value: object, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise StructuralTagError("triggers must be a non-empty list", path)
    check_limit(len(value), MAX_TRIGGERS, f"{len(value)} triggers", path, StructuralTagError)
    triggers = tuple(_literal(v, (*path, i)) for i, v in enumerate(value))
    if len(set(triggers)) != len(triggers):
        raise StructuralTagError("triggers must be distinct", path)
    for index, trigger in enumerate(triggers):
        if overlapping(trigger, triggers):
            raise StructuralTagError(
                "a trigger must not hold another, nor end with the start of one",
                (*path, index),
            )
    return triggers


def overlapping(trigger: str, triggers: Sequence[str]) -> bool:
    """Whether `trigger` holds another trigger, or a proper suffix of it starts one
    (itself included): then the first trigger a parser finds may not be the grammar's."""
    for other in triggers:
        if other != trigger and other in trigger:
            return True
        for size in range(1, min(len(trigger), len(other) + 1)):
            if other.startswith(trigger[-size:]):
                return True
    return False


__all__ = [
    "MAX_LITERAL_CHARS",
    "MAX_TAGS",
    "MAX_TRIGGERS",
    "STRUCTURAL_TAG",
    "TAGS_WITH_SEPARATOR",
    "TRIGGERED_TAGS",
    "StructuralTag",
    "StructuralTagError",
    "Tag",
    "dotted",
    "overlapping",
    "parse_structural_tag",
    "parse_structural_tag_text",
]
