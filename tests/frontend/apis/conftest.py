"""What the API packages' tests share."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import openai

from frontend.validation import RequestValidator, ValidationLimits
from tests.frontend.conftest import ServedApp

# Small limits, so that the mapping tests reach each one with small bodies.
MAPPING_LIMITS = ValidationLimits(
    max_prompt_chars=1000, max_tokens=64, max_stop_sequences=4, max_stop_chars=16,
    max_top_k=100, max_n=8,
)  # fmt: skip


def mapping_validator(**changes: Any) -> RequestValidator:
    """The validator of the mapping tests: MAPPING_LIMITS with `changes` over them."""
    return RequestValidator(replace(MAPPING_LIMITS, **changes))


def openai_sdk(app: ServedApp, api_key: str = "unused") -> openai.AsyncOpenAI:
    """The official client as users configure it, without its own retries."""
    return openai.AsyncOpenAI(base_url=f"{app.url}/v1", api_key=api_key, max_retries=0)
