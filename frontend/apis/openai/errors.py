"""The frontend's errors in OpenAI's body shape (statuses stay the error table's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from frontend.apis.openai.protocol import OpenAIErrorResponse
from frontend.errors import FrontendError, error_kind

# What each status means on the OpenAI-shaped routes, for the OpenAPI document; an API
# states its own 400 (what it refuses by name) and where it differs.
_DESCRIPTIONS: dict[int, str] = {
    401: "API key missing or unknown: send Authorization: Bearer <key>.",
    404: "Unknown model (code model_not_found).",
    413: "The body exceeds the configured size.",
    422: "A value breaks a rule: the message names the parameter, the limit and the value "
    "(also a prompt with more tokens than the model accepts).",
    429: "Requests or tokens per minute exceeded; see Retry-After.",
    502: "The model server failed the request.",
    503: "At capacity, the model server unavailable or its queue full, or this server "
    "shutting down before the answer; see Retry-After.",
    504: "The model server did not answer in time.",
}


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


def openai_error_docs(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route answering errors in OpenAI's shape: the common
    statuses' descriptions, with `descriptions` (the 400's at least) over them."""
    merged = {**_DESCRIPTIONS, **descriptions}
    return {
        status: {"model": OpenAIErrorResponse, "description": merged[status]}
        for status in sorted(merged)
    }
