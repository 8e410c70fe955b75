"""What the API packages' tests share."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from frontend.validation import RequestValidator, ValidationLimits

# Small limits, so that the mapping tests reach each one with small bodies.
MAPPING_LIMITS = ValidationLimits(
    max_prompt_chars=1000, max_tokens=64, max_stop_sequences=4, max_stop_chars=16,
    max_top_k=100, max_n=8,
)  # fmt: skip


def mapping_validator(**changes: Any) -> RequestValidator:
    """The validator of the mapping tests: MAPPING_LIMITS with `changes` over them."""
    return RequestValidator(replace(MAPPING_LIMITS, **changes))
