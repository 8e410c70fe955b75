"""The simulated engine: the engine interface's behaviours on a virtual clock (no test
depends on wall time), its timing model and presets, its parameters, and one run of the
real Triton with LLM_STACK_ENGINE=sim."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import tritonclient.grpc.aio as grpcclient

from launcher.triton_server import TritonPorts, TritonServer, wheel_install
from llm_stack.engine.base import (
    EngineError,
    EngineOverloadedError,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
)
from llm_stack.engine.factory import create_engine
from llm_stack.engine.sim_engine import (
    PRESETS,
    SimConfig,
    SimEngine,
    SimTiming,
    SimVocabulary,
    load_vocabulary,
)
from llm_stack.ensemble_client import generate, metric_value
from llm_stack.guided_decoding import Guide, GuideType
from llm_stack.model_config import ModelConfigError
from llm_stack.model_repository_config import model_parameters
from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import GgufTokenizer
from tests.conftest import REPO_ROOT

SLOTS = 4
QUEUE = 2
TIMER = PRESETS["timer-20ms"]
_ids = itertools.count()


@pytest.fixture(scope="session")
def vocabulary() -> SimVocabulary:
    return load_vocabulary(resolve_model_path("gemma3-270m"))


def config(**overrides: Any) -> SimConfig:
    """A small virtual-clock engine: 4 slots, 2 waiting, blocks of 16 tokens."""
    fields: dict[str, Any] = {
        "timing": TIMER,
        "max_batch_size": SLOTS,
        "max_queue": QUEUE,
        "kv_cache_blocks": 256,
        "block_tokens": 16,
        "max_seq_len": 2048,
        "virtual_clock": True,
    }
    fields.update(overrides)
    return SimConfig(**fields)


async def running(cfg: SimConfig, vocabulary: SimVocabulary) -> AsyncIterator[SimEngine]:
    engine = SimEngine(cfg, vocabulary)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()


@pytest.fixture
async def engine(vocabulary: SimVocabulary) -> AsyncIterator[SimEngine]:
    async for eng in running(config(), vocabulary):
        yield eng


def request(
    prompt: tuple[int, ...] = (2, 818, 5279, 529),
    max_tokens: int = 12,
    **fields: Any,
) -> GenerationRequest:
    sampling = {
        k: fields.pop(k)
        for k in ("min_tokens", "seed", "n", "logprobs", "temperature")
        if k in fields
    }
    sampling.setdefault("temperature", 0.0)
    return GenerationRequest(
        request_id=f"s{next(_ids)}",
        prompt_ids=prompt,
        sampling=SamplingParams(max_tokens=max_tokens, **sampling),
        **fields,
    )


@dataclass(frozen=True)
class Run:
    deltas: list[TokenDelta]

    @property
    def tokens(self) -> list[int]:
        return [t for d in self.deltas for t in d.token_ids]

    @property
    def last(self) -> TokenDelta:
        return self.deltas[-1]


async def collect(engine: SimEngine, req: GenerationRequest) -> Run:
    return Run([d async for d in engine.generate(req)])


def assert_idle(engine: SimEngine) -> None:
    """No slot, queue place or KV reservation left behind."""
    stats = engine.stats()
    assert (stats.active, stats.waiting, stats.kv_reserved_tokens) == (0, 0, 0)


# -- streaming, tokens, determinism -------------------------------------------------------


async def test_streams_one_token_a_step_to_max_tokens(
    engine: SimEngine, tokenizer: GgufTokenizer, vocabulary: SimVocabulary
) -> None:
    req = request(max_tokens=12)
    run = await collect(engine, req)
    assert [len(d.token_ids) for d in run.deltas] == [1] * 12
    assert [d.num_output_tokens for d in run.deltas] == list(range(1, 13))
    assert not any(d.finished for d in run.deltas[:-1])
    assert run.last.finish_reason is FinishReason.LENGTH
    assert run.last.num_input_tokens == len(req.prompt_ids)
    # Real ids of the served vocabulary: ordinary words, never an end token.
    assert set(run.tokens) <= set(vocabulary.words)
    words = tokenizer.decode(run.tokens).split()
    assert len(words) == 12
    assert all(w.isalpha() for w in words)
    assert_idle(engine)
    assert engine.stats().generated_tokens >= 12


def test_the_vocabulary_is_the_served_models(
    vocabulary: SimVocabulary, tokenizer: GgufTokenizer
) -> None:
    assert vocabulary.end_id == tokenizer.end_id
    assert len(vocabulary.words) > 100
    assert tokenizer.encode(" the", add_special=False)[0] in vocabulary.words
    assert all(tokenizer.decode([w]).strip().isalpha() for w in vocabulary.words)


async def test_greedy_output_depends_on_the_prompt_only(engine: SimEngine) -> None:
    a = await collect(engine, request((2, 10, 11), max_tokens=16))
    again = await collect(engine, request((2, 10, 11), max_tokens=16))
    other = await collect(engine, request((2, 10, 12), max_tokens=16))
    assert a.tokens == again.tokens
    assert a.tokens != other.tokens


async def test_sampled_output_is_deterministic_for_a_seed(engine: SimEngine) -> None:
    def sampled(seed: int | None) -> GenerationRequest:
        return request(max_tokens=16, temperature=1.0, seed=seed)

    a = await collect(engine, sampled(7))
    assert (await collect(engine, sampled(7))).tokens == a.tokens
    assert (await collect(engine, sampled(8))).tokens != a.tokens
    # Unseeded: a random place in the text each time (three alike: about 1 in 67 million).
    unseeded = [tuple((await collect(engine, sampled(None))).tokens) for _ in range(3)]
    assert len(set(unseeded)) > 1


async def test_the_text_depends_on_the_engine_seed(vocabulary: SimVocabulary) -> None:
    runs = []
    for seed in (0, 0, 1):
        async for eng in running(config(seed=seed), vocabulary):
            runs.append((await collect(eng, request(max_tokens=16))).tokens)
    assert runs[0] == runs[1] != runs[2]


async def test_n_sequences_stream_their_own_deltas(engine: SimEngine) -> None:
    run = await collect(engine, request(max_tokens=6, n=3, temperature=1.0, seed=5))
    by_index: dict[int, list[int]] = {}
    for delta in run.deltas:
        by_index.setdefault(delta.index, []).extend(delta.token_ids)
    assert sorted(by_index) == [0, 1, 2]
    assert all(len(tokens) == 6 for tokens in by_index.values())
    assert len({tuple(t) for t in by_index.values()}) == 3  # seeds 5, 6, 7
    finals = [d for d in run.deltas if d.finished]
    assert sorted(d.index for d in finals) == [0, 1, 2]
    assert run.last.finished
    # Sequence i is seeded seed + i, as the other engines seed them.
    one = await collect(engine, request(max_tokens=6, temperature=1.0, seed=6))
    assert one.tokens == by_index[1]
    assert_idle(engine)


async def test_greedy_n_sequences_are_alike(engine: SimEngine) -> None:
    run = await collect(engine, request(max_tokens=5, n=2))
    by_index: dict[int, list[int]] = {}
    for delta in run.deltas:
        by_index.setdefault(delta.index, []).extend(delta.token_ids)
    assert by_index[0] == by_index[1]


# -- stop conditions --------------------------------------------------------------------------


async def test_a_stop_sequence_from_a_greedy_run_stops_a_second_one(engine: SimEngine) -> None:
    tokens = (await collect(engine, request(max_tokens=12))).tokens
    stop = tuple(tokens[4:6])
    cut = next(i for i in range(len(tokens)) if tuple(tokens[i : i + 2]) == stop)
    run = await collect(engine, request(max_tokens=12, stop_sequences=(stop,)))
    assert run.tokens == tokens[:cut]
    assert run.last.finish_reason is FinishReason.STOP
    assert run.last.num_output_tokens == cut
    assert_idle(engine)


async def test_end_id_ends_the_sequence_and_is_not_output(engine: SimEngine) -> None:
    tokens = (await collect(engine, request(max_tokens=12))).tokens
    end_id = tokens[3]
    run = await collect(engine, request(max_tokens=12, end_id=end_id))
    assert run.tokens == tokens[: tokens.index(end_id)]
    assert run.last.finish_reason is FinishReason.STOP


async def test_min_tokens_holds_back_the_end_id(engine: SimEngine) -> None:
    tokens = (await collect(engine, request(max_tokens=12))).tokens
    end_id = tokens[0]
    run = await collect(engine, request(max_tokens=12, end_id=end_id, min_tokens=12))
    assert len(run.tokens) == 12
    assert end_id not in run.tokens
    assert run.last.finish_reason is FinishReason.LENGTH


async def test_bad_words_are_never_output(engine: SimEngine) -> None:
    tokens = (await collect(engine, request(max_tokens=12))).tokens
    run = await collect(engine, request(max_tokens=12, bad_sequences=((tokens[2],),)))
    assert len(run.tokens) == 12
    assert tokens[2] not in run.tokens


async def test_end_of_generation_only_when_asked_and_min_tokens_holds(
    vocabulary: SimVocabulary,
) -> None:
    async for eng in running(config(end_probability=0.3), vocabulary):
        ends = [
            await collect(eng, request(max_tokens=64, temperature=1.0, seed=s)) for s in range(8)
        ]
        assert all(r.last.finish_reason is FinishReason.STOP for r in ends)
        assert all(len(r.tokens) < 64 for r in ends)
        assert not any(vocabulary.end_id in r.tokens for r in ends)
        held = [
            await collect(eng, request(max_tokens=64, temperature=1.0, seed=s, min_tokens=40))
            for s in range(8)
        ]
        assert all(len(r.tokens) >= 40 for r in held)
        assert not any(vocabulary.end_ids & set(r.tokens) for r in held)
    async for eng in running(config(), vocabulary):  # end_probability 0: never
        runs = [
            await collect(eng, request(max_tokens=64, temperature=1.0, seed=s)) for s in range(8)
        ]
        assert all(r.last.finish_reason is FinishReason.LENGTH for r in runs)


async def test_logprobs_are_a_uniform_choice_among_the_words(
    engine: SimEngine, vocabulary: SimVocabulary
) -> None:
    run = await collect(engine, request(max_tokens=5, logprobs=3))
    logprobs = [lp for d in run.deltas for lp in d.logprobs]
    assert len(logprobs) == 5
    expected = -math.log(len(vocabulary.words))
    for token, lp in zip(run.tokens, logprobs, strict=True):
        assert lp.logprob == pytest.approx(expected)
        assert len(lp.top) == 3
        assert lp.top[0] == (token, lp.logprob)
        assert len({t for t, _ in lp.top}) == 3
    plain = await collect(engine, request(max_tokens=5))
    assert all(d.logprobs == () for d in plain.deltas)


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "guide",
    [
        Guide(GuideType.JSON),
        Guide(GuideType.STRUCTURAL_TAG, '{"type": "structural_tag", "format": {}}'),
    ],
    ids=["json", "structural_tag"],
)
async def test_guided_decoding_is_refused_by_name(engine: SimEngine, guide: Guide) -> None:
    req = request(guide=guide)
    with pytest.raises(InvalidRequestError, match=rf"guided decoding \({guide.type}\)") as info:
        await anext(engine.generate(req))
    assert info.value.field == "guided_decoding_guide"
    assert_idle(engine)


async def test_ids_outside_the_vocabulary_are_refused(
    engine: SimEngine, vocabulary: SimVocabulary
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await anext(engine.generate(request((2, vocabulary.size))))
    assert info.value.field == "input_ids"
    with pytest.raises(InvalidRequestError) as info:
        await anext(engine.generate(request(stop_sequences=((vocabulary.size + 1,),))))
    assert info.value.field == "stop_words"


async def test_a_sequence_over_the_limit_is_refused(engine: SimEngine) -> None:
    with pytest.raises(InvalidRequestError, match="exceeds the sequence limit of 2048"):
        await anext(engine.generate(request(max_tokens=2048)))
    with pytest.raises(InvalidRequestError) as info:
        await anext(engine.generate(request(n=SLOTS + 1)))
    assert info.value.field == "num_return_sequences"
    assert_idle(engine)


# -- abort, queue bound, slots -------------------------------------------------------------------


async def test_closing_the_stream_early_aborts_and_frees_the_slot(engine: SimEngine) -> None:
    stream = engine.generate(request(max_tokens=500))
    assert not (await anext(stream)).finished
    assert engine.stats().active == 1
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()
    assert_idle(engine)  # at once: aborts run on the caller's loop
    assert engine.stats().finished["cancelled"] == 1


async def test_abort_by_id_ends_the_stream_with_cancelled(engine: SimEngine) -> None:
    req = request(max_tokens=500, n=2, temperature=1.0, seed=1)
    deltas: list[TokenDelta] = []
    async for delta in engine.generate(req):
        deltas.append(delta)
        if len(deltas) == 1:
            await engine.abort(req.request_id)
    finals = [d for d in deltas if d.finished]
    assert sorted(d.index for d in finals) == [0, 1]
    assert all(d.finish_reason is FinishReason.CANCELLED for d in finals)
    assert all(d.num_output_tokens < 500 for d in finals)
    assert_idle(engine)
    await engine.abort(req.request_id)  # ended already: a no-op


async def test_the_queue_bound_refuses_and_everyone_admitted_is_served(engine: SimEngine) -> None:
    streams = []
    for _ in range(SLOTS):
        stream = engine.generate(request(max_tokens=300))
        assert not (await anext(stream)).finished
        streams.append(stream)
    waiting = [engine.generate(request(max_tokens=300)) for _ in range(QUEUE)]
    firsts = [asyncio.ensure_future(anext(s)) for s in waiting]
    await asyncio.sleep(0)  # lets both submit
    stats = engine.stats()
    assert (stats.active, stats.waiting) == (SLOTS, QUEUE)
    with pytest.raises(EngineOverloadedError, match=f"queue is full: {QUEUE} requests waiting"):
        await anext(engine.generate(request(max_tokens=4)))
    for stream in streams:
        rest = [d async for d in stream]
        assert rest[-1].finish_reason is FinishReason.LENGTH
        assert rest[-1].num_output_tokens == 300
    for first, stream in zip(firsts, waiting, strict=True):
        deltas = [await first] + [d async for d in stream]
        assert deltas[-1].finish_reason is FinishReason.LENGTH
        assert sum(len(d.token_ids) for d in deltas) == 300
    assert_idle(engine)
    assert engine.stats().peak_step_batch == SLOTS


async def test_many_requests_with_aborts_leak_no_slot(engine: SimEngine) -> None:
    async def one(i: int) -> None:
        stream = engine.generate(request(max_tokens=20 + i, temperature=1.0, seed=i))
        assert isinstance(stream, AsyncGenerator)
        async for delta in stream:
            if i % 3 == 0 and delta.num_output_tokens >= i % 7:
                await stream.aclose()
                return

    for batch in range(4):
        await asyncio.gather(*(one(batch * 6 + i) for i in range(SLOTS + QUEUE)))
    assert_idle(engine)
    finished = engine.stats().finished
    assert sum(finished.values()) == 24
    assert finished["cancelled"] == 8


async def test_shutdown_cancels_running_streams(vocabulary: SimVocabulary) -> None:
    eng = SimEngine(config(), vocabulary)
    await eng.start()
    stream = eng.generate(request(max_tokens=500))
    await anext(stream)
    await eng.shutdown()
    rest = [d async for d in stream]
    assert rest[-1].finish_reason is FinishReason.CANCELLED
    assert not eng.health().ok
    with pytest.raises(EngineError, match="not running"):
        await anext(eng.generate(request()))


async def test_health(vocabulary: SimVocabulary) -> None:
    eng = SimEngine(config(), vocabulary)
    assert eng.health().reason == "the engine is not started"
    await eng.start()
    assert eng.health().ok
    await eng.shutdown()
    assert eng.health().reason == "the engine is shutting down"


async def test_a_failed_step_fails_its_requests_and_the_engine_goes_on(
    engine: SimEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine._next_token
    calls = itertools.count()

    def flaky(key: Any, stream: Any) -> int | FinishReason:
        if next(calls) == 3:
            raise RuntimeError("simulated fault")
        return real(key, stream)

    monkeypatch.setattr(engine, "_next_token", flaky)
    with pytest.raises(EngineError, match="simulated fault"):
        await collect(engine, request(max_tokens=10))
    assert_idle(engine)
    assert engine.health().ok  # one failure is not the engine's end
    run = await collect(engine, request(max_tokens=10))
    assert len(run.tokens) == 10


# -- the timing model ----------------------------------------------------------------------------


async def test_steps_last_as_the_timing_model_says(vocabulary: SimVocabulary) -> None:
    timing = SimTiming(
        prefill_tokens_per_s=1000.0,
        step_base_ms=1.0,
        step_per_sequence_us=10.0,
        step_per_context_token_ns=100.0,
    )
    async for eng in running(config(timing=timing, enable_prefix_cache=False), vocabulary):
        prompt = tuple(range(10, 110))  # 100 tokens
        await collect(eng, request(prompt, max_tokens=3))
        # Step 1 prefills the prompt and samples token 1; steps 2 and 3 decode tokens
        # 2 and 3, attending to 101 and 102 cells.
        expected = (
            (1e-3 + 10e-6 + 100 / 1000)
            + (1e-3 + 10e-6 + 101 * 100e-9)
            + (1e-3 + 10e-6 + 102 * 100e-9)
        )
        assert eng.sim_time_s == pytest.approx(expected)


async def test_the_timer_gives_every_sequence_a_token_each_20_ms(vocabulary: SimVocabulary) -> None:
    async for eng in running(config(max_batch_size=256, max_queue=0), vocabulary):
        runs = await asyncio.gather(*(collect(eng, request(max_tokens=10)) for _ in range(256)))
        assert all(len(r.tokens) == 10 for r in runs)
        stats = eng.stats()
        assert (stats.steps, stats.peak_step_batch) == (10, 256)
        assert eng.sim_time_s == pytest.approx(0.2)  # 2,560 tokens in 200 ms: 12,800/s


async def test_a_cached_prefix_shortens_the_simulated_prefill(vocabulary: SimVocabulary) -> None:
    timing = SimTiming(1000.0, 0.0, 0.0, 0.0)  # only prefill costs: 1 ms a prompt token
    async for eng in running(config(timing=timing), vocabulary):
        prompt = tuple(range(10, 10 + 16 * 4 + 5))  # 4 whole blocks and 5 tokens
        times, cached = [], []
        for _ in range(3):
            before = eng.sim_time_s
            run = await collect(eng, request(prompt, max_tokens=2))
            times.append(eng.sim_time_s - before)
            cached.append(run.last.num_cached_tokens)
        # Cached on second sight (as the CPU engine's scheduler does), reused by the third.
        assert cached == [0, 0, 64]
        assert times[0] == pytest.approx(times[1]) == pytest.approx(len(prompt) / 1000)
        assert times[2] == pytest.approx((len(prompt) - 64) / 1000)
        assert eng.stats().prompt_tokens_cached == 64


@pytest.mark.parametrize("preset", ["h100-llama3-8b", "h200-llama3-8b"])
def test_the_gpu_presets_reproduce_their_published_figures(preset: str) -> None:
    # NVIDIA's trtllm-bench output tokens/s, Llama-3.1-8B FP8, TP1 (see PRESETS).
    published = {
        "h100-llama3-8b": {(128, 128): 28312, (128, 2048): 22714, (2048, 128): 3450,
                           (1000, 1000): 15220, (20000, 2000): 1351},
        "h200-llama3-8b": {(128, 128): 27911, (128, 2048): 26221, (2048, 128): 3538,
                           (1000, 1000): 17744, (20000, 2000): 1804},
    }[preset]  # fmt: skip
    for (isl, osl), figure in published.items():
        model = PRESETS[preset].steady_tokens_per_s(isl, osl, batch=512)
        assert model == pytest.approx(figure, rel=0.08), (isl, osl)


async def test_the_engine_runs_at_its_steady_state_rate(vocabulary: SimVocabulary) -> None:
    # Closed loop, batch always full: the simulated rate is the model's steady state.
    timing = PRESETS["h100-llama3-8b"]
    batch, isl, osl = 8, 64, 32
    cfg = config(timing=timing, max_batch_size=batch, enable_prefix_cache=False)
    async for eng in running(cfg, vocabulary):

        async def worker(w: int, eng: SimEngine = eng) -> int:
            total = 0
            for k in range(8):
                prompt = tuple(range(100 + w * 1000 + k, 100 + w * 1000 + k + isl))
                total += len((await collect(eng, request(prompt, max_tokens=osl))).tokens)
            return total

        tokens = sum(await asyncio.gather(*(worker(w) for w in range(batch))))
        rate = tokens / eng.sim_time_s
        assert rate == pytest.approx(timing.steady_tokens_per_s(isl, osl, batch), rel=0.1)


async def test_the_real_clock_runs_steps_on_loop_timers(vocabulary: SimVocabulary) -> None:
    timing = SimTiming(0.0, 1.0, 0.0, 0.0)  # 1 ms steps
    async for eng in running(config(timing=timing, virtual_clock=False), vocabulary):
        runs = await asyncio.gather(*(collect(eng, request(max_tokens=5)) for _ in range(3)))
        assert all(len(r.tokens) == 5 for r in runs)
        assert_idle(eng)


def test_timing_and_config_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="step_base_ms"):
        SimTiming(0.0, -1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="prefill_tokens_per_s"):
        SimTiming(math.nan, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="end_probability"):
        SimConfig(TIMER, end_probability=1.0)


# -- parameters ------------------------------------------------------------------------------------

ENGINE_CONFIG = REPO_ROOT / "model_repository" / "tensorrt_llm" / "config.pbtxt"


def sim_engine_from(environ: dict[str, str]) -> SimEngine:
    engine = create_engine(model_parameters(ENGINE_CONFIG, {"LLM_STACK_ENGINE": "sim", **environ}))
    assert isinstance(engine, SimEngine)
    return engine


def test_engine_sim_reads_its_parameters() -> None:
    engine = sim_engine_from({})
    cfg = engine.config
    assert cfg.timing == PRESETS["h100-llama3-8b"]  # the repository's preset
    assert (cfg.max_batch_size, cfg.max_queue, cfg.max_seq_len) == (16, 64, 4096)
    assert (cfg.kv_cache_blocks, cfg.block_tokens, cfg.max_step_tokens) == (14336, 64, 8192)
    assert (cfg.end_probability, cfg.seed, cfg.enable_prefix_cache) == (0.0, 0, True)
    # The timer, in parameters: 20 ms flat, 256 slots.
    timer = sim_engine_from(
        {"LLM_STACK_SIM_PRESET": "timer-20ms", "LLM_STACK_MAX_BATCH_SIZE": "256"}
    )
    assert timer.config.timing == SimTiming(0.0, 20.0, 0.0, 0.0)
    assert timer.config.max_batch_size == 256
    custom = sim_engine_from(
        {
            "LLM_STACK_SIM_PRESET": "custom",
            "LLM_STACK_SIM_PREFILL_TOKENS_PER_S": "5000",
            "LLM_STACK_SIM_STEP_BASE_MS": "2.5",
            "LLM_STACK_SIM_STEP_PER_SEQUENCE_US": "7",
            "LLM_STACK_SIM_STEP_PER_CONTEXT_TOKEN_NS": "30",
            "LLM_STACK_SIM_END_PROBABILITY": "0.01",
            "LLM_STACK_SIM_SEED": "9",
        }
    )
    assert custom.config.timing == SimTiming(5000.0, 2.5, 7.0, 30.0)
    assert (custom.config.end_probability, custom.config.seed) == (0.01, 9)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LLM_STACK_SIM_PRESET": "h100"}, "'sim_preset' is 'h100', expected one of"),
        ({"LLM_STACK_SIM_STEP_BASE_MS": "-1"}, "'sim_step_base_ms' must be >= 0"),
        ({"LLM_STACK_SIM_END_PROBABILITY": "1"}, "'sim_end_probability' must be < 1"),
        ({"LLM_STACK_SIM_KV_CACHE_BLOCKS": "0"}, "'sim_kv_cache_blocks' must be >= 1"),
    ],
)
def test_bad_sim_parameters_fail_the_load_naming_them(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ModelConfigError, match=message):
        sim_engine_from(environ)


# -- through the real Triton ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A Triton of its own serving the repository with LLM_STACK_ENGINE=sim (1 ms steps)."""
    work = tmp_path_factory.mktemp("sim-triton")
    server = TritonServer(
        install=wheel_install(work),
        model_repository=REPO_ROOT / "model_repository",
        ports=TritonPorts.free(),
        log_file=work / "triton.log",
        extra_env={
            "LLM_STACK_TEST": "1",
            "LLM_STACK_ENGINE": "sim",
            "LLM_STACK_SIM_PRESET": "custom",
            "LLM_STACK_SIM_STEP_BASE_MS": "1",
        },
    )
    server.start()
    try:
        server.wait_ready("ensemble", timeout=300)
        yield server
    finally:
        server.stop()


