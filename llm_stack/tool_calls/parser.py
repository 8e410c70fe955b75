"""Generated text → content and tool calls, incrementally or at once.

`ToolCallParser.feed` takes the text as it is generated, in deltas of any size, and
returns events: text, a call started (its id and name, once the name is complete), its
arguments' text as it comes, the call finished. `parse_tool_calls` is the same parser fed
the whole text at once, so streamed events always reassemble (`collect`) to exactly the
one-shot result, whatever the deltas' sizes: the parser decides only on text it has seen
in full and holds back what it cannot decide yet (a possible start of the trigger).

A call's `arguments` are the generated JSON text of its arguments' object as written,
never re-serialized. A call cut short (the output ended inside its arguments, or after
its name) finishes with `complete` false; markup cut short before a name is dropped,
and so is the start of the trigger where the output may hold calls only (`calls_only`).
Whitespace (and a format's separators) between calls, and around them, is markup and is
dropped; text elsewhere is content.
"""

from __future__ import annotations

import enum
import json
import secrets
import string
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final

from llm_stack.tool_calls.formats import (
    WHITESPACE,
    Lit,
    Name,
    OneOf,
    Peek,
    Piece,
    ToolCallFormat,
    Ws,
)

_ID_ALPHABET: Final = string.ascii_letters + string.digits
# A name longer than this (as JSON text) is not a function's: the text is content.
_MAX_NAME_CHARS: Final = 256


def new_call_id() -> str:
    """A tool call's id as OpenAI writes them: `call_` and 24 letters and digits."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Content text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """Call `index` (0, 1, ... in the output) to function `name` begins."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ArgumentsDelta:
    """More of call `index`'s arguments (JSON text)."""

    index: int
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    """Call `index` has all its arguments (`complete`), or the output ended inside them."""

    index: int
    complete: bool


