"""Per-caller budgets: requests per minute and tokens per minute, in moving windows.

The `limits` library keeps the windows, in process memory (one replica) or in Redis
(replicas share one budget). Admission charges one request and reserves the tokens
the request may use: an estimate of the prompt's tokens plus max_tokens. When the
request ends the reservation is corrected to the real count: unused tokens go back to
the window, extra ones are charged.

Prompt estimate: half the prompt's UTF-8 byte count, plus one. Tokenizers average 3-4
bytes per token on ordinary text, so this over-reserves, which is the safe direction;
the correction at the end makes the charge exact either way.

`limits` has no refund, so giving tokens back removes the newest entries of the
window from its storage directly (memory: the event list; Redis: the list behind the
key, the layout `limits` documents for its moving window).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis

from frontend.errors import RateLimitedError, TokenBudgetTooSmallError

Clock = Callable[[], float]
log = logging.getLogger(__name__)


def estimate_prompt_tokens(prompt: str) -> int:
    """Tokens reserved for a prompt before the model has counted them."""
    return len(prompt.encode("utf-8")) // 2 + 1


class _Refunds(Protocol):
    async def __call__(self, key: str, amount: int) -> None: ...


def _memory_refunds(storage: MemoryStorage) -> _Refunds:
    async def refund(key: str, amount: int) -> None:
        async with storage.locks[key]:
            events = storage.events.get(key)
            if events:
                del events[:amount]  # newest first

    return refund


def _redis_connection(storage: RedisStorage) -> tuple[Redis, RedispyBridge]:
    bridge = storage.bridge
    if not isinstance(bridge, RedispyBridge):
        raise TypeError("the Redis rate-limit storage must use the redis-py implementation")
    return cast(Redis, bridge.get_connection()), bridge


def _redis_refunds(storage: RedisStorage) -> _Refunds:
    connection, bridge = _redis_connection(storage)

    async def refund(key: str, amount: int) -> None:
        # LPUSH puts the newest timestamps at the head of the list.
        await connection.lpop(bridge.prefixed_key(key), amount)

    return refund


def make_storage(url: str) -> Storage:
    """Moving-window storage for `memory://` or `redis://...` URLs."""
    if url.startswith("memory://"):
        return MemoryStorage()
    return RedisStorage(f"async+{url}", implementation="redispy", wrap_exceptions=True)


@dataclass(frozen=True, slots=True)
class WindowState:
    """One limit's state after a decision, as rate-limit headers report it."""

    name: str  # "requests" | "tokens"
    limit: int
    remaining: int
    reset_in_s: int


@dataclass(slots=True)
class Reservation:
    """What admission charged; `settle` corrects the token part."""

    identity: str
    tokens: int
    windows: tuple[WindowState, ...]

    def headers(self) -> dict[str, str]:
        return rate_limit_headers(self.windows)


