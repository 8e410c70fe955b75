"""Unit tests of the TensorRT-LLM adapter: request mapping, delta assembly, admission, abort.

TensorRT-LLM needs an NVIDIA GPU and its CUDA wheels, so it cannot run on the machines
these tests run on. The engine tests therefore inject a fake of the LLM API object
(`generate_async` returning a streamed `RequestOutput`, `abort()`, `get_stats_async`,
`shutdown`) shaped after tensorrt_llm 1.0's `llmapi/llm.py` and `executor/result.py`:
one output object, updated in place, holding one `CompletionOutput` per sequence (`index`,
cumulative `token_ids` and `logprobs`, a dict token id -> Logprob per token), finished once
every sequence has ended, and whose `cached_tokens` says how many prompt tokens came from
the KV cache. Loading is tested
against a fake `tensorrt_llm` package: `LLM` (PyTorch backend), `_tensorrt_engine.LLM`
(TensorRT backend), `llmapi.KvCacheConfig` and `sampling_params.GuidedDecodingParams`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from llm_stack.engine.base import (
    EngineError,
    EngineOverloadedError,
    EngineStoppedError,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
)
from llm_stack.engine.factory import create_engine
from llm_stack.engine.trtllm_engine import (
    UNKNOWN_LOGPROB,
    IterationFigures,
    StopSequenceFilter,
    TrtLlmEngine,
    config_vocab_size,
    delta_from_output,
    engine_sequences,
    executor_failure,
    guided_decoding_kwargs,
    is_engine_dir,
    to_sampling_kwargs,
    token_logprob,
)
from llm_stack.guided_decoding import Guide, GuideType
from llm_stack.model_config import ModelConfigError
from llm_stack.model_errors import ErrorCode
from llm_stack.model_repository_config import model_parameters

REPO_ROOT = Path(__file__).resolve().parents[3]


def make_request(
    request_id: str = "r1",
    prompt: tuple[int, ...] = (1, 2, 3),
    stops: tuple[tuple[int, ...], ...] = (),
    bad: tuple[tuple[int, ...], ...] = (),
    end_id: int | None = None,
    guide: Guide | None = None,
    **sampling: Any,
) -> GenerationRequest:
    sampling.setdefault("max_tokens", 8)
    return GenerationRequest(
        request_id=request_id,
        prompt_ids=prompt,
        sampling=SamplingParams(**sampling),
        stop_sequences=stops,
        bad_sequences=bad,
        end_id=end_id,
        guide=guide,
    )


# -- fakes of the LLM API ---------------------------------------------------------------


@dataclass
class FakeLogprob:
    """`tensorrt_llm.executor.result.Logprob`."""

    logprob: float
    rank: int | None = None


LogprobEntries = list[dict[int, FakeLogprob]] | list[float]


@dataclass
class FakeCompletion:
    token_ids: list[int] | None = field(default_factory=list)
    finish_reason: str | None = None
    index: int = 0
    logprobs: LogprobEntries | None = field(default_factory=list)


@dataclass
class State:
    """One streamed update of sequence `index` (cumulative, like the LLM API's)."""

    token_ids: list[int]
    reason: str | None = None
    cached: int | None = None
    index: int = 0
    logprobs: LogprobEntries | None = None
    finished: bool | None = None  # None: once every sequence has a finish reason


class FakeRequestOutput:
    """A streamed RequestOutput of n sequences: the test pushes cumulative states of one
    sequence at a time, abort() cancels every unfinished one."""

    def __init__(self, n: int = 1) -> None:
        self.outputs = [FakeCompletion(index=i) for i in range(n)]
        self.finished = False
        self.aborted = 0
        self.cached_tokens = 0  # set from each response that carries it
        self._states: asyncio.Queue[State | BaseException] = asyncio.Queue()

    def emit(
        self,
        token_ids: list[int],
        finish_reason: str | None = None,
        cached: int | None = None,
        *,
        index: int = 0,
        logprobs: LogprobEntries | None = None,
        finished: bool | None = None,
    ) -> None:
        self._states.put_nowait(State(token_ids, finish_reason, cached, index, logprobs, finished))

    def fail(self, error: BaseException) -> None:
        self._states.put_nowait(error)

    def abort(self) -> None:
        self.aborted += 1
        for output in self.outputs:
            if output.finish_reason is None:
                self.emit(list(output.token_ids or []), "cancelled", index=output.index)

    def __aiter__(self) -> FakeRequestOutput:
        return self

    async def __anext__(self) -> FakeRequestOutput:
        if self.finished:
            raise StopAsyncIteration
        state = await self._states.get()
        if isinstance(state, BaseException):
            raise state
        output = self.outputs[state.index]
        output.token_ids = state.token_ids
        output.finish_reason = state.reason
        if state.logprobs is not None:
            output.logprobs = state.logprobs
        if state.cached is not None:
            self.cached_tokens = state.cached
        self.finished = (
            all(o.finish_reason for o in self.outputs) if state.finished is None else state.finished
        )
        return self


FAKE_VOCAB = 32000


class FakeTokenizer:
    """The LLM API's `TransformersTokenizer`: Hugging Face's tokenizer inside."""

    def __init__(self, size: int) -> None:
        self.tokenizer = [f"t{i}" for i in range(size)]


class FakeLLM:
    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer(FAKE_VOCAB)
        self.calls: list[dict[str, Any]] = []
        self.handles: list[FakeRequestOutput] = []
        self.stats_items: list[Any] = []
        self.stats_drained = asyncio.Event()
        self.reject: Exception | None = None
        self.shut_down = False

    def generate_async(
        self, inputs: list[int], sampling_params: Any = None, streaming: bool = False
    ) -> FakeRequestOutput:
        if self.reject is not None:
            raise self.reject
        self.calls.append({"inputs": inputs, "params": sampling_params, "streaming": streaming})
        handle = FakeRequestOutput(sampling_params.get("n", 1))
        self.handles.append(handle)
        return handle

    def get_stats_async(self, timeout: float) -> AsyncIterator[Any]:
        async def items() -> AsyncIterator[Any]:
            while self.stats_items:
                yield self.stats_items.pop(0)
            self.stats_drained.set()  # after the consumer took the last item

        return items()

    def shutdown(self) -> None:
        self.shut_down = True


def sampling_params_dict(**kwargs: Any) -> dict[str, Any]:
    return kwargs


async def started(
    llm: FakeLLM, max_batch_size: int = 4, max_queue: int = 4, **kwargs: Any
) -> TrtLlmEngine:
    engine = TrtLlmEngine(
        model_path="/models/tiny",
        max_batch_size=max_batch_size,
        max_queue=max_queue,
        max_input_len=16,
        max_seq_len=32,
        llm_factory=lambda: llm,
        sampling_params_factory=sampling_params_dict,
        **kwargs,
    )
    await engine.start()
    return engine


class Stream:
    """One generation as the model consumes it; `submit` gets the request into the engine."""

    def __init__(self, engine: TrtLlmEngine, request: GenerationRequest) -> None:
        self.deltas = engine.generate(request)
        self._first: asyncio.Future[TokenDelta] | None = None

    async def next(self) -> TokenDelta:
        """The next delta; a test expecting one the engine never sends fails, not hangs."""
        first, self._first = self._first, None
        async with asyncio.timeout(5):
            return await (first if first is not None else anext(self.deltas))

    async def aclose(self) -> None:
        await self.deltas.aclose()


open_streams: list[Stream] = []


async def submit(engine: TrtLlmEngine, request: GenerationRequest) -> Stream:
    """Start a generation and return once the request is in the engine."""
    stream = Stream(engine, request)
    # generate() submits on its first step, then waits for the engine's first output.
    stream._first = asyncio.ensure_future(anext(stream.deltas))
    await asyncio.sleep(0)
    open_streams.append(stream)
    return stream


@pytest.fixture(autouse=True)
def _cancel_open_streams() -> Iterator[None]:
    yield
    for stream in open_streams:
        if stream._first is not None:
            stream._first.cancel()
    open_streams.clear()


# -- to_sampling_kwargs -----------------------------------------------------------------


def test_sampling_maps_every_field() -> None:
    request = make_request(
        max_tokens=20,
        temperature=0.7,
        top_k=40,
        top_p=0.9,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
        min_tokens=3,
        seed=2**64 - 1,
        end_id=2,
        stops=((7,), (9,), (7,), (4, 5)),
        bad=((11,), (10,)),
    )
    assert to_sampling_kwargs(request) == {
        "max_tokens": 20,
        "detokenize": False,
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "seed": 2**64 - 1,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "min_tokens": 3,
        "end_id": 2,
        "pad_id": 2,
        "stop_token_ids": [7, 9],
        "bad_token_ids": [10, 11],
    }


def test_sampling_defaults_leave_runtime_defaults_unset() -> None:
    # top_k 0 (no cut) and neutral penalties stay unset; top_p is always set, because
    # all of top_k, top_p and temperature unset would mean greedy to the runtime.
    assert to_sampling_kwargs(make_request(max_tokens=5)) == {
        "max_tokens": 5,
        "detokenize": False,
        "temperature": 1.0,
        "top_p": 1.0,
    }


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 0.0},
        {"temperature": 0.0, "top_p": 0.5, "top_k": 50, "seed": 3},
        {"top_k": 1},
    ],
)
def test_greedy_is_top_k_one_without_temperature(sampling: dict[str, Any]) -> None:
    kwargs = to_sampling_kwargs(make_request(**sampling))
    assert kwargs["top_k"] == 1
    assert "temperature" not in kwargs
    assert "top_p" not in kwargs
    assert "seed" not in kwargs


