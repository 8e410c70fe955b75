"""Guides as llama.cpp grammars (GBNF), for the CPU engine's grammar sampler.

JSON Schema becomes GBNF through llama-cpp-python's converter (llama.cpp's own
json-schema-to-grammar, in Python); `json` (any object) is the schema {"type": "object"},
whose grammar allows one space between tokens where llama.cpp's JSON grammar allows a
newline and 20 tabs, which a small model fills after the value before it stops.
Schemas reach here checked (`llm_stack.guided_decoding.check_schema`), so the converter
only sees the keywords it enforces, within the limits that keep its work and
llama.cpp's small. Two of its outputs are corrected, both so that what the grammar
allows is always valid JSON for `json.loads`: string characters exclude control
characters (JSON forbids them raw; the converter allows them), and literals (property
names, enum and const values) escape backslashes.

A structural tag (`llm_stack.structural_tag`, the tool-call guide) becomes one grammar:
each tag's schema converted as above under a rule of its own, the free text of
`triggered_tags` as an automaton over the triggers (any text in which no trigger
appears; see `_free_text_rules`).

`GrammarCache` does that work in a worker thread of its own, never on the engine's
event loop or its step thread: a guide is converted and compiled by llama.cpp once,
and each sequence gets a copy of the compiled grammar.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import llama_cpp
from llama_cpp import llama_grammar

from llm_stack.engine.base import EngineStoppedError, InvalidRequestError
from llm_stack.guided_decoding import (
    GUIDE_FIELD,
    JSON_TYPES,
    MAX_GRAMMAR_BYTES,
    Guide,
    GuideType,
    resolve_refs,
    utf8_size,
)
from llm_stack.model_errors import ErrorCode, Value
from llm_stack.structural_tag import (
    TRIGGERED_TAGS,
    StructuralTag,
    parse_structural_tag_text,
)

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
# How long a request waits for its grammar (mostly for the worker's queue: the largest
# grammar the limits allow takes tens of milliseconds); past it the request is refused.
GRAMMAR_DEADLINE_S: Final = 2.0

Sampler = Any  # a llama.cpp grammar sampler (`struct llama_sampler *`)
SeqKey = tuple[str, int]  # (request id, sequence index), as the scheduler's


class _Converter(llama_grammar.SchemaConverter):
    def visit(self, schema: Any, name: str) -> str:
        # Values before types: the converter reads a list `type` first and would then
        # allow any value of those types, whatever the enum.
        if isinstance(schema, dict) and ("enum" in schema or "const" in schema):
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            reserved = name in llama_grammar.RESERVED_NAMES
            rule_name = name + "-" if reserved else name or GRAMMAR_ROOT
            return str(self._add_rule(rule_name, self._values_rule(values)))  # type: ignore[no-untyped-call]
        return str(super().visit(schema, name))  # type: ignore[no-untyped-call]

    def _values_rule(self, values: list[Any]) -> str:
        """Exactly these values' JSON texts (as the converter writes them), sharing their
        prefixes: llama.cpp tracks one stack per alternative it could be in, so one
        alternative per value would make it check every candidate token against every
        value of the enum (500 values: a fifth of a second per masked step)."""
        texts = sorted({json.dumps(v) for v in values})
        return _prefix_tree(texts, self._format_literal)

    def _format_literal(self, literal: str) -> str:
        escaped = _LITERAL_ESCAPE_RE.sub(lambda m: _LITERAL_ESCAPES[m.group(0)], literal)
        return f'"{escaped}"'

    def _add_primitive(self, name: str, rule: Any) -> str:
        return str(super()._add_primitive(name, _CHAR if name == "char" else rule))


def _prefix_tree(texts: list[str], literal: Callable[[str], str]) -> str:
    """A GBNF expression matching exactly `texts` (sorted, distinct), as a radix tree: one
    alternative per distinct next character; its depth is at most the count of texts."""
    optional = texts[0] == ""  # one text ended where another goes on
    groups: dict[str, list[str]] = {}
    for text in texts[optional:]:
        groups.setdefault(text[0], []).append(text)
    alternatives = []
    for group in groups.values():
        prefix = _common_prefix(group[0], group[-1])  # sorted: the whole group's
        if len(group) == 1:
            alternatives.append(literal(prefix))
        else:
            rest = _prefix_tree([t[len(prefix) :] for t in group], literal)
            alternatives.append(f"{literal(prefix)} {rest}")
    body = " | ".join(alternatives)
    if optional:
        return f"({body})?"
    return f"({body})" if len(alternatives) > 1 else body


def _common_prefix(first: str, last: str) -> str:
    size = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), None)
    return first[: min(len(first), len(last)) if size is None else size]


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
    options = out.get("anyOf")
    if options and all(_only_values(option) for option in options):
        # One set of values, one prefix tree (see _Converter._values_rule), rather than one
        # alternative per option.
        return {"enum": [v for o in options for v in o.get("enum", [o.get("const")])]}
    return out


def _only_values(node: Any) -> bool:
    """Whether a normalized schema is a list of values (`type`, where given, holds them)."""
    return (
        isinstance(node, dict)
        and ("enum" in node or "const" in node)
        and set(node) <= {"enum", "const", "type"}
    )


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """The GBNF grammar (root rule `root`) of a checked JSON Schema."""
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]
    converter.visit(_normalize(resolve_refs(schema)), "")
    return str(converter.format_grammar())  # type: ignore[no-untyped-call]


def guide_gbnf(guide: Guide) -> str:
    """The grammar of a guide."""
    if guide.type is GuideType.JSON:
        return schema_to_gbnf({"type": "object"})
    assert guide.schema is not None
    if guide.type is GuideType.STRUCTURAL_TAG:
        return structural_tag_gbnf(parse_structural_tag_text(guide.schema))
    return schema_to_gbnf(json.loads(guide.schema))


def structural_tag_gbnf(tag: StructuralTag) -> str:
    """The GBNF grammar (root rule `root`) of a checked structural tag."""
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)  # type: ignore[no-untyped-call]
    alternatives = []
    for index, item in enumerate(tag.tags):
        arguments = converter.visit(_normalize(resolve_refs(item.schema)), f"tag-{index}-value")
        rule = f"{_gbnf_literal(item.begin)} {arguments} {_gbnf_literal(item.end)}"
        alternatives.append(converter._add_rule(f"tag-{index}", rule))  # type: ignore[no-untyped-call]
    calls = converter._add_rule("tags", " | ".join(alternatives))  # type: ignore[no-untyped-call]
    if tag.format == TRIGGERED_TAGS:
        free = _free_text_rules(converter, tag.triggers)
        if tag.stop_after_first:
            root = calls if tag.at_least_one else f"{free} {calls}?"
        else:
            first = calls if tag.at_least_one else ""
            root = f"{first} {free} ({calls} {free})*".strip()
    else:
        if tag.stop_after_first:
            root = calls if tag.at_least_one else f"{calls}?"
        else:
            root = f"{calls} ({_gbnf_literal(tag.separator)} {calls})*"
            root = root if tag.at_least_one else f"({root})?"
    converter._add_rule(GRAMMAR_ROOT, root)  # type: ignore[no-untyped-call]
    return str(converter.format_grammar())  # type: ignore[no-untyped-call]


def _free_text_rules(converter: Any, triggers: tuple[str, ...]) -> str:
    """Rules for any text in which no trigger appears; the name of the first.

    An automaton over the triggers (Aho-Corasick): a state is the longest end of the
    text so far that begins a trigger, one rule per state; a character that would
    complete a trigger has no way on. The text may end in any state: the triggers do not
    overlap (`llm_stack.structural_tag`), so a tag may follow any of them.
    """
    prefixes = sorted({t[:size] for t in triggers for size in range(len(t))}, key=len)
    names = {prefix: f"free-{index}" for index, prefix in enumerate(prefixes)}
    alphabet = sorted({char for trigger in triggers for char in trigger})

    def step(prefix: str, char: str) -> str | None:
        text = prefix + char
        if any(text.endswith(t) for t in triggers):
            return None  # the text would hold a trigger
        return next(text[at:] for at in range(len(text) + 1) if text[at:] in names)

    for prefix in prefixes:
        moves = {char: step(prefix, char) for char in alphabet}
        special = [char for char, to in moves.items() if to != ""]
        options = [f"{_gbnf_literal(c)} {names[to]}" for c, to in moves.items() if to]
        others = "".join(_gbnf_class_char(c) for c in special)
        options.append(f"[^{others}] {names['']}")
        converter._add_rule(names[prefix], f"({' | '.join(options)})?")
    return names[""]


def _gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _gbnf_class_char(char: str) -> str:
    """`char` inside a GBNF character class, escaped whatever it is."""
    code = ord(char)
    return (
        f"\\x{code:02X}"
        if code < 0x100
        else f"\\u{code:04X}"
        if code < 0x10000
        else f"\\U{code:08X}"
    )


@dataclass(frozen=True, slots=True)
class _Refused:
    """A guide whose grammar cannot be built: cached too, so that it is not tried again."""

    message: str
    values: dict[str, Value] = field(default_factory=dict)

    def error(self) -> InvalidRequestError:
        error = InvalidRequestError(self.message, field=GUIDE_FIELD)
        error.values = dict(self.values)
        return error


class GrammarCache:
    """Grammar samplers for guided sequences, built off the engine's loop and step thread.

    `prepare` converts a guide's schema to GBNF and compiles it with llama.cpp once
    (bounded LRU of compiled prototypes), then copies the prototype for each of the
    request's sequences (`llama_sampler_clone` copies the grammar's rules and stacks:
    a copy never depends on its prototype). The step thread `take`s a sequence's copy
    and frees it with the sequence; `release` frees the copies a request's sequences
    did not take.

    All of it runs in one worker thread: Python's conversion would not run two at once
    (GIL), one core at most is taken from decoding, and as the only thread that touches
    prototypes it can free an evicted one without locking. A request waits `deadline_s`
    for its grammar, then is refused; the work goes on and its grammar is cached.
    """

    def __init__(
        self,
        compile_gbnf: Callable[[str], Sampler],
        *,
        capacity: int = CACHE_SIZE,
        deadline_s: float = GRAMMAR_DEADLINE_S,
        convert: Callable[[Guide], str] = guide_gbnf,
        clone: Callable[[Sampler], Sampler] = llama_cpp.llama_sampler_clone,
        free: Callable[[Sampler], None] = llama_cpp.llama_sampler_free,
    ) -> None:
        """`compile_gbnf` returns a grammar sampler, NULL where llama.cpp refuses the
        grammar; `convert`, `clone` and `free` are llama-cpp-python's unless a test
        gives its own."""
        self._compile = compile_gbnf
        self._convert = convert
        self._clone = clone
        self._free = free
        self._capacity = capacity
        self.deadline_s = deadline_s
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="grammar")
        # The worker's alone: compiled prototypes, or why a guide has none.
        self._grammars: OrderedDict[Guide, Sampler | _Refused] = OrderedDict()
        self.conversions = 0  # guides converted since start (cache misses)
        self._lock = threading.Lock()  # guards what follows
        self._held: dict[str, list[Sampler | None]] = {}  # each request's copies, by index
        self._closed = False

    async def prepare(self, guide: Guide, request_id: str, n: int) -> None:
        """Build a grammar sampler for each of the request's `n` sequences, to be taken.

        Raises InvalidRequestError naming guided_decoding_guide: the guide cannot be
        enforced (its grammar is over MAX_GRAMMAR_BYTES, or llama.cpp refuses it), or its
        grammar was not ready within `deadline_s` (code timeout).
        """
        with self._lock:
            if self._closed:
                raise EngineStoppedError("the engine is not running")
        abandoned = threading.Event()
        try:
            job = self._worker.submit(self._build, guide, n, abandoned)
        except RuntimeError:  # closed since the check above
            raise EngineStoppedError("the engine is not running") from None
        try:
            samplers = await asyncio.wait_for(asyncio.wrap_future(job), self.deadline_s)
        except TimeoutError:
            self._abandon(job, abandoned)
            raise InvalidRequestError(
                f"{GUIDE_FIELD}: the schema's grammar was not ready within {self.deadline_s:g} s",
                code=ErrorCode.TIMEOUT,
                field=GUIDE_FIELD,
                limit_s=self.deadline_s,
            ) from None
        except asyncio.CancelledError:
            self._abandon(job, abandoned)
            task = asyncio.current_task()
            if job.cancelled() and self._closed and not (task and task.cancelling()):
                raise EngineStoppedError("the engine stopped") from None  # `close` cancelled it
            raise
        except BaseException:
            self._abandon(job, abandoned)
            raise
        with self._lock:
            refusal: Exception | None = None
            if self._closed:
                refusal = EngineStoppedError("the engine stopped")
            elif request_id in self._held:
                refusal = InvalidRequestError(
                    f"request id {request_id!r} is in use", code=ErrorCode.DUPLICATE_REQUEST_ID
                )
            else:
                self._held[request_id] = list(samplers)
        if refusal is not None:
            self._free_all(samplers)
            raise refusal

    def take(self, key: SeqKey) -> Sampler:
        """Sequence `key`'s grammar sampler, prepared for it; the caller frees it."""
        request_id, index = key
        with self._lock:
            samplers = self._held[request_id]
            sampler, samplers[index] = samplers[index], None
        if sampler is None:
            raise KeyError(f"the grammar of sequence {key} was taken already")
        return sampler

    def release(self, request_id: str) -> None:
        """Free the request's samplers that no sequence took (none: nothing to do)."""
        with self._lock:
            samplers = self._held.pop(request_id, [])
        self._free_all(s for s in samplers if s is not None)

    def held(self) -> int:
        """Samplers prepared and not taken yet, of all requests (for leak checks)."""
        with self._lock:
            return sum(s is not None for samplers in self._held.values() for s in samplers)

    def close(self) -> None:
        """Stop the worker, after the grammar it is compiling (which reads the model's
        vocabulary: call this before freeing the model), and free every sampler held
        here. Later `prepare` calls raise EngineStoppedError."""
        with self._lock:
            self._closed = True
        self._worker.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            held = [s for samplers in self._held.values() for s in samplers if s is not None]
            self._held.clear()
        self._free_all(held)
        prototypes = [g for g in self._grammars.values() if not isinstance(g, _Refused)]
        self._grammars.clear()
        self._free_all(prototypes)

    # -- the worker thread ------------------------------------------------------

    def _build(self, guide: Guide, n: int, abandoned: threading.Event) -> list[Sampler]:
        prototype = self._prototype(guide)
        samplers: list[Sampler] = []
        try:
            while len(samplers) < n and not abandoned.is_set():
                sampler = self._clone(prototype)
                if not sampler:
                    raise EngineStoppedError("llama.cpp could not copy a grammar")
                samplers.append(sampler)
        except BaseException:
            self._free_all(samplers)
            raise
        return samplers

    def _prototype(self, guide: Guide) -> Sampler:
        entry = self._grammars.get(guide)
        if entry is None:
            entry = self._compile_guide(guide)
            self.conversions += 1
            self._grammars[guide] = entry
            while len(self._grammars) > self._capacity:
                _, evicted = self._grammars.popitem(last=False)
                if not isinstance(evicted, _Refused):
                    self._free(evicted)  # its copies are their own
        else:
            self._grammars.move_to_end(guide)
        if isinstance(entry, _Refused):
            raise entry.error()
        return entry

    def _compile_guide(self, guide: Guide) -> Sampler | _Refused:
        unenforceable = _Refused(f"{GUIDE_FIELD}: the schema cannot be enforced as a grammar")
        try:
            gbnf = self._convert(guide)
        except Exception:  # the converter asserts on what it cannot turn into rules
            log.warning("guide not convertible to a grammar", exc_info=True)
            return unenforceable
        size = utf8_size(gbnf)
        if size > MAX_GRAMMAR_BYTES:
            return _Refused(
                f"{GUIDE_FIELD}: the schema's grammar is {size} bytes, over the limit of "
                f"{MAX_GRAMMAR_BYTES}",
                {"value": size, "limit": MAX_GRAMMAR_BYTES},
            )
        sampler = self._compile(gbnf) if gbnf else None
        return sampler if sampler else unenforceable

    # -- any thread ----------------------------------------------------------------

    def _abandon(
        self, job: concurrent.futures.Future[list[Sampler]], abandoned: threading.Event
    ) -> None:
        """The requester is gone: drop the job if it has not started, else free what it
        builds (it stops copying; a compiled prototype is cached all the same)."""
        abandoned.set()
        job.cancel()
        job.add_done_callback(self._free_result)

    def _free_result(self, job: concurrent.futures.Future[list[Sampler]]) -> None:
        if not job.cancelled() and job.exception() is None:
            self._free_all(job.result())

    def _free_all(self, samplers: Iterable[Sampler]) -> None:
        for sampler in samplers:
            self._free(sampler)