def rate_limit_headers(windows: tuple[WindowState, ...]) -> dict[str, str]:
    """X-RateLimit-Limit/Remaining/Reset for the tightest limit, and one set per limit.

    Reset is in seconds from now (like Retry-After), not a timestamp.
    """
    if not windows:
        return {}
    tightest = min(windows, key=lambda w: (w.remaining / w.limit, w.reset_in_s))
    headers = {
        "X-RateLimit-Limit": str(tightest.limit),
        "X-RateLimit-Remaining": str(tightest.remaining),
        "X-RateLimit-Reset": str(tightest.reset_in_s),
    }
    for window in windows:
        suffix = window.name.capitalize()
        headers[f"X-RateLimit-Limit-{suffix}"] = str(window.limit)
        headers[f"X-RateLimit-Remaining-{suffix}"] = str(window.remaining)
        headers[f"X-RateLimit-Reset-{suffix}"] = str(window.reset_in_s)
    return headers


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits per caller identity (0: off)."""

    def __init__(
        self, storage: Storage, *, rpm: int, tpm: int, clock: Clock = time.time
    ) -> None:
        self._storage = storage
        self._strategy = MovingWindowRateLimiter(storage)
        self._clock = clock
        self._rpm: RateLimitItem | None = None
        self._tpm: RateLimitItem | None = None
        if rpm:
            self._rpm = RateLimitItemPerMinute(rpm, namespace="rpm")
        if tpm:
            self._tpm = RateLimitItemPerMinute(tpm, namespace="tpm")
        if isinstance(storage, MemoryStorage):
            self._refund: _Refunds | None = _memory_refunds(storage)
        elif isinstance(storage, RedisStorage):
            self._refund = _redis_refunds(storage)
        else:
            self._refund = None

    @property
    def enabled(self) -> bool:
        return self._rpm is not None or self._tpm is not None

    async def admit(self, identity: str, reserve_tokens: int) -> Reservation:
        """Charge one request and reserve tokens; RateLimitedError when a budget is spent.

        If the shared storage (Redis) fails, requests pass unlimited rather than all
        failing: the limits protect capacity, and an outage of the limiter's storage
        should not become an outage of the service. Each such pass is logged.
        """
        if self._tpm is not None and reserve_tokens > self._tpm.amount:
            raise TokenBudgetTooSmallError(reserve_tokens, self._tpm.amount)
        try:
            return await self._admit(identity, reserve_tokens)
        except StorageError as exc:
            log.error("rate-limit storage failed, admitting %s unlimited: %s", identity, exc)
            return Reservation(identity, 0, ())

    async def _admit(self, identity: str, reserve_tokens: int) -> Reservation:
        windows: list[WindowState] = []
        if self._rpm is not None:
            if not await self._strategy.hit(self._rpm, identity):
                state = await self._state(self._rpm, "requests", identity)
                raise self._limited("requests", state, "requests per minute")
            windows.append(await self._state(self._rpm, "requests", identity))
        if self._tpm is not None:
            if not await self._strategy.hit(self._tpm, identity, cost=reserve_tokens):
                state = await self._state(self._tpm, "tokens", identity)
                if self._rpm is not None and self._refund is not None:
                    # A request refused for tokens was not served; it does not count.
                    await self._refund(self._rpm.key_for(identity), 1)
                raise self._limited("tokens", state, "tokens per minute")
            windows.append(await self._state(self._tpm, "tokens", identity))
        return Reservation(identity, reserve_tokens if self._tpm else 0, tuple(windows))

    async def charge_refused(self, identity: str) -> None:
        """Count a request refused as invalid against the requests budget: refusals cost
        work too, so a client spends its budget on them like on any request. Raises
        RateLimitedError once the budget is spent; storage failures pass, as in `admit`."""
        if self._rpm is None:
            return
        try:
            admitted = await self._strategy.hit(self._rpm, identity)
            if not admitted:
                state = await self._state(self._rpm, "requests", identity)
        except StorageError as exc:
            log.error("rate-limit storage failed, not counting a refusal of %s: %s", identity, exc)
            return
        if not admitted:
            raise self._limited("requests", state, "requests per minute")

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Correct the token reservation to what the request really used."""
        if self._tpm is None or not reservation.windows:
            return
        delta = used_tokens - reservation.tokens
        if delta < 0 and self._refund is not None:
            await self._refund(self._tpm.key_for(reservation.identity), -delta)
        elif delta > 0:
            # The request already ran: charge what fits; a full window stays full.
            stats = await self._strategy.get_window_stats(self._tpm, reservation.identity)
            charge = min(delta, stats.remaining)
            if charge > 0:
                await self._strategy.hit(self._tpm, reservation.identity, cost=charge)

    async def window(self, name: str, identity: str) -> WindowState | None:
        """Current state of the "requests" or "tokens" window for `identity`."""
        item = self._rpm if name == "requests" else self._tpm
        return None if item is None else await self._state(item, name, identity)

    async def close(self) -> None:
        """Release the storage's connections (Redis)."""
        if isinstance(self._storage, RedisStorage):
            await _redis_connection(self._storage)[0].aclose()

    async def _state(self, item: RateLimitItem, name: str, identity: str) -> WindowState:
        stats = await self._strategy.get_window_stats(item, identity)
        reset_in = max(0, math.ceil(stats.reset_time - self._clock()))
        return WindowState(name, item.amount, max(0, stats.remaining), reset_in)

    def _limited(self, name: str, state: WindowState, what: str) -> RateLimitedError:
        headers = rate_limit_headers((state,))
        # The oldest entry leaves the window at reset; a second's floor keeps clients from spinning.
        headers["Retry-After"] = str(max(1, state.reset_in_s))
        return RateLimitedError(
            name,
            f"rate limit of {state.limit:,} {what} exceeded; retry in {max(1, state.reset_in_s)} s",
            headers,
        )
