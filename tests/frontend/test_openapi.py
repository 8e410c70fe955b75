"""The document's auth: each way a key may come, required or not as the settings say."""

from __future__ import annotations

from typing import Any

from frontend.app import create_app
from frontend.openapi import API_KEY_SCHEME, BEARER_SCHEME
from tests.frontend.conftest import settings_for

EITHER_KEY: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}, {API_KEY_SCHEME: []}]


def document(**settings: Any) -> dict[str, Any]:
    """The document the app serves with these settings (no Triton needed)."""
    return create_app(settings_for("127.0.0.1:1", **settings)).openapi()


def secured(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        if "security" in operation
    }


def test_both_key_headers_are_schemes_of_the_document() -> None:
    schemes = document()["components"]["securitySchemes"]
    assert schemes[BEARER_SCHEME]["type"] == "http"
    assert schemes[BEARER_SCHEME]["scheme"] == "bearer"
    assert schemes[API_KEY_SCHEME]["type"] == "apiKey"
    assert (schemes[API_KEY_SCHEME]["in"], schemes[API_KEY_SCHEME]["name"]) == (
        "header",
        "x-api-key",
    )


def test_with_keys_either_header_is_required_on_every_keyed_operation() -> None:
    doc = document(api_keys=["sk-1"])
    operations = secured(doc)
    assert {"POST /v1/chat/completions", "POST /v1/messages", "POST /tokenize"} <= set(operations)
    for label, operation in operations.items():
        assert operation["security"] == EITHER_KEY, label
        assert "401" in operation["responses"], label
    schemes = doc["components"]["securitySchemes"]
    for name in (BEARER_SCHEME, API_KEY_SCHEME):
        assert schemes[name]["description"].startswith("Required: ")
    assert "x-api-key" in schemes[API_KEY_SCHEME]["description"]


def test_without_keys_no_key_is_asked_for_and_either_is_allowed() -> None:
    doc = document()
    operations = secured(doc)
    assert {"POST /v1/chat/completions", "POST /v1/messages", "POST /tokenize"} <= set(operations)
    for label, operation in operations.items():
        assert operation["security"] == [{}, *EITHER_KEY], label
        assert "401" not in operation["responses"], label
    schemes = doc["components"]["securitySchemes"]
    for name in (BEARER_SCHEME, API_KEY_SCHEME):
        assert schemes[name]["description"].startswith("Not required")