def test_penalties_apply_to_greedy_too() -> None:
    kwargs = to_sampling_kwargs(make_request(temperature=0.0, repetition_penalty=1.3))
    assert kwargs["repetition_penalty"] == 1.3


def test_multi_token_stops_are_left_to_the_stream_filter() -> None:
    kwargs = to_sampling_kwargs(make_request(stops=((4, 5), (6, 7, 8))))
    assert "stop_token_ids" not in kwargs
    assert "stop" not in kwargs


def test_multi_token_bad_words_are_rejected_naming_the_field() -> None:
    with pytest.raises(InvalidRequestError, match=r"^bad_words: .*longest to 3"):
        to_sampling_kwargs(make_request(bad=((5,), (1, 2, 3))))


def test_n_and_logprobs_map_to_sampling_params() -> None:
    request = make_request(max_tokens=6, temperature=0.8, seed=7, n=3, logprobs=5)
    assert to_sampling_kwargs(request) == {
        "max_tokens": 6,
        "detokenize": False,
        "temperature": 0.8,
        "top_p": 1.0,
        "seed": 7,  # the runtime seeds sequence i with seed + i
        "n": 3,  # best_of stays unset: the LLM API makes it n, keeping each output's index
        "logprobs": 5,
    }


@pytest.mark.parametrize(("asked", "sent"), [(None, None), (0, 1), (1, 1), (20, 20)])
def test_logprobs_zero_asks_for_one_alternative(asked: int | None, sent: int | None) -> None:
    # TensorRT-LLM 1.0 turns logprobs on with bool(logprobs): 0 would mean off.
    kwargs = to_sampling_kwargs(make_request(temperature=0.5, logprobs=asked))
    assert kwargs.get("logprobs") == sent


