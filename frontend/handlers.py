"""The one place errors become HTTP responses, and the exception handlers that route there."""

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
)
from frontend.metrics import FrontendMetrics
from frontend.request_context import request_context

_SHORT = reprlib.Repr()
_SHORT.maxstring = 40
_SHORT.maxother = 40


def render_error(error: FrontendError, request_id: str, metrics: FrontendMetrics) -> JSONResponse:
    """The JSON error response for `error` (status and type from the error table)."""
    kind = error_kind(error)
    metrics.rejected.labels(kind.type).inc()
    headers = {**error.headers, "X-Request-ID": request_id}
    return JSONResponse(error_body(error, request_id), status_code=kind.status, headers=headers)


def schema_error(exc: RequestValidationError) -> FrontendError:
    """FastAPI's body validation failure as one of our errors (the first problem found)."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return MalformedBodyError("request body is not valid JSON")
    if not errors:
        return SchemaViolationError("request body does not match the schema", None)
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
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


def _http_error(exc: StarletteHTTPException) -> FrontendError:
    if exc.status_code == 404:
        return NotFoundError("no such route")
    if exc.status_code == 405:
        return MethodNotAllowedError("method not allowed on this route")
    if exc.status_code == 400:
        return MalformedBodyError("request body could not be read")
    return InternalError()


def install_error_handlers(app: FastAPI, metrics: FrontendMetrics) -> None:
    """Route FrontendError, body validation and routing errors through `render_error`."""

    async def on_frontend_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FrontendError)
        return render_error(exc, request_context(request).request_id, metrics)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render_error(schema_error(exc), request_context(request).request_id, metrics)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return render_error(_http_error(exc), request_context(request).request_id, metrics)

    app.add_exception_handler(FrontendError, on_frontend_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
