"""The TensorRT-LLM engine on the fake LLM: streaming, n sequences, admission, abort, health.

The fake LLM (`fakes.py`) takes exactly the recorded release's arguments; its outputs have
only the release's names.
"""

from __future__ import annotations

import asyncio
import json
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llm_stack.engine.base import (
    EngineError,
    EngineOverloadedError,
    EngineStoppedError,
    FinishReason,
    InvalidRequestError,
    TokenDelta,
    TokenLogprob,
)
from llm_stack.engine.trtllm import TrtLlmEngine
from llm_stack.model_errors import ErrorCode
from tests.llm_stack.engine.trtllm.fakes import (
    FAKE_VOCAB,
    FakeLLM,
    FakeRequestError,
    LogprobEntries,
    iteration_stats,
)
from tests.llm_stack.engine.trtllm.helpers import (
    lp,
    lps,
    make_request,
    refused,
    settings,
    started,
    submit,
)


async def test_streams_deltas_and_counts() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(prompt=(1, 2), temperature=0.0))
    handle = llm.handles[0]
    assert llm.calls[0]["inputs"] == [1, 2]
    assert llm.calls[0]["streaming"] is True
    assert llm.calls[0]["params"]["top_k"] == 1
    assert engine.stats().active == 1
    handle.emit([5])
    assert await stream.next() == TokenDelta((5,), 2, 1)
    handle.emit([5, 6, 7], "stop")
    assert await stream.next() == TokenDelta((6, 7), 2, 3, FinishReason.STOP)
    with pytest.raises(StopAsyncIteration):
        await stream.next()
    stats = engine.stats()
    assert (stats.active, stats.waiting, stats.generated_tokens) == (0, 0, 3)
    assert stats.finished == {"stop": 1}
    assert not handle.aborted


async def test_streamed_deltas_carry_the_cached_prompt_tokens() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(prompt=(1, 2, 3), stops=((8, 9),)))
    handle = llm.handles[0]
    handle.emit([5], cached=2)
    assert await stream.next() == TokenDelta((5,), 3, 1, num_cached_tokens=2)
    handle.emit([5, 6])  # a response without the figure keeps the request's count
    assert await stream.next() == TokenDelta((6,), 3, 2, num_cached_tokens=2)
    handle.emit([5, 6, 8, 9])  # a multi-token stop, cut by the stream filter
    assert await stream.next() == TokenDelta((), 3, 2, FinishReason.STOP, num_cached_tokens=2)


async def test_outputs_ending_without_a_final_one_cancel_and_keep_the_cached_count() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(prompt=(1, 2, 3)))
    handle = llm.handles[0]
    handle.emit([5], cached=3)
    assert await stream.next() == TokenDelta((5,), 3, 1, num_cached_tokens=3)
    handle.fail(StopAsyncIteration())  # the output iterator just ends
    final = await stream.next()
    assert final == TokenDelta((), 3, 1, FinishReason.CANCELLED, num_cached_tokens=3)
    assert engine.stats().finished == {"cancelled": 1}


async def test_closing_the_stream_early_aborts_the_request() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request())
    llm.handles[0].emit([5])
    assert (await stream.next()).token_ids == (5,)
    await stream.aclose()
    assert llm.handles[0].aborted
    assert engine.stats().active == 0
    assert engine.stats().finished == {"cancelled": 1}


async def test_abort_ends_the_stream_with_cancelled() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(request_id="x"))
    await engine.abort("x")
    await engine.abort("unknown")  # a no-op
    assert await stream.next() == TokenDelta((), 3, 0, FinishReason.CANCELLED)
    assert llm.handles[0].aborted
    assert engine.stats().finished == {"cancelled": 1}


async def test_multi_token_stop_ends_the_stream_and_aborts_the_engine_request() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(stops=((8, 9),)))
    handle = llm.handles[0]
    handle.emit([5, 8])
    assert await stream.next() == TokenDelta((5,), 3, 1)
    handle.emit([5, 8, 9, 4])
    assert await stream.next() == TokenDelta((), 3, 1, FinishReason.STOP)
    assert handle.aborted
    assert engine.stats().finished == {"stop": 1}
    assert engine.stats().generated_tokens == 4


