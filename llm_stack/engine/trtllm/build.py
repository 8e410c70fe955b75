"""Building the `tensorrt_llm.LLM`: its arguments from the model's parameters, checked first.

The LLM is TensorRT-LLM's PyTorch backend on a Hugging Face checkpoint, as NVIDIA's own
Triton model (`triton_backend/all_models/llmapi`) builds it. The argument names are
`TorchLlmArgs` fields of the release in `CHECKED_VERSION`
(tests/llm_stack/engine/trtllm/api_surface.json); `extra` passes any other field through
from a YAML file, as NVIDIA's model.yaml does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The TensorRT-LLM release this adapter is written for and its fakes are recorded from:
# the one in NGC's tritonserver:26.07-trtllm-python-py3, pinned in docker-compose.yml.
CHECKED_VERSION = "1.2.1"

# Files of a Hugging Face tokenizer; a checkpoint with none needs `tokenizer_path`.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")

# LLM arguments the model's parameters set: the YAML file must not set them again.
PARAMETER_ARGS: Mapping[str, str] = {
    "model": "model_path",
    "tokenizer": "tokenizer_path",
    "max_batch_size": "max_batch_size",
    "max_input_len": "max_input_len",
    "max_seq_len": "max_seq_len",
    "max_num_tokens": "max_num_tokens",
    "enable_chunked_prefill": "enable_chunked_prefill",
    "tensor_parallel_size": "tensor_parallel_size",
    "pipeline_parallel_size": "pipeline_parallel_size",
    "kv_cache_config": "enable_prefix_cache / kv_cache_free_gpu_memory_fraction",
    "enable_iter_perf_stats": "(always on: the engine's metrics need it)",
    "guided_decoding_backend": "(always xgrammar: structured outputs need it)",
}


class LlmBuildError(ValueError):
    """The parameters describe an LLM this adapter cannot build; the model must not load."""


@dataclass(frozen=True)
class LlmSettings:
    """What the `tensorrt_llm` model's parameters ask of the LLM."""

    model_path: str
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    # Tokens one executor iteration computes. Without chunked prefill a prompt must fit
    # into one iteration, so max_input_len may not exceed it.
    max_num_tokens: int = 8192
    enable_chunked_prefill: bool = False
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    enable_block_reuse: bool = True
    free_gpu_memory_fraction: float = 0.9  # of the GPU memory free after loading the model
    tokenizer_path: str | None = None  # used where the checkpoint has no tokenizer
    extra: Mapping[str, Any] = field(default_factory=dict)  # other TorchLlmArgs fields

    def __post_init__(self) -> None:
        for name, minimum in (
            ("max_batch_size", 1),
            ("max_input_len", 1),
            ("max_seq_len", 2),
            ("max_num_tokens", 1),
            ("tensor_parallel_size", 1),
            ("pipeline_parallel_size", 1),
        ):
            value = getattr(self, name)
            if value < minimum:
                raise LlmBuildError(f"{name} must be >= {minimum}, got {value}")
        if self.max_input_len >= self.max_seq_len:
            raise LlmBuildError(
                f"max_input_len ({self.max_input_len}) must be below max_seq_len "
                f"({self.max_seq_len})"
            )
        if not self.enable_chunked_prefill and self.max_input_len > self.max_num_tokens:
            raise LlmBuildError(
                f"max_input_len ({self.max_input_len}) exceeds max_num_tokens "
                f"({self.max_num_tokens}) while enable_chunked_prefill is false: TensorRT-LLM "
                "refuses prompts longer than one iteration's tokens; raise max_num_tokens or "
                "enable chunked prefill"
            )
        if not 0.0 < self.free_gpu_memory_fraction <= 1.0:
            raise LlmBuildError(
                f"free_gpu_memory_fraction must be in (0, 1], got {self.free_gpu_memory_fraction}"
            )
        clash = sorted(set(self.extra) & set(PARAMETER_ARGS))
        if clash:
            name = clash[0]
            raise LlmBuildError(
                f"the LLM arguments file sets {name!r}, which the model parameter "
                f"{PARAMETER_ARGS[name]} sets; set it there"
            )

    @property
    def gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


