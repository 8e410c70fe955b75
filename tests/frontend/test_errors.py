"""The error table: statuses and types, and bodies that carry nothing internal."""

from __future__ import annotations

import pytest

from frontend import errors as e


@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        (e.EmptyPromptError(), 422, "invalid_request"),
        (e.SchemaViolationError("x is required", "x"), 422, "invalid_request"),
        (e.PromptTooManyTokensError(9000, 8192), 422, "prompt_too_long"),
        (e.ModelRejectedRequestError("top_p must be in (0, 1], got 1.5"), 422, "invalid_request"),
        (e.MalformedBodyError("not JSON"), 400, "malformed_body"),
        (e.BodyTooLargeError(10, 5), 413, "request_too_large"),
        (e.MissingApiKeyError(), 401, "authentication_failed"),
        (e.UnknownApiKeyError(), 401, "authentication_failed"),
        (e.RateLimitedError("requests", "slow down", {}), 429, "rate_limited"),
        (e.OverloadedError(1), 503, "overloaded"),
        (e.TritonUnavailableError(), 503, "model_unavailable"),
        (e.TritonQueueFullError(), 503, "model_overloaded"),
        (e.TritonTimeoutError(5), 504, "model_timeout"),
        (e.TritonInternalError(), 502, "model_error"),
        (e.NotFoundError("no such route"), 404, "not_found"),
        (e.ModelNotFoundError("gpt-4o", "gemma"), 404, "model_not_found"),
        (e.UnsupportedParameterError("n", "n 2 is not supported"), 400, "unsupported_parameter"),
        (e.EmptyMessagesError(), 422, "invalid_request"),
        (e.OutOfRangeError("presence_penalty", 3, "-2..2"), 422, "invalid_request"),
        (e.InternalError(), 500, "internal_error"),
    ],
)
def test_table_gives_status_and_type(error: e.FrontendError, status: int, type_: str) -> None:
    kind = e.error_kind(error)
    assert (kind.status, kind.type) == (status, type_)


def test_body_has_type_message_request_id_and_field() -> None:
    body = e.error_body(e.PromptTooManyTokensError(9000, 8192), "req-1")
    assert body == {
        "error": {
            "type": "prompt_too_long",
            "message": "prompt of 9,000 tokens exceeds the 8,192 limit",
            "request_id": "req-1",
            "field": "prompt",
        }
    }


def test_triton_errors_say_nothing_about_the_cause() -> None:
    body = e.error_body(e.TritonInternalError(), "r")
    assert body["error"] == {
        "type": "model_error",
        "message": "the model server failed to process the request",
        "request_id": "r",
    }


def test_retry_after_on_capacity_errors() -> None:
    assert e.OverloadedError(3).headers["Retry-After"] == "3"
    assert e.TritonUnavailableError().headers["Retry-After"] == "1"
    assert e.MissingApiKeyError().headers["WWW-Authenticate"] == "Bearer"


def test_timeout_message_names_the_deadline() -> None:
    assert e.TritonTimeoutError(2.5).message == "the model server did not answer within 2.5 s"