async def test_n_sequences_stream_their_own_deltas_until_all_have_ended() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(prompt=(1, 2), temperature=0.9, n=3))
    assert llm.calls[0]["params"]["n"] == 3
    handle = llm.handles[0]
    assert engine.stats().active == 3  # sequences, not requests
    handle.emit([5], index=1)
    assert await stream.next() == TokenDelta((5,), 2, 1, index=1)
    handle.emit([6, 7], index=0)
    assert await stream.next() == TokenDelta((6, 7), 2, 2, index=0)
    handle.emit([5, 8], "length", index=1)
    assert await stream.next() == TokenDelta((8,), 2, 2, FinishReason.LENGTH, index=1)
    assert engine.stats().active == 2
    handle.emit([9], index=2)
    assert await stream.next() == TokenDelta((9,), 2, 1, index=2)
    handle.emit([6, 7], "stop", index=0)
    assert await stream.next() == TokenDelta((), 2, 2, FinishReason.STOP, index=0)
    handle.emit([9, 4], "stop", index=2)
    assert await stream.next() == TokenDelta((4,), 2, 2, FinishReason.STOP, index=2)
    with pytest.raises(StopAsyncIteration):
        await stream.next()
    stats = engine.stats()
    assert (stats.active, stats.waiting, stats.generated_tokens) == (0, 0, 6)
    assert stats.finished == {"length": 1, "stop": 2}
    assert not handle.aborted


async def test_a_sequence_ended_early_ends_on_its_stop_token_or_with_the_request() -> None:
    # TensorRT-LLM reports a sequence's finish reason, and cuts its stop token, only in the
    # request's final response: sequence 0's stop token 7 comes uncut, with no finish.
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    request = make_request(stops=((7,),), end_id=2, max_tokens=3, temperature=0.9, n=3)
    stream = await submit(engine, request)
    assert llm.calls[0]["params"]["stop_token_ids"] == [2, 7]  # the end id is a stop token too
    handle = llm.handles[0]
    handle.emit([5, 7], index=0)
    assert await stream.next() == TokenDelta((5,), 3, 1, FinishReason.STOP, index=0)
    handle.emit([6, 2], index=1)  # the end id, should TensorRT-LLM ever show it
    assert await stream.next() == TokenDelta((6,), 3, 1, FinishReason.STOP, index=1)
    handle.emit([4], index=2)
    assert await stream.next() == TokenDelta((4,), 3, 1, index=2)
    handle.emit([4, 4, 4], index=2)
    assert await stream.next() == TokenDelta((4, 4), 3, 3, index=2)
    handle.emit([5, 7], "stop", index=0, finished=True)  # the final response: sequence 0's
    assert await stream.next() == TokenDelta((), 3, 3, FinishReason.LENGTH, index=2)
    with pytest.raises(StopAsyncIteration):
        await stream.next()
    assert engine.stats().finished == {"stop": 2, "length": 1}
    assert not handle.aborted


async def test_greedy_n_streams_one_engine_sequence_as_each_of_the_n() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(temperature=0.0, n=2, logprobs=0))
    assert "n" not in llm.calls[0]["params"]
    handle = llm.handles[0]
    assert len(handle.outputs) == 1
    handle.emit([5, 6], "stop", logprobs=[lp(t5=-0.1), lp(t6=-0.2)])
    expected = TokenDelta((5, 6), 3, 2, FinishReason.STOP, logprobs=lps(-0.1, -0.2))
    assert await stream.next() == expected
    assert await stream.next() == replace(expected, index=1)
    with pytest.raises(StopAsyncIteration):
        await stream.next()
    stats = engine.stats()
    assert (stats.generated_tokens, stats.finished) == (4, {"stop": 2})


