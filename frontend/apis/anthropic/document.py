"""The Anthropic API's part of the OpenAPI document: what its models alone cannot say."""

from __future__ import annotations

from typing import Any

from frontend.apis.anthropic.mapping import TEMPERATURE_MAX
from frontend.openapi import constrain
from frontend.settings import FrontendSettings
from frontend.validation import FieldRules

_REQUESTS = ("AnthropicMessagesRequest", "AnthropicCountTokensRequest")


def describe_anthropic(
    schemas: dict[str, Any], rules: FieldRules, settings: FrontendSettings
) -> None:
    """The served model's id, Anthropic's temperature range, the stop sequences' limits
    (the validator's `stop` rules, under Anthropic's name) and the messages' text limit."""
    for name in _REQUESTS:
        schemas[name]["properties"]["model"]["enum"] = [settings.served_model_name]
    request = schemas["AnthropicMessagesRequest"]["properties"]
    constrain(request["temperature"], {"number": {"minimum": 0, "maximum": TEMPERATURE_MAX}})
    stop = rules["stop"]["array"]
    constrain(request["stop_sequences"], {"array": stop})
    constrain(schemas["AnthropicMessageIn"]["properties"]["content"], rules["content"])