def test_one_sequence_leaves_n_unset() -> None:
    assert "n" not in to_sampling_kwargs(make_request(temperature=0.5, n=1))


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"top_k": 1, "temperature": 0.7}])
def test_greedy_n_asks_for_one_sequence(sampling: dict[str, Any]) -> None:
    # The LLM API refuses greedy decoding with best_of > 1; the n would all be equal.
    request = make_request(n=4, **sampling)
    assert engine_sequences(request.sampling) == 1
    assert "n" not in to_sampling_kwargs(request)
    assert engine_sequences(make_request(n=4, temperature=0.7).sampling) == 4


# -- delta_from_output ------------------------------------------------------------------


@dataclass
class Output:
    outputs: list[FakeCompletion]
    finished: bool = False


def out(token_ids: list[int], reason: str | None = None, finished: bool | None = None) -> Output:
    done = reason is not None if finished is None else finished
    return Output([FakeCompletion(token_ids, reason)], done)


def test_deltas_over_cumulative_outputs() -> None:
    states = [out([]), out([5]), out([5, 6, 7]), out([5, 6, 7]), out([5, 6, 7, 8], "length")]
    received = 0
    deltas = []
    for state in states:
        delta = delta_from_output(received, state, num_input_tokens=3)
        received = delta.num_output_tokens
        deltas.append(delta)
    assert [d.token_ids for d in deltas] == [(), (5,), (6, 7), (), (8,)]
    assert [d.num_output_tokens for d in deltas] == [0, 1, 3, 3, 4]
    assert [d.finish_reason for d in deltas] == [None, None, None, None, FinishReason.LENGTH]
    assert all(d.num_input_tokens == 3 for d in deltas)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("cancelled", FinishReason.CANCELLED),
        ("timeout", FinishReason.CANCELLED),
    ],
)
def test_finish_reasons(reason: str, expected: FinishReason) -> None:
    delta = delta_from_output(2, out([1, 2, 3], reason), num_input_tokens=4)
    assert delta.finish_reason is expected
    assert delta.token_ids == (3,)


def test_stop_token_cut_from_the_final_output_gives_no_tokens() -> None:
    # The LLM API removes the stop token from token_ids in the final output.
    delta = delta_from_output(3, out([1, 2, 3], "stop"), num_input_tokens=1)
    assert delta.token_ids == ()
    assert delta.num_output_tokens == 3
    assert delta.finish_reason is FinishReason.STOP


def test_finished_without_reason_is_cancelled() -> None:
    delta = delta_from_output(0, out([1], None, finished=True), num_input_tokens=1)
    assert delta.finish_reason is FinishReason.CANCELLED


@dataclass
class CachedOutput(Output):
    cached_tokens: int | None = 0


def test_cached_tokens_are_the_largest_reported_and_zero_without_the_field() -> None:
    first = delta_from_output(0, CachedOutput([FakeCompletion([5])], cached_tokens=64), 100)
    assert first.num_cached_tokens == 64
    unset = CachedOutput([FakeCompletion([5, 6])], cached_tokens=None)
    assert delta_from_output(1, unset, 100, previous_cached=64).num_cached_tokens == 64
    assert (
        delta_from_output(1, CachedOutput([FakeCompletion([5, 6])]), 100, 64).num_cached_tokens
        == 64
    )
    # An LLM API without RequestOutput.cached_tokens (older versions) reports none.
    assert delta_from_output(0, out([5]), num_input_tokens=100).num_cached_tokens == 0


def test_missing_token_ids_read_as_none_yet() -> None:
    delta = delta_from_output(0, Output([FakeCompletion(None, None)]), num_input_tokens=1)
    assert delta.token_ids == ()
    assert not delta.finished


def lp(**values: float) -> dict[int, FakeLogprob]:
    """A TokenLogprobs entry from t<id>=<logprob> pairs."""
    return {int(name[1:]): FakeLogprob(value) for name, value in values.items()}


def test_deltas_follow_the_output_of_their_index() -> None:
    state = Output(
        [FakeCompletion([1, 2], None, index=0), FakeCompletion([7, 8, 9], "length", index=1)]
    )
    first = delta_from_output(1, state, num_input_tokens=3, index=0)
    second = delta_from_output(1, state, num_input_tokens=3, index=1)
    assert first == TokenDelta((2,), 3, 2, index=0)
    assert second == TokenDelta((8, 9), 3, 3, FinishReason.LENGTH, index=1)


