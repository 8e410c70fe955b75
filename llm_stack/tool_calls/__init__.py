"""Tool calling, model side and API side alike (pure Python: no engine, no Triton).

- `definitions`: function tools as each API spells them, checked (`parse_tools`), the
  tool choice (`parse_tool_choice`, `check_tool_choice`), the tools as preprocessing's
  TOOLS input (`tools_text`), and `ToolError`, which names the field.
- `formats`: how models write calls (`hermes`, `llama3_json`), as vLLM's parsers name them.
- `guides`: the `structural_tag` guide that makes calls valid for `auto`, `required` and a
  named function (`tool_guide`).
- `parser`: generated text → content and calls, streamed (`ToolCallParser`) or at once
  (`parse_tool_calls`), with OpenAI's call ids.

A frontend checks `tools` with `parse_tools` and the choice with `parse_tool_choice` and
`check_tool_choice` (a ToolError is a 400 naming `error.field`), sends `tool_guide(...)` as
the request's guide and `tools_text(tools)` as the ensemble's `tools` (the chat template's),
and reads the output with a `ToolCallParser` of the same format.
"""

from llm_stack.tool_calls.definitions import (
    MAX_TOOLS,
    NAME_PATTERN,
    FunctionTool,
    NamedTool,
    ToolChoice,
    ToolError,
    check_parameters,
    check_tool_choice,
    field_name,
    parse_tool,
    parse_tool_choice,
    parse_tools,
    tools_text,
)
from llm_stack.tool_calls.formats import (
    DEFAULT_FORMAT,
    FORMATS,
    HERMES,
    LLAMA3_JSON,
    ToolCallFormat,
    tool_call_format,
)
from llm_stack.tool_calls.guides import tool_guide, tool_structural_tag
from llm_stack.tool_calls.parser import (
    ArgumentsDelta,
    ParsedOutput,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolCallFinished,
    ToolCallParser,
    ToolCallStarted,
    collect,
    new_call_id,
    parse_tool_calls,
)

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "HERMES",
    "LLAMA3_JSON",
    "MAX_TOOLS",
    "NAME_PATTERN",
    "ArgumentsDelta",
    "FunctionTool",
    "NamedTool",
    "ParsedOutput",
    "TextDelta",
    "ToolCall",
    "ToolCallEvent",
    "ToolCallFinished",
    "ToolCallFormat",
    "ToolCallParser",
    "ToolCallStarted",
    "ToolChoice",
    "ToolError",
    "check_parameters",
    "check_tool_choice",
    "collect",
    "field_name",
    "new_call_id",
    "parse_tool",
    "parse_tool_calls",
    "parse_tool_choice",
    "parse_tools",
    "tool_call_format",
    "tool_guide",
    "tool_structural_tag",
    "tools_text",
]
