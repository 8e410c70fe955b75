"""Tool-call formats: how a model writes a call, as vLLM's `--tool-call-parser` names them.

- `hermes` (Hermes 2 Pro, Qwen 2.5/3, and this stack's documented format for models whose
  chat template has none, such as the default Gemma 3 270M): one call per tag,
  `<tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>`.
- `llama3_json` (Llama 3.1/3.2's JSON tool calling): `{"name": "get_weather",
  "parameters": {"city": "Paris"}}`, several separated by `; `; `arguments` is read too.

Each format says what its grammar writes (a tag per function: `begin(name)`, the
arguments, `end`; `separator` between calls where only calls are allowed) and what its
parser reads: `trigger` opens a call, `head` leads from it to the arguments' object
(whitespace may vary), `tail` closes the call after it. The parser's trigger is the
grammar's: text the grammar let through as text can never read as a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Lit:
    """This text."""

    text: str


@dataclass(frozen=True, slots=True)
class OneOf:
    """One of these texts."""

    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ws:
    """Any run of JSON whitespace, none included."""


@dataclass(frozen=True, slots=True)
class Name:
    """The function's name, a JSON string."""


@dataclass(frozen=True, slots=True)
class Peek:
    """This text comes next (not consumed: it starts the arguments)."""

    text: str


Piece = Lit | OneOf | Ws | Name | Peek
WHITESPACE: Final = " \t\r\n"


@dataclass(frozen=True, slots=True)
class ToolCallFormat:
    """How one family of models writes tool calls (see the module's docstring)."""

    name: str
    trigger: str
    begin_template: str  # str.format with the name as JSON text: {name}
    end: str
    separator: str
    head: tuple[Piece, ...]
    tail: tuple[Piece, ...]
    # Text between calls, or between a call and the text around it, made of these
    # characters only, is markup rather than content: the parser drops it.
    between: str = WHITESPACE

    def begin(self, name: str) -> str:
        """What the grammar writes before the arguments of a call to `name`."""
        return self.begin_template.format(name=json.dumps(name))


HERMES: Final = ToolCallFormat(
    name="hermes",
    trigger="<tool_call>",
    begin_template='<tool_call>\n{{"name": {name}, "arguments": ',
    end="}\n</tool_call>",
    separator="\n",
    head=(
        Ws(), Lit("{"), Ws(), Lit('"name"'), Ws(), Lit(":"), Ws(), Name(), Ws(), Lit(","), Ws(),
        Lit('"arguments"'), Ws(), Lit(":"), Ws(), Peek("{"),
    ),
    tail=(Ws(), Lit("}"), Ws(), Lit("</tool_call>")),
)  # fmt: skip
LLAMA3_JSON: Final = ToolCallFormat(
    name="llama3_json",
    trigger='{"name": ',
    begin_template='{{"name": {name}, "parameters": ',
    end="}",
    separator="; ",
    head=(
        Ws(), Name(), Ws(), Lit(","), Ws(), OneOf(('"parameters"', '"arguments"')), Ws(),
        Lit(":"), Ws(), Peek("{"),
    ),
    tail=(Ws(), Lit("}")),
    between=WHITESPACE + ";",
)  # fmt: skip
FORMATS: Final[Mapping[str, ToolCallFormat]] = {f.name: f for f in (HERMES, LLAMA3_JSON)}
DEFAULT_FORMAT: Final = HERMES


def tool_call_format(name: str) -> ToolCallFormat:
    """The format of that name; KeyError naming the ones there are."""
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"no tool-call format {name!r}; there are {', '.join(FORMATS)}") from None


__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "HERMES",
    "LLAMA3_JSON",
    "Lit",
    "Name",
    "OneOf",
    "Peek",
    "Piece",
    "ToolCallFormat",
    "Ws",
    "tool_call_format",
]
