"""The OpenAPI document, made to say what this server does with the settings it runs with.

FastAPI derives the shapes from the APIs' wire models. Added here, from the settings and the
validator's own limits: each field's rules (frontend.validation.field_schemas) on the
request components each API names, each API's own additions (e.g. the served model's id),
whether an API key is required, and the headers responses carry. The document only
describes: requests are still checked by the validator alone, with its own errors.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from frontend.apis.api import Api
from frontend.settings import FrontendSettings
from frontend.validation import TypedKeywords, ValidationLimits, field_schemas

BEARER_SCHEME = "HTTPBearer"  # the name FastAPI gives frontend.deps' HTTPBearer
API_KEY_SCHEME = "APIKeyHeader"  # and its APIKeyHeader: the x-api-key header
# How each scheme carries the key (frontend.auth reads either; Authorization wins).
_AUTH_SCHEMES = {
    BEARER_SCHEME: "Authorization: Bearer <key>",
    API_KEY_SCHEME: "x-api-key: <key>, Anthropic's header (Authorization wins when both come)",
}

_STRING = {"type": "string"}
_SECONDS = {"type": "integer", "minimum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": ("The tightest per-minute budget of this caller.", _COUNT),
    "X-RateLimit-Remaining": ("What is left of it.", _COUNT),
    "X-RateLimit-Reset": ("Seconds until it is whole again.", _COUNT),
}


def install_openapi(
    app: FastAPI,
    settings: FrontendSettings,
    limits: ValidationLimits,
    apis: Sequence[Api],
) -> None:
    """Make `app` serve `openapi_document` (built on first use) as its /openapi.json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, settings, limits, apis)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_document(
    app: FastAPI,
    settings: FrontendSettings,
    limits: ValidationLimits,
    apis: Sequence[Api] = (),
) -> dict[str, Any]:
    """FastAPI's document for `app`, with the rules, auth and headers of `settings` and what
    each of `apis` adds (its streams' `data:` payloads, which FastAPI does not see, too)."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=" ".join(filter(None, [app.description, capacity(settings)])),
        routes=app.routes,
    )
    schemas: dict[str, Any] = document["components"]["schemas"]
    _add_components(schemas, [model for api in apis for model in api.stream_models])
    rules = field_schemas(limits)
    for api in apis:
        for name in api.ruled_schemas:
            for field, prop in schemas[name]["properties"].items():
                if field in rules:
                    constrain(prop, rules[field])
        if api.document is not None:
            api.document(schemas, rules, settings)
    _declare_auth(document, required=settings.auth_enabled)
    _declare_headers(document)
    _drop_unused_validation_error(document)
    return document


def capacity(settings: FrontendSettings) -> str:
    """What the concurrency bound of `settings` lets through, for the document."""
    text = (
        f"At most {settings.max_concurrent_requests} sequences generate at once (a request "
        "of n choices counts n)"
    )
    if settings.max_queued_requests:
        text += (
            f"; up to {settings.max_queued_requests} requests more wait for room, "
            f"{settings.queue_timeout_s:g} s at most"
        )
    text += "; beyond that, 503 with Retry-After."
    if settings.workers > 1:
        text += (
            f" The bound and the queue are divided among {settings.workers} worker processes: "
            f"each takes {settings.worker_max_concurrent_requests} sequences and "
            f"{settings.worker_max_queued_requests} waiting requests, so a request can be "
            "refused by a full worker while another has room."
        )
    return text


def _add_components(schemas: dict[str, Any], models: Sequence[type[BaseModel]]) -> None:
    if not models:
        return
    _, top = models_json_schema(
        [(model, "serialization") for model in models], ref_template="#/components/schemas/{model}"
    )
    for name, schema in top.get("$defs", {}).items():
        if "__" in name:
            # pydantic qualifies a name two models share; refs by class name would be ambiguous.
            raise ValueError(f"two models are named {name.rsplit('__', 1)[-1]}")
        schemas.setdefault(name, schema)


def constrain(prop: dict[str, Any], by_type: TypedKeywords) -> None:
    """Add keywords to the member of `prop` (itself, or a member of its anyOf) of each type."""
    for member in prop.get("anyOf", [prop]):
        keywords = by_type.get(member.get("type", ""))
        for keyword, value in (keywords or {}).items():
            if keyword == "items" and isinstance(member.get("items"), dict):
                member["items"] = {**member["items"], **copy.deepcopy(value)}
            else:
                member[keyword] = copy.deepcopy(value)


def _each_operation(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [operation for path in document["paths"].values() for operation in path.values()]


def _is_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).endswith("ErrorResponse")


def _declare_auth(document: dict[str, Any], *, required: bool) -> None:
    """Each way a key may come (either one is enough), and whether one is required."""
    schemes = document["components"]["securitySchemes"]
    for name, how in _AUTH_SCHEMES.items():
        if required:
            schemes[name]["description"] = f"Required: an API key of this server, as {how}."
        else:
            schemes[name]["description"] = (
                f"Not required: this server has no API keys configured (a key goes as {how})."
            )
    alternatives: list[dict[str, list[str]]] = [{name: []} for name in _AUTH_SCHEMES]
    for operation in _each_operation(document):
        if "security" not in operation:
            continue
        if required:
            operation["security"] = alternatives
        else:
            # `{}` (no requirement) first: a request without a key is served.
            operation["security"] = [{}, *alternatives]
            operation["responses"].pop("401", None)


def _header(description: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": dict(schema)}


def _declare_headers(document: dict[str, Any]) -> None:
    request_id = _header(
        "The request's id: the client's X-Request-ID when usable, else a new one.",
        _STRING,
        required=True,
    )
    for operation in _each_operation(document):
        generates = "requestBody" in operation
        for status, response in operation["responses"].items():
            headers = response.setdefault("headers", {})
            headers["X-Request-ID"] = request_id
            if status == "401":
                headers["WWW-Authenticate"] = _header("The scheme: Bearer.", _STRING, required=True)
            if status in ("429", "503") and _is_error(response):
                headers["Retry-After"] = _header("Seconds to wait.", _SECONDS, required=True)
            if status == "429" or (status == "200" and generates):
                # A 200 carries them only while rate limits are configured.
                for name, (text, schema) in _RATE_LIMIT_HEADERS.items():
                    headers[name] = _header(text, schema, required=status == "429")


def _drop_unused_validation_error(document: dict[str, Any]) -> None:
    """FastAPI's default 422 body: never sent, the error handlers answer in the frontend's shape."""
    validation_ref = "#/components/schemas/HTTPValidationError"
    for operation in _each_operation(document):
        response = operation["responses"].get("422")
        if response is None:
            continue
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        if schema.get("$ref") == validation_ref:
            del operation["responses"]["422"]
    schemas = document["components"]["schemas"]
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
