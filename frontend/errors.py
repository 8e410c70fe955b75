"""The frontend's errors: one hierarchy, and one table giving each its HTTP status and type.

Every message here is written for the client; internal details (Triton's own error text
when it is not a user error, exception reprs, tracebacks) never go into one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final


class FrontendError(Exception):
    """Base of every error the frontend answers with; `message` is safe to show."""

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


# --- the request itself -----------------------------------------------------------------


class InvalidInputError(FrontendError):
    """The request cannot be served as given (the engine's own refusals are
    llm_stack.engine.base.InvalidRequestError; they reach here as ModelRejectedRequestError)."""

    field: str | None = None


class MalformedBodyError(InvalidInputError):
    """The body is not JSON."""


class SchemaViolationError(InvalidInputError):
    """The JSON does not match the request schema (missing field, wrong type, extra field)."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


class FieldRuleViolationError(InvalidInputError):
    """A value breaks one validation rule; names the field, the limit and the value."""

    def __init__(self, field: str, value: object, limit: object, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.limit = limit


class EmptyPromptError(FieldRuleViolationError):
    def __init__(self) -> None:
        super().__init__("prompt", "", "non-empty", "prompt must not be empty")


class PromptTooLongError(FieldRuleViolationError):
    def __init__(self, chars: int, limit: int, field: str = "prompt") -> None:
        super().__init__(
            field, chars, limit, f"{field} of {chars:,} characters exceeds the {limit:,} limit"
        )


class PromptTooManyTokensError(FieldRuleViolationError):
    """The model's tokenizer counted more prompt tokens than the model accepts."""

    def __init__(self, tokens: int, limit: int, field: str = "prompt") -> None:
        super().__init__(
            field, tokens, limit, f"{field} of {tokens:,} tokens exceeds the {limit:,} limit"
        )


class SequenceTooLongError(FieldRuleViolationError):
    """The prompt's tokens plus max_tokens exceed what one sequence of the model holds."""

    def __init__(self, tokens: int, limit: int, field: str = "max_tokens") -> None:
        super().__init__(
            field,
            tokens,
            limit,
            f"prompt tokens + {field} = {tokens:,} exceeds the model's {limit:,} token limit",
        )


class EmptyMessagesError(FieldRuleViolationError):
    """`field` is the API's name for its conversation (Responses' input)."""

    def __init__(self, field: str = "messages") -> None:
        super().__init__(field, 0, "non-empty", f"{field} must not be empty")


class TooManyMessagesError(FieldRuleViolationError):
    """`counted` says what the count counts where the API's list is not the messages."""

    def __init__(
        self, count: int, limit: int, field: str = "messages", counted: str = "entries"
    ) -> None:
        super().__init__(
            field, count, limit, f"{field} has {count:,} {counted}, exceeds the {limit:,} limit"
        )


class UnknownRoleError(FieldRuleViolationError):
    """`where` names the message (messages[2], input[3])."""

    def __init__(self, where: str, role: str, allowed: Sequence[str]) -> None:
        field = f"{where}.role"
        shown = role if len(role) <= 40 else role[:40] + "..."
        super().__init__(
            field, role, allowed, f"{field} must be one of {', '.join(allowed)}, got {shown!r}"
        )


class AssistantMessageLastError(FieldRuleViolationError):
    """Continuing the assistant's own message is not supported: the model would answer it.
    `where` names the last message."""

    def __init__(self, where: str) -> None:
        field = f"{where}.role"
        super().__init__(
            field,
            "assistant",
            "user or system",
            f"{field}: the last message must be the user's or the system's, not the assistant's",
        )


class OutOfRangeError(FieldRuleViolationError):
    """A number outside its allowed interval (`limit` is written like `0..2` or `(0, 1]`):
    each sampling parameter's bounds (llm_stack.sampling_contract), n's among them."""

    def __init__(self, field: str, value: object, limit: str) -> None:
        super().__init__(field, value, limit, f"{field} {value} is outside {limit}")


class LogprobsOutOfRangeError(OutOfRangeError):
    """Too many (or fewer than 0) likeliest alternatives per token asked for; the field is
    the one the client sent (`logprobs`, or chat's `top_logprobs`)."""


class TopLogprobsWithoutLogprobsError(FieldRuleViolationError):
    """Chat's `top_logprobs` asks for alternatives of tokens whose log-probabilities
    `logprobs` did not ask for."""

    def __init__(self, top_logprobs: int) -> None:
        super().__init__(
            "top_logprobs",
            top_logprobs,
            "logprobs true",
            f"top_logprobs {top_logprobs} is only allowed with logprobs true",
        )


class TooManyStopSequencesError(FieldRuleViolationError):
    """`field` is the API's name for its stop sequences (Anthropic's stop_sequences)."""

    def __init__(self, count: int, limit: int, field: str = "stop") -> None:
        super().__init__(
            field, count, limit, f"{field} has {count} sequences, exceeds the {limit} limit"
        )


class EmptyStopSequenceError(FieldRuleViolationError):
    def __init__(self, index: int, field: str = "stop") -> None:
        super().__init__(
            f"{field}[{index}]", "", "non-empty", f"{field}[{index}] must not be empty"
        )


class StopSequenceTooLongError(FieldRuleViolationError):
    def __init__(self, index: int, chars: int, limit: int, field: str = "stop") -> None:
        super().__init__(
            f"{field}[{index}]",
            chars,
            limit,
            f"{field}[{index}] of {chars} characters exceeds the {limit} limit",
        )


class TokenBudgetTooSmallError(FieldRuleViolationError):
    """The request could never fit the caller's tokens-per-minute budget."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(
            "max_tokens",
            tokens,
            limit,
            f"request reserves {tokens:,} tokens (prompt estimate + n * max_tokens), "
            f"exceeds the {limit:,} tokens-per-minute limit",
        )


class InvalidTextError(FieldRuleViolationError):
    """A string holding a lone surrogate: JSON's \\u escapes can spell one, but it is not
    Unicode text, and nothing after validation (UTF-8 encoding, tokenizing) can take it."""

    def __init__(self, field: str) -> None:
        super().__init__(
            field,
            None,
            "Unicode text",
            f"{field} is not valid Unicode text: it holds a lone surrogate",
        )


class ModelRejectedRequestError(InvalidInputError):
    """Triton answered INVALID_ARG for a reason the frontend does not check itself."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidTokenIdError(InvalidInputError):
    """A token id that is none of the model's (negative, or beyond its vocabulary);
    `field` names it (`tokens[3]`) and the message its value."""

    def __init__(self, field: str, message: str, value: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class UnsupportedParameterError(InvalidInputError):
    """A parameter of the OpenAI API that this server does not implement (never ignored)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnsupportedSchemaKeywordError(UnsupportedParameterError):
    """A JSON Schema keyword (or a use of one) that structured outputs do not enforce;
    `field` leads to the keyword, e.g. response_format.json_schema.schema.properties.a.pattern."""


class InvalidSchemaError(FieldRuleViolationError):
    """A response_format schema that breaks a rule (e.g. required names no property)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, None, None, message)


class InvalidToolError(FieldRuleViolationError):
    """A tool definition, tool choice or tool-calling message that breaks a rule (e.g. a
    tool_choice naming no tool, a tool message answering no call); `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, None, None, message)


class BodyTooLargeError(FrontendError):
    """Refused before the body is read in full; the connection is closed with the answer,
    or a client could go on sending the rest for as long as it liked."""

    def __init__(self, size: int | None, limit: int) -> None:
        shown = f"of {size:,} bytes " if size is not None else ""
        super().__init__(
            f"request body {shown}exceeds the {limit:,} byte limit",
            headers={"Connection": "close"},
        )


class BodyTimeoutError(FrontendError):
    """The body did not arrive in full in time (a stalled or trickling client); the
    connection is closed with the answer, as the rest may still be on its way."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"the request body did not arrive within {timeout_s:g} s",
            headers={"Connection": "close"},
        )