def llm_kwargs(settings: LlmSettings, kv_cache_config: Any) -> dict[str, Any]:
    """Keyword arguments for `tensorrt_llm.LLM` (fields of `TorchLlmArgs`)."""
    model = Path(settings.model_path)
    if is_engine_dir(model):
        raise LlmBuildError(
            f"{model} is a TensorRT engine directory (rank*.engine): this engine serves "
            "Hugging Face checkpoints through TensorRT-LLM's PyTorch backend only (NVIDIA "
            "removed the TensorRT-engine LLM API, tensorrt_llm._tensorrt_engine, in PR "
            "#15918); set model_path to the checkpoint the engine was built from"
        )
    kwargs: dict[str, Any] = {
        "model": settings.model_path,
        "max_batch_size": settings.max_batch_size,
        "max_input_len": settings.max_input_len,
        "max_seq_len": settings.max_seq_len,
        "max_num_tokens": settings.max_num_tokens,
        "enable_chunked_prefill": settings.enable_chunked_prefill,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size,
        "kv_cache_config": kv_cache_config,
        # Without a grammar backend the LLM API does not enforce guided decoding.
        "guided_decoding_backend": "xgrammar",
        # Without it the PyTorch backend collects no iteration statistics at all.
        "enable_iter_perf_stats": True,
    }
    tokenizer = tokenizer_for(model, settings.tokenizer_path)
    if tokenizer is not None:
        kwargs["tokenizer"] = tokenizer
    return {**kwargs, **settings.extra}


def has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def tokenizer_for(model: Path, tokenizer_path: str | None) -> str | None:
    """The tokenizer to hand the LLM: None where the checkpoint has its own (or is a hub
    name the LLM API fetches), else `tokenizer_path`, which must hold one."""
    if not model.is_dir() or has_tokenizer(model):
        return None
    if tokenizer_path is not None and has_tokenizer(Path(tokenizer_path)):
        return tokenizer_path
    raise LlmBuildError(
        f"the checkpoint {model} has no tokenizer ({', '.join(TOKENIZER_FILES)}) and "
        f"tokenizer_path ({tokenizer_path}) has none either: the LLM API needs one for "
        "end-of-generation tokens and guided decoding"
    )


def is_engine_dir(path: Path) -> bool:
    """A directory `trtllm-build` wrote: `rank*.engine` files beside its config.json."""
    return path.is_dir() and any(path.glob("rank*.engine")) and (path / "config.json").is_file()


def read_llm_args(path: Path) -> dict[str, Any]:
    """Extra LLM arguments from a YAML mapping (NVIDIA's model.yaml without its
    `triton_config`, which belongs to config.pbtxt here)."""
    import yaml  # here only: the file is optional, and so is PyYAML outside the GPU image

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LlmBuildError(f"cannot read the LLM arguments file {path}: {exc}") from exc
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise LlmBuildError(f"the LLM arguments file {path} must hold a mapping of names")
    if "triton_config" in loaded:
        raise LlmBuildError(
            f"the LLM arguments file {path} has a triton_config section: that is NVIDIA's "
            "model's; this model's Triton settings are its config.pbtxt parameters"
        )
    return loaded


def config_vocab_size(model_path: Path) -> int | None:
    """The vocabulary size (embedding rows) in a checkpoint's config.json: `vocab_size`
    (`text_config.vocab_size` for multimodal ones); None where it says none."""
    try:
        config = json.loads((model_path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for section in (config, config.get("text_config")):
        if isinstance(section, dict):
            size = section.get("vocab_size")
            if isinstance(size, int) and not isinstance(size, bool) and size > 0:
                return size
    return None


def tokenizer_vocab_size(llm: Any) -> int | None:
    """The size of the LLM's tokenizer, added tokens included (None: it has none). The LLM
    API wraps Hugging Face's tokenizer (`TransformersTokenizer.tokenizer`)."""
    tokenizer = getattr(llm, "tokenizer", None)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    try:
        size = len(tokenizer) if tokenizer is not None else 0
    except TypeError:
        return None
    return size if size > 0 else None
