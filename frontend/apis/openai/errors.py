"""The frontend's errors in OpenAI's body shape (statuses stay the error table's)."""

from __future__ import annotations

from frontend.errors import FrontendError, error_kind


def openai_error_type(status: int) -> str:
    """OpenAI's `type` for an error of this status."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error_body(error: FrontendError, request_id: str = "") -> dict[str, object]:
    """The error in OpenAI's shape: `code` is our stable type, `param` the field (OpenAI's
    body has no request id: X-Request-ID carries it)."""
    kind = error_kind(error)
    return {
        "error": {
            "message": error.message,
            "type": openai_error_type(kind.status),
            "param": getattr(error, "field", None),
            "code": kind.type,
        }
    }
