"""Guides as llama.cpp grammars (GBNF), for the CPU engine's grammar sampler.

JSON Schema becomes GBNF through llama-cpp-python's converter (llama.cpp's own
json-schema-to-grammar, in Python); `json` (any object) is the schema {"type": "object"},
whose grammar allows one space between tokens where llama.cpp's JSON grammar allows a
newline and 20 tabs, which a small model fills after the value before it stops.
Schemas reach here checked (`llm_stack.guided_decoding.check_schema`), so the converter
only sees the keywords it enforces. Two of its outputs are corrected, both so that what
the grammar allows is always valid JSON for `json.loads`: string characters exclude
control characters (JSON forbids them raw; the converter allows them), and literals
(property names, enum and const values) escape backslashes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from llama_cpp import llama_grammar

from llm_stack.engine.base import InvalidRequestError
from llm_stack.guided_decoding import GUIDE_FIELD, JSON_TYPES, Guide, GuideType, resolve_refs

log = logging.getLogger(__name__)

GRAMMAR_ROOT: Final = "root"
# JSON string characters: anything but the quote, the backslash and control characters,
# or an escape.
_CHAR: Final = llama_grammar.BuiltinRule(
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] '
    r"[0-9a-fA-F])",
    [],
)
_LITERAL_ESCAPES: Final = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", '"': '\\"'}
_LITERAL_ESCAPE_RE: Final = re.compile(r'[\\\r\n"]')
CACHE_SIZE: Final = 256


class _Converter(llama_grammar.SchemaConverter):
    def _format_literal(self, literal: str) -> str:
        escaped = _LITERAL_ESCAPE_RE.sub(lambda m: _LITERAL_ESCAPES[m.group(0)], literal)
        return f'"{escaped}"'

    def _add_primitive(self, name: str, rule: Any) -> str:
        return str(super()._add_primitive(name, _CHAR if name == "char" else rule))


def _normalize(node: Any) -> Any:
    """Fill in what the converter reads differently from JSON Schema: a schema without
    structural keywords is any value (the converter would make it an object), an array
    bounded without `items` has items of any value."""
    if isinstance(node, list):
        return [_normalize(v) for v in node]
    if not isinstance(node, dict):
        return node
    if not node:
        return {"type": list(JSON_TYPES)}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("enum", "const"):
            out[key] = value
        elif key == "properties":
            out[key] = {name: _normalize(s) for name, s in value.items()}
        else:
            out[key] = _normalize(value)
    if ("minItems" in out or "maxItems" in out) and "items" not in out:
        out["items"] = {"type": list(JSON_TYPES)}
    return out


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF grammar (root rule `root`) of a checked JSON Schema."""
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]
    converter.visit(_normalize(resolve_refs(schema)), "")  # type: ignore[no-untyped-call]
    return str(converter.format_grammar())  # type: ignore[no-untyped-call]


class GrammarCache:
    """Each guide's grammar, converted and compiled once (bounded LRU, thread-safe).

    `compiles` tells whether llama.cpp accepts a grammar; a guide whose grammar it does not
    is refused here, before its request reaches the scheduler, so it never fails a step.
    """

    def __init__(self, compiles: Callable[[str], bool], capacity: int = CACHE_SIZE) -> None:
        self._compiles = compiles
        self._capacity = capacity
        self._grammars: OrderedDict[Guide, str] = OrderedDict()
        self._lock = threading.Lock()
        self.conversions = 0  # guides converted since start (cache misses)

    def get(self, guide: Guide) -> str:
        """The guide's GBNF; raises InvalidRequestError naming guided_decoding_guide."""
        with self._lock:
            gbnf = self._grammars.get(guide)
            if gbnf is not None:
                self._grammars.move_to_end(guide)
                return gbnf
        gbnf = self._convert(guide)
        with self._lock:
            self.conversions += 1
            self._grammars[guide] = gbnf
            while len(self._grammars) > self._capacity:
                self._grammars.popitem(last=False)
        return gbnf

    def _convert(self, guide: Guide) -> str:
        try:
            gbnf = guide_gbnf(guide)
        except Exception:  # the converter asserts on what it cannot turn into rules
            log.warning("guide not convertible to a grammar", exc_info=True)
            gbnf = ""
        if not gbnf or not self._compiles(gbnf):
            raise InvalidRequestError(
                f"{GUIDE_FIELD}: the schema cannot be enforced as a grammar", field=GUIDE_FIELD
            )
        return gbnf


def guide_gbnf(guide: Guide) -> str:
    """The grammar of a guide."""
    if guide.type is GuideType.JSON:
        return schema_to_gbnf({"type": "object"})
    assert guide.schema is not None
    return schema_to_gbnf(json.loads(guide.schema))
