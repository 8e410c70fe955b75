"""The concurrency bound: immediate refusal beyond it, a bounded short queue, hand-over."""

from __future__ import annotations

import asyncio

import pytest

from frontend.admission import ConcurrencyGate
from frontend.errors import OverloadedError


async def test_refuses_at_once_beyond_the_bound() -> None:
    gate = ConcurrencyGate(2, retry_after_s=3)
    await gate.acquire()
    await gate.acquire()
    with pytest.raises(OverloadedError) as caught:
        await gate.acquire()
    assert caught.value.headers["Retry-After"] == "3"
    gate.release()
    await gate.acquire()
    assert gate.in_flight == 2


async def test_queued_request_gets_the_released_slot() -> None:
    gate = ConcurrencyGate(1, queue_limit=1, queue_timeout_s=30)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert gate.queued == 1
    with pytest.raises(OverloadedError):  # the queue is full too
        await gate.acquire()
    gate.release()
    await waiter
    assert gate.in_flight == 1
    assert gate.queued == 0


async def test_queue_wait_is_bounded() -> None:
    gate = ConcurrencyGate(1, queue_limit=4, queue_timeout_s=0.05)
    await gate.acquire()
    with pytest.raises(OverloadedError):
        await gate.acquire()
    assert gate.queued == 0
    gate.release()
    assert gate.in_flight == 0


async def test_cancelled_waiter_leaves_the_queue() -> None:
    gate = ConcurrencyGate(1, queue_limit=1, queue_timeout_s=30)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.queued == 0
    gate.release()
    assert gate.in_flight == 0


async def test_slot_handed_over_as_the_waiter_is_cancelled_is_returned() -> None:
    gate = ConcurrencyGate(1, queue_limit=1, queue_timeout_s=30)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.in_flight == 0
    await gate.acquire()
    assert gate.in_flight == 1