async def test_streamed_logprobs_stay_aligned_through_a_multi_token_stop() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(stops=((8, 9),), temperature=0.7, logprobs=1))
    assert llm.calls[0]["params"]["logprobs"] == 1
    handle = llm.handles[0]
    entries: LogprobEntries = [lp(t5=-0.5, t1=-0.1), lp(t8=-0.8)]
    handle.emit([5, 8], logprobs=entries)
    assert await stream.next() == TokenDelta(
        (5,), 3, 1, logprobs=(TokenLogprob(-0.5, ((1, -0.1),)),)
    )
    entries = [*entries, lp(t6=-0.6)]
    handle.emit([5, 8, 6], logprobs=entries)  # 8 was no stop after all
    assert await stream.next() == TokenDelta(
        (8, 6), 3, 3, logprobs=(TokenLogprob(-0.8, ((8, -0.8),)), TokenLogprob(-0.6, ((6, -0.6),)))
    )
    entries = [*entries, lp(t8=-0.8), lp(t9=-0.9), lp(t4=-0.4)]
    handle.emit([5, 8, 6, 8, 9, 4], logprobs=entries)
    assert await stream.next() == TokenDelta((), 3, 3, FinishReason.STOP)
    assert handle.aborted == 1


async def test_a_stop_sequence_ends_one_of_n_and_the_request_only_with_the_last() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(stops=((8, 9),), temperature=0.7, n=2))
    handle = llm.handles[0]
    handle.emit([8, 9, 3], index=0)
    assert await stream.next() == TokenDelta((), 3, 0, FinishReason.STOP, index=0)
    assert handle.aborted == 0  # sequence 1 runs on; a request aborts as a whole
    handle.emit([4, 5], index=0)  # sequence 0 runs on in TensorRT-LLM, unread
    handle.emit([6], index=1)
    assert await stream.next() == TokenDelta((6,), 3, 1, index=1)
    handle.emit([6, 8, 9], index=1)
    assert await stream.next() == TokenDelta((), 3, 1, FinishReason.STOP, index=1)
    assert handle.aborted == 1
    with pytest.raises(StopAsyncIteration):
        await stream.next()
    assert engine.stats().finished == {"stop": 2}


async def test_closing_an_n_stream_early_aborts_the_request_once() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(temperature=0.7, n=3))
    handle = llm.handles[0]
    handle.emit([5], "length", index=2)
    assert (await stream.next()).finish_reason is FinishReason.LENGTH
    await stream.aclose()
    assert handle.aborted == 1
    stats = engine.stats()
    assert stats.active == 0
    assert stats.finished == {"length": 1, "cancelled": 2}


async def test_abort_cancels_every_unfinished_sequence() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request(request_id="x", temperature=0.7, n=2))
    llm.handles[0].emit([5], index=1)
    assert await stream.next() == TokenDelta((5,), 3, 1, index=1)
    await engine.abort("x")
    finals = [await stream.next(), await stream.next()]
    assert finals == [
        TokenDelta((), 3, 0, FinishReason.CANCELLED, index=0),
        TokenDelta((), 3, 1, FinishReason.CANCELLED, index=1),
    ]
    with pytest.raises(StopAsyncIteration):
        await stream.next()
    assert engine.stats().finished == {"cancelled": 2}


async def test_overload_beyond_batch_plus_queue() -> None:
    llm = FakeLLM()
    engine = await started(llm, max_batch_size=1, max_queue=1, collect_iteration_stats=False)
    first = await submit(engine, make_request(request_id="a"))
    await submit(engine, make_request(request_id="b"))
    stats = engine.stats()
    assert (stats.active, stats.waiting, stats.max_active) == (1, 1, 1)
    with pytest.raises(EngineOverloadedError, match="engine queue is full: 1 sequences waiting"):
        await refused(engine, make_request(request_id="c"))
    assert len(llm.handles) == 2
    llm.handles[0].emit([1], "length")
    assert (await first.next()).finish_reason is FinishReason.LENGTH
    await submit(engine, make_request(request_id="c"))
    assert len(llm.handles) == 3