ToolCallEvent = TextDelta | ToolCallStarted | ArgumentsDelta | ToolCallFinished


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call as a whole: `arguments` is JSON text (an object, where `complete`)."""

    id: str
    name: str
    arguments: str
    complete: bool = True


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """A generated text read as content (None where there is none) and tool calls."""

    content: str | None
    tool_calls: tuple[ToolCall, ...]


class _State(enum.Enum):
    TEXT = enum.auto()  # content, watching for the trigger
    HEAD = enum.auto()  # after the trigger, up to the arguments
    ARGUMENTS = enum.auto()  # inside the arguments' object
    TAIL = enum.auto()  # after the arguments, up to the call's end


class _Match(enum.Enum):
    YES = enum.auto()
    MAYBE = enum.auto()  # the text so far could still match
    NO = enum.auto()


class ToolCallParser:
    """Incremental parser of one sequence's output in one format (see the module).

    `tool_names`, where given, are the only functions a call may name: a call to another
    is content. `ids` makes each call's id (OpenAI's shape by default). `calls_only`: the
    output may hold calls and no text (tool_choice required or a named function), so an
    output that ends in the start of the trigger (cut short by max_tokens) ends in
    markup, which is dropped with the whitespace before it, not content.
    """

    def __init__(
        self,
        fmt: ToolCallFormat,
        *,
        tool_names: Collection[str] | None = None,
        ids: Callable[[], str] = new_call_id,
        calls_only: bool = False,
    ) -> None:
        self._fmt = fmt
        self._names = None if tool_names is None else frozenset(tool_names)
        self._calls_only = calls_only
        self._ids = ids
        self._buffer = ""  # seen, not decided yet
        self._state = _State.TEXT
        self._held = ""  # trailing whitespace of the content, emitted once text follows
        self._after_call = False  # a call ended and no content came since
        self._calls = 0
        # Inside the arguments: their nesting, and where a string is.
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._finished = False

    def feed(self, delta: str) -> list[ToolCallEvent]:
        """The events that `delta` (more generated text) decides."""
        if self._finished:
            raise RuntimeError("the parser has finished")
        self._buffer += delta
        events: list[ToolCallEvent] = []
        while self._step(events, final=False):
            pass
        return events

    def finish(self) -> list[ToolCallEvent]:
        """The events of the output's end: what was held back, a call cut short."""
        if self._finished:
            return []
        events: list[ToolCallEvent] = []
        while self._step(events, final=True):
            pass
        self._finished = True
        if self._state is _State.ARGUMENTS:
            if self._buffer:
                events.append(ArgumentsDelta(self._calls - 1, self._buffer))
            events.append(ToolCallFinished(self._calls - 1, complete=False))
        elif self._state in (_State.TEXT, _State.HEAD):
            rest = self._buffer
            if self._calls_only:
                # The start of a call, cut short: markup, as is the whitespace before it.
                cut = len(rest) - _partial_suffix(rest, self._fmt.trigger)
                if cut < len(rest):
                    self._text(rest[:cut], events)
                    self._held = ""
                    rest = ""
            self._text(rest, events)
        # TAIL: the call's end markup, cut short, is dropped.
        self._buffer = ""
        if self._held and (not self._after_call):
            events.append(TextDelta(self._held))
        self._held = ""
        return _merged(events)

    # -- one decision at a time; True while there may be more to decide ------------

    def _step(self, events: list[ToolCallEvent], *, final: bool) -> bool:
        match self._state:
            case _State.TEXT:
                return self._step_text(events, final=final)
            case _State.HEAD:
                return self._step_head(events, final=final)
            case _State.ARGUMENTS:
                return self._step_arguments(events)
            case _State.TAIL:
                return self._step_tail(events, final=final)

    def _step_text(self, events: list[ToolCallEvent], *, final: bool) -> bool:
        trigger = self._fmt.trigger
        at = self._buffer.find(trigger)
        if at >= 0:
            self._text(self._buffer[:at], events)
            self._buffer = self._buffer[at:]
            self._state = _State.HEAD
            return True
        if final:
            return False  # `finish` takes the rest as content
        keep = _partial_suffix(self._buffer, trigger)
        decided = len(self._buffer) - keep
        if decided:
            self._text(self._buffer[:decided], events)
            self._buffer = self._buffer[decided:]
        return False

    def _step_head(self, events: list[ToolCallEvent], *, final: bool) -> bool:
        trigger = self._fmt.trigger
        result, end, name = _match(self._fmt.head, self._buffer, len(trigger))
        if result is _Match.YES and (self._names is None or name in self._names):
            assert name is not None
            self._held = ""  # whitespace before a call is markup
            index = self._calls
            self._calls += 1
            events.append(ToolCallStarted(index, self._ids(), name))
            self._buffer = self._buffer[end:]
            self._state = _State.ARGUMENTS
            self._depth, self._in_string, self._escaped = 0, False, False
            return True
        if result is _Match.MAYBE:
            if not final:
                return False
            # The output ended inside a call's markup: a call cut short, or nothing.
            if name is not None and (self._names is None or name in self._names):
                index = self._calls
                self._calls += 1
                events += [
                    ToolCallStarted(index, self._ids(), name),
                    ToolCallFinished(index, complete=False),
                ]
            self._held = ""
            self._buffer = ""
            self._state = _State.TEXT
            self._after_call = True
            return False
        # Not a call: the trigger is content, and what follows is read afresh.
        self._text(trigger, events)
        self._buffer = self._buffer[len(trigger) :]
        self._state = _State.TEXT
        return True

    def _step_arguments(self, events: list[ToolCallEvent]) -> bool:
        text = self._buffer
        end = self._scan(text)
        if end is None:
            if text:
                events.append(ArgumentsDelta(self._calls - 1, text))
            self._buffer = ""
            return False
        events.append(ArgumentsDelta(self._calls - 1, text[:end]))
        events.append(ToolCallFinished(self._calls - 1, complete=True))
        self._buffer = text[end:]
        self._state = _State.TAIL
        return True

    def _step_tail(self, events: list[ToolCallEvent], *, final: bool) -> bool:
        result, end, _ = _match(self._fmt.tail, self._buffer, 0)
        if result is _Match.MAYBE:
            if not final:
                return False
            self._buffer = ""  # the end markup, cut short
        elif result is _Match.YES:
            self._buffer = self._buffer[end:]
        # Without its end markup, what follows the arguments is content.
        self._state = _State.TEXT
        self._after_call = True
        return True

    def _scan(self, text: str) -> int | None:
        """Where the arguments' object ends in `text` (after its closing brace), going
        on from the scan so far; None: not in `text`."""
        for at, char in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return at + 1
        return None

    def _text(self, text: str, events: list[ToolCallEvent]) -> None:
        """Content, but whitespace next to a call is held (and dropped if it is)."""
        if not text:
            return
        body = text.rstrip(self._fmt.between)
        if not body:
            self._held += text
            return
        if self._after_call:
            # Markup between the call and this content is not content.
            body = (self._held + body).lstrip(self._fmt.between)
            self._after_call = False
        else:
            body = self._held + body
        self._held = text[len(text.rstrip(self._fmt.between)) :]
        if body:
            events.append(TextDelta(body))


