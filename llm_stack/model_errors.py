"""Errors the Triton models send, as machine-readable codes with values.

A model's error message is one JSON object: `code` (an `ErrorCode`), `message` (for
people), `field` (the ensemble input it concerns, if any) and the values the rule
compared. Triton may put text before it ("in ensemble 'ensemble', "), so readers look
for the object, never at the prose. The models write it with `encode_model_error`;
Triton's clients read it back with `decode_model_error`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

Value = int | float | str


class ErrorCode(enum.StrEnum):
    """What went wrong, for programs; the gRPC status code says whose fault it is."""

    INVALID_ARGUMENT = "invalid_argument"  # a value breaks a rule of the model; `field`
    PROMPT_TOO_LONG = "prompt_too_long"  # values: tokens, limit
    SEQUENCE_TOO_LONG = "sequence_too_long"  # prompt + max_tokens; values: tokens, limit
    INVALID_MESSAGES = "invalid_messages"  # the chat messages or the template refused them
    DUPLICATE_REQUEST_ID = "duplicate_request_id"
    QUEUE_FULL = "queue_full"  # the engine's waiting queue; values: waiting
    TIMEOUT = "timeout"  # the model's own time limit; values: limit_s
    CANCELLED = "cancelled"
    TEMPLATE_ERROR = "template_error"  # the chat template itself is broken
    ENGINE_ERROR = "engine_error"
    # The engine cannot generate (its step loop died, steps keep failing or stalled);
    # the message says why. A health_check request answers with it.
    ENGINE_UNAVAILABLE = "engine_unavailable"


@dataclass(frozen=True, slots=True)
class ModelError:
    """One model error: its code, a message for people, the field and the values."""

    code: ErrorCode
    message: str
    field: str | None = None
    values: Mapping[str, Value] = dataclasses.field(default_factory=dict)


class CodedError(Exception):
    """An exception that models send as a `ModelError` (code, field, values)."""

    default_code: ClassVar[ErrorCode] = ErrorCode.ENGINE_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        field: str | None = None,
        **values: Value,
    ) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.field = field
        self.values = values

    def model_error(self) -> ModelError:
        """The error as the models send it."""
        return ModelError(self.code, str(self), self.field, self.values)


_RESERVED = frozenset({"code", "message", "field"})


def encode_model_error(error: ModelError) -> str:
    """The error message a model sends: one JSON object."""
    clash = _RESERVED & set(error.values)
    if clash:
        raise ValueError(f"error values must not be named {sorted(clash)}")
    body: dict[str, object] = {"code": error.code.value, "message": error.message}
    if error.field is not None:
        body["field"] = error.field
    body.update(error.values)
    return json.dumps(body, ensure_ascii=False, allow_nan=False)


def decode_model_error(text: str) -> ModelError | None:
    """The model error inside a Triton error message, or None when it holds none."""
    start = text.find("{")
    while start >= 0:
        try:
            body, _end = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            error = _from_body(body)
            if error is not None:
                return error
        start = text.find("{", start + 1)
    return None


def _from_body(body: dict[str, object]) -> ModelError | None:
    raw_code = body.get("code")
    if not isinstance(raw_code, str) or raw_code not in ErrorCode.__members__.values():
        return None
    code = ErrorCode(raw_code)
    message = body.get("message")
    field_name = body.get("field")
    values = {
        k: v
        for k, v in body.items()
        if k not in _RESERVED and isinstance(v, int | float | str) and not isinstance(v, bool)
    }
    return ModelError(
        code=code,
        message=message if isinstance(message, str) else "",
        field=field_name if isinstance(field_name, str) else None,
        values=values,
    )


# The Triton status code each error is sent with (names of pb_utils.TritonError's codes).
TRITON_STATUS: Mapping[ErrorCode, str] = {
    ErrorCode.INVALID_ARGUMENT: "INVALID_ARG",
    ErrorCode.PROMPT_TOO_LONG: "INVALID_ARG",
    ErrorCode.SEQUENCE_TOO_LONG: "INVALID_ARG",
    ErrorCode.INVALID_MESSAGES: "INVALID_ARG",
    ErrorCode.DUPLICATE_REQUEST_ID: "INVALID_ARG",
    ErrorCode.QUEUE_FULL: "UNAVAILABLE",
    ErrorCode.TIMEOUT: "UNAVAILABLE",
    ErrorCode.CANCELLED: "CANCELLED",
    ErrorCode.TEMPLATE_ERROR: "INTERNAL",
    ErrorCode.ENGINE_ERROR: "INTERNAL",
    ErrorCode.ENGINE_UNAVAILABLE: "UNAVAILABLE",
}


def error_response(pb_utils: Any, error: ModelError) -> Any:
    """The Triton response that carries `error` (`pb_utils`: the Python backend's module).

    The one place the models write errors, so every one has its code and values.
    """
    status = getattr(pb_utils.TritonError, TRITON_STATUS[error.code])
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(encode_model_error(error), status))
