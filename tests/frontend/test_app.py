"""The app's CORS: what a browser client of each API may send."""

from __future__ import annotations

import httpx
import pytest

from frontend.app import create_app
from tests.frontend.conftest import settings_for

ORIGIN = "https://app.example"
# What Anthropic's clients send besides the body's type.
ANTHROPIC_HEADERS = "x-api-key, anthropic-version, anthropic-beta, content-type"


async def preflight(app_origins: list[str], path: str, headers: str) -> httpx.Response:
    app = create_app(settings_for("127.0.0.1:1", cors_origins=app_origins))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://frontend") as client:
        return await client.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": headers,
            },
        )


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/messages", ANTHROPIC_HEADERS),
        ("/v1/messages", "x-api-key, anthropic-dangerous-direct-browser-access"),
        ("/v1/chat/completions", "authorization, content-type, x-request-id"),
    ],
)
async def test_a_browser_may_send_each_apis_headers(path: str, headers: str) -> None:
    answer = await preflight([ORIGIN], path, headers)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in headers.split(",")} <= allowed


async def test_other_headers_and_origins_are_refused() -> None:
    other_header = await preflight([ORIGIN], "/v1/messages", "x-other")
    assert other_header.status_code == 400
    other_origin = await preflight(["https://elsewhere.example"], "/v1/messages", "x-api-key")
    assert other_origin.status_code == 400
    assert "access-control-allow-origin" not in other_origin.headers
