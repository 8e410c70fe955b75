"""Function tools as requests define them, checked once for every API.

OpenAI's chat completions nest a tool's fields under `function`, its Responses API does
not, Anthropic's Messages API calls the schema `input_schema`: `parse_tools` reads each
dialect into the same `FunctionTool`, and its errors name the field as the request spells
it (`tools[2].function.parameters.properties.x`). Parameters follow
`llm_stack.guided_decoding`'s schema rules (the same keywords and limits as
`response_format`), so the grammar can make every call's arguments valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from llm_stack.guided_decoding import Path, SchemaError, check_limit, check_schema

Dialect = Literal["chat", "responses", "anthropic"]
# OpenAI's rule for function names (Anthropic's is the same): what a tool-call format
# writes between quotes needs no escaping, and no chat template's markup fits in it.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOOLS: Final = 128  # OpenAI's limit on a request's tools
MAX_DESCRIPTION_CHARS: Final = 8192
# Where each dialect keeps a tool's fields, from the tool's object.
_KEYS: Final[Mapping[Dialect, Mapping[str, Path]]] = {
    "chat": {
        "name": ("function", "name"),
        "description": ("function", "description"),
        "parameters": ("function", "parameters"),
        "strict": ("function", "strict"),
    },
    "responses": {
        "name": ("name",),
        "description": ("description",),
        "parameters": ("parameters",),
        "strict": ("strict",),
    },
    "anthropic": {
        "name": ("name",),
        "description": ("description",),
        "parameters": ("input_schema",),
    },
}
# A function without parameters takes none: its arguments are the empty object.
NO_PARAMETERS: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
}


def field_name(path: Path) -> str:
    """`path` as a request's field: `tools[2].function.parameters.properties.x`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class ToolError(ValueError):
    """A tool definition, tool choice or tool message this stack refuses: a 400.

    `field` names where (`tools[2].function.parameters.properties.x`), `rule` what is
    wrong there; `unsupported` is true where a JSON Schema keyword is valid but not
    enforced here; `values` holds a limit and the value over it. str() is both.
    """

    def __init__(
        self,
        rule: str,
        path: Path,
        *,
        unsupported: bool = False,
        values: Mapping[str, int] | None = None,
    ) -> None:
        self.path = path
        self.field = field_name(path)
        super().__init__(f"{self.field}: {rule}")
        self.rule = rule
        self.unsupported = unsupported
        self.values: Mapping[str, int] = values or {}


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function the model may call; `parameters` is a checked JSON Schema of an object."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(NO_PARAMETERS))
    description: str | None = None
    strict: bool | None = None

    def to_openai(self) -> dict[str, Any]:
        """The tool as chat templates expect it (OpenAI's chat shape, as Hugging Face's
        `apply_chat_template(tools=...)` takes it)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}


def parse_tools(
    data: object, *, dialect: Dialect = "chat", at: Path = ("tools",)
) -> tuple[FunctionTool, ...]:
    """The checked function tools of a request's decoded `tools` array; raises ToolError
    naming the field. Names are distinct; `at` is where the array is in the request."""
    if not isinstance(data, list):
        raise ToolError("must be an array of tools", at)
    check_limit(len(data), MAX_TOOLS, f"{len(data)} tools", at, ToolError)
    tools: list[FunctionTool] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        tool = parse_tool(item, dialect=dialect, at=(*at, index))
        if tool.name in seen:
            raise ToolError(
                f"function name {tool.name!r} is defined twice",
                (*at, index, *_KEYS[dialect]["name"]),
            )
        seen.add(tool.name)
        tools.append(tool)
    return tuple(tools)


def parse_tool(item: object, *, dialect: Dialect = "chat", at: Path = ("tools", 0)) -> FunctionTool:
    """One checked tool; raises ToolError naming the field."""
    if not isinstance(item, dict):
        raise ToolError("a tool must be an object", at)
    keys = _KEYS[dialect]
    if dialect != "anthropic":
        kind = item.get("type")
        if kind != "function":
            shown = str(kind)[:40]
            raise ToolError(f"only function tools are supported, got type {shown!r}", (*at, "type"))
    if dialect == "chat" and not isinstance(item.get("function"), dict):
        raise ToolError("function must be an object", (*at, "function"))
    name = _get(item, keys["name"])
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ToolError(
            "the name must be 1 to 64 letters, digits, underscores or dashes",
            (*at, *keys["name"]),
        )
    description = _get(item, keys["description"])
    if description is not None:
        if not isinstance(description, str):
            raise ToolError("must be a string", (*at, *keys["description"]))
        check_limit(
            len(description),
            MAX_DESCRIPTION_CHARS,
            f"{len(description)} characters",
            (*at, *keys["description"]),
            ToolError,
        )
    strict = _get(item, keys["strict"]) if "strict" in keys else None
    if strict is not None and not isinstance(strict, bool):
        raise ToolError("must be a boolean", (*at, *keys["strict"]))
    parameters = _get(item, keys["parameters"])
    where = (*at, *keys["parameters"])
    if parameters is None:
        return FunctionTool(name, dict(NO_PARAMETERS), description, strict)
    check_parameters(parameters, where)
    assert isinstance(parameters, dict)
    return FunctionTool(name, parameters, description, strict)


def check_parameters(parameters: object, at: Path) -> None:
    """Raise ToolError unless `parameters` is a schema of objects this stack enforces."""
    try:
        check_schema(parameters)
    except SchemaError as exc:
        raise ToolError(
            exc.rule, (*at, *exc.path), unsupported=exc.unsupported, values=exc.values
        ) from None
    assert isinstance(parameters, dict)
    # Arguments are a JSON object (OpenAI's `arguments` string holds one).
    if parameters.get("type") != "object" and "$ref" not in parameters:
        raise ToolError('the parameters\' type must be "object"', (*at, "type"))


def _get(item: Mapping[str, Any], keys: Sequence[str | int]) -> Any:
    node: Any = item
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


@dataclass(frozen=True, slots=True)
class NamedTool:
    """`tool_choice` naming one function: the model calls it."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | NamedTool


