"""Build the engine a `tensorrt_llm` model config asks for."""

from __future__ import annotations

from pathlib import Path

from llm_stack.engine.base import Engine
from llm_stack.model_config import ModelConfigError, ModelParameters
from llm_stack.model_source import resolve_model_path

ENGINES = ("cpu", "tensorrt_llm", "sim")
NO_FILE = "none"  # llm_args_file: no extra LLM arguments


def create_engine(params: ModelParameters) -> Engine:
    """`engine` = cpu (llama.cpp, GGUF), tensorrt_llm (LLM API) or sim (a simulated GPU
    engine, no weights); imports only that one."""
    kind = params.get_choice("engine", ENGINES)
    model_path = resolve_model_path(params.get_str("model_path"))
    max_batch_size = params.get_int("max_batch_size", minimum=1)
    max_queue = params.get_int("max_queue_size", minimum=0)
    max_seq_len = params.get_int("max_seq_len", minimum=2)
    enable_prefix_cache = params.get_bool("enable_prefix_cache")
    stall_timeout_s = params.get_float("engine_stall_timeout_s", minimum=1.0)
    if kind == "cpu":
        from llm_stack.engine.llama_cpp_engine import (
            LlamaCppConfig,
            LlamaCppEngine,
        )

        return LlamaCppEngine(
            LlamaCppConfig(
                model_path=model_path,
                max_batch_size=max_batch_size,
                max_queue=max_queue,
                kv_cache_tokens=params.get_int("kv_cache_tokens", minimum=1),
                max_seq_len=max_seq_len,
                max_step_tokens=params.get_int("max_step_tokens", minimum=1),
                n_threads=params.get_int("n_threads", minimum=0),
                enable_prefix_cache=enable_prefix_cache,
                prefix_cache_block_tokens=params.get_int("prefix_cache_block_tokens", minimum=1),
                stall_timeout_s=stall_timeout_s,
            )
        )
    if kind == "sim":
        return _sim_engine(params, model_path, max_batch_size, max_queue, max_seq_len)
    return _trtllm_engine(params, model_path, max_batch_size, max_queue, max_seq_len)


def _trtllm_engine(
    params: ModelParameters,
    model_path: Path,
    max_batch_size: int,
    max_queue: int,
    max_seq_len: int,
) -> Engine:
    from llm_stack.engine.trtllm import LlmBuildError, LlmSettings, TrtLlmEngine, read_llm_args

    args_file = params.get_str("llm_args_file")
    tokenizer_path = params.get_str("tokenizer_path")
    try:
        settings = LlmSettings(
            model_path=str(model_path),
            max_batch_size=max_batch_size,
            max_input_len=params.get_int("max_input_len", minimum=1),
            max_seq_len=max_seq_len,
            max_num_tokens=params.get_int("max_num_tokens", minimum=1),
            enable_chunked_prefill=params.get_bool("enable_chunked_prefill"),
            tensor_parallel_size=params.get_int("tensor_parallel_size", minimum=1),
            pipeline_parallel_size=params.get_int("pipeline_parallel_size", minimum=1),
            enable_block_reuse=params.get_bool("enable_prefix_cache"),
            free_gpu_memory_fraction=params.get_fraction("kv_cache_free_gpu_memory_fraction"),
            tokenizer_path=tokenizer_path,
            extra=read_llm_args(Path(args_file)) if args_file != NO_FILE else {},
        )
        return TrtLlmEngine(
            settings,
            max_queue,
            stall_timeout_s=params.get_float("engine_stall_timeout_s", minimum=1.0),
        )
    except LlmBuildError as exc:
        raise ModelConfigError(f"model '{params.model_name}': {exc}") from exc


def _sim_engine(
    params: ModelParameters,
    model_path: Path,
    max_batch_size: int,
    max_queue: int,
    max_seq_len: int,
) -> Engine:
    from llm_stack.engine.sim_engine import (
        CUSTOM_PRESET,
        PRESETS,
        SimConfig,
        SimEngine,
        SimTiming,
    )

    preset = params.get_choice("sim_preset", (*PRESETS, CUSTOM_PRESET))
    # Read (and checked) whatever the preset, so a typo fails the load, not a later switch.
    custom = SimTiming(
        prefill_tokens_per_s=params.get_float("sim_prefill_tokens_per_s", minimum=0.0),
        step_base_ms=params.get_float("sim_step_base_ms", minimum=0.0),
        step_per_sequence_us=params.get_float("sim_step_per_sequence_us", minimum=0.0),
        step_per_context_token_ns=params.get_float("sim_step_per_context_token_ns", minimum=0.0),
    )
    end_probability = params.get_float("sim_end_probability", minimum=0.0)
    if end_probability >= 1.0:
        raise ModelConfigError(
            f"model '{params.model_name}': parameter 'sim_end_probability' must be < 1, "
            f"got {end_probability}"
        )
    config = SimConfig(
        timing=custom if preset == CUSTOM_PRESET else PRESETS[preset],
        max_batch_size=max_batch_size,
        max_queue=max_queue,
        kv_cache_blocks=params.get_int("sim_kv_cache_blocks", minimum=1),
        block_tokens=params.get_int("prefix_cache_block_tokens", minimum=1),
        max_seq_len=max_seq_len,
        max_step_tokens=params.get_int("sim_max_step_tokens", minimum=1),
        enable_prefix_cache=params.get_bool("enable_prefix_cache"),
        end_probability=end_probability,
        seed=params.get_int("sim_seed", minimum=0),
        stall_timeout_s=params.get_float("engine_stall_timeout_s", minimum=1.0),
    )
    return SimEngine(config, model_path)
