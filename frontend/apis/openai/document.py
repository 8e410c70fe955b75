"""The OpenAI API's part of the OpenAPI document: what its models alone cannot say."""

from __future__ import annotations

from typing import Any

from frontend.apis.openai.mapping import ROLE_ALIASES
from frontend.openapi import constrain
from frontend.settings import FrontendSettings
from frontend.validation import COMPLETION_LOGPROBS_MAX, ROLES, FieldRules


def describe_openai(schemas: dict[str, Any], rules: FieldRules, settings: FrontendSettings) -> None:
    """The served model's id, the completions prompt's one string and logprobs limit, and
    the chat message's roles and required content."""
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        schemas[name]["properties"]["model"]["enum"] = [settings.served_model_name]
    completion = schemas["CompletionRequest"]["properties"]
    _declare_completion_prompt(completion["prompt"], rules)
    # The completions API allows fewer alternatives per token than chat and /generate.
    constrain(completion["logprobs"], {"integer": {"maximum": COMPLETION_LOGPROBS_MAX}})
    _declare_message(schemas["ChatMessageIn"])


def _declare_completion_prompt(prop: dict[str, Any], rules: FieldRules) -> None:
    # A list holding one string is that string (frontend.apis.openai.mapping); several are
    # refused (400).
    for member in prop["anyOf"]:
        if member.get("type") == "array" and member["items"].get("type") == "string":
            member.update(minItems=1, maxItems=1)
            constrain(member["items"], rules["prompt"])


def _declare_message(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    properties["role"]["enum"] = [*ROLES, *ROLE_ALIASES]
    # The content is a member of every message; null only beside an assistant's tool
    # calls (without them, 422).
    properties["content"].pop("default", None)
    schema["required"] = [*schema.get("required", []), "content"]
