"""What an API package gives the app: its routes, its error shape, its part of the document.

An API (/generate, OpenAI's /v1, ...) is a package under `frontend.apis` holding its wire
models, its mapping of a body to the one `ValidatedRequest`, its rendering of the
service's events and its router; it exports one `Api`, and `frontend.app.APIS` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from frontend.errors import ErrorBody
from frontend.settings import FrontendSettings
from frontend.validation import FieldRules

# The API's own edits of the OpenAPI document's component schemas (after the field rules
# are applied to its `ruled_schemas`): e.g. the served model's id as an enum.
DocumentHook = Callable[[dict[str, Any], FieldRules, FrontendSettings], None]


@dataclass(frozen=True, slots=True)
class Api:
    """One API as the app mounts it."""

    router: APIRouter
    # Models streamed as `data:` payloads that no route returns as JSON (the document
    # needs them as components).
    stream_models: Sequence[type[BaseModel]] = ()
    # Errors on paths under this prefix take `error_body`'s shape (the longest matching
    # prefix wins; elsewhere the frontend's own shape, frontend.errors.error_body).
    error_prefix: str | None = None
    error_body: ErrorBody | None = None
    # Request components whose properties take the validator's rules of the same name.
    ruled_schemas: Sequence[str] = ()
    document: DocumentHook | None = None
