"""Moving-window budgets: requests and tokens per minute, reservations and their correction."""

from __future__ import annotations

import uuid

import pytest

from frontend.errors import RateLimitedError, TokenBudgetTooSmallError
from frontend.rate_limit import (
    RateLimiter,
    WindowState,
    estimate_prompt_tokens,
    make_storage,
    rate_limit_headers,
)
from tests.frontend.conftest import FakeClock


def limiter(clock: FakeClock, rpm: int = 0, tpm: int = 0) -> RateLimiter:
    return RateLimiter(make_storage("memory://"), rpm=rpm, tpm=tpm, clock=clock.time)


async def test_requests_per_minute_refill_after_the_window(clock: FakeClock) -> None:
    rl = limiter(clock, rpm=2)
    first = await rl.admit("ip:a", 10)
    assert first.headers()["X-RateLimit-Remaining"] == "1"
    clock.advance(20)
    second = await rl.admit("ip:a", 10)
    assert second.headers()["X-RateLimit-Remaining"] == "0"
    with pytest.raises(RateLimitedError) as caught:
        await rl.admit("ip:a", 10)
    headers = caught.value.headers
    # The first request leaves the window 60 s after it came, 40 s from now.
    assert headers["Retry-After"] == "40"
    assert headers["X-RateLimit-Limit"] == "2"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Reset"] == "40"
    assert caught.value.limit_name == "requests"
    assert "2 requests per minute" in caught.value.message
    clock.advance(41)
    third = await rl.admit("ip:a", 10)
    assert third.headers()["X-RateLimit-Remaining"] == "0"
    # Another caller has its own budget.
    assert (await rl.admit("ip:b", 10)).headers()["X-RateLimit-Remaining"] == "1"


async def test_tokens_are_reserved_then_corrected_down(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=100)
    big = await rl.admit("key:k", 60)
    assert big.headers()["X-RateLimit-Remaining-Tokens"] == "40"
    with pytest.raises(RateLimitedError) as caught:
        await rl.admit("key:k", 50)
    assert caught.value.limit_name == "tokens"
    assert caught.value.headers["X-RateLimit-Remaining"] == "40"
    await rl.settle(big, used_tokens=20)  # 40 reserved tokens were not used
    window = await rl.window("tokens", "key:k")
    assert window is not None
    assert window.remaining == 80
    assert (await rl.admit("key:k", 50)).headers()["X-RateLimit-Remaining-Tokens"] == "30"


async def test_tokens_beyond_the_reservation_are_charged(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=100)
    reservation = await rl.admit("key:k", 10)
    await rl.settle(reservation, used_tokens=25)
    window = await rl.window("tokens", "key:k")
    assert window is not None
    assert window.remaining == 75
    # Charged extra never exceeds what is left: the window is full, not overdrawn.
    second = await rl.admit("key:k", 70)
    await rl.settle(second, used_tokens=200)
    full = await rl.window("tokens", "key:k")
    assert full is not None
    assert full.remaining == 0


async def test_a_request_that_never_fits_is_invalid_not_limited(clock: FakeClock) -> None:
    rl = limiter(clock, rpm=5, tpm=100)
    with pytest.raises(TokenBudgetTooSmallError) as caught:
        await rl.admit("key:k", 101)
    assert caught.value.message == (
        "request reserves 101 tokens (prompt estimate + n * max_tokens), "
        "exceeds the 100 tokens-per-minute limit"
    )
    requests = await rl.window("requests", "key:k")
    assert requests is not None
    assert requests.remaining == 5


async def test_refused_for_tokens_does_not_count_as_a_request(clock: FakeClock) -> None:
    rl = limiter(clock, rpm=3, tpm=100)
    await rl.admit("key:k", 90)
    with pytest.raises(RateLimitedError):
        await rl.admit("key:k", 20)
    requests = await rl.window("requests", "key:k")
    assert requests is not None
    assert requests.remaining == 2


async def test_tokens_refill_after_the_window(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=50)
    await rl.admit("key:k", 50)
    with pytest.raises(RateLimitedError) as caught:
        await rl.admit("key:k", 1)
    assert caught.value.headers["Retry-After"] == "60"
    clock.advance(60.5)
    assert (await rl.admit("key:k", 50)).headers()["X-RateLimit-Remaining"] == "0"


async def test_off_when_both_limits_are_zero(clock: FakeClock) -> None:
    rl = limiter(clock)
    assert not rl.enabled
    reservation = await rl.admit("ip:a", 10**9)
    assert reservation.headers() == {}


def test_headers_report_the_tightest_limit() -> None:
    headers = rate_limit_headers(
        (WindowState("requests", 10, 9, 60), WindowState("tokens", 1000, 100, 30))
    )
    assert headers["X-RateLimit-Limit"] == "1000"
    assert headers["X-RateLimit-Remaining"] == "100"
    assert headers["X-RateLimit-Reset"] == "30"
    assert headers["X-RateLimit-Remaining-Requests"] == "9"
    assert headers["X-RateLimit-Reset-Tokens"] == "30"


def test_prompt_estimate_is_above_typical_token_counts() -> None:
    assert estimate_prompt_tokens("") == 1
    text = "The quick brown fox jumps over the lazy dog. " * 10  # ~100 real tokens
    assert estimate_prompt_tokens(text) == 226
    assert estimate_prompt_tokens("é") == 2  # bytes, not characters


async def test_redis_storage_reserves_and_refunds(redis_url: str) -> None:
    rl = RateLimiter(make_storage(redis_url), rpm=2, tpm=100)
    identity = f"key:{uuid.uuid4().hex}"
    try:
        first = await rl.admit(identity, 60)
        assert first.headers()["X-RateLimit-Remaining-Tokens"] == "40"
        with pytest.raises(RateLimitedError):
            await rl.admit(identity, 50)
        await rl.settle(first, used_tokens=10)
        tokens = await rl.window("tokens", identity)
        assert tokens is not None
        assert tokens.remaining == 90
        await rl.admit(identity, 50)
        with pytest.raises(RateLimitedError) as caught:
            await rl.admit(identity, 1)
        assert caught.value.limit_name == "requests"
    finally:
        await rl.close()


async def test_unreachable_redis_admits_unlimited() -> None:
    # Nothing listens on port 1: every storage call fails.
    rl = RateLimiter(make_storage("redis://127.0.0.1:1/0"), rpm=1, tpm=100)
    try:
        for _ in range(3):
            reservation = await rl.admit("ip:a", 10)
            assert reservation.headers() == {}
        await rl.settle(reservation, used_tokens=50)  # nothing to correct, nothing raised
    finally:
        await rl.close()