class NotFoundError(FrontendError):
    pass


class ModelNotFoundError(NotFoundError):
    field = "model"

    def __init__(self, model: str, served: str) -> None:
        shown = model if len(model) <= 64 else model[:64] + "..."
        super().__init__(f"the model {shown!r} does not exist; this server serves {served!r}")


class MethodNotAllowedError(FrontendError):
    """The route exists, but not for this method; `Allow` lists the methods it has (RFC 9110)."""

    def __init__(self, allowed: str) -> None:
        super().__init__("method not allowed on this route", headers={"Allow": allowed})


# --- the caller ---------------------------------------------------------------------------


class AuthenticationError(FrontendError):
    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class MissingApiKeyError(AuthenticationError):
    def __init__(self) -> None:
        super().__init__(
            "an API key is required: send Authorization: Bearer <key> (or x-api-key: <key>)"
        )


class UnknownApiKeyError(AuthenticationError):
    def __init__(self) -> None:
        super().__init__("the API key is not valid")


class RateLimitedError(FrontendError):
    """A per-caller budget (requests or tokens per minute) is spent; headers say when it refills."""

    def __init__(self, limit_name: str, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(message, headers=headers)
        self.limit_name = limit_name


# --- capacity and Triton ------------------------------------------------------------------


class OverloadedError(FrontendError):
    """The frontend's bound on concurrent requests (and its short queue) is full."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "the server is at capacity, retry later",
            headers={"Retry-After": str(retry_after_s)},
        )


class ShuttingDownError(FrontendError):
    """The server stopped the request: shutting down, its graceful shutdown time ran out."""

    def __init__(self) -> None:
        super().__init__(
            "the server is shutting down, retry the request", headers={"Retry-After": "1"}
        )


class TritonError(FrontendError):
    """Base of the failures of the call to Triton; `code` labels the metrics."""

    code: str = "unknown"


class TritonUnavailableError(TritonError):
    code = "unavailable"

    def __init__(self, message: str = "the model server is unavailable, retry later") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class EngineUnavailableError(TritonUnavailableError):
    """The engine model says it cannot generate (its loop died, its steps keep failing);
    the endpoint leaves rotation until its health check passes again."""

    code = "engine_unavailable"

    def __init__(self) -> None:
        super().__init__("the model server's engine cannot generate now, retry later")


class TritonQueueFullError(TritonUnavailableError):
    code = "queue_full"

    def __init__(self) -> None:
        super().__init__("the model server's queue is full, retry later")


class TritonTimeoutError(TritonError):
    code = "deadline_exceeded"

    def __init__(self, timeout_s: float | None = None) -> None:
        if timeout_s is None:  # the model's own time limit
            super().__init__("the model server gave up on the request: it ran past its time limit")
        else:
            super().__init__(f"the model server did not answer within {timeout_s:g} s")


class TritonInternalError(TritonError):
    code = "internal"

    def __init__(self) -> None:
        super().__init__("the model server failed to process the request")


class ClientClosedRequestError(FrontendError):
    """The client went away before the answer; nobody reads this response."""

    def __init__(self) -> None:
        super().__init__("client closed the request")


class InternalError(FrontendError):
    def __init__(self) -> None:
        super().__init__("internal server error")


@dataclass(frozen=True, slots=True)
class ErrorKind:
    status: int
    type: str


# The one table: the nearest class in an error's MRO decides its status and type.
ERROR_TABLE: Final[Mapping[type[FrontendError], ErrorKind]] = {
    MalformedBodyError: ErrorKind(400, "malformed_body"),
    UnsupportedParameterError: ErrorKind(400, "unsupported_parameter"),
    InvalidTokenIdError: ErrorKind(400, "invalid_token_id"),
    InvalidInputError: ErrorKind(422, "invalid_request"),
    PromptTooManyTokensError: ErrorKind(422, "prompt_too_long"),
    BodyTooLargeError: ErrorKind(413, "request_too_large"),
    BodyTimeoutError: ErrorKind(408, "request_timeout"),
    NotFoundError: ErrorKind(404, "not_found"),
    ModelNotFoundError: ErrorKind(404, "model_not_found"),
    MethodNotAllowedError: ErrorKind(405, "method_not_allowed"),
    AuthenticationError: ErrorKind(401, "authentication_failed"),
    RateLimitedError: ErrorKind(429, "rate_limited"),
    OverloadedError: ErrorKind(503, "overloaded"),
    ShuttingDownError: ErrorKind(503, "shutting_down"),
    TritonUnavailableError: ErrorKind(503, "model_unavailable"),
    TritonQueueFullError: ErrorKind(503, "model_overloaded"),
    TritonTimeoutError: ErrorKind(504, "model_timeout"),
    TritonInternalError: ErrorKind(502, "model_error"),
    TritonError: ErrorKind(502, "model_error"),
    ClientClosedRequestError: ErrorKind(499, "client_closed_request"),
    InternalError: ErrorKind(500, "internal_error"),
    FrontendError: ErrorKind(500, "internal_error"),
}


def error_kind(error: FrontendError) -> ErrorKind:
    """Status and type for `error`, from the table."""
    for cls in type(error).__mro__:
        kind = ERROR_TABLE.get(cls)
        if kind is not None:
            return kind
    raise AssertionError("FrontendError is in the table")  # pragma: no cover


# An API's error response body: (error, request id) -> JSON value. Status and headers are
# the table's whatever the shape.
ErrorBody = Callable[[FrontendError, str], dict[str, object]]


def error_body(error: FrontendError, request_id: str) -> dict[str, object]:
    """The JSON body every error response has."""
    body: dict[str, object] = {
        "type": error_kind(error).type,
        "message": error.message,
        "request_id": request_id,
    }
    field = getattr(error, "field", None)
    if field is not None:
        body["field"] = field
    return {"error": body}
