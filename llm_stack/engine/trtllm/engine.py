"""GPU engine: TensorRT-LLM's LLM API (`tensorrt_llm.LLM`) behind the `Engine` interface.

TensorRT-LLM does the in-flight batching, KV cache paging, block reuse and sampling; this
adapter maps requests onto `SamplingParams` (`sampling`), turns the streamed cumulative
outputs into token deltas (`outputs`), bounds the sequences in flight and keeps the figures
the Triton metrics need (`stats`). `tensorrt_llm` is imported in `start()` only, so the CPU
path never loads it. Which release it is written for, and what that release applies or
not, is in the README ("The GPU engine") and tests/llm_stack/engine/trtllm/api_surface.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llm_stack.engine.base import (
    STALL_TIMEOUT_S,
    EngineError,
    EngineHealth,
    EngineOverloadedError,
    EngineStats,
    EngineStoppedError,
    FinishReason,
    GenerationRequest,
    HealthMonitor,
    InvalidRequestError,
    TokenDelta,
    check_token_ids,
)
from llm_stack.engine.trtllm.build import (
    CHECKED_VERSION,
    LlmBuildError,
    LlmSettings,
    config_vocab_size,
    llm_kwargs,
    tokenizer_vocab_size,
)
from llm_stack.engine.trtllm.outputs import StopSequenceFilter, delta_from_output
from llm_stack.engine.trtllm.sampling import (
    Capabilities,
    engine_sequences,
    guided_decoding_kwargs,
    to_sampling_kwargs,
)
from llm_stack.engine.trtllm.stats import (
    STATS_IDLE_S,
    STATS_TIMEOUT_S,
    IterationFigures,
    executor_failure,
)
from llm_stack.guided_decoding import GUIDE_TYPE_FIELD
from llm_stack.model_errors import ErrorCode

log = logging.getLogger(__name__)


class TrtLlmEngine:
    """TensorRT-LLM through its LLM API (implements `Engine`)."""

    def __init__(
        self,
        settings: LlmSettings,
        max_queue: int,
        *,
        llm_factory: Callable[[], Any] | None = None,
        sampling_params_factory: Callable[..., Any] | None = None,
        guided_decoding_params_factory: Callable[..., Any] | None = None,
        request_errors: tuple[type[BaseException], ...] = (ValueError,),
        version: str = CHECKED_VERSION,
        collect_iteration_stats: bool = True,
        vocab_size: int | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> None:
        """The factories replace `tensorrt_llm`'s LLM and parameter classes (tests, custom
        LLMs); `request_errors` are what their argument checks raise and `version` the
        release they stand for. `vocab_size` bounds token ids (None: the checkpoint's
        config.json, else its tokenizer)."""
        if max_queue < 0:
            raise LlmBuildError(f"max_queue must be >= 0, got {max_queue}")
        self.settings = settings
        self.max_batch_size = settings.max_batch_size
        self.max_queue = max_queue
        self.max_input_len = settings.max_input_len
        self.max_seq_len = settings.max_seq_len
        self.capabilities = Capabilities.of(version)
        self._llm_factory = llm_factory
        self._sampling_params_factory = sampling_params_factory
        self._guided_decoding_params_factory = guided_decoding_params_factory
        self._request_errors = request_errors
        self._collect_iteration_stats = collect_iteration_stats
        self._llm: Any = None
        self._make_sampling_params: Callable[..., Any] | None = None
        self._make_guided_decoding_params: Callable[..., Any] | None = None
        self._stopping = False
        self._inflight: dict[str, _InFlight] = {}  # by request id
        self._peak_inflight = 0  # sequences
        self._generated = 0
        self._finished: dict[str, int] = {}
        self._prompt_cached = 0
        self._prompt_computed = 0
        self._iterations = IterationFigures()
        self._stats_task: asyncio.Task[None] | None = None
        self.vocab_size = vocab_size
        self._monitor = HealthMonitor(
            "TensorRT-LLM engine", stall_s=stall_timeout_s, work="TensorRT-LLM requests"
        )

    async def start(self) -> None:
        """Load the model (blocks until TensorRT-LLM has loaded it onto the GPUs)."""
        if self._llm is not None:
            return
        llm_factory, params_factory = self._llm_factory, self._sampling_params_factory
        guided_factory = self._guided_decoding_params_factory
        if llm_factory is None or params_factory is None:
            try:
                import tensorrt_llm  # here only: the CPU path must never load it
            except ImportError as exc:
                raise EngineStoppedError("tensorrt_llm is not installed") from exc
            self._use_release(tensorrt_llm)
            params_factory = params_factory or tensorrt_llm.SamplingParams
            if guided_factory is None:
                from tensorrt_llm.sampling_params import GuidedDecodingParams

                guided_factory = GuidedDecodingParams
            if llm_factory is None:
                llm_factory = self._llm_api_factory(tensorrt_llm)

        try:
            # Built on the caller's thread: TensorRT-LLM sets up CUDA and MPI there, and
            # its request results bind to whichever loop later calls generate_async.
            llm = llm_factory()
        except LlmBuildError as exc:
            raise EngineStoppedError(f"cannot build the TensorRT-LLM engine: {exc}") from exc
        except Exception as exc:
            log.exception("TensorRT-LLM could not load %s", self.settings.model_path)
            raise EngineStoppedError(
                f"TensorRT-LLM could not load {self.settings.model_path}"
            ) from exc
        vocab_size = (
            self.vocab_size
            or config_vocab_size(Path(self.settings.model_path))
            or tokenizer_vocab_size(llm)
        )
        if vocab_size is None:
            # Unchecked token ids would reach the GPU's embedding lookup: serve none.
            await asyncio.to_thread(llm.shutdown)
            raise EngineStoppedError(
                f"cannot tell the vocabulary size of {self.settings.model_path} (no "
                "vocab_size in its config.json, no tokenizer): set the engine's vocab_size"
            )
        self.vocab_size = vocab_size
        self._llm = llm
        self._make_sampling_params = params_factory
        self._make_guided_decoding_params = guided_factory  # None: guides are refused
        self._stopping = False
        settings = self.settings
        log.info(
            "TensorRT-LLM %s engine ready: %s, vocabulary %d, batch %d, queue %d, input %d, "
            "sequence %d, %d tokens per iteration, chunked prefill %s, %d GPU(s) (TP %d x PP "
            "%d), KV block reuse %s, KV cache %.0f%% of free GPU memory",
            self.capabilities.version,
            settings.model_path,
            vocab_size,
            self.max_batch_size,
            self.max_queue,
            self.max_input_len,
            self.max_seq_len,
            settings.max_num_tokens,
            "on" if settings.enable_chunked_prefill else "off",
            settings.gpus,
            settings.tensor_parallel_size,
            settings.pipeline_parallel_size,
            "on" if settings.enable_block_reuse else "off",
            settings.free_gpu_memory_fraction * 100,
        )

    def _use_release(self, tensorrt_llm: Any) -> None:
        """What the installed release applies, and the errors its argument checks raise."""
        version = str(getattr(tensorrt_llm, "__version__", CHECKED_VERSION))
        try:
            self.capabilities = Capabilities.of(version)
        except ValueError as exc:
            raise EngineStoppedError(f"unknown TensorRT-LLM version {version!r}") from exc
        if version != CHECKED_VERSION:
            log.warning(
                "TensorRT-LLM %s is installed; this engine is written for and checked "
                "against %s (the pinned Triton image's)",
                version,
                CHECKED_VERSION,
            )
        errors: list[type[BaseException]] = [ValueError]
        with contextlib.suppress(ImportError):
            from tensorrt_llm.executor.utils import RequestError

            errors.append(RequestError)
        self._request_errors = tuple(errors)

    def _llm_api_factory(self, tensorrt_llm: Any) -> Callable[[], Any]:
        """How to build the LLM: the PyTorch backend on a Hugging Face checkpoint."""

        def build() -> Any:  # imports here: a failing one fails the load like the LLM's own
            from tensorrt_llm.llmapi import KvCacheConfig

            kv_cache_config = KvCacheConfig(
                enable_block_reuse=self.settings.enable_block_reuse,
                free_gpu_memory_fraction=self.settings.free_gpu_memory_fraction,
            )
            return tensorrt_llm.LLM(**llm_kwargs(self.settings, kv_cache_config))

        return build

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[TokenDelta, None]:
        """Stream the deltas of a request's n sequences, each told by its `index`, until
        every one has sent its last; closing the iterator early aborts the request."""
        entry = self._submit(request)
        handle, request_id = entry.handle, request.request_id
        num_input = len(request.prompt_ids)
        sampling = request.sampling
        engine_n = engine_sequences(sampling)
        copies = sampling.n // engine_n  # our sequences per engine sequence (greedy: n)
        several = engine_n > 1  # whose finishes TensorRT-LLM reports late, uncut
        max_tokens = sampling.max_tokens if several else None
        stops = _stream_stops(request, several)
        streams = [_SequenceStream(stops, several) for _ in range(engine_n)]
        remaining = sampling.n  # our sequences without their last delta
        cached = 0
        engine_done = False
        failed = False
        outputs_seen = False
        prompt_done = False  # the engine computed (or reused) the prompt: tokens came
        prompt_counted = False
        try:
            outputs = aiter(handle)
            while remaining:
                try:
                    output = await anext(outputs)
                    self._monitor.progressed()
                    raws = [
                        delta_from_output(
                            stream.received,
                            output,
                            num_input,
                            cached,
                            index=i,
                            logprobs=sampling.logprobs,
                            max_tokens=max_tokens,
                        )
                        for i, stream in enumerate(streams)
                    ]
                except StopAsyncIteration:
                    break
                except self._request_errors as exc:
                    if outputs_seen:
                        raise self._failed(request_id, exc) from exc
                    # The LLM API's own checks of a request it had taken: refused, not failed.
                    failed = True
                    log.warning("TensorRT-LLM refused request %s: %s", request_id, exc)
                    raise InvalidRequestError(
                        "the engine refused the request's parameters"
                    ) from exc
                except Exception as exc:
                    failed = True
                    raise self._failed(request_id, exc) from exc
                outputs_seen = True
                engine_done = bool(output.finished) or all(raw.finished for raw in raws)
                for i, (stream, raw) in enumerate(zip(streams, raws, strict=True)):
                    stream.received = raw.num_output_tokens
                    cached = max(cached, raw.num_cached_tokens)
                    prompt_done = prompt_done or raw.num_output_tokens > 0
                    if stream.done:
                        continue  # ended here by a stop sequence: TensorRT-LLM runs on
                    self._generated += len(raw.token_ids) * copies
                    delta = stream.stops.push(raw)
                    if delta is None:
                        continue
                    if delta.finished:
                        stream.done = True
                        remaining -= copies
                        self._finish(request_id, entry, delta.finish_reason, copies)
                        if not remaining:
                            self._monitor.succeeded()  # served to its end
                            prompt_counted = self._count_prompt(prompt_done, num_input, cached)
                        if not remaining and not engine_done:
                            # Stop sequences ended what is left, not TensorRT-LLM.
                            _abort(handle, request_id)
                    for copy in range(i * copies, (i + 1) * copies):
                        yield replace(delta, index=copy)
            if not remaining:
                return
            # The output iterator ended without a final output: the rest are cancelled.
            for i, stream in enumerate(streams):
                if stream.done:
                    continue
                stream.done = True
                remaining -= copies
                self._finish(request_id, entry, FinishReason.CANCELLED, copies)
                end = TokenDelta(
                    (), num_input, stream.received, FinishReason.CANCELLED, cached, index=i
                )
                last = stream.stops.push(end)
                if last is not None:
                    for copy in range(i * copies, (i + 1) * copies):
                        yield replace(last, index=copy)
        finally:
            if not prompt_counted:
                self._count_prompt(prompt_done, num_input, cached)
            if remaining:
                if not engine_done:
                    _abort(handle, request_id)
                # An engine failure is no finish reason; a consumer leaving is a cancel.
                reason = None if failed else FinishReason.CANCELLED
                self._finish(request_id, entry, reason, remaining)

    def _submit(self, request: GenerationRequest) -> _InFlight:
        """Validate and admit a request; its entry, with the TensorRT-LLM handle."""
        llm, make_params = self._llm, self._make_sampling_params
        if llm is None or make_params is None or self._stopping or self.vocab_size is None:
            raise EngineStoppedError("the engine is not running")
        check_token_ids(request, self.vocab_size)
        prompt_len = len(request.prompt_ids)
        if prompt_len > self.max_input_len:
            raise InvalidRequestError(
                f"prompt has {prompt_len} tokens, exceeds the limit of {self.max_input_len}",
                code=ErrorCode.PROMPT_TOO_LONG,
                field="text_input",
                tokens=prompt_len,
                limit=self.max_input_len,
            )
        need = prompt_len + request.sampling.max_tokens
        if need > self.max_seq_len:
            raise InvalidRequestError(
                f"prompt tokens + max_tokens = {prompt_len} + {request.sampling.max_tokens} = "
                f"{need} exceeds the sequence limit of {self.max_seq_len}",
                code=ErrorCode.SEQUENCE_TOO_LONG,
                field="max_tokens",
                tokens=need,
                limit=self.max_seq_len,
            )
        n = request.sampling.n
        if n > self.max_batch_size:
            raise InvalidRequestError(
                f"num_return_sequences is {n}, exceeds the engine's {self.max_batch_size} "
                "sequences in flight",
                field="num_return_sequences",  # the ensemble input's name, as the CPU engine's
            )
        if request.request_id in self._inflight:
            raise InvalidRequestError(
                f"request id {request.request_id!r} is already in flight",
                code=ErrorCode.DUPLICATE_REQUEST_ID,
            )
        # Sequences count, not requests: each of the n takes a slot of the batch.
        inflight = self._inflight_sequences()
        if inflight + n > self.max_batch_size + self.max_queue:
            waiting = max(inflight - self.max_batch_size, 0)
            raise EngineOverloadedError(
                f"engine queue is full: {waiting} sequences waiting", waiting=waiting
            )
        kwargs = to_sampling_kwargs(request, self.capabilities)
        if request.guide is not None:
            make_guided = self._make_guided_decoding_params
            if make_guided is None:
                raise InvalidRequestError(
                    "this engine has no guided decoding", field=GUIDE_TYPE_FIELD
                )
            kwargs["guided_decoding"] = make_guided(**guided_decoding_kwargs(request.guide))
        try:
            handle = llm.generate_async(
                list(request.prompt_ids),
                sampling_params=make_params(**kwargs),
                streaming=True,
            )
        except self._request_errors as exc:  # the LLM API's own argument checks
            log.warning("TensorRT-LLM rejected request %s: %s", request.request_id, exc)
            raise InvalidRequestError("the engine rejected the request's parameters") from exc
        except Exception as exc:
            log.error("TensorRT-LLM could not take request %s: %r", request.request_id, exc)
            self._monitor.failed(f"could not take a request: {type(exc).__name__}")
            raise EngineError("the TensorRT-LLM engine could not take the request") from exc
        if not self._inflight:
            self._monitor.progressed()  # the time it idled was no stall
        entry = _InFlight(handle, n)
        self._inflight[request.request_id] = entry
        self._peak_inflight = max(self._peak_inflight, self._inflight_sequences())
        self._ensure_stats_task()
        return entry

    def _count_prompt(self, computed: bool, prompt_len: int, cached: int) -> bool:
        """Count a request's prompt tokens as reused or computed, once; one cancelled
        while queued (no tokens came) computed none."""
        if computed:
            self._prompt_cached += cached
            self._prompt_computed += prompt_len - cached
        return True

    def _failed(self, request_id: str, exc: BaseException) -> EngineError:
        log.error("TensorRT-LLM request %s failed: %r", request_id, exc)
        self._monitor.failed(f"a request failed: {type(exc).__name__}")
        return EngineError("the TensorRT-LLM request failed")

    def _inflight_sequences(self) -> int:
        return sum(entry.sequences for entry in self._inflight.values())

    def _finish(
        self, request_id: str, entry: _InFlight, reason: FinishReason | None, count: int
    ) -> None:
        """`count` of a request's sequences ended (reason None: failed, not counted)."""
        entry.sequences -= count
        if reason is not None:
            self._finished[reason.value] = self._finished.get(reason.value, 0) + count
        if entry.sequences <= 0 and self._inflight.get(request_id) is entry:
            del self._inflight[request_id]  # the id is free again once its last delta is out

    async def abort(self, request_id: str) -> None:
        """Cancel a request in TensorRT-LLM; its unfinished sequences end with CANCELLED."""
        entry = self._inflight.get(request_id)
        if entry is not None:
            _abort(entry.handle, request_id)

    def health(self) -> EngineHealth:
        """Whether the LLM can generate: started, its executor alive (as far as it tells),
        requests not failing one after another, and outputs coming while any run."""
        llm = self._llm
        if llm is None:
            return EngineHealth(False, "the engine is not running")
        if self._stopping:
            return EngineHealth(False, "the engine is shutting down")
        failure = executor_failure(llm)
        if failure is not None:
            self._monitor.fatal(failure)
        return self._monitor.check(busy=bool(self._inflight))

    def stats(self) -> EngineStats:
        """Our own admission figures (sequences), refined by the executor's iteration stats."""
        inflight = self._inflight_sequences()
        figures = self._iterations
        if figures.seen:
            active = min(inflight, figures.active)
            peak = figures.peak_step_batch
        else:
            active = min(inflight, self.max_batch_size)
            peak = min(self._peak_inflight, self.max_batch_size)
        busy = inflight > 0
        block = figures.kv_tokens_per_block
        return EngineStats(
            active=active,
            waiting=inflight - active,
            max_active=self.max_batch_size,
            context=figures.context if busy else 0,
            scheduled=figures.scheduled if busy else 0,
            steps=figures.steps,
            step_sequences=figures.step_sequences,
            peak_step_batch=peak,
            generated_tokens=self._generated,
            finished=dict(self._finished),
            prompt_tokens_cached=self._prompt_cached,
            prompt_tokens_computed=self._prompt_computed,
            # TensorRT-LLM's own block counts; the blocks it keeps for reuse count as free
            # there (its reusedBlocks counts reuses since start, not blocks held).
            kv_cache_tokens=figures.kv_max_blocks * block,
            kv_reserved_tokens=figures.kv_used_blocks * block,
            block_tokens=block,
        )

    async def shutdown(self) -> None:
        """Abort every request, stop collecting stats and shut the LLM down."""
        self._stopping = True
        for request_id, entry in list(self._inflight.items()):
            _abort(entry.handle, request_id)
        self._stop_stats_task()
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    # -- iteration stats ---------------------------------------------------------

    def _ensure_stats_task(self) -> None:
        # Started on the first request's loop: the executor's stats queue binds to the
        # loop that submits the first request, which is not the one start() ran on.
        if not self._collect_iteration_stats or not hasattr(self._llm, "get_stats_async"):
            return
        if self._stats_task is not None and not self._stats_task.done():
            return
        self._stats_task = asyncio.get_running_loop().create_task(
            self._collect_stats(), name="trtllm-iteration-stats"
        )

    async def _collect_stats(self) -> None:
        llm = self._llm
        while not self._stopping and llm is self._llm:
            try:
                async for item in llm.get_stats_async(timeout=STATS_TIMEOUT_S):
                    self._iterations.add(item)
            except Exception:
                log.warning("TensorRT-LLM iteration stats unavailable", exc_info=True)
                return
            await asyncio.sleep(STATS_IDLE_S)

    def _stop_stats_task(self) -> None:
        task, self._stats_task = self._stats_task, None
        if task is None or task.done():
            return
        loop = task.get_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is running:
            task.cancel()
        elif not loop.is_closed():
            # shutdown() may run on another loop than the requests did (Triton finalize).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)


@dataclass
class _InFlight:
    """A request in TensorRT-LLM: its RequestOutput handle and its unfinished sequences."""

    handle: Any
    sequences: int


class _SequenceStream:
    """What `generate` tracks of one sequence TensorRT-LLM generates."""

    def __init__(self, stop_sequences: Iterable[Sequence[int]], single_tokens: bool) -> None:
        self.stops = StopSequenceFilter(stop_sequences, single_tokens=single_tokens)
        self.received = 0  # output tokens read so far
        self.done = False  # its last delta went out


def _stream_stops(request: GenerationRequest, several: bool) -> tuple[tuple[int, ...], ...]:
    """The stop sequences a request's streams match. One of several sequences may end
    before the others, and then TensorRT-LLM cuts neither its stop token nor (should it
    show) its end id: the stream cuts them."""
    if not several or request.end_id is None:
        return request.stop_sequences
    return (*request.stop_sequences, (request.end_id,))


def _abort(handle: Any, request_id: str) -> None:
    try:
        handle.abort()
    except Exception:  # finished or gone meanwhile: nothing left to abort
        log.debug("abort of %s had no effect", request_id, exc_info=True)
