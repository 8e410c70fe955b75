"""Pure parts of the Triton client: inputs, error classification, endpoint choice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from frontend import errors as e
from frontend.metrics import FrontendMetrics
from frontend.triton_client import PoolConfig, TritonPool, build_inputs, classify_error
from frontend.validation import ChatMessage, GenerationRequest

REQUEST = GenerationRequest(
    prompt="héllo", max_tokens=8, temperature=0.5, top_p=0.9, top_k=40,
    stop=("\n", "END"), seed=7, stream=True,
)  # fmt: skip


def test_inputs_follow_the_ensemble_contract() -> None:
    inputs = {t.name(): t for t in build_inputs(REQUEST)}
    assert {name: (t.datatype(), t.shape()) for name, t in inputs.items()} == {
        "text_input": ("BYTES", [1, 1]),
        "max_tokens": ("INT32", [1, 1]),
        "stream": ("BOOL", [1, 1]),
        "temperature": ("FP32", [1, 1]),
        "top_p": ("FP32", [1, 1]),
        "top_k": ("INT32", [1, 1]),
        "seed": ("UINT64", [1, 1]),
        "stop_words": ("BYTES", [1, 2]),
    }


def test_optional_inputs_are_left_out() -> None:
    plain = GenerationRequest("x", 4, 0.0, None, None, (), None, False)
    assert [t.name() for t in build_inputs(plain)] == [
        "text_input", "max_tokens", "stream", "temperature",
    ]  # fmt: skip


def test_chat_messages_go_as_json_beside_an_empty_prompt() -> None:
    chat = GenerationRequest(
        "", 4, 0.0, None, None, (), None, False,
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Grüß dich")),
        presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.1, min_tokens=2,
    )  # fmt: skip
    inputs = {t.name(): t for t in build_inputs(chat)}
    assert list(inputs) == [
        "text_input", "max_tokens", "stream", "temperature", "messages", "presence_penalty",
        "frequency_penalty", "repetition_penalty", "min_tokens",
    ]  # fmt: skip
    sent = {name: t._get_content() for name, t in inputs.items()}
    assert sent["text_input"] == b"\x00\x00\x00\x00"  # one empty string, length-prefixed
    messages = sent["messages"][4:].decode("utf-8")
    assert json.loads(messages) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüß dich"},
    ]  # fmt: skip
    assert inputs["min_tokens"].datatype() == "INT32"
    assert inputs["presence_penalty"].datatype() == "FP32"


@pytest.mark.parametrize(
    ("code", "message", "expected", "client_message"),
    [
        ("INVALID_ARGUMENT", "text_input: prompt has 9000 tokens, exceeds the limit of 8192",
         e.PromptTooManyTokensError, "prompt of 9,000 tokens exceeds the 8,192 limit"),
        (None, "prompt has 3000 tokens, exceeds the limit of 2048",
         e.PromptTooManyTokensError, "prompt of 3,000 tokens exceeds the 2,048 limit"),
        ("INVALID_ARGUMENT", "top_p must be in (0, 1], got 1.5\nmore",
         e.ModelRejectedRequestError, "top_p must be in (0, 1], got 1.5"),
        ("INVALID_ARGUMENT", "in ensemble 'ensemble', messages: roles must alternate",
         e.ModelRejectedRequestError, "messages: roles must alternate"),
        ("INVALID_ARGUMENT", "messages: prompt has 3000 tokens, exceeds the limit of 2048",
         e.PromptTooManyTokensError, "messages of 3,000 tokens exceeds the 2,048 limit"),
        ("UNAVAILABLE", "engine queue is full: 64 requests waiting",
         e.TritonQueueFullError, "the model server's queue is full, retry later"),
        ("RESOURCE_EXHAUSTED", "anything", e.TritonQueueFullError, None),
        ("UNAVAILABLE", "generation exceeded the time limit of 600 s", e.TritonTimeoutError, None),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded", e.TritonTimeoutError, None),
        ("CANCELLED", "request cancelled", e.TritonUnavailableError, None),
        ("INTERNAL", "engine error: CUDA out of memory at 0x7f", e.TritonInternalError,
         "the model server failed to process the request"),
        (None, "Traceback (most recent call last): secret", e.TritonInternalError, None),
    ],
)  # fmt: skip
def test_errors_are_classified(
    code: str | None, message: str, expected: type[e.FrontendError], client_message: str | None
) -> None:
    error = classify_error(code, message)
    assert type(error) is expected
    assert error is not None
    if client_message is not None:
        assert error.message == client_message


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("text_input: prompt has 9000 tokens, exceeds the limit of 8192", "prompt"),
        ("messages: prompt has 9000 tokens, exceeds the limit of 8192", "messages"),
        ("in ensemble 'ensemble', messages: roles must alternate", "messages"),
        ("top_p must be in (0, 1], got 1.5", None),
    ],
)
def test_model_errors_name_the_field(message: str, field: str | None) -> None:
    error = classify_error("INVALID_ARGUMENT", message)
    assert getattr(error, "field", None) == field


def test_connection_failures_are_told_apart() -> None:
    message = "failed to connect to all addresses; last error: Connection refused"
    assert classify_error("UNAVAILABLE", message) is None


@pytest.fixture
async def pool() -> AsyncIterator[TritonPool]:
    # Channels connect lazily: nothing listens on these ports and nothing is called.
    config = PoolConfig("ensemble", 5.0, 1.0, 1.0, 1.0)
    p = TritonPool(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], config, FrontendMetrics())
    try:
        yield p
    finally:
        await p.close()


async def test_pick_prefers_the_least_busy_ready_endpoint(pool: TritonPool) -> None:
    a, b, c = pool.endpoints
    for endpoint, busy in ((a, 3), (b, 1), (c, 0)):
        endpoint.ready = True
        endpoint.in_flight = busy
    assert pool.pick() is c
    c.ready = False
    assert pool.pick() is b
    assert pool.pick({b.url}) is a


async def test_pick_spreads_ties(pool: TritonPool) -> None:
    for endpoint in pool.endpoints:
        endpoint.ready = True
    assert {pool.pick().url for _ in range(6)} == {e.url for e in pool.endpoints}


async def test_no_ready_endpoint_is_unavailable(pool: TritonPool) -> None:
    with pytest.raises(e.TritonUnavailableError):
        pool.pick()