@pytest.mark.integration
async def test_the_ensemble_serves_the_sim_engine(sim_triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(sim_triton.grpc_url)
    try:
        before = metric_value(sim_triton.metrics_url, "llm_engine_generated_tokens_total")
        run = await generate(client, "Tell me a story", 24, stream=True, temperature=0.0)
        assert run.error is None, run.error
        assert (run.finish_reason, run.num_output_tokens) == ("length", 24)
        # How many responses carry the 24 tokens depends on how fast Triton takes each one
        # (tokens that come meanwhile go together): tests/model_repository/
        # test_response_stream.py holds that down without timing.
        assert run.chunks
        words = run.text.split()
        assert len(words) == 24
        assert all(w.isalpha() for w in words)
        # A stop word cuts the same greedy text where it first appears (one that starts
        # no other word, so the text's first " stop" is that word).
        stop = next(w for w in words[3:] if not any(o != w and o.startswith(w) for o in words))
        cut = await generate(
            client, "Tell me a story", 24, stream=True, temperature=0.0, stop_words=[" " + stop]
        )
        assert cut.error is None, cut.error
        assert cut.finish_reason == "stop"
        assert cut.text == run.text[: run.text.index(" " + stop)]
        guided = await generate(client, "Hi", 8, guided_decoding_guide_type="json", stream=False)
        assert guided.error is not None
        assert "guided_decoding_guide" in guided.error.message()
        after = metric_value(sim_triton.metrics_url, "llm_engine_generated_tokens_total")
        assert after - before >= 24
    finally:
        await client.close()
