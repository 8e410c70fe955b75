"""The bound on concurrent generations, with an optional short, bounded wait queue.

Beyond the bound and the queue a request is refused at once (OverloadedError → 503 with
Retry-After), so a burst never builds an unbounded backlog in front of Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from frontend.errors import OverloadedError


class ConcurrencyGate:
    """At most `limit` holders; at most `queue_limit` waiters, each for `queue_timeout_s`."""

    def __init__(
        self,
        limit: int,
        *,
        queue_limit: int = 0,
        queue_timeout_s: float = 0.5,
        retry_after_s: int = 1,
    ) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting briefly in the queue if it has room; else OverloadedError."""
        if self._in_flight < self.limit and not self._waiters:
            self._in_flight += 1
            return
        if len(self._waiters) >= self.queue_limit:
            raise OverloadedError(self.retry_after_s)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter
        except TimeoutError:
            if self._handed_over(waiter):
                return
            raise OverloadedError(self.retry_after_s) from None
        except asyncio.CancelledError:
            if self._handed_over(waiter):
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiter if any, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; the count stays
                return
        self._in_flight -= 1

    def _handed_over(self, waiter: asyncio.Future[None]) -> bool:
        """True when `release` gave this waiter a slot just as it timed out or was cancelled."""
        if waiter.done() and not waiter.cancelled():
            return True
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        return False
