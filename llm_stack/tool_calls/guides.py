"""The guide that makes a request's tool calls valid: a structural tag per tool choice.

- `none`: no guide (the model is not to call; what it writes is text).
- `auto`: any text, or the format's calls (`triggered_tags` on its trigger); each call's
  name is one of the tools and its arguments valid against that tool's schema. Without
  `parallel_tool_calls` the output ends after the first call.
- `required`: calls only, at least one (`tags_with_separator`), one unless
  `parallel_tool_calls`.
- a named function: exactly one call, to it.

The guide travels as `guided_decoding_guide_type` = `structural_tag` with the tag's JSON
text as `guided_decoding_guide`; it replaces any `response_format` guide, which the
frontend refuses beside tools that can be called.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_stack.guided_decoding import Guide, GuideType
from llm_stack.structural_tag import (
    TAGS_WITH_SEPARATOR,
    TRIGGERED_TAGS,
    StructuralTag,
    StructuralTagError,
    Tag,
    parse_structural_tag_text,
)
from llm_stack.tool_calls.definitions import (
    FunctionTool,
    NamedTool,
    ToolChoice,
    ToolError,
    check_tool_choice,
)
from llm_stack.tool_calls.formats import DEFAULT_FORMAT, ToolCallFormat


def tool_structural_tag(
    tools: Sequence[FunctionTool],
    choice: ToolChoice,
    *,
    parallel: bool = True,
    fmt: ToolCallFormat = DEFAULT_FORMAT,
) -> StructuralTag | None:
    """The structural tag of a checked request's tools and choice (None for `none`)."""
    check_tool_choice(choice, tools)
    if choice == "none" or not tools:
        return None
    if isinstance(choice, NamedTool) or choice == "required":
        # Calls only: one to the named tool, or at least one to any.
        named = choice.name if isinstance(choice, NamedTool) else None
        return StructuralTag(
            TAGS_WITH_SEPARATOR,
            _tags([t for t in tools if named in (None, t.name)], fmt),
            separator=fmt.separator,
            at_least_one=True,
            stop_after_first=named is not None or not parallel,
        )
    return StructuralTag(
        TRIGGERED_TAGS,
        _tags(tools, fmt),
        triggers=(fmt.trigger,),
        stop_after_first=not parallel,
    )


def tool_guide(
    tools: Sequence[FunctionTool],
    choice: ToolChoice,
    *,
    parallel: bool = True,
    fmt: ToolCallFormat = DEFAULT_FORMAT,
) -> Guide | None:
    """The guide for a request's tools and choice (None: `none`, or no tools); raises
    ToolError naming `tools` where the guide is over the guide limits (its text over
    MAX_GUIDE_BYTES), or `tool_choice` where the choice names no tool."""
    tag = tool_structural_tag(tools, choice, parallel=parallel, fmt=fmt)
    if tag is None:
        return None
    text = tag.text()
    try:
        # What the models will check: the limits of the whole, beyond each schema's.
        parse_structural_tag_text(text)
    except StructuralTagError as exc:
        raise ToolError(
            f"the tools' grammar guide: {exc.rule}", ("tools",), values=exc.values
        ) from None
    return Guide(GuideType.STRUCTURAL_TAG, text)


def _tags(tools: Sequence[FunctionTool], fmt: ToolCallFormat) -> tuple[Tag, ...]:
    return tuple(Tag(fmt.begin(t.name), t.parameters, fmt.end) for t in tools)


__all__ = ["tool_guide", "tool_structural_tag"]