async def test_zero_queue_admits_only_the_batch() -> None:
    llm = FakeLLM()
    engine = await started(llm, max_batch_size=2, max_queue=0, collect_iteration_stats=False)
    await submit(engine, make_request(request_id="a"))
    await submit(engine, make_request(request_id="b"))
    with pytest.raises(EngineOverloadedError):
        await refused(engine, make_request(request_id="c"))


async def test_admission_counts_each_of_the_n_sequences() -> None:
    llm = FakeLLM()
    engine = await started(llm, max_batch_size=2, max_queue=1, collect_iteration_stats=False)
    first = await submit(engine, make_request(request_id="a", temperature=0.7, n=2))
    with pytest.raises(EngineOverloadedError, match="0 sequences waiting"):
        await refused(engine, make_request(request_id="b", temperature=0.7, n=2))
    await submit(engine, make_request(request_id="c"))  # 3 = batch 2 + queue 1
    stats = engine.stats()
    assert (stats.active, stats.waiting) == (2, 1)
    with pytest.raises(EngineOverloadedError, match="1 sequences waiting"):
        await refused(engine, make_request(request_id="d"))
    llm.handles[0].emit([1], "length", index=0)
    assert (await first.next()).finish_reason is FinishReason.LENGTH
    await submit(engine, make_request(request_id="d"))  # sequence 0 of "a" freed a place
    assert len(llm.handles) == 3


async def test_n_beyond_the_batch_is_an_invalid_request() -> None:
    llm = FakeLLM()
    engine = await started(llm, max_batch_size=2, max_queue=8, collect_iteration_stats=False)
    with pytest.raises(
        InvalidRequestError, match="num_return_sequences is 3, exceeds the engine's 2"
    ) as caught:
        await refused(engine, make_request(temperature=0.7, n=3))
    assert caught.value.field == "num_return_sequences"
    assert llm.calls == []


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"prompt": tuple(range(17))}, "prompt has 17 tokens, exceeds the limit of 16"),
        (
            {"prompt": tuple(range(16)), "max_tokens": 17},
            "prompt tokens \\+ max_tokens = 16 \\+ 17 = 33 exceeds the sequence limit of 32",
        ),
    ],
)
async def test_length_limits(request_args: dict[str, Any], message: str) -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError, match=message):
        await refused(engine, make_request(**request_args))
    assert llm.calls == []


async def test_duplicate_request_id_is_rejected() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    await submit(engine, make_request(request_id="same"))
    with pytest.raises(InvalidRequestError, match="already in flight"):
        await refused(engine, make_request(request_id="same"))


async def test_multi_token_bad_words_are_rejected_before_submission() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError, match=r"^bad_words"):
        await refused(engine, make_request(bad=((1, 2),)))
    assert llm.calls == []
    assert engine.stats().active == 0


async def test_llm_api_value_error_is_an_invalid_request() -> None:
    llm = FakeLLM()
    llm.reject = ValueError("max_tokens too large for the engine")
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError, match="rejected the request's parameters"):
        await refused(engine, make_request())
    assert engine.stats().active == 0


async def test_engine_failure_mid_stream_is_an_engine_error() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request())
    llm.handles[0].fail(RuntimeError("executor died"))
    with pytest.raises(EngineError, match="the TensorRT-LLM request failed"):
        await stream.next()
    stats = engine.stats()
    assert stats.active == 0
    assert stats.finished == {}


async def test_iteration_stats_refine_the_figures() -> None:
    llm = FakeLLM()
    llm.stats_items = [
        {
            "numActiveRequests": 1,
            "inflightBatchingStats": {"numScheduledRequests": 1, "numContextRequests": 1},
        },
        '{"numActiveRequests": 1, "inflightBatchingStats": {"numScheduledRequests": 1}}',
    ]
    engine = await started(llm, max_batch_size=4)
    await submit(engine, make_request(request_id="a"))
    await submit(engine, make_request(request_id="b"))
    async with asyncio.timeout(10):
        await llm.stats_drained.wait()
    stats = engine.stats()
    # The executor runs one of our two sequences; the other waits in its queue.
    assert (stats.active, stats.waiting) == (1, 1)
    assert (stats.steps, stats.step_sequences, stats.peak_step_batch) == (2, 2, 1)
    assert (stats.scheduled, stats.context) == (1, 0)
    await engine.shutdown()


