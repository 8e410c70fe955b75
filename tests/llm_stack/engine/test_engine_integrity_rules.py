"""The engines' shared integrity rules: token ids within the vocabulary, greedy below a
temperature floor, and the health monitor's verdicts."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from llm_stack.engine import base
from llm_stack.engine.base import (
    GREEDY_TEMPERATURE,
    GenerationRequest,
    HealthMonitor,
    InvalidRequestError,
    SamplingParams,
    check_token_ids,
)
from llm_stack.model_errors import ErrorCode

VOCAB = 100


def request(**fields: Any) -> GenerationRequest:
    fields.setdefault("prompt_ids", (2, 10, 11))
    return GenerationRequest(request_id="r", sampling=SamplingParams(max_tokens=4), **fields)


@pytest.mark.parametrize(
    ("fields", "field", "value"),
    [
        ({"prompt_ids": (2, 999999)}, "input_ids", 999999),
        ({"prompt_ids": (2, VOCAB)}, "input_ids", VOCAB),  # one past the last id
        ({"prompt_ids": (-1, 2)}, "input_ids", -1),
        ({"stop_sequences": ((5,), (6, VOCAB + 7))}, "stop_words", VOCAB + 7),
        ({"bad_sequences": ((999999,),)}, "bad_words", 999999),
        ({"end_id": VOCAB}, "end_id", VOCAB),
    ],
)
def test_an_id_outside_the_vocabulary_names_field_limit_and_value(
    fields: dict[str, Any], field: str, value: int
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        check_token_ids(request(**fields), VOCAB)
    error = info.value.model_error()
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, field)
    assert error.values == {"limit": VOCAB, "value": value}
    assert f"{field} holds token id {value}" in error.message
    assert f"vocabulary of {VOCAB} tokens" in error.message


def test_ids_up_to_the_last_one_pass() -> None:
    check_token_ids(
        request(
            prompt_ids=(0, VOCAB - 1),
            stop_sequences=((VOCAB - 1, 0),),
            bad_sequences=((1,),),
            end_id=VOCAB - 1,
        ),
        VOCAB,
    )


@pytest.mark.parametrize("temperature", [0.0, 1e-40, 1e-30, GREEDY_TEMPERATURE / 2])
def test_temperatures_below_the_floor_are_greedy(temperature: float) -> None:
    assert SamplingParams(max_tokens=1, temperature=temperature).greedy


@pytest.mark.parametrize("temperature", [GREEDY_TEMPERATURE, 0.01, 1.0])
def test_temperatures_from_the_floor_up_sample(temperature: float) -> None:
    assert not SamplingParams(max_tokens=1, temperature=temperature).greedy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_make_it_unhealthy_until_a_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = HealthMonitor("test engine", max_failures=3)
    assert monitor.check(busy=True).ok
    with caplog.at_level(logging.ERROR, logger=base.__name__):
        for _ in range(3):
            monitor.failed("llama_decode failed with code -1")
        health = monitor.check(busy=False)
        monitor.check(busy=False)
    assert not health.ok
    assert health.reason == (
        "the last 3 engine steps failed (last: llama_decode failed with code -1)"
    )
    # Said once when it turned, not at every check.
    assert [r.getMessage() for r in caplog.records] == [
        f"test engine is unhealthy: {health.reason}"
    ]
    monitor.succeeded()
    assert monitor.check(busy=False).ok


def test_failures_with_successes_between_them_keep_it_healthy() -> None:
    monitor = HealthMonitor("test engine", max_failures=2)
    for _ in range(5):
        monitor.failed("boom")
        monitor.succeeded()
    assert monitor.check(busy=True).ok


def test_no_progress_while_busy_is_a_stall() -> None:
    clock = Clock()
    monitor = HealthMonitor("test engine", stall_s=60.0, clock=clock)
    clock.now += 61.0
    assert monitor.check(busy=False).ok  # idle: nothing to progress on
    stalled = monitor.check(busy=True)
    assert not stalled.ok
    assert "no progress of engine steps for 61 s" in stalled.reason
    assert "limit 60 s" in stalled.reason
    monitor.progressed()
    assert monitor.check(busy=True).ok


def test_a_fatal_failure_stays() -> None:
    monitor = HealthMonitor("test engine")
    monitor.fatal("the engine's step thread died: RuntimeError: boom")
    monitor.succeeded()
    monitor.progressed()
    health = monitor.check(busy=False)
    assert (health.ok, health.reason) == (
        False,
        "the engine's step thread died: RuntimeError: boom",
    )
