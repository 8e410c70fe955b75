"""Each sampling parameter, declared once: its name, type, bounds and the tensors it becomes.

A sampling parameter is an input of the `ensemble` model (its name and tensor type), which
the ensemble hands to an input of the `tensorrt_llm` model (NVIDIA's name, e.g.
`runtime_top_k`), which sets one field of `llm_stack.engine.base.SamplingParams`. Everything
else derives from the declarations below: the frontend's validation rules, their errors and
the OpenAPI document's bounds (frontend.validation), the request's tensors
(`llm_stack.ensemble_contract.EnsembleRequest` is a `SamplingInputs`), and what the
tensorrt_llm model reads into `SamplingParams` (`engine_inputs`).

To add one: declare it in `SamplingInputs`, give `SamplingParams` (and the engines) its
field, and declare the tensor in both config.pbtxt files (the ensemble's input and its
`input_map` to the engine's input); `tests/llm_stack/test_sampling_contract.py` holds
those to this module. An API that accepts it names it in its wire model.

Numpy only: the Triton models import this without the gRPC client.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor of the contract: Triton's data type, the numpy type, its dims past the
    batch dimension ((1,) a value, (-1,) a list, (-1, -1) a list per token)."""

    datatype: str
    dtype: type[np.generic]
    dims: tuple[int, ...] = (1,)
    optional: bool = True

    @property
    def is_list(self) -> bool:
        return self.dims != (1,)


INT32: Final = TensorSpec("INT32", np.int32)
UINT64: Final = TensorSpec("UINT64", np.uint64)
FP32: Final = TensorSpec("FP32", np.float32)


@dataclass(frozen=True, slots=True)
class Setting:
    """A bound the server's settings give: the name of the frontend's limit
    (frontend.validation.ValidationLimits), e.g. max_top_k."""

    name: str


@dataclass(frozen=True, slots=True)
class OtherParameter:
    """A bound that is another parameter's value in the same request (e.g. min_tokens is
    at most max_tokens); the OpenAPI document states that parameter's own bound."""

    name: str


Limit = int | float | Setting | OtherParameter


@dataclass(frozen=True, slots=True)
class SamplingParameter:
    """One sampling parameter: `name` is the ensemble's input (and the field clients send,
    unless `client_name` says otherwise)."""

    name: str
    tensor: TensorSpec
    minimum: Limit
    maximum: Limit
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    engine_input: str = ""  # the tensorrt_llm model's input; "": `name`
    engine_field: str = ""  # SamplingParams' field; "": `name`
    client_name: str = ""  # the field the APIs call it; "": `name`
    # A value not sent at all: the engine's default, which older engine models may not take.
    unsent: int | float | None = None

    def __post_init__(self) -> None:
        for member in ("engine_input", "engine_field", "client_name"):
            if not getattr(self, member):
                object.__setattr__(self, member, self.name)

    @property
    def python_type(self) -> Callable[[Any], int | float]:
        """int or float: what a value of the tensor reads as."""
        return float if self.tensor.datatype == "FP32" else int

    def admits(self, value: float, low: float, high: float) -> bool:
        """Whether `value` lies within [low, high] (open where the bound is exclusive);
        NaN and infinities never do."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > low if self.exclusive_minimum else value >= low
        below = value < high if self.exclusive_maximum else value <= high
        return above and below

    def interval(self, low: float, high: float) -> str:
        """The allowed values as errors write them: `0..2`, or `(0, 1]` with an open end."""
        lo, hi = _number(low), _number(high)
        if self.exclusive_minimum or self.exclusive_maximum:
            left = "(" if self.exclusive_minimum else "["
            right = ")" if self.exclusive_maximum else "]"
            return f"{left}{lo}, {hi}{right}"
        return f"{lo}..{hi}"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _declare(tensor: TensorSpec, minimum: Limit, maximum: Limit, **more: Any) -> Any:
    """A SamplingInputs field (None: not sent, the engine's default) and its declaration."""
    declared = {"tensor": tensor, "minimum": minimum, "maximum": maximum, **more}
    return dataclasses.field(default=None, metadata={"tensor": tensor, "declared": declared})


# The one parameter every request sends (its ensemble input is required).
MAX_TOKENS: Final = SamplingParameter(
    "max_tokens", INT32, 1, Setting("max_tokens"), engine_input="request_output_len"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplingInputs:
    """The optional sampling inputs of one ensemble request; each field's metadata is its
    declaration. None: not sent (the engine's default)."""

    # n choices of one prompt (TensorRT-LLM backend's name); responses then carry
    # sequence_index, and the call ends after the last sequence's final response.
    num_return_sequences: int | None = _declare(
        INT32, 1, Setting("max_n"), client_name="n", engine_field="n", unsent=1
    )
    temperature: float | None = _declare(FP32, 0.0, 2.0)
    top_p: float | None = _declare(FP32, 0.0, 1.0, exclusive_minimum=True,
                                   engine_input="runtime_top_p")  # fmt: skip
    top_k: int | None = _declare(INT32, 0, Setting("max_top_k"), engine_input="runtime_top_k")
    seed: int | None = _declare(UINT64, 0, 2**64 - 1)
    # OpenAI's range for both penalties.
    presence_penalty: float | None = _declare(FP32, -2.0, 2.0)
    frequency_penalty: float | None = _declare(FP32, -2.0, 2.0)
    repetition_penalty: float | None = _declare(FP32, 0.0, 2.0, exclusive_minimum=True)
    min_tokens: int | None = _declare(INT32, 0, OtherParameter("max_tokens"))

    def sent(self) -> dict[str, Any]:
        """The inputs to send, by name: those set, but for a parameter's `unsent` value."""
        values = {p.name: getattr(self, p.name) for p in OPTIONAL_PARAMETERS}
        return {
            name: value
            for name, value in values.items()
            if value is not None and value != PARAMETERS[name].unsent
        }


# Every sampling parameter in validation order: max_tokens, then SamplingInputs' fields.
SAMPLING_PARAMETERS: Final[tuple[SamplingParameter, ...]] = (
    MAX_TOKENS,
    *(
        SamplingParameter(f.name, **f.metadata["declared"])
        for f in dataclasses.fields(SamplingInputs)
    ),
)
OPTIONAL_PARAMETERS: Final = SAMPLING_PARAMETERS[1:]
PARAMETERS: Final = {p.name: p for p in SAMPLING_PARAMETERS}


def engine_inputs() -> dict[str, SamplingParameter]:
    """The parameters by the tensorrt_llm model's input name (e.g. runtime_top_k)."""
    return {p.engine_input: p for p in SAMPLING_PARAMETERS}