async def test_shutdown_aborts_everything_and_stops() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request())
    await engine.shutdown()
    assert llm.handles[0].aborted
    assert llm.shut_down
    assert (await stream.next()).finish_reason is FinishReason.CANCELLED
    with pytest.raises(EngineStoppedError):
        await refused(engine, make_request(request_id="later"))


# -- vocabulary and health -------------------------------------------------------------


async def test_the_model_config_bounds_ids_before_the_tokenizer(tmp_path: Path) -> None:
    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 128}))
    llm = FakeLLM()
    engine = TrtLlmEngine(
        settings(model_path=str(model)), 4, llm_factory=lambda: llm, sampling_params_factory=dict
    )
    await engine.start()
    assert engine.vocab_size == 128


async def test_without_a_vocabulary_size_the_engine_does_not_start() -> None:
    llm = FakeLLM()
    del llm.tokenizer
    with pytest.raises(EngineStoppedError, match="cannot tell the vocabulary size"):
        await started(llm)
    assert llm.shut_down


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("input_ids", {"prompt": (1, FAKE_VOCAB)}),
        ("stop_words", {"stops": ((7, FAKE_VOCAB + 1),)}),
        ("bad_words", {"bad": ((999999,),)}),
        ("end_id", {"end_id": -5}),
    ],
)
async def test_an_id_outside_the_vocabulary_never_reaches_tensorrt_llm(
    field: str, fields: dict[str, Any]
) -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError) as info:
        await refused(engine, make_request(**fields))
    error = info.value.model_error()
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, field)
    assert error.values["limit"] == FAKE_VOCAB
    assert llm.calls == []
    stream = await submit(engine, make_request(request_id="next"))
    llm.handles[0].emit([5], "length")
    assert (await stream.next()).token_ids == (5,)
    assert engine.health().ok


async def test_requests_failing_one_after_another_make_it_unhealthy_until_one_succeeds() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    assert engine.health().ok
    for i in range(3):
        stream = await submit(engine, make_request(request_id=f"f{i}"))
        llm.handles[-1].fail(RuntimeError("executor died"))
        with pytest.raises(EngineError):
            await stream.next()
    health = engine.health()
    assert not health.ok
    assert (
        health.reason
        == "the last 3 TensorRT-LLM requests failed (last: a request failed: RuntimeError)"
    )
    stream = await submit(engine, make_request(request_id="ok"))
    llm.handles[-1].emit([5], "length")
    await stream.next()
    assert engine.health().ok


async def test_a_dead_executor_makes_the_engine_unhealthy_for_good() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    llm._executor = types.SimpleNamespace(check_health=lambda: False)  # type: ignore[attr-defined]
    health = engine.health()
    assert (health.ok, health.reason) == (
        False,
        "the TensorRT-LLM executor hit a fatal error or is shutting down",
    )
    await engine.shutdown()
    assert engine.health() == engine.health()  # stable
    assert not engine.health().ok


# -- the engine's own figures: KV cache blocks, cached and computed prompt tokens -------


async def test_kv_cache_figures_come_from_the_engines_iteration_stats() -> None:
    llm = FakeLLM()
    kv = {"maxNumBlocks": 100, "freeNumBlocks": 93, "usedNumBlocks": 7, "tokensPerBlock": 32}
    llm.stats_items = [
        iteration_stats(
            kv=kv,
            batching={"numScheduledRequests": 1, "numContextRequests": 1},
            numActiveRequests=1,
        )
    ]
    engine = await started(llm)
    await submit(engine, make_request())
    async with asyncio.timeout(10):
        await llm.stats_drained.wait()
    stats = engine.stats()
    # What nv_trt_llm_kv_cache_block_metrics reports: 100 blocks of 32, 7 used, 93 free.
    assert (stats.block_tokens, stats.kv_cache_tokens, stats.kv_reserved_tokens) == (
        32,
        3200,
        224,
    )
    assert stats.prefix_cache_tokens == 0
    await engine.shutdown()