def test_an_index_without_output_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="no output of index 2"):
        delta_from_output(0, Output([FakeCompletion([1], index=0)]), 1, index=2)


def test_logprobs_map_each_token_with_its_likeliest_alternatives() -> None:
    entries: LogprobEntries = [
        lp(t5=-0.5, t6=-1.5, t7=-2.5),  # sampled 5, the likeliest
        lp(t9=-0.2, t4=-3.0, t6=-1.0),  # sampled 4, not among the 2 likeliest
    ]
    state = Output([FakeCompletion([5, 4], None, logprobs=entries)])
    delta = delta_from_output(0, state, num_input_tokens=1, logprobs=2)
    assert delta.token_ids == (5, 4)
    assert delta.logprobs == (
        TokenLogprob(-0.5, ((5, -0.5), (6, -1.5))),
        TokenLogprob(-3.0, ((9, -0.2), (6, -1.0))),
    )
    # Only what is new: the second token's entry.
    assert delta_from_output(1, state, 1, logprobs=2).logprobs == delta.logprobs[1:]
    # Not asked for: none, whatever the output holds.
    assert delta_from_output(0, state, 1).logprobs == ()


def test_zero_alternatives_keep_only_the_sampled_tokens_logprob() -> None:
    state = Output([FakeCompletion([5], None, logprobs=[lp(t5=-0.25, t3=-0.1)])])
    assert delta_from_output(0, state, 1, logprobs=0).logprobs == (TokenLogprob(-0.25),)


def test_logprobs_read_by_position_past_a_stop_token_cut() -> None:
    # The LLM API cuts a stop token from token_ids in the final output, not from logprobs.
    entries: LogprobEntries = [lp(t1=-0.1), lp(t2=-0.2), lp(t7=-0.3)]
    state = Output([FakeCompletion([1, 2], "stop", logprobs=entries)], finished=True)
    delta = delta_from_output(1, state, 1, logprobs=1)
    assert delta.token_ids == (2,)
    assert delta.logprobs == (TokenLogprob(-0.2, ((2, -0.2),)),)


def test_logprobs_tensorrt_llm_did_not_give_read_unknown() -> None:
    entries: LogprobEntries = [-0.75]  # a plain float: the sampled token's only
    state = Output([FakeCompletion([5, 6], None, logprobs=entries)])
    assert delta_from_output(0, state, 1, logprobs=3).logprobs == (
        TokenLogprob(-0.75),
        TokenLogprob(UNKNOWN_LOGPROB),  # no entry for the second token
    )


def test_token_logprob_raises_minus_infinity_and_a_missing_sampled_token() -> None:
    entry = {3: FakeLogprob(float("-inf")), 1: FakeLogprob(-1.0), 2: FakeLogprob(-1.0)}
    # Ties: the lower id first; -inf is no JSON number.
    assert token_logprob(3, entry, 5) == TokenLogprob(
        UNKNOWN_LOGPROB, ((1, -1.0), (2, -1.0), (3, UNKNOWN_LOGPROB))
    )
    # Top-k-only dicts (some versions) may lack the sampled token.
    assert token_logprob(8, entry, 1) == TokenLogprob(UNKNOWN_LOGPROB, ((1, -1.0),))
    assert token_logprob(8, None, 1) == TokenLogprob(UNKNOWN_LOGPROB)


def test_a_sequence_that_ended_before_the_others_ends_with_the_request() -> None:
    # The LLM API gives a sequence its finish reason only in the request's final response:
    # here sequence 1's. Sequence 0 ended earlier, short of max_tokens (4): an end token.
    state = Output(
        [FakeCompletion([5, 6], None, index=0), FakeCompletion([6, 6, 6, 6], None, index=1)],
        finished=True,
    )
    assert delta_from_output(2, state, 3, index=0, max_tokens=4) == TokenDelta(
        (), 3, 2, FinishReason.STOP, index=0
    )
    assert delta_from_output(3, state, 3, index=1, max_tokens=4) == TokenDelta(
        (6,), 3, 4, FinishReason.LENGTH, index=1
    )
    # Without max_tokens (one sequence), an output ending unexplained is cancelled.
    assert delta_from_output(2, state, 3, index=0).finish_reason is FinishReason.CANCELLED
    running = Output([FakeCompletion([5, 6], None)], finished=False)
    assert not delta_from_output(1, running, 3, max_tokens=2).finished


# -- StopSequenceFilter -----------------------------------------------------------------


def raw(tokens: tuple[int, ...], finish: FinishReason | None = None) -> TokenDelta:
    return TokenDelta(tokens, num_input_tokens=2, num_output_tokens=0, finish_reason=finish)


def test_filter_holds_back_a_possible_stop_and_cuts_it() -> None:
    stops = StopSequenceFilter([(7, 8, 9), (4,)])
    assert stops.push(raw((1, 7))) == TokenDelta((1,), 2, 1)
    assert stops.push(raw((8,))) is None
    final = stops.push(raw((9, 10)))
    assert final == TokenDelta((), 2, 1, FinishReason.STOP)


