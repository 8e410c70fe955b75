"""The frontend's errors in Anthropic's body shape (statuses stay the error table's)."""

from __future__ import annotations

from frontend.errors import FrontendError, error_kind

# Anthropic's error types by status (its documented table; other 4xx are
# invalid_request_error, as Anthropic says it uses that type for them).
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's `error.type` for an error of this status."""
    if status in _TYPES:
        return _TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(error: FrontendError, request_id: str = "") -> dict[str, object]:
    """The error in Anthropic's shape; the message names the field when there is one."""
    return {
        "type": "error",
        "error": {
            "type": anthropic_error_type(error_kind(error).status),
            "message": error.message,
        },
        "request_id": request_id or None,
    }