def _partial_suffix(text: str, trigger: str) -> int:
    """The length of the longest end of `text` that begins `trigger` (held back)."""
    for size in range(min(len(text), len(trigger) - 1), 0, -1):
        if trigger.startswith(text[-size:]):
            return size
    return 0


def _match(pieces: tuple[Piece, ...], text: str, at: int) -> tuple[_Match, int, str | None]:
    """Whether `text` from `at` matches `pieces` (YES with where it ends and the name),
    could once more text comes (MAYBE, with the name if it was read), or cannot (NO)."""
    name: str | None = None  # once read, also with MAYBE
    for piece in pieces:
        match piece:
            case Ws():
                while at < len(text) and text[at] in WHITESPACE:
                    at += 1
                if at == len(text):
                    return _Match.MAYBE, at, name
            case Lit(literal) | Peek(literal):
                rest = text[at : at + len(literal)]
                if rest != literal:
                    return (_Match.MAYBE if literal.startswith(rest) else _Match.NO), at, name
                if isinstance(piece, Lit):
                    at += len(literal)
            case OneOf(texts):
                found = next((t for t in texts if text.startswith(t, at)), None)
                if found is None:
                    rest = text[at:]
                    maybe = any(t.startswith(rest) for t in texts)
                    return (_Match.MAYBE if maybe else _Match.NO), at, name
                at += len(found)
            case Name():
                result, end = _json_string(text, at)
                if result is not _Match.YES:
                    return result, at, name
                try:
                    value = json.loads(text[at:end])
                except ValueError:
                    return _Match.NO, at, None
                name, at = value, end
    return _Match.YES, at, name


def _json_string(text: str, at: int) -> tuple[_Match, int]:
    """A JSON string's text from `at`: YES with its end, MAYBE, or NO."""
    if at == len(text):
        return _Match.MAYBE, at
    if text[at] != '"':
        return _Match.NO, at
    index = at + 1
    while index < len(text):
        if index - at > _MAX_NAME_CHARS:
            return _Match.NO, at
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return _Match.YES, index + 1
        if char in "\n\r":
            return _Match.NO, at
        index += 1
    return (_Match.NO if index - at > _MAX_NAME_CHARS else _Match.MAYBE), at


def _merged(events: list[ToolCallEvent]) -> list[ToolCallEvent]:
    """Adjacent text or arguments deltas of one call as one."""
    out: list[ToolCallEvent] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, TextDelta) and isinstance(last, TextDelta):
            out[-1] = TextDelta(last.text + event.text)
        elif (
            isinstance(event, ArgumentsDelta)
            and isinstance(last, ArgumentsDelta)
            and last.index == event.index
        ):
            out[-1] = ArgumentsDelta(event.index, last.text + event.text)
        else:
            out.append(event)
    return out


def collect(events: Iterable[ToolCallEvent]) -> ParsedOutput:
    """The whole output that a parser's events (of feed and finish, in order) make."""
    content: list[str] = []
    calls: dict[int, tuple[str, str, list[str]]] = {}
    complete: dict[int, bool] = {}
    for event in events:
        match event:
            case TextDelta(text):
                content.append(text)
            case ToolCallStarted(index, call_id, name):
                calls[index] = (call_id, name, [])
            case ArgumentsDelta(index, text):
                calls[index][2].append(text)
            case ToolCallFinished(index, done):
                complete[index] = done
    text = "".join(content)
    return ParsedOutput(
        text or None,
        tuple(
            ToolCall(call_id, name, "".join(parts), complete.get(index, False))
            for index, (call_id, name, parts) in sorted(calls.items())
        ),
    )


def parse_tool_calls(
    text: str,
    fmt: ToolCallFormat,
    *,
    tool_names: Collection[str] | None = None,
    ids: Callable[[], str] = new_call_id,
    calls_only: bool = False,
) -> ParsedOutput:
    """A whole generated text's content and calls (what streaming it reassembles to)."""
    parser = ToolCallParser(fmt, tool_names=tool_names, ids=ids, calls_only=calls_only)
    return collect([*parser.feed(text), *parser.finish()])


__all__ = [
    "ArgumentsDelta",
    "ParsedOutput",
    "TextDelta",
    "ToolCall",
    "ToolCallEvent",
    "ToolCallFinished",
    "ToolCallParser",
    "ToolCallStarted",
    "collect",
    "new_call_id",
    "parse_tool_calls",
]