def tools_text(tools: Sequence[FunctionTool]) -> str:
    """The tools as the preprocessing model's TOOLS input takes them (OpenAI's chat shape,
    a JSON array)."""
    return json.dumps([tool.to_openai() for tool in tools], ensure_ascii=False)


def parse_tool_choice(
    value: object, *, dialect: Dialect = "chat", at: Path = ("tool_choice",)
) -> ToolChoice:
    """A request's decoded `tool_choice` in its API's shape (None: `auto`); raises
    ToolError naming the field. Chat: "none", "auto", "required" or {"type": "function",
    "function": {"name"}}; Responses: the same strings or {"type": "function", "name"};
    Anthropic: {"type": "none" | "auto" | "any" | "tool", "name" for "tool"}, `any` being
    `required` (its other keys are the caller's to read)."""
    if value is None:
        return "auto"
    if dialect == "anthropic":
        kinds: Mapping[object, ToolChoice] = {"none": "none", "auto": "auto", "any": "required"}
        kind = value.get("type") if isinstance(value, dict) else None
        if kind in kinds:
            return kinds[kind]
        if isinstance(value, dict) and kind == "tool":
            return NamedTool(_choice_name(value, (*at, "name")))
        raise ToolError('type must be "none", "auto", "any" or "tool"', (*at, "type"))
    if value == "none" or value == "auto" or value == "required":
        return value
    if not isinstance(value, dict) or value.get("type") != "function":
        raise ToolError('must be "none", "auto", "required" or {"type": "function", ...}', at)
    if dialect == "chat":
        function = value.get("function")
        if not isinstance(function, dict):
            raise ToolError("function must be an object", (*at, "function"))
        return NamedTool(_choice_name(function, (*at, "function", "name")))
    return NamedTool(_choice_name(value, (*at, "name")))


def _choice_name(node: Mapping[str, Any], at: Path) -> str:
    name = node.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ToolError("the name must be 1 to 64 letters, digits, underscores or dashes", at)
    return name


def check_tool_choice(
    choice: ToolChoice,
    tools: Sequence[FunctionTool],
    *,
    at: Path = ("tool_choice",),
    name_at: Path = ("tool_choice", "function", "name"),
) -> None:
    """Raise ToolError for a choice the tools cannot meet: `required` or a named function
    without tools, or a name no tool has. `at` and `name_at` are where the choice and its
    function's name are in the request (chat's shape by default)."""
    if choice in ("none", "auto"):
        return
    if not tools:
        raise ToolError("needs tools to call", at)
    if isinstance(choice, NamedTool) and choice.name not in {t.name for t in tools}:
        shown = choice.name[:64]
        raise ToolError(f"no tool is named {shown!r}", name_at)


__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_TOOLS",
    "NAME_PATTERN",
    "NO_PARAMETERS",
    "Dialect",
    "FunctionTool",
    "NamedTool",
    "ToolChoice",
    "ToolError",
    "check_parameters",
    "check_tool_choice",
    "field_name",
    "parse_tool",
    "parse_tool_choice",
    "parse_tools",
    "tools_text",
]
