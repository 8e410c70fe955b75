"""Per-request context the middleware creates and routes fill in (id, caller, usage)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from frontend.service import GenerationRecord

REQUEST_ID_MAX_CHARS = 64
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._:-]")


def sanitize_request_id(raw: str | None) -> str:
    """A client's X-Request-ID kept to safe characters and 64 of them, else a fresh id."""
    if raw:
        cleaned = _NOT_ALLOWED.sub("", raw)[:REQUEST_ID_MAX_CHARS]
        if cleaned:
            return cleaned
    return uuid.uuid4().hex


@dataclass(slots=True)
class RequestContext:
    request_id: str
    key_id: str | None = None
    generation: GenerationRecord | None = None
    prompt: str | None = None  # set only when prompts may be logged
    end_user: str | None = None  # OpenAI's `user`: the caller's id for its own end user


def request_context(connection: HTTPConnection) -> RequestContext:
    """The context the middleware put in the request's scope."""
    state: dict[str, Any] = connection.scope.get("state", {})
    context = state.get("frontend_context")
    if not isinstance(context, RequestContext):
        # Only when the app runs without its middleware (a misconfigured mount).
        context = RequestContext(sanitize_request_id(connection.headers.get("x-request-id")))
        connection.scope.setdefault("state", {})["frontend_context"] = context
    return context
