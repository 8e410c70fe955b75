"""Every validation rule: its error type, the field it names, and its message."""

from __future__ import annotations

import math
from typing import Any

import pytest

from frontend.errors import (
    EmptyPromptError,
    EmptyStopSequenceError,
    FieldRuleViolationError,
    MaxTokensOutOfRangeError,
    PromptTooLongError,
    SeedOutOfRangeError,
    StopSequenceTooLongError,
    TemperatureOutOfRangeError,
    TooManyStopSequencesError,
    TopKOutOfRangeError,
    TopPOutOfRangeError,
    error_kind,
)
from frontend.validation import GenerationRequest, RequestValidator, ValidationLimits

LIMITS = ValidationLimits(
    max_prompt_chars=100, max_tokens=64, max_stop_sequences=2, max_stop_chars=8, max_top_k=50
)
VALID: dict[str, Any] = {
    "prompt": "Hello",
    "max_tokens": 16,
    "temperature": 0.7,
    "top_p": None,
    "top_k": None,
    "stop": [],
    "seed": None,
    "stream": False,
}


def validate(**changes: Any) -> GenerationRequest:
    return RequestValidator(LIMITS).generation(**{**VALID, **changes})


def test_valid_request_becomes_the_internal_type() -> None:
    request = validate(stop=["\n", "END"], top_p=0.9, top_k=40, seed=2**64 - 1, stream=True)
    assert request == GenerationRequest(
        prompt="Hello", max_tokens=16, temperature=0.7, top_p=0.9, top_k=40,
        stop=("\n", "END"), seed=2**64 - 1, stream=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "error_type", "field", "message"),
    [
        ({"prompt": ""}, EmptyPromptError, "prompt", "prompt must not be empty"),
        ({"prompt": "x" * 101}, PromptTooLongError, "prompt",
         "prompt of 101 characters exceeds the 100 limit"),
        ({"max_tokens": 0}, MaxTokensOutOfRangeError, "max_tokens",
         "max_tokens 0 is outside 1..64"),
        ({"max_tokens": 65}, MaxTokensOutOfRangeError, "max_tokens",
         "max_tokens 65 is outside 1..64"),
        ({"temperature": -0.1}, TemperatureOutOfRangeError, "temperature",
         "temperature -0.1 is outside 0..2"),
        ({"temperature": 2.5}, TemperatureOutOfRangeError, "temperature",
         "temperature 2.5 is outside 0..2"),
        ({"temperature": math.nan}, TemperatureOutOfRangeError, "temperature",
         "temperature nan is outside 0..2"),
        ({"top_p": 0.0}, TopPOutOfRangeError, "top_p", "top_p 0.0 is outside (0, 1]"),
        ({"top_p": 1.5}, TopPOutOfRangeError, "top_p", "top_p 1.5 is outside (0, 1]"),
        ({"top_k": -1}, TopKOutOfRangeError, "top_k", "top_k -1 is outside 0..50"),
        ({"top_k": 51}, TopKOutOfRangeError, "top_k", "top_k 51 is outside 0..50"),
        ({"stop": ["a", "b", "c"]}, TooManyStopSequencesError, "stop",
         "stop has 3 sequences, exceeds the 2 limit"),
        ({"stop": ["a", ""]}, EmptyStopSequenceError, "stop[1]", "stop[1] must not be empty"),
        ({"stop": ["123456789"]}, StopSequenceTooLongError, "stop[0]",
         "stop[0] of 9 characters exceeds the 8 limit"),
        ({"seed": -1}, SeedOutOfRangeError, "seed", "seed -1 is outside 0..18446744073709551615"),
        ({"seed": 2**64}, SeedOutOfRangeError, "seed",
         "seed 18446744073709551616 is outside 0..18446744073709551615"),
    ],
)  # fmt: skip
def test_each_rule_has_its_own_error(
    changes: dict[str, Any], error_type: type[FieldRuleViolationError], field: str, message: str
) -> None:
    with pytest.raises(error_type) as caught:
        validate(**changes)
    assert caught.value.field == field
    assert caught.value.message == message
    assert error_kind(caught.value).status == 422


def test_rule_errors_carry_the_value_and_the_limit() -> None:
    with pytest.raises(MaxTokensOutOfRangeError) as caught:
        validate(max_tokens=1000)
    assert caught.value.value == 1000
    assert caught.value.limit == "1..64"


def test_bounds_themselves_are_allowed() -> None:
    request = validate(
        prompt="x" * 100, max_tokens=64, temperature=2.0, top_p=1.0, top_k=0,
        stop=["12345678", "a"], seed=0,
    )  # fmt: skip
    assert request.max_tokens == 64
    assert validate(max_tokens=1, temperature=0.0, top_k=50).top_k == 50