def test_filter_releases_a_prefix_that_did_not_become_a_stop() -> None:
    stops = StopSequenceFilter([(7, 8)])
    assert stops.push(raw((7,))) is None
    assert stops.push(raw((7,))) == TokenDelta((7,), 2, 1)
    assert stops.push(raw((5,))) == TokenDelta((7, 5), 2, 3)


def test_filter_flushes_held_tokens_when_the_engine_finishes() -> None:
    stops = StopSequenceFilter([(7, 8)])
    assert stops.push(raw((3, 7))) == TokenDelta((3,), 2, 1)
    assert stops.push(raw((), FinishReason.LENGTH)) == TokenDelta((7,), 2, 2, FinishReason.LENGTH)


def test_filter_keeps_the_cached_token_count() -> None:
    stops = StopSequenceFilter([(7, 8)])
    delta = TokenDelta((3, 7), 2, 0, num_cached_tokens=32)
    assert stops.push(delta) == TokenDelta((3,), 2, 1, num_cached_tokens=32)


def test_filter_without_multi_token_stops_passes_deltas_through() -> None:
    stops = StopSequenceFilter([(4,)])
    assert stops.push(raw((4, 4))) == TokenDelta((4, 4), 2, 2)
    assert stops.push(raw(())) is None


def lps(*values: float) -> tuple[TokenLogprob, ...]:
    return tuple(TokenLogprob(v) for v in values)


def with_logprobs(tokens: tuple[int, ...], *values: float, index: int = 0) -> TokenDelta:
    return TokenDelta(tokens, 2, 0, index=index, logprobs=lps(*values))


def test_filter_holds_back_and_cuts_logprobs_with_their_tokens() -> None:
    stops = StopSequenceFilter([(7, 8, 9)])
    assert stops.push(with_logprobs((1, 7), -0.1, -0.7)) == TokenDelta(
        (1,), 2, 1, logprobs=lps(-0.1)
    )
    assert stops.push(with_logprobs((8,), -0.8)) is None
    final = stops.push(with_logprobs((9, 10), -0.9, -1.0))
    assert final == TokenDelta((), 2, 1, FinishReason.STOP)


def test_filter_releases_held_logprobs_with_their_tokens() -> None:
    stops = StopSequenceFilter([(7, 8)])
    assert stops.push(with_logprobs((3, 7), -0.3, -0.7)) == TokenDelta(
        (3,), 2, 1, logprobs=lps(-0.3)
    )
    assert stops.push(with_logprobs((5,), -0.5)) == TokenDelta(
        (7, 5), 2, 3, logprobs=lps(-0.7, -0.5)
    )
    flushed = stops.push(with_logprobs((7,), -0.71))
    assert flushed is None
    last = stops.push(TokenDelta((), 2, 0, FinishReason.LENGTH))
    assert last == TokenDelta((7,), 2, 4, FinishReason.LENGTH, logprobs=lps(-0.71))


def test_filter_keeps_the_sequence_index() -> None:
    stops = StopSequenceFilter([(7, 8)])
    assert stops.push(with_logprobs((4,), -0.4, index=2)) == TokenDelta(
        (4,), 2, 1, index=2, logprobs=lps(-0.4)
    )


# -- IterationFigures -------------------------------------------------------------------


def test_iteration_figures_fold_dicts_and_json() -> None:
    figures = IterationFigures()
    figures.add(
        {
            "iter": 0,
            "numActiveRequests": 3,
            "inflightBatchingStats": {"numScheduledRequests": 3, "numContextRequests": 2},
        }
    )
    figures.add(
        '{"iter": 1, "numActiveRequests": 5, "inflightBatchingStats": '
        '{"numScheduledRequests": 4, "numContextRequests": 0}}'
    )
    figures.add({"iter": 2, "numActiveRequests": 0, "inflightBatchingStats": {}})
    assert figures == IterationFigures(
        seen=True, active=0, context=0, scheduled=0, steps=2, step_sequences=7, peak_step_batch=4
    )


# -- the engine -------------------------------------------------------------------------


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
    assert llm.calls[0]["params"]["stop_token_ids"] == [7]
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
        await anext(engine.generate(make_request(request_id="c")))
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
        await anext(engine.generate(make_request(request_id="c")))


async def refused(engine: TrtLlmEngine, request: GenerationRequest) -> TokenDelta:
    """generate()'s first step, which should raise; a failure rather than a wait if not."""
    async with asyncio.timeout(5):
        return await anext(engine.generate(request))


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
        await anext(engine.generate(make_request(**request_args)))
    assert llm.calls == []


async def test_duplicate_request_id_is_rejected() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    await submit(engine, make_request(request_id="same"))
    with pytest.raises(InvalidRequestError, match="already in flight"):
        await anext(engine.generate(make_request(request_id="same")))


async def test_multi_token_bad_words_are_rejected_before_submission() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError, match=r"^bad_words"):
        await anext(engine.generate(make_request(bad=((1, 2),))))
    assert llm.calls == []
    assert engine.stats().active == 0


async def test_llm_api_value_error_is_an_invalid_request() -> None:
    llm = FakeLLM()
    llm.reject = ValueError("max_tokens too large for the engine")
    engine = await started(llm, collect_iteration_stats=False)
    with pytest.raises(InvalidRequestError, match="rejected the request's parameters"):
        await anext(engine.generate(make_request()))
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


