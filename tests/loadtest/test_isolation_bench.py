"""The isolation benchmark's noisy inputs are the largest the frontend's limits let through."""

from __future__ import annotations

import json

from frontend.settings import FrontendSettings
from loadtest.isolation_bench import (
    _passes_frontend,
    _schema_body,
    largest_schema_body,
    long_chat_body,
    scenarios_for,
)


def _enum_size(body: dict[str, object]) -> int:
    schema = body["response_format"]["json_schema"]["schema"]  # type: ignore[index]
    return len(schema["properties"]["v"]["enum"])


def test_the_schema_is_the_largest_the_frontend_accepts() -> None:
    settings = FrontendSettings()
    body = largest_schema_body(settings)
    size = _enum_size(body)
    assert size > 1
    assert _passes_frontend(body, settings)
    assert not _passes_frontend(_schema_body(size + 1), settings)


def test_a_smaller_body_limit_gives_a_smaller_schema() -> None:
    small = FrontendSettings(max_body_bytes=2 * 1024)
    assert _enum_size(largest_schema_body(small)) < _enum_size(
        largest_schema_body(FrontendSettings())
    )
    assert len(json.dumps(largest_schema_body(small)).encode()) <= 2 * 1024


def test_the_long_chat_is_as_long_as_the_frontend_allows() -> None:
    settings = FrontendSettings(max_prompt_chars=1000)
    content = long_chat_body(settings, "<eos>")["messages"][0]["content"]
    assert len(content) == 1000
    assert content.startswith("<eos><eos>")


def test_the_idle_scenario_comes_first_and_sends_nothing() -> None:
    scenarios = scenarios_for(FrontendSettings(max_prompt_chars=100))
    assert scenarios[0].name == "idle"
    assert scenarios[0].body is None
    assert all(s.body is not None for s in scenarios[1:])
