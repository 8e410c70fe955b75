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


async def test_a_request_for_n_sequences_holds_n_slots() -> None:
    gate = ConcurrencyGate(4)
    assert await gate.acquire(3) == 3
    with pytest.raises(OverloadedError):
        await gate.acquire(2)
    assert await gate.acquire(1) == 1
    gate.release(3)
    assert gate.in_flight == 1


async def test_a_waiter_takes_its_slots_once_all_are_free_and_first() -> None:
    gate = ConcurrencyGate(4, queue_limit=2, queue_timeout_s=30)
    await gate.acquire(2)
    await gate.acquire(2)
    big = asyncio.create_task(gate.acquire(3))
    await asyncio.sleep(0)
    small = asyncio.create_task(gate.acquire(1))
    await asyncio.sleep(0)
    gate.release(2)  # 2 free: not enough for the head, and the small one waits behind it
    await asyncio.sleep(0)
    assert (gate.in_flight, gate.queued) == (2, 2)
    gate.release(2)
    assert await big == 3
    assert await small == 1
    assert (gate.in_flight, gate.queued) == (4, 0)


async def test_more_slots_than_the_bound_take_the_whole_bound() -> None:
    gate = ConcurrencyGate(2)
    assert await gate.acquire(8) == 2
    assert gate.in_flight == 2
