"""Pure parts of the Triton client: inputs, error classification, endpoint choice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import numpy as np
import pytest

from frontend import errors as e
from frontend.metrics import FrontendMetrics
from frontend.triton_client import (
    Endpoint,
    PoolConfig,
    TritonPool,
    classify_error,
    ensemble_request,
    health_request,
)
from frontend.validation import AssistantToolCall, ChatMessage, ToolUse, ValidatedRequest
from llm_stack.guided_decoding import Guide, GuideType
from llm_stack.model_errors import ErrorCode, ModelError, encode_model_error
from llm_stack.sampling_contract import SamplingInputs
from llm_stack.tool_calls import HERMES, FunctionTool
from tests.frontend.conftest import wait_until

REQUEST = ValidatedRequest(
    prompt="héllo", max_tokens=8,
    sampling=SamplingInputs(temperature=0.5, top_p=0.9, top_k=40, seed=7),
    stop=("\n", "END"), stream=True,
)  # fmt: skip


def sent(request: ValidatedRequest) -> dict[str, tuple[str, list[int], bytes]]:
    return {
        t.name(): (t.datatype(), t.shape(), t._get_content())
        for t in ensemble_request(request).inputs()
    }


def test_inputs_follow_the_ensemble_contract() -> None:
    inputs = sent(REQUEST)
    assert {name: (dtype, shape) for name, (dtype, shape, _) in inputs.items()} == {
        "text_input": ("BYTES", [1, 1]),
        "max_tokens": ("INT32", [1, 1]),
        "stream": ("BOOL", [1, 1]),
        "temperature": ("FP32", [1, 1]),
        "top_p": ("FP32", [1, 1]),
        "top_k": ("INT32", [1, 1]),
        "seed": ("UINT64", [1, 1]),
        "stop_words": ("BYTES", [1, 2]),
    }
    assert inputs["text_input"][2] == len("héllo".encode()).to_bytes(4, "little") + "héllo".encode()
    assert np.frombuffer(inputs["max_tokens"][2], np.int32).tolist() == [8]
    assert np.frombuffer(inputs["seed"][2], np.uint64).tolist() == [7]
    assert inputs["stop_words"][2] == b"\x01\x00\x00\x00\n\x03\x00\x00\x00END"


def test_optional_inputs_are_left_out() -> None:
    plain = ValidatedRequest("x", 4, SamplingInputs(temperature=0.0))
    assert list(sent(plain)) == ["text_input", "max_tokens", "stream", "temperature"]


def test_choices_and_logprobs_go_as_the_contracts_inputs() -> None:
    sampling = SamplingInputs(temperature=1.0, seed=5, num_return_sequences=3)
    request = ValidatedRequest("x", 4, sampling, logprobs=4)
    inputs = sent(request)
    assert {name: inputs[name][:2] for name in (
        "num_return_sequences", "return_log_probs", "num_top_log_probs",
    )} == {
        "num_return_sequences": ("INT32", [1, 1]),
        "return_log_probs": ("BOOL", [1, 1]),
        "num_top_log_probs": ("INT32", [1, 1]),
    }  # fmt: skip
    assert np.frombuffer(inputs["num_return_sequences"][2], np.int32).tolist() == [3]
    assert np.frombuffer(inputs["return_log_probs"][2], np.bool_).tolist() == [True]
    assert np.frombuffer(inputs["num_top_log_probs"][2], np.int32).tolist() == [4]
    # Log-probabilities without alternatives: the count keeps the engine's default, 0.
    one_choice = SamplingInputs(temperature=1.0, num_return_sequences=1)
    sampled_only = sent(ValidatedRequest("x", 4, one_choice, logprobs=0))
    assert "return_log_probs" in sampled_only
    assert "num_top_log_probs" not in sampled_only
    assert "num_return_sequences" not in sampled_only


def test_chat_messages_go_as_json_beside_an_empty_prompt() -> None:
    sampling = SamplingInputs(
        temperature=0.0, presence_penalty=0.5, frequency_penalty=-0.5, repetition_penalty=1.1,
        min_tokens=2,
    )  # fmt: skip
    chat = ValidatedRequest(
        "", 4, sampling,
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Grüß dich")),
    )  # fmt: skip
    inputs = sent(chat)
    assert set(inputs) == {
        "text_input", "max_tokens", "stream", "temperature", "messages", "presence_penalty",
        "frequency_penalty", "repetition_penalty", "min_tokens",
    }  # fmt: skip
    assert inputs["text_input"][2] == b"\x00\x00\x00\x00"  # one empty string, length-prefixed
    messages = inputs["messages"][2][4:].decode("utf-8")
    assert json.loads(messages) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüß dich"},
    ]  # fmt: skip
    assert inputs["min_tokens"][:2] == ("INT32", [1, 1])
    assert np.frombuffer(inputs["presence_penalty"][2], np.float32).tolist() == [0.5]


def test_tool_calls_messages_tools_and_their_guide_go_as_the_ensembles_inputs() -> None:
    tool = FunctionTool("get_time", {"type": "object", "properties": {}})
    call = AssistantToolCall("call_1", "get_time", "{}")
    chat = ValidatedRequest(
        "", 4, SamplingInputs(temperature=0.0),
        messages=(
            ChatMessage("user", "Time?"), ChatMessage("assistant", "", (call,)),
            ChatMessage("tool", "noon", tool_call_id="call_1"), ChatMessage("user", "And?"),
        ),
        guide=Guide(GuideType.STRUCTURAL_TAG, "{}"),
        tools=ToolUse((tool,), "required", True, HERMES),
    )  # fmt: skip
    inputs = sent(chat)
    assert json.loads(inputs["messages"][2][4:].decode()) == [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "content": "noon", "tool_call_id": "call_1"},
        {"role": "user", "content": "And?"},
    ]  # fmt: skip
    assert json.loads(inputs["tools"][2][4:].decode()) == [tool.to_openai()]
    assert inputs["guided_decoding_guide_type"][2][4:] == b"structural_tag"
    # Without tools, no tools input.
    assert "tools" not in sent(ValidatedRequest("", 4, messages=(ChatMessage("user", "x"),)))


def coded(code: ErrorCode, message: str, field: str | None = None, **values: int) -> str:
    return encode_model_error(ModelError(code, message, field, values))


# (gRPC code, message) → error class, HTTP status, client message, field, value, limit
ERROR_ROWS = [
    (("INVALID_ARGUMENT", coded(ErrorCode.PROMPT_TOO_LONG, "x", "text_input", tokens=9000,
                                limit=8192)),
     e.PromptTooManyTokensError, 422, "prompt of 9,000 tokens exceeds the 8,192 limit",
     "prompt", 9000, 8192),
    (("INVALID_ARGUMENT", "in ensemble 'ensemble', " + coded(
        ErrorCode.PROMPT_TOO_LONG, "x", "messages", tokens=3000, limit=2048)),
     e.PromptTooManyTokensError, 422, "messages of 3,000 tokens exceeds the 2,048 limit",
     "messages", 3000, 2048),
    ((None, coded(ErrorCode.SEQUENCE_TOO_LONG, "x", "max_tokens", tokens=5000, limit=4096)),
     e.SequenceTooLongError, 422,
     "prompt tokens + max_tokens = 5,000 exceeds the model's 4,096 token limit",
     "max_tokens", 5000, 4096),
    (("INVALID_ARGUMENT", coded(ErrorCode.INVALID_ARGUMENT, "top_p must be in (0, 1], got 1.5"
                                "\nmore", "top_p")),
     e.ModelRejectedRequestError, 422, "top_p must be in (0, 1], got 1.5", "top_p", None, None),
    (("INVALID_ARGUMENT", "in ensemble 'ensemble', " + coded(
        ErrorCode.INVALID_MESSAGES, "messages: roles must alternate", "messages")),
     e.ModelRejectedRequestError, 422, "messages: roles must alternate", "messages", None, None),
    (("INVALID_ARGUMENT", coded(ErrorCode.INVALID_ARGUMENT, "stop_words: 20 words exceed the "
                                "limit of 16", "stop_words", words=20, limit=16)),
     e.ModelRejectedRequestError, 422, "stop_words: 20 words exceed the limit of 16", "stop",
     None, None),
    (("UNAVAILABLE", coded(ErrorCode.QUEUE_FULL, "engine queue is full", waiting=64)),
     e.TritonQueueFullError, 503, "the model server's queue is full, retry later", None, None,
     None),
    (("RESOURCE_EXHAUSTED", "anything"),
     e.TritonQueueFullError, 503, "the model server's queue is full, retry later", None, None,
     None),
    (("UNAVAILABLE", coded(ErrorCode.TIMEOUT, "generation exceeded the time limit of 600 s")),
     e.TritonTimeoutError, 504,
     "the model server gave up on the request: it ran past its time limit", None, None, None),
    (("DEADLINE_EXCEEDED", "Deadline Exceeded"),
     e.TritonTimeoutError, 504,
     "the model server gave up on the request: it ran past its time limit", None, None, None),
    (("CANCELLED", coded(ErrorCode.CANCELLED, "request cancelled")),
     e.TritonUnavailableError, 503, "the model server is unavailable, retry later", None, None,
     None),
    (("UNAVAILABLE", coded(ErrorCode.ENGINE_UNAVAILABLE, "the engine cannot generate: x")),
     e.EngineUnavailableError, 503, "the model server's engine cannot generate now, retry later",
     None, None, None),
    (("INTERNAL", coded(ErrorCode.ENGINE_ERROR, "engine error: CUDA out of memory at 0x7f")),
     e.TritonInternalError, 502, "the model server failed to process the request", None, None,
     None),
    (("INTERNAL", coded(ErrorCode.TEMPLATE_ERROR, "chat template failed: KeyError 'secret'")),
     e.TritonInternalError, 502, "the model server failed to process the request", None, None,
     None),
    # A model's queue refusing (Triton's own words, not coded): the server is busy, not
    # down, so the endpoint stays in rotation and the client is told to retry.
    (("UNAVAILABLE", "Exceeds maximum queue size"),
     e.TritonQueueFullError, 503, "the model server's queue is full, retry later", None, None,
     None),
    ((None, "in ensemble 'ensemble', Request timeout expired"),
     e.TritonQueueFullError, 503, "the model server's queue is full, retry later", None, None,
     None),
    (("UNAVAILABLE", "[request id: r-1] Request timeout expired"),
     e.TritonQueueFullError, 503, "the model server's queue is full, retry later", None, None,
     None),
    # Prose without a code is never trusted, however it reads.
    (("INVALID_ARGUMENT", "prompt has 3000 tokens, exceeds the limit of 2048"),
     e.TritonInternalError, 502, "the model server failed to process the request", None, None,
     None),
    ((None, "Traceback (most recent call last): secret"),
     e.TritonInternalError, 502, "the model server failed to process the request", None, None,
     None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("wire", "expected", "status", "client_message", "field", "value", "limit"), ERROR_ROWS
)
def test_errors_are_classified(
    wire: tuple[str | None, str],
    expected: type[e.FrontendError],
    status: int,
    client_message: str,
    field: str | None,
    value: int | None,
    limit: int | None,
) -> None:
    error = classify_error(*wire)
    assert type(error) is expected
    assert error is not None
    assert error.message == client_message
    assert e.error_kind(error).status == status
    assert getattr(error, "field", None) == field
    if value is not None:
        assert isinstance(error, e.FieldRuleViolationError)
        assert (error.value, error.limit) == (value, limit)


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


def probed_pool(
    monkeypatch: pytest.MonkeyPatch, ready: list[bool], probes: list[str]
) -> TritonPool:
    """A pool of one endpoint whose probe reports `ready[0]` (changeable) and is counted."""
    # A normal interval no test waits out: only the fast pace can probe again in time.
    config = PoolConfig("ensemble", 5.0, 300.0, 1.0, 0.5, down_probe_interval_s=0.01)
    pool = TritonPool(["127.0.0.1:1"], config, FrontendMetrics())

    async def probe_one(endpoint: Endpoint) -> bool:
        probes.append(endpoint.url)
        pool._set_ready(endpoint, ready[0], "told so")
        return ready[0]

    monkeypatch.setattr(pool, "_probe_one", probe_one)
    return pool


async def test_an_endpoint_out_of_rotation_is_probed_at_the_fast_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probes: list[str] = []
    pool = probed_pool(monkeypatch, [False], probes)
    await pool.start()
    try:
        await wait_until(lambda: len(probes) >= 5)
    finally:
        await pool.close()


async def test_a_call_taking_an_endpoint_out_starts_the_fast_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probes: list[str] = []
    ready = [True]
    pool = probed_pool(monkeypatch, ready, probes)
    await pool.start()
    try:
        [endpoint] = pool.endpoints
        assert endpoint.ready
        assert probes == [endpoint.url]
        ready[0] = False
        pool._set_ready(endpoint, False, "a call failed to connect")  # as _failure does
        await wait_until(lambda: len(probes) >= 4)
        ready[0] = True
        await wait_until(lambda: endpoint.ready)
    finally:
        await pool.close()


async def test_concurrent_readiness_checks_share_one_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probes: list[str] = []
    pool = probed_pool(monkeypatch, [True], probes)
    results = await asyncio.gather(*(pool.probe() for _ in range(10)))
    await pool.close()
    assert results == [{"127.0.0.1:1": True}] * 10
    assert len(probes) == 1


def test_the_health_check_is_one_flag_to_the_engine_model() -> None:
    payload = health_request("tensorrt_llm", "health-1")
    [check] = payload.pop("inputs")
    assert payload == {
        "model_name": "tensorrt_llm",
        "request_id": "health-1",
        "enable_empty_final_response": True,
    }
    assert (check.name(), check.datatype(), check.shape()) == ("health_check", "BOOL", [1, 1])
    assert check._get_content() == b"\x01"


def engine_checked_pool(
    monkeypatch: pytest.MonkeyPatch, answers: list[tuple[str | None, bool]]
) -> TritonPool:
    """A pool of one endpoint whose model is ready and whose engine health checks give
    `answers` in turn (problem, only unanswered)."""
    config = PoolConfig("ensemble", 5.0, 300.0, 1.0, 0.5, abort_model="tensorrt_llm")
    pool = TritonPool(["127.0.0.1:1"], config, FrontendMetrics())

    async def model_ready(*_args: object, **_kwargs: object) -> bool:
        return True

    async def engine_problem(_endpoint: Endpoint) -> tuple[str | None, bool]:
        return answers.pop(0)

    monkeypatch.setattr(pool.endpoints[0].client, "is_model_ready", model_ready)
    monkeypatch.setattr(pool, "_engine_problem", engine_problem)
    return pool


SLOW = ("the tensorrt_llm health check did not answer within 1 s", True)
BROKEN = ("engine_unavailable: the step thread died", False)


async def test_one_late_health_check_keeps_the_endpoint_two_in_a_row_take_it_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = engine_checked_pool(monkeypatch, [(None, False), SLOW, (None, False), SLOW, SLOW])
    [endpoint] = pool.endpoints
    try:
        assert await pool.probe() == {endpoint.url: True}
        assert await pool.probe() == {endpoint.url: True}  # a saturated loop answers late
        assert endpoint.health_misses == 1
        assert await pool.probe() == {endpoint.url: True}
        assert endpoint.health_misses == 0
        assert await pool.probe() == {endpoint.url: True}
        assert await pool.probe() == {endpoint.url: False}
        assert not endpoint.ready
    finally:
        await pool.close()


async def test_an_engine_that_says_it_cannot_generate_is_out_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = engine_checked_pool(monkeypatch, [(None, False), BROKEN])
    [endpoint] = pool.endpoints
    try:
        assert await pool.probe() == {endpoint.url: True}
        assert await pool.probe() == {endpoint.url: False}
        assert endpoint.down_reason == BROKEN[0]
    finally:
        await pool.close()
