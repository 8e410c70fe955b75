"""The engines' one consumer loop of a request's deltas: ends, errors and abandonment."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from llm_stack.engine.base import (
    EngineError,
    EngineStoppedError,
    FinishReason,
    TokenDelta,
    request_deltas,
)


def _delta(index: int, finish: FinishReason | None = None) -> TokenDelta:
    return TokenDelta((7,), 3, 1, finish_reason=finish, index=index)


def _mailbox(items: list[TokenDelta | EngineError]) -> asyncio.Queue[TokenDelta | EngineError]:
    queue: asyncio.Queue[TokenDelta | EngineError] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return queue


async def test_ends_after_every_sequence_sent_its_last_delta() -> None:
    stop = FinishReason.STOP
    queue = _mailbox([_delta(0), _delta(1, stop), _delta(0, stop), _delta(0)])
    abandoned: list[bool] = []
    got = [d async for d in request_deltas(queue.get, 2, lambda: abandoned.append(True))]
    assert [(d.index, d.finished) for d in got] == [(0, False), (1, True), (0, True)]
    assert queue.qsize() == 1  # nothing read past the request's end
    assert abandoned == []


async def test_an_engine_error_is_raised_without_an_abort() -> None:
    queue = _mailbox([_delta(0), EngineStoppedError("the engine stopped")])
    abandoned: list[bool] = []
    deltas = request_deltas(queue.get, 1, lambda: abandoned.append(True))
    assert (await anext(deltas)).index == 0
    with pytest.raises(EngineStoppedError, match="stopped"):
        await anext(deltas)
    assert abandoned == []  # the engine dropped the request itself


async def test_a_consumer_that_stops_early_abandons_the_request_once() -> None:
    queue = _mailbox([_delta(0), _delta(0)])
    abandoned: list[bool] = []
    deltas = request_deltas(queue.get, 1, lambda: abandoned.append(True))
    async with contextlib.aclosing(deltas):
        async for _ in deltas:
            break
    assert abandoned == [True]


async def test_a_cancelled_wait_abandons_the_request() -> None:
    queue = _mailbox([])
    abandoned: list[bool] = []

    async def consume() -> None:
        async with contextlib.aclosing(
            request_deltas(queue.get, 1, lambda: abandoned.append(True))
        ) as deltas:
            async for _ in deltas:
                pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)  # the consumer now waits on the empty mailbox
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert abandoned == [True]