async def test_unseeded_sampling_gets_a_random_seed() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    await submit(engine, make_request(request_id="a", temperature=0.8))
    await submit(engine, make_request(request_id="b", temperature=0.8))
    await submit(engine, make_request(request_id="c", temperature=0.8, seed=5))
    await submit(engine, make_request(request_id="d", temperature=0.0))
    seeds = [call["params"].get("seed") for call in llm.calls]
    assert seeds[0] is not None
    assert seeds[1] is not None
    assert seeds[0] != seeds[1]
    assert 0 <= seeds[0] < 2**64
    assert seeds[2:] == [5, None]


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
        await anext(engine.generate(make_request(request_id="later")))


async def test_generate_before_start_is_refused() -> None:
    engine = TrtLlmEngine("/m", 1, 1, 8, 16, llm_factory=FakeLLM, sampling_params_factory=dict)
    with pytest.raises(EngineStoppedError, match="not running"):
        await anext(engine.generate(make_request()))


@dataclass
class FakeKvCacheConfig:
    """`tensorrt_llm.llmapi.KvCacheConfig` (llmapi/llm_args.py): the fields we set."""

    enable_block_reuse: bool = True
    free_gpu_memory_fraction: float | None = 0.9


@dataclass(kw_only=True)
class FakeGuidedDecodingParams:
    """`tensorrt_llm.sampling_params.GuidedDecodingParams`: the fields we set."""

    json: str | None = None
    json_object: bool = False


@dataclass
class FakeTensorRtLlm:
    """What the fake `tensorrt_llm` package built: (LLM class, its keyword arguments)."""

    built: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def fake_tensorrt_llm(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRtLlm:
    """A `tensorrt_llm` package with both LLM classes and `llmapi.KvCacheConfig`."""
    fake = FakeTensorRtLlm()

    def llm_class(name: str) -> Any:
        def build(**kwargs: Any) -> FakeLLM:
            fake.built.append((name, kwargs))
            return FakeLLM()

        return build

    package = types.ModuleType("tensorrt_llm")
    package.LLM = llm_class("pytorch")  # type: ignore[attr-defined]
    package.SamplingParams = sampling_params_dict  # type: ignore[attr-defined]
    llmapi = types.ModuleType("tensorrt_llm.llmapi")
    llmapi.KvCacheConfig = FakeKvCacheConfig  # type: ignore[attr-defined]
    tensorrt_engine = types.ModuleType("tensorrt_llm._tensorrt_engine")
    tensorrt_engine.LLM = llm_class("tensorrt")  # type: ignore[attr-defined]
    package.llmapi = llmapi  # type: ignore[attr-defined]
    package._tensorrt_engine = tensorrt_engine  # type: ignore[attr-defined]
    sampling_params = types.ModuleType("tensorrt_llm.sampling_params")
    sampling_params.GuidedDecodingParams = FakeGuidedDecodingParams  # type: ignore[attr-defined]
    package.sampling_params = sampling_params  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", package)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", llmapi)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.sampling_params", sampling_params)
    monkeypatch.setitem(sys.modules, "tensorrt_llm._tensorrt_engine", tensorrt_engine)
    return fake


