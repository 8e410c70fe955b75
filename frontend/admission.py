"""The bound on concurrent generations, with an optional short, bounded wait queue.

Beyond the bound and the queue a request is refused at once (OverloadedError → 503 with
Retry-After), so a burst never builds an unbounded backlog in front of Triton. A request
for n choices holds n slots: each is a sequence the engine runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from frontend.errors import OverloadedError

# Told the slots held and the requests waiting whenever either changes (the gauges).
GateObserver = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class _Waiter:
    future: asyncio.Future[None]
    units: int


class ConcurrencyGate:
    """At most `limit` slots held; at most `queue_limit` waiters, each for `queue_timeout_s`."""

    def __init__(
        self,
        limit: int,
        *,
        queue_limit: int = 0,
        queue_timeout_s: float = 0.5,
        retry_after_s: int = 1,
        observer: GateObserver | None = None,
    ) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self._in_flight = 0
        self._waiters: deque[_Waiter] = deque()
        self._observer = observer

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, units: int = 1) -> int:
        """Take `units` slots (at most the bound), waiting briefly in the queue if it has
        room; else OverloadedError. Returns the slots taken, for `release`."""
        units = max(1, min(units, self.limit))
        if self._in_flight + units <= self.limit and not self._waiters:
            self._in_flight += units
            self._changed()
            return units
        if len(self._waiters) >= self.queue_limit:
            raise OverloadedError(self.retry_after_s)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), units)
        self._waiters.append(waiter)
        self._changed()
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter.future
        except TimeoutError:
            if self._handed_over(waiter):
                return units
            raise OverloadedError(self.retry_after_s) from None
        except asyncio.CancelledError:
            if self._handed_over(waiter):
                self.release(units)
            raise
        finally:
            self._changed()
        return units

    def release(self, units: int = 1) -> None:
        """Give slots back; waiters whose slots are free then take them, longest first."""
        self._in_flight -= units
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.future.done():  # timed out or cancelled: it left
                self._waiters.popleft()
                continue
            if self._in_flight + waiter.units > self.limit:
                break  # FIFO: the head waits for room rather than being overtaken
            self._waiters.popleft()
            self._in_flight += waiter.units
            waiter.future.set_result(None)
        self._changed()

    def _changed(self) -> None:
        if self._observer is not None:
            self._observer(self._in_flight, len(self._waiters))

    def _handed_over(self, waiter: _Waiter) -> bool:
        """True when `release` gave this waiter its slots just as it timed out or was cancelled."""
        if waiter.future.done() and not waiter.future.cancelled():
            return True
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        return False