async def test_prompt_tokens_count_as_cached_or_computed_once_per_request() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    first = await submit(engine, make_request("a", prompt=(1, 2, 3, 4), temperature=0.7, n=2))
    llm.handles[0].emit([5], cached=3, index=0)
    await first.next()
    llm.handles[0].emit([5, 6], "length", index=0)
    llm.handles[0].emit([7], "length", index=1)
    ended = 0
    while ended < 2:
        ended += (await first.next()).finished
    second = await submit(engine, make_request("b", prompt=(1, 2)))
    llm.handles[1].emit([9], "stop")
    await second.next()
    third = await submit(engine, make_request("c", prompt=(1, 2, 3)))
    await engine.abort("c")  # cancelled while queued: its prompt was never computed
    assert (await third.next()).finish_reason is FinishReason.CANCELLED
    stats = engine.stats()
    assert (stats.prompt_tokens_cached, stats.prompt_tokens_computed) == (3, 1 + 2)


# -- the LLM API's own refusals ----------------------------------------------------------


@pytest.mark.parametrize("error", [ValueError("bad"), FakeRequestError("prompt too long")])
async def test_the_llm_apis_refusal_at_submission_is_an_invalid_request(
    error: Exception,
) -> None:
    llm = FakeLLM()
    llm.reject = error
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError, match="rejected the request's parameters"):
        await refused(engine, make_request())
    assert engine.health().ok


async def test_a_request_error_before_any_output_is_an_invalid_request() -> None:
    # Newer releases refuse a request the executor cannot take (a prompt over
    # max_num_tokens without chunked prefill) with RequestError from the result stream.
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request())
    llm.handles[0].fail(FakeRequestError("prompt length exceeds max_num_tokens"))
    with pytest.raises(InvalidRequestError, match="refused the request's parameters"):
        await stream.next()
    assert engine.stats().active == 0
    assert engine.health().ok


async def test_a_request_error_after_outputs_is_an_engine_error() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    stream = await submit(engine, make_request())
    llm.handles[0].emit([5])
    await stream.next()
    llm.handles[0].fail(FakeRequestError("executor lost the request"))
    with pytest.raises(EngineError) as caught:
        await stream.next()
    assert not isinstance(caught.value, InvalidRequestError)


async def test_a_prompt_over_the_input_limit_is_prompt_too_long() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError) as caught:
        await refused(engine, make_request(prompt=tuple(range(1, 18))))  # limit 16
    error = caught.value.model_error()
    assert (error.code, error.values) == (ErrorCode.PROMPT_TOO_LONG, {"tokens": 17, "limit": 16})
    assert llm.calls == []


# -- what the pinned release cannot do never reaches it ----------------------------------


@pytest.mark.parametrize(
    ("request_args", "field"),
    [
        ({"repetition_penalty": 1.3}, "repetition_penalty"),
        ({"temperature": 0.9, "seed": 1}, "seed"),
        ({"bad": ((4,),)}, "bad_words"),
    ],
)
async def test_settings_the_release_would_ignore_are_refused_before_submission(
    request_args: dict[str, Any], field: str
) -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError) as caught:
        await refused(engine, make_request(**request_args))
    assert caught.value.field == field
    assert llm.calls == []
    assert engine.stats().active == 0


async def test_several_sequences_on_an_older_release_are_refused() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False, version="1.0.0")
    with pytest.raises(InvalidRequestError) as caught:
        await refused(engine, make_request(temperature=0.8, n=2))
    assert caught.value.field == "num_return_sequences"
    assert llm.calls == []


async def test_a_client_end_id_reaches_the_llm_as_a_stop_token() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    await submit(engine, make_request(end_id=9))
    params = llm.calls[0]["params"]
    assert params.end_id is None  # the LLM API sets up the model's own end tokens
    assert 9 in FakeLLM.stop_tokens(params)