def hf_checkpoint(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


def engine_dir(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "rank0.engine").write_bytes(b"")
    return path


async def test_a_checkpoint_loads_through_the_pytorch_backend_with_block_reuse(
    fake_tensorrt_llm: FakeTensorRtLlm, tmp_path: Path
) -> None:
    model = hf_checkpoint(tmp_path / "llama")
    engine = TrtLlmEngine(
        str(model), max_batch_size=8, max_queue=2, max_input_len=1024, max_seq_len=2048
    )
    await engine.start()
    assert fake_tensorrt_llm.built == [
        (
            "pytorch",
            {
                "model": str(model),
                "max_batch_size": 8,
                "max_input_len": 1024,
                "max_seq_len": 2048,
                "guided_decoding_backend": "xgrammar",
                "backend": "pytorch",
                "kv_cache_config": FakeKvCacheConfig(True, 0.9),
            },
        )
    ]
    assert engine.backend == "pytorch"


async def test_guides_reach_sampling_params_as_guided_decoding_params(
    fake_tensorrt_llm: FakeTensorRtLlm, tmp_path: Path
) -> None:
    engine = TrtLlmEngine(str(engine_dir(tmp_path / "engine")), 8, 2, 1024, 2048)
    await engine.start()
    [(_, kwargs)] = fake_tensorrt_llm.built
    assert kwargs["guided_decoding_backend"] == "xgrammar"  # the TensorRT backend's too
    llm = engine._llm
    assert isinstance(llm, FakeLLM)
    guide = Guide(GuideType.JSON_SCHEMA, '{"type":"string"}')
    await submit(engine, make_request(guide=guide))
    assert llm.calls[-1]["params"]["guided_decoding"] == FakeGuidedDecodingParams(
        json='{"type":"string"}'
    )


async def test_an_engine_dir_loads_through_the_legacy_tensorrt_backend(
    fake_tensorrt_llm: FakeTensorRtLlm, tmp_path: Path
) -> None:
    model = engine_dir(tmp_path / "engine")
    engine = TrtLlmEngine(str(model), 8, 2, 1024, 2048, free_gpu_memory_fraction=0.5)
    await engine.start()
    [(cls, kwargs)] = fake_tensorrt_llm.built
    assert cls == "tensorrt"
    assert "backend" not in kwargs
    assert kwargs["kv_cache_config"] == FakeKvCacheConfig(True, 0.5)
    assert engine.backend == "tensorrt"


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("fraction", [0.25, 1.0])
async def test_kv_cache_config_follows_the_parameters(
    fake_tensorrt_llm: FakeTensorRtLlm, reuse: bool, fraction: float
) -> None:
    engine = TrtLlmEngine(
        "/models/hub-name",  # not a directory: a checkpoint the LLM API resolves itself
        8,
        2,
        1024,
        2048,
        enable_block_reuse=reuse,
        free_gpu_memory_fraction=fraction,
    )
    await engine.start()
    [(cls, kwargs)] = fake_tensorrt_llm.built
    assert cls == "pytorch"
    assert kwargs["kv_cache_config"] == FakeKvCacheConfig(reuse, fraction)


async def test_llm_kwargs_add_to_and_override_ours(
    fake_tensorrt_llm: FakeTensorRtLlm,
) -> None:
    mine = FakeKvCacheConfig(False, 0.3)
    llm_kwargs = {"tensor_parallel_size": 2, "kv_cache_config": mine}
    engine = TrtLlmEngine("/models/llama", 8, 2, 1024, 2048, llm_kwargs=llm_kwargs)
    await engine.start()
    [(_, kwargs)] = fake_tensorrt_llm.built
    assert kwargs["tensor_parallel_size"] == 2
    assert kwargs["kv_cache_config"] is mine


async def test_a_tensorrt_llm_without_the_legacy_backend_fails_the_load(
    fake_tensorrt_llm: FakeTensorRtLlm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm._tensorrt_engine", None)
    monkeypatch.delattr(sys.modules["tensorrt_llm"], "_tensorrt_engine")
    model = engine_dir(tmp_path / "engine")
    with pytest.raises(EngineStoppedError, match="could not load"):
        await TrtLlmEngine(str(model), 8, 2, 1024, 2048).start()
    assert fake_tensorrt_llm.built == []


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_a_gpu_memory_fraction_outside_zero_to_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"free_gpu_memory_fraction must be in \(0, 1\]"):
        TrtLlmEngine("/m", 1, 1, 8, 16, free_gpu_memory_fraction=fraction)


# -- the factory, from the real config.pbtxt ------------------------------------------

CONFIG = REPO_ROOT / "model_repository" / "tensorrt_llm" / "config.pbtxt"


def trtllm_from_config(model: Path, **env: str) -> TrtLlmEngine:
    environ = {"LLM_STACK_ENGINE": "tensorrt_llm", "LLM_STACK_MODEL_PATH": str(model), **env}
    engine = create_engine(model_parameters(CONFIG, environ=environ))
    assert isinstance(engine, TrtLlmEngine)
    return engine


def test_config_turns_block_reuse_on_with_nine_tenths_of_free_gpu_memory(tmp_path: Path) -> None:
    engine = trtllm_from_config(hf_checkpoint(tmp_path / "llama"))
    assert (engine.enable_block_reuse, engine.free_gpu_memory_fraction) == (True, 0.9)


def test_env_overrides_reach_the_kv_cache_parameters(tmp_path: Path) -> None:
    engine = trtllm_from_config(
        hf_checkpoint(tmp_path / "llama"),
        LLM_STACK_ENABLE_PREFIX_CACHE="false",
        LLM_STACK_KV_CACHE_FREE_GPU_MEMORY_FRACTION="0.6",
    )
    assert (engine.enable_block_reuse, engine.free_gpu_memory_fraction) == (False, 0.6)


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "must be in \\(0, 1\\], got 0.0"), ("1.2", "must be in"), ("most", "must be a number")],
)
def test_a_bad_gpu_memory_fraction_fails_the_load_naming_it(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(
        ModelConfigError, match=f"parameter 'kv_cache_free_gpu_memory_fraction' {message}"
    ):
        trtllm_from_config(
            hf_checkpoint(tmp_path / "llama"), LLM_STACK_KV_CACHE_FREE_GPU_MEMORY_FRACTION=value
        )


async def test_start_without_tensorrt_llm_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # makes the import fail
    engine = TrtLlmEngine("/m", 1, 1, 8, 16)
    with pytest.raises(EngineStoppedError, match="tensorrt_llm is not installed"):
        await engine.start()


async def test_a_failing_load_is_an_engine_stopped_error() -> None:
    def broken() -> Any:
        raise RuntimeError("CUDA error: no device")

    engine = TrtLlmEngine("/m", 1, 1, 8, 16, llm_factory=broken, sampling_params_factory=dict)
    with pytest.raises(EngineStoppedError, match="could not load /m"):
        await engine.start()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1, 8, 16), "max_batch_size must be >= 1"),
        ((1, -1, 8, 16), "max_queue must be >= 0"),
        ((1, 1, 16, 16), "max_input_len \\(16\\) must be below max_seq_len \\(16\\)"),
    ],
)
def test_bad_limits_are_refused(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrtLlmEngine("/m", *args)


def test_importing_the_module_does_not_import_tensorrt_llm(tmp_path: Path) -> None:
    poisoned = tmp_path / "tensorrt_llm"
    poisoned.mkdir()
    (poisoned / "__init__.py").write_text("raise RuntimeError('tensorrt_llm was imported')\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import llm_stack.engine.trtllm_engine, sys; assert 'tensorrt_llm' not in sys.modules",
        ],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_engine_dir_is_told_from_a_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "hf"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text("{}")
    (engine / "rank0.engine").write_bytes(b"")
    assert not is_engine_dir(checkpoint)
    assert is_engine_dir(engine)
    assert not is_engine_dir(tmp_path / "missing")


# -- structured outputs -------------------------------------------------------------------


def test_guides_map_to_guided_decoding_params_fields() -> None:
    schema = '{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}'
    assert guided_decoding_kwargs(Guide(GuideType.JSON_SCHEMA, schema)) == {"json": schema}
    assert guided_decoding_kwargs(Guide(GuideType.JSON)) == {"json_object": True}


async def test_a_guided_request_carries_its_guided_decoding_params() -> None:
    llm = FakeLLM()
    engine = await started(llm, guided_decoding_params_factory=FakeGuidedDecodingParams)
    await submit(engine, make_request("plain"))
    await submit(engine, make_request("object", guide=Guide(GuideType.JSON)))
    schema = '{"enum":["a","b"]}'
    await submit(engine, make_request("schema", guide=Guide(GuideType.JSON_SCHEMA, schema)))
    plain, json_object, json_schema = (call["params"] for call in llm.calls)
    assert "guided_decoding" not in plain
    assert json_object["guided_decoding"] == FakeGuidedDecodingParams(json_object=True)
    assert json_schema["guided_decoding"] == FakeGuidedDecodingParams(json=schema)
    assert json_schema["max_tokens"] == 8  # the sampling fields stay as they were


async def test_a_guided_request_without_guided_decoding_is_refused() -> None:
    llm = FakeLLM()
    engine = await started(llm)  # custom factories, no GuidedDecodingParams
    with pytest.raises(InvalidRequestError) as caught:
        await anext(engine.generate(make_request(guide=Guide(GuideType.JSON))))
    assert caught.value.field == "guided_decoding_guide_type"
    assert llm.calls == []


# -- vocabulary and health -------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "size"),
    [
        ({"vocab_size": 128256}, 128256),  # a Hugging Face checkpoint
        ({"text_config": {"vocab_size": 262208}}, 262208),  # a multimodal one (Gemma 3 4B)
        ({"pretrained_config": {"vocab_size": 32000}}, 32000),  # a trtllm-build engine
        ({}, None),
        ({"vocab_size": "many"}, None),
    ],
)
def test_the_vocabulary_size_comes_from_config_json(
    tmp_path: Path, config: dict[str, Any], size: int | None
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert config_vocab_size(tmp_path) == size


def test_no_config_json_tells_no_vocabulary_size(tmp_path: Path) -> None:
    assert config_vocab_size(tmp_path) is None


async def test_the_model_config_bounds_ids_before_the_tokenizer(tmp_path: Path) -> None:
    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 128}))
    llm = FakeLLM()
    engine = TrtLlmEngine(
        str(model), 4, 4, 16, 32, llm_factory=lambda: llm, sampling_params_factory=dict
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
        await anext(engine.generate(make_request(**fields)))
    error = info.value.model_error()
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, field)
    assert error.values["limit"] == FAKE_VOCAB
    assert llm.calls == []
    stream = await submit(engine, make_request(request_id="next"))
    llm.handles[0].emit([5], "length")
    assert (await stream.next()).token_ids == (5,)
    assert engine.health().ok


