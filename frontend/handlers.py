"""The one place errors become HTTP responses, and the exception handlers that route there.

Every error gets its status from the one table; under /v1 (the OpenAI API) its body
takes OpenAI's shape, elsewhere the frontend's own.
"""

from __future__ import annotations

import reprlib

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from frontend.errors import (
    FrontendError,
    InternalError,
    MalformedBodyError,
    MethodNotAllowedError,
    NotFoundError,
    SchemaViolationError,
    error_body,
    error_kind,
    openai_error_body,
)
from frontend.metrics import FrontendMetrics
from frontend.request_context import request_context

_SHORT = reprlib.Repr()
_SHORT.maxstring = 40
_SHORT.maxother = 40


OPENAI_PREFIX = "/v1"


def uses_openai_errors(path: str) -> bool:
    """Whether errors on `path` take OpenAI's shape (the /v1 routes)."""
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


def render_error(
    error: FrontendError, request_id: str, metrics: FrontendMetrics, *, openai: bool = False
) -> JSONResponse:
    """The JSON error response for `error` (status and type from the error table)."""
    kind = error_kind(error)
    metrics.rejected.labels(kind.type).inc()
    headers = {**error.headers, "X-Request-ID": request_id}
    body = openai_error_body(error) if openai else error_body(error, request_id)
    return JSONResponse(body, status_code=kind.status, headers=headers)


def schema_error(exc: RequestValidationError) -> FrontendError:
    """FastAPI's body validation failure as one of our errors (the first problem found)."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return MalformedBodyError("request body is not valid JSON")
    if not errors:
        return SchemaViolationError("request body does not match the schema", None)
    first = errors[0]
    field = _field_path([p for p in first.get("loc", ()) if p != "body"])
    if field is None:
        return MalformedBodyError("request body must be a JSON object (application/json)")
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        text = f"{field} is required"
    elif "input" in first and first.get("type") != "extra_forbidden":
        # The input is shown shortened: it may be large and is the client's own data.
        text = f"{field}: {message}, got {_SHORT.repr(first['input'])}"
    else:
        text = f"{field}: {message}" if field else message
    return SchemaViolationError(text, field)


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def _field_path(loc: list[int | str]) -> str | None:
    """`messages[0].role`, as the validator names fields (without pydantic's union tags)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS or not part[:1].islower() or not part.isidentifier():
            continue  # which member of a union it tried, e.g. `list[str]` or `ContentPart`
        else:
            path += f".{part}" if path else part
    return path or None


def _http_error(exc: StarletteHTTPException) -> FrontendError:
    if exc.status_code == 404:
        return NotFoundError("no such route")
    if exc.status_code == 405:
        # The router names the route's methods in the exception it raises.
        return MethodNotAllowedError((exc.headers or {}).get("Allow", ""))
    if exc.status_code == 400:
        return MalformedBodyError("request body could not be read")
    return InternalError()


def install_error_handlers(app: FastAPI, metrics: FrontendMetrics) -> None:
    """Route FrontendError, body validation and routing errors through `render_error`."""

    def respond(request: Request, error: FrontendError) -> Response:
        request_id = request_context(request).request_id
        openai = uses_openai_errors(request.url.path)
        return render_error(error, request_id, metrics, openai=openai)

    async def on_frontend_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FrontendError)
        return respond(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return respond(request, schema_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return respond(request, _http_error(exc))

    app.add_exception_handler(FrontendError, on_frontend_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
