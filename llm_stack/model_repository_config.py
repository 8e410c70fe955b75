"""A model's `config.pbtxt` file, read and written as Triton's own `ModelConfig` message.

Inside Triton a model gets its config as JSON at load time (`llm_stack.model_config`).
Tools outside it (benchmarks, experiments, deployment checks) read the file itself, with
the protobuf schema Triton parses it with, so a block, a comment or an unusual layout
means to them what it means to Triton.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import tritonclient.grpc.model_config_pb2 as mc
from google.protobuf import text_format

from llm_stack.model_config import ModelConfigError, ModelParameters

# tritonclient's generated protobuf modules come without type stubs.
ModelConfig: TypeAlias = Any


def read_model_config(path: Path) -> ModelConfig:
    """Parse a config.pbtxt; a file Triton would refuse raises ModelConfigError."""
    try:
        return text_format.Parse(path.read_text("utf-8"), mc.ModelConfig())
    except text_format.ParseError as err:
        raise ModelConfigError(f"{path}: {err}") from None


def write_model_config(path: Path, config: ModelConfig) -> None:
    """Write `config` in text format; the original's comments and layout are not kept."""
    path.write_text(text_format.MessageToString(config), "utf-8")


def string_parameters(config: ModelConfig) -> dict[str, str]:
    """The `parameters` block: name to string_value."""
    return {key: value.string_value for key, value in config.parameters.items()}


def model_parameters(path: Path, environ: Mapping[str, str] | None = None) -> ModelParameters:
    """A model's parameters as the model reads them at load time, LLM_STACK_* overrides too."""
    config = read_model_config(path)
    # Triton names a model after its directory when the config does not.
    name = config.name or path.parent.name
    raw = {key: {"string_value": value} for key, value in string_parameters(config).items()}
    return ModelParameters({"name": name, "parameters": raw}, environ=environ)
