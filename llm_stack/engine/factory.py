"""Build the engine a `tensorrt_llm` model config asks for."""

from __future__ import annotations

from llm_stack.engine.base import Engine
from llm_stack.model_config import ModelParameters
from llm_stack.model_source import resolve_model_path

ENGINES = ("cpu", "tensorrt_llm")


def create_engine(params: ModelParameters) -> Engine:
    """`engine` = cpu (llama.cpp, GGUF) or tensorrt_llm (LLM API); imports only that one."""
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
    from llm_stack.engine.trtllm_engine import TrtLlmEngine

    return TrtLlmEngine(
        model_path=str(model_path),
        max_batch_size=max_batch_size,
        max_queue=max_queue,
        max_input_len=params.get_int("max_input_len", minimum=1),
        max_seq_len=max_seq_len,
        enable_block_reuse=enable_prefix_cache,
        free_gpu_memory_fraction=params.get_fraction("kv_cache_free_gpu_memory_fraction"),
        stall_timeout_s=stall_timeout_s,
    )
