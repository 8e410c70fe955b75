"""Model errors cross Triton as codes with values, whatever text Triton adds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from llm_stack.engine.base import EngineOverloadedError, InvalidRequestError, SamplingParams
from llm_stack.model_errors import (
    TRITON_STATUS,
    ErrorCode,
    ModelError,
    decode_model_error,
    encode_model_error,
    error_response,
)

ERROR = ModelError(ErrorCode.PROMPT_TOO_LONG, "prompt has 9 {tokens}", "text_input",
                   {"tokens": 9, "limit": 8})  # fmt: skip


@pytest.mark.parametrize(
    "wrap", ["{}", "in ensemble 'ensemble', {}", "{}\nat step 2", "{{not json}} {}"]
)
def test_round_trip_through_triton_prefixes(wrap: str) -> None:
    assert decode_model_error(wrap.format(encode_model_error(ERROR))) == ERROR


@pytest.mark.parametrize(
    "text", ["", "prompt has 9 tokens, exceeds the limit of 8", '{"code": "no_such_code"}',
             '{"message": "no code"}', "[1, 2]", '{"code": 3}'],
)  # fmt: skip
def test_text_without_a_coded_error_decodes_to_none(text: str) -> None:
    assert decode_model_error(text) is None


def test_values_may_not_shadow_the_envelope() -> None:
    with pytest.raises(ValueError, match="code"):
        encode_model_error(ModelError(ErrorCode.ENGINE_ERROR, "x", None, {"code": 1}))


def test_every_code_has_a_triton_status() -> None:
    assert set(TRITON_STATUS) == set(ErrorCode)
    assert TRITON_STATUS[ErrorCode.QUEUE_FULL] == "UNAVAILABLE"
    assert TRITON_STATUS[ErrorCode.INVALID_MESSAGES] == "INVALID_ARG"


def test_error_response_carries_the_code_and_status() -> None:
    made: dict[str, Any] = {}

    def triton_error(message: str, status: str) -> tuple[str, str]:
        made["error"] = (message, status)
        return message, status

    triton_error.INVALID_ARG = "invalid-arg"  # type: ignore[attr-defined]
    pb_utils = SimpleNamespace(
        TritonError=triton_error, InferenceResponse=lambda error: ("response", error)
    )
    assert error_response(pb_utils, ERROR) == (
        "response", (encode_model_error(ERROR), "invalid-arg"),
    )  # fmt: skip


def test_engine_errors_carry_their_field_and_values() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        SamplingParams(max_tokens=4, top_p=1.5)
    assert caught.value.model_error() == ModelError(
        ErrorCode.INVALID_ARGUMENT, "top_p must be in (0, 1], got 1.5", "top_p", {}
    )
    overloaded = EngineOverloadedError("engine queue is full", waiting=64)
    assert overloaded.model_error().code is ErrorCode.QUEUE_FULL
    assert overloaded.model_error().values == {"waiting": 64}