def test_a_temperature_below_fp32_range_is_greedy() -> None:
    kwargs = to_sampling_kwargs(make_request(temperature=1e-40))
    assert kwargs["top_k"] == 1
    assert "temperature" not in kwargs


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


class FakeExecutor:
    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy

    def check_health(self) -> bool:
        return self.healthy


@pytest.mark.parametrize(
    ("executor", "failure"),
    [
        (FakeExecutor(True), None),
        (FakeExecutor(False), "the TensorRT-LLM executor hit a fatal error or is shutting down"),
        (None, "the TensorRT-LLM executor is shut down"),
        (types.SimpleNamespace(doing_shutdown=True), "the TensorRT-LLM executor hit a fatal"),
        (types.SimpleNamespace(is_shutdown=lambda: False), None),
    ],
)
def test_the_executor_tells_whether_it_can_serve(executor: Any, failure: str | None) -> None:
    llm = types.SimpleNamespace(_executor=executor)
    found = executor_failure(llm)
    assert found == failure or (
        failure is not None and found is not None and found.startswith(failure)
    )


async def test_a_dead_executor_makes_the_engine_unhealthy_for_good() -> None:
    llm = FakeLLM()
    engine = await started(llm, collect_iteration_stats=False)
    llm._executor = FakeExecutor(False)  # type: ignore[attr-defined]
    health = engine.health()
    assert (health.ok, health.reason) == (
        False,
        "the TensorRT-LLM executor hit a fatal error or is shutting down",
    )
    await engine.shutdown()
    assert engine.health() == engine.health()  # stable
    assert not engine.health().ok
