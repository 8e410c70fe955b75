"""Settings come from LLM_FRONTEND_* when built, never at import; lists parse both ways."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from frontend.request_context import sanitize_request_id
from frontend.settings import FrontendSettings
from llm_stack.model_repository_config import read_model_config, string_parameters
from tests.conftest import REPO_ROOT


def test_environment_is_read_when_settings_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_FRONTEND_TRITON_URLS", "127.0.0.1:8001, 127.0.0.1:9001")
    monkeypatch.setenv("LLM_FRONTEND_API_KEYS", '["sk-alpha", "sk-beta"]')
    monkeypatch.setenv("LLM_FRONTEND_RATE_LIMIT_RPM", "30")
    monkeypatch.setenv("LLM_FRONTEND_PORT", "9090")
    monkeypatch.setenv("LLM_FRONTEND_MAX_N", "3")
    settings = FrontendSettings()
    assert settings.triton_urls == ["127.0.0.1:8001", "127.0.0.1:9001"]
    assert [k.get_secret_value() for k in settings.api_keys] == ["sk-alpha", "sk-beta"]
    assert settings.auth_enabled
    assert settings.rate_limit_rpm == 30
    assert settings.port == 9090
    assert settings.max_n == 3
    assert "sk-alpha" not in repr(settings)  # keys stay secret in reprs and logs
    monkeypatch.delenv("LLM_FRONTEND_API_KEYS")
    assert not FrontendSettings().auth_enabled


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRITON_URLS", "PORT", "API_KEYS", "MODEL_NAME", "SERVED_MODEL_NAME", "MAX_N"):
        monkeypatch.delenv(f"LLM_FRONTEND_{name}", raising=False)
    settings = FrontendSettings()
    assert settings.port == 8080
    assert settings.triton_urls == ["127.0.0.1:8001"]
    assert settings.model_name == "ensemble"
    assert settings.served_model_name == "gemma-3-270m"  # the id OpenAI clients name
    assert settings.rate_limit_storage_url == "memory://"
    assert settings.max_n == 8  # choices per request
    assert not settings.auth_enabled


@pytest.mark.parametrize(
    "changes",
    [
        {"triton_urls": []},
        {"rate_limit_storage_url": "mongodb://x"},
        {"max_body_bytes": 10},
        {"max_n": 0},
        {"tool_call_parser": "mistral"},
    ],
)
def test_bad_values_fail_at_start(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FrontendSettings(**changes)  # type: ignore[arg-type]


def test_the_tool_call_parser_is_a_known_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_FRONTEND_TOOL_CALL_PARSER", raising=False)
    assert FrontendSettings().tool_call_parser == "hermes"
    monkeypatch.setenv("LLM_FRONTEND_TOOL_CALL_PARSER", "llama3_json")
    settings = FrontendSettings()
    assert settings.tool_call_parser == "llama3_json"
    # (tests/frontend/apis/openai/test_openai_tools.py serves calls in that format)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("abc-123_x.y:z", "abc-123_x.y:z"),
        ("a b<script>\n", "abscript"),
        ("x" * 200, "x" * 64),
    ],
)
def test_client_request_ids_are_sanitised_and_bounded(raw: str, expected: str) -> None:
    assert sanitize_request_id(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "<>\n "])
def test_unusable_request_ids_are_replaced(raw: str | None) -> None:
    generated = sanitize_request_id(raw)
    assert len(generated) == 32
    assert generated != sanitize_request_id(raw)


def test_the_message_count_limit_is_the_preprocessing_models() -> None:
    # A chat the frontend lets through must not be refused for its count further on.
    config = read_model_config(REPO_ROOT / "model_repository" / "preprocessing" / "config.pbtxt")
    assert int(string_parameters(config)["max_messages"]) == FrontendSettings().max_messages
