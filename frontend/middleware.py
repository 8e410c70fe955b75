"""Pure-ASGI middleware around every HTTP request.

It assigns the request id (the client's X-Request-ID when usable) and echoes it on the
response, refuses bodies over the size limit with 413 before anything parses them, reads
each body in full within its deadline (408 and the connection closed after it) so no
route waits on a stalled client,
counts and times requests per route, and writes one JSON access-log line per request
once the response has been sent completely (after the last byte of a stream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from frontend.errors import (
    BodyTimeoutError,
    BodyTooLargeError,
    FrontendError,
    InternalError,
    ShuttingDownError,
)
from frontend.handlers import ErrorShapes, render_error
from frontend.logs import ACCESS_LOGGER
from frontend.metrics import FrontendMetrics
from frontend.request_context import RequestContext, sanitize_request_id

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

RouteNamer = Callable[[Scope], str]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class FrontendMiddleware:
    """Request id, body limit and deadline, HTTP metrics and the access log."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: FrontendMetrics,
        max_body_bytes: int,
        route_name: RouteNamer,
        body_timeout_s: float = 30.0,
        error_shapes: ErrorShapes | None = None,
    ) -> None:
        self.app = app
        self.error_shapes = error_shapes or ErrorShapes()
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.route_name = route_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = RequestContext(sanitize_request_id(_header(scope, b"x-request-id")))
        scope.setdefault("state", {})["frontend_context"] = context
        request_id_header = (b"x-request-id", context.request_id.encode("latin-1"))
        status = 500
        response_started = False
        response_complete = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started, response_complete
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, request_id_header]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                response_complete = True
            await send(message)

        self.metrics.http_in_flight.inc()
        try:
            receive_for_app = await self._read_body(scope, receive)
            await self.app(scope, receive_for_app, send_with_id)
        except FrontendError as error:
            if response_started:
                raise
            response = render_error(
                error, context.request_id, self.metrics, self.error_shapes.body_for(scope["path"])
            )
            await response(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # Only the server cancels a request's task: uvicorn, once the graceful shutdown
            # time has run out (a client that leaves ends its request through the routes).
            # Not an application error: the request ends here, answered where it still can be.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            log.warning("request %s cut short: the server is shutting down", context.request_id)
            if not response_started:
                response = render_error(
                    ShuttingDownError(),
                    context.request_id,
                    self.metrics,
                    self.error_shapes.body_for(scope["path"]),
                )
                await response(scope, receive, send_with_id)
            elif not response_complete:
                # A stream ends without its [DONE]: the client sees it did not finish.
                await send_with_id({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:
            log.exception("unhandled error in request %s", context.request_id)
            if response_started:
                raise
            response = render_error(
                InternalError(),
                context.request_id,
                self.metrics,
                self.error_shapes.body_for(scope["path"]),
            )
            await response(scope, receive, send_with_id)
        finally:
            self.metrics.http_in_flight.dec()
            self._finish(scope, context, status, time.perf_counter() - started)

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive:
        """The body read in full, to be replayed to the app: BodyTooLargeError before an
        oversized one is read, BodyTimeoutError when it does not arrive within the deadline.
        """
        if scope["method"] not in _BODY_METHODS:
            return receive
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = None
            if size is not None and size > self.max_body_bytes:
                raise BodyTooLargeError(size, self.max_body_bytes)
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return receive  # the client left: the app sees it on its own read
                    body += message.get("body", b"")
                    # No length given (chunked): the limit applies as it arrives.
                    if len(body) > self.max_body_bytes:
                        raise BodyTooLargeError(None, self.max_body_bytes)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise BodyTimeoutError(self.body_timeout_s) from None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return replay

    def _finish(self, scope: Scope, context: RequestContext, status: int, duration: float) -> None:
        route = self.route_name(scope)
        metrics = self.metrics
        metrics.http_requests.labels(route, scope["method"], str(status)).inc()
        metrics.http_duration.labels(route).observe(duration)
        if not access_log.isEnabledFor(logging.INFO):
            return
        fields: dict[str, object] = {
            "request_id": context.request_id,
            "method": scope["method"],
            "route": route,
            "status": status,
            "duration_ms": round(duration * 1000, 2),
            "client": (scope.get("client") or ("", 0))[0],
        }
        if context.key_id is not None:
            fields["key_id"] = context.key_id
        if context.end_user is not None:
            fields["user"] = context.end_user
        record = context.generation
        if record is not None:
            fields.update(
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                outcome=record.outcome,
            )
        if context.prompt is not None:
            fields["prompt"] = context.prompt
        access_log.info("request", extra={"fields": fields})
