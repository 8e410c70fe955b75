"""The Responses API's part of the OpenAPI document: what its models alone cannot say."""

from __future__ import annotations

from typing import Any

from frontend.openapi import constrain
from frontend.settings import FrontendSettings
from frontend.validation import FieldRules


def describe_responses(
    schemas: dict[str, Any], rules: FieldRules, settings: FrontendSettings
) -> None:
    """The served model's id, max_output_tokens' bounds and the input's length."""
    properties = schemas["ResponsesRequest"]["properties"]
    constrain(properties["model"], {"string": {"enum": [settings.served_model_name]}})
    constrain(properties["max_output_tokens"], rules["max_tokens"])
    constrain(properties["input"], {"string": rules["content"]["string"]})
    # At most max_messages items (instructions count as one more; the rule says so).
    constrain(properties["input"], {"array": {"minItems": 1, **_most(rules)}})
    item = schemas["InputItem"]["properties"]
    constrain(item["content"], rules["content"])


def _most(rules: FieldRules) -> dict[str, Any]:
    return {"maxItems": rules["messages"]["array"]["maxItems"]}
