"""The Responses API's own rule violations: the conversation's rules, naming `input`.

The validator checks the same rules on chat messages under chat's names (`messages`);
these name what a Responses client sent. Statuses and types are the error table's
(frontend.errors), the body OpenAI's shape (frontend.apis.openai.errors).
"""

from __future__ import annotations

from frontend.errors import FieldRuleViolationError


class EmptyInputError(FieldRuleViolationError):
    def __init__(self) -> None:
        super().__init__("input", 0, "non-empty", "input must not be an empty list")


class TooManyInputItemsError(FieldRuleViolationError):
    """More messages than the model's template takes (instructions count as one)."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            "input",
            count,
            limit,
            f"input and instructions make {count:,} messages, exceeds the {limit:,} limit",
        )


class AssistantInputLastError(FieldRuleViolationError):
    """The model answers the last message: it cannot be the assistant's own."""

    def __init__(self, index: int) -> None:
        field = f"input[{index}].role"
        super().__init__(
            field,
            "assistant",
            "user, system or developer",
            f"{field}: the last message must not be the assistant's",
        )
