"""Rate limits over HTTP: 429 with Retry-After and X-RateLimit-*, refills on a controlled
clock, token reservations corrected to real usage, and one budget shared through Redis.

The echo model (a real Triton) makes token counts exact: a prompt of n words is n
prompt tokens, and the completion repeats them up to max_tokens.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from frontend.app import create_app
from frontend.rate_limit import estimate_prompt_tokens
from launcher.triton_server import TritonServer
from tests.frontend.conftest import FakeClock, ServedApp, echo_settings, sample, serve

pytestmark = pytest.mark.integration

PROMPT = "a b c d e f"  # 6 prompt tokens for the echo model, 11 bytes
RESERVED_PROMPT = estimate_prompt_tokens(PROMPT)


async def generate(app: ServedApp, max_tokens: int, **headers: str) -> Any:
    async with app.client() as client:
        return await client.post(
            "/generate", json={"prompt": PROMPT, "max_tokens": max_tokens}, headers=headers
        )


async def tokens_left(app: ServedApp, identity: str = "ip:127.0.0.1") -> int:
    """Tokens left in the window once pending usage corrections have run."""
    await app.state.service.drain(5.0)
    window = await app.state.limiter.window("tokens", identity)
    assert window is not None
    return window.remaining


async def test_requests_per_minute_with_headers(fast_echo: TritonServer, clock: FakeClock) -> None:
    settings = echo_settings(fast_echo.grpc_url, rate_limit_rpm=2)
    async with serve(create_app(settings, clock=clock.time)) as app:
        first = await generate(app, 2)
        clock.advance(15)
        second = await generate(app, 2)
        third = await generate(app, 2)
        assert [r.status_code for r in (first, second, third)] == [200, 200, 429]
        assert first.headers["X-RateLimit-Limit"] == "2"
        assert first.headers["X-RateLimit-Remaining"] == "1"
        assert first.headers["X-RateLimit-Reset"] == "60"
        assert second.headers["X-RateLimit-Remaining"] == "0"
        assert second.headers["X-RateLimit-Reset"] == "45"  # the first leaves in 45 s
        assert third.headers["Retry-After"] == "45"
        assert third.headers["X-RateLimit-Remaining"] == "0"
        assert third.json()["error"]["type"] == "rate_limited"
        assert third.json()["error"]["message"] == (
            "rate limit of 2 requests per minute exceeded; retry in 45 s"
        )
        clock.advance(45.5)
        fourth = await generate(app, 2)
        assert fourth.status_code == 200
        assert fourth.headers["X-RateLimit-Remaining"] == "0"  # the second is still counted
        metrics = await app.metrics()
    assert sample(metrics, "frontend_rate_limited_total", limit="requests") == 1
    assert sample(metrics, "frontend_rejected_requests_total", reason="rate_limited") == 1


async def test_tokens_per_minute_reserve_then_correct(
    fast_echo: TritonServer, clock: FakeClock
) -> None:
    settings = echo_settings(fast_echo.grpc_url, rate_limit_tpm=40)
    async with serve(create_app(settings, clock=clock.time)) as app:
        reserve = RESERVED_PROMPT + 10  # the prompt estimate + max_tokens, held at admission
        first = await generate(app, 10)
        assert first.status_code == 200
        assert first.json()["tokens_used"] == 12  # 6 prompt + 6 echoed
        assert first.headers["X-RateLimit-Remaining-Tokens"] == str(40 - reserve)
        # When the request ends the reservation becomes the real count.
        assert await tokens_left(app) == 40 - 12
        second = await generate(app, 10)
        assert second.headers["X-RateLimit-Remaining-Tokens"] == str(40 - 12 - reserve)
        assert await tokens_left(app) == 40 - 24
        # 16 left: a reservation of 6 + 16 does not fit now...
        refused = await generate(app, 16)
        assert refused.status_code == 429
        assert refused.headers["X-RateLimit-Limit"] == "40"
        assert refused.headers["X-RateLimit-Remaining"] == "16"
        assert refused.headers["Retry-After"] == "60"
        assert "40 tokens per minute" in refused.json()["error"]["message"]
        # ...and a request that could never fit the budget is invalid, not rate-limited.
        never = await generate(app, 40)
        assert never.status_code == 422
        assert never.json()["error"]["field"] == "max_tokens"
        clock.advance(61)
        assert (await generate(app, 16)).status_code == 200
        metrics = await app.metrics()
    assert sample(metrics, "frontend_rate_limited_total", limit="tokens") == 1


async def test_limits_apply_per_api_key(fast_echo: TritonServer, clock: FakeClock) -> None:
    settings = echo_settings(
        fast_echo.grpc_url, rate_limit_rpm=1, api_keys=["sk-one", "sk-two"]
    )
    async with serve(create_app(settings, clock=clock.time)) as app:
        one = {"Authorization": "Bearer sk-one"}
        two = {"Authorization": "Bearer sk-two"}
        assert (await generate(app, 2, **one)).status_code == 200
        assert (await generate(app, 2, **one)).status_code == 429
        assert (await generate(app, 2, **two)).status_code == 200


async def test_metrics_name_no_key_unless_usage_per_key_is_on(fast_echo: TritonServer) -> None:
    keys = ["sk-one", "sk-two"]
    for per_key in (False, True):
        settings = echo_settings(fast_echo.grpc_url, api_keys=keys, metrics_per_key=per_key)
        async with serve(create_app(settings)) as app:
            for key in keys:
                assert (await generate(app, 2, Authorization=f"Bearer {key}")).status_code == 200
            async with app.client() as client:
                exposition = (await client.get("/metrics")).text  # no key needed
            samples = await app.metrics()
        tokens = {
            labels: value
            for (name, labels), value in samples.items()
            if name == "frontend_completion_tokens_total"
        }
        if per_key:
            assert sorted(tokens.values()) == [2, 2]
            assert all(dict(labels)["key_id"].startswith("key-") for labels in tokens)
        else:
            assert tokens == {(): 4}
            assert "key_id" not in exposition
            assert "key-" not in exposition


async def test_two_replicas_share_one_budget_through_redis(
    fast_echo: TritonServer, redis_url: str
) -> None:
    # A fresh key keeps this budget apart from anything else in the session's Redis.
    key = f"sk-{uuid.uuid4().hex}"
    auth = {"Authorization": f"Bearer {key}"}
    settings = echo_settings(
        fast_echo.grpc_url,
        rate_limit_rpm=3,
        rate_limit_tpm=60,
        rate_limit_storage_url=redis_url,
        api_keys=[key],
    )
    async with serve(create_app(settings)) as replica_a, serve(create_app(settings)) as replica_b:
        statuses = [
            (await generate(replica_a, 4, **auth)).status_code,
            (await generate(replica_b, 4, **auth)).status_code,
            (await generate(replica_a, 4, **auth)).status_code,
        ]
        refused = await generate(replica_b, 4, **auth)
        assert statuses == [200, 200, 200]
        assert refused.status_code == 429
        assert refused.headers["X-RateLimit-Limit"] == "3"
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        # Tokens too: three requests of 6 + 4 real tokens each were charged on both.
        for replica in (replica_a, replica_b):
            await replica.state.service.drain(5.0)
        keys = replica_b.state.keys
        assert keys is not None
        seen_by_b = await replica_b.state.limiter.window(
            "tokens", f"key:{keys.authenticate(f'Bearer {key}')}"
        )
        assert seen_by_b is not None
        assert seen_by_b.remaining == 60 - 3 * 10
