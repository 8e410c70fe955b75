"""The one place errors become HTTP responses, and the exception handlers that route there.

Every error gets its status from the one table; its body takes the shape of the API whose
path it is on (e.g. OpenAI's under /v1), elsewhere the frontend's own.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from frontend.errors import (
    ErrorBody,
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


class ErrorShapes:
    """Which body shape an error on a path takes: that of the API whose prefix matches
    the most of the path, else the frontend's own (frontend.errors.error_body)."""

    def __init__(self, by_prefix: Mapping[str, ErrorBody] | None = None) -> None:
        self._by_prefix = sorted((by_prefix or {}).items(), key=lambda item: -len(item[0]))

    def body_for(self, path: str) -> ErrorBody:
        for prefix, body in self._by_prefix:
            if path == prefix or path.startswith(prefix + "/"):
                return body
        return error_body


def render_error(
    error: FrontendError,
    request_id: str,
    metrics: FrontendMetrics,
    body: ErrorBody = error_body,
) -> JSONResponse:
    """The JSON error response for `error` (status and type from the error table) in the
    shape `body` gives."""
    kind = error_kind(error)
    metrics.rejected.labels(kind.type).inc()
    headers = {**error.headers, "X-Request-ID": request_id}
    return JSONResponse(body(error, request_id), status_code=kind.status, headers=headers)


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


def install_error_handlers(app: FastAPI, metrics: FrontendMetrics, shapes: ErrorShapes) -> None:
    """Route FrontendError, body validation and routing errors through `render_error`."""

    def respond(request: Request, error: FrontendError) -> Response:
        request_id = request_context(request).request_id
        return render_error(error, request_id, metrics, shapes.body_for(request.url.path))

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
