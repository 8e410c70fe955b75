"""Each declared sampling parameter is what the models' config.pbtxt files and the engine's
SamplingParams say: the ensemble's input, its way to the engine's input, the engine's field."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import tritonclient.grpc.model_config_pb2 as mc
from google.protobuf import text_format

from llm_stack.engine.base import SamplingParams
from llm_stack.ensemble_contract import ENGINE_MODEL, ENSEMBLE_MODEL, INPUTS, EnsembleRequest
from llm_stack.sampling_contract import (
    MAX_TOKENS,
    OPTIONAL_PARAMETERS,
    SAMPLING_PARAMETERS,
    SamplingInputs,
    SamplingParameter,
    engine_inputs,
)

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
TRITON_TYPES = {"INT32": "TYPE_INT32", "UINT64": "TYPE_UINT64", "FP32": "TYPE_FP32"}


def config(model: str) -> mc.ModelConfig:
    text = (REPOSITORY / model / "config.pbtxt").read_text("utf-8")
    return text_format.Parse(text, mc.ModelConfig())


def step_inputs(model: str) -> dict[str, str]:
    """The ensemble's input_map of its step running `model`: model input → tensor."""
    (step,) = [s for s in config(ENSEMBLE_MODEL).ensemble_scheduling.step if s.model_name == model]
    return dict(step.input_map)


@pytest.mark.parametrize("parameter", SAMPLING_PARAMETERS, ids=lambda p: p.name)
def test_the_ensemble_takes_it_with_its_type(parameter: SamplingParameter) -> None:
    declared = {t.name: t for t in config(ENSEMBLE_MODEL).input}[parameter.name]
    assert mc.DataType.Name(declared.data_type) == TRITON_TYPES[parameter.tensor.datatype]
    assert INPUTS[parameter.name].datatype == parameter.tensor.datatype


@pytest.mark.parametrize("parameter", OPTIONAL_PARAMETERS, ids=lambda p: p.name)
def test_the_ensemble_hands_it_to_the_engines_input(parameter: SamplingParameter) -> None:
    assert step_inputs(ENGINE_MODEL)[parameter.engine_input] == parameter.name


def test_max_tokens_reaches_the_engine_through_preprocessing() -> None:
    preprocessing = config(ENSEMBLE_MODEL).ensemble_scheduling.step[0]
    assert preprocessing.model_name == "preprocessing"
    assert dict(preprocessing.input_map)["REQUEST_OUTPUT_LEN"] == MAX_TOKENS.name
    produced = dict(preprocessing.output_map)["REQUEST_OUTPUT_LEN"]
    assert step_inputs(ENGINE_MODEL)[MAX_TOKENS.engine_input] == produced


@pytest.mark.parametrize("parameter", SAMPLING_PARAMETERS, ids=lambda p: p.name)
def test_the_engine_model_declares_its_input(parameter: SamplingParameter) -> None:
    declared = {t.name: t for t in config(ENGINE_MODEL).input}[parameter.engine_input]
    assert mc.DataType.Name(declared.data_type) == TRITON_TYPES[parameter.tensor.datatype]
    assert list(declared.dims) == [1]


@pytest.mark.parametrize("parameter", SAMPLING_PARAMETERS, ids=lambda p: p.name)
def test_it_sets_a_field_of_sampling_params(parameter: SamplingParameter) -> None:
    fields = {f.name: f for f in dataclasses.fields(SamplingParams)}
    assert parameter.engine_field in fields
    if parameter.unsent is not None:
        # Left out, the engine's default stands in for it.
        assert fields[parameter.engine_field].default == parameter.unsent


def test_names_are_unique_on_every_layer() -> None:
    for names in (
        [p.name for p in SAMPLING_PARAMETERS],
        [p.client_name for p in SAMPLING_PARAMETERS],
        [p.engine_input for p in SAMPLING_PARAMETERS],
        [p.engine_field for p in SAMPLING_PARAMETERS],
    ):
        assert len(set(names)) == len(names)
    assert set(engine_inputs()) == {p.engine_input for p in SAMPLING_PARAMETERS}


def test_the_request_carries_the_sampling_inputs_as_keywords() -> None:
    request = EnsembleRequest("hi", 4, temperature=0.5, num_return_sequences=2)
    sent = {t.name() for t in request.inputs()}
    assert sent == {"text_input", "max_tokens", "temperature", "num_return_sequences"}
    assert isinstance(request, SamplingInputs)


def test_sent_leaves_out_unset_values_and_the_engines_default() -> None:
    sampling = SamplingInputs(temperature=0.0, num_return_sequences=1, seed=0)
    assert sampling.sent() == {"temperature": 0.0, "seed": 0}
    assert SamplingInputs(num_return_sequences=2).sent() == {"num_return_sequences": 2}


@pytest.mark.parametrize(
    ("parameter", "inside", "outside", "interval"),
    [
        (SamplingParameter("a", MAX_TOKENS.tensor, 0, 50), [0, 50], [-1, 51], "0..50"),
        (SamplingParameter("b", INPUTS["temperature"], 0.0, 1.0, exclusive_minimum=True),
         [1e-9, 1.0], [0.0, 1.5, math.nan, math.inf], "(0, 1]"),
        (SamplingParameter("c", INPUTS["temperature"], -2.0, 2.0), [-2.0, 2], [-2.5, math.nan],
         "-2..2"),
    ],
)  # fmt: skip
def test_bounds_and_how_errors_write_them(
    parameter: SamplingParameter, inside: list[float], outside: list[float], interval: str
) -> None:
    low, high = parameter.minimum, parameter.maximum
    assert isinstance(low, int | float)
    assert isinstance(high, int | float)
    assert all(parameter.admits(value, low, high) for value in inside)
    assert not any(parameter.admits(value, low, high) for value in outside)
    assert parameter.interval(low, high) == interval


def test_names_default_to_the_ensembles() -> None:
    parameter = SamplingParameter("x", MAX_TOKENS.tensor, 0, 1)
    assert (parameter.engine_input, parameter.engine_field, parameter.client_name) == (
        "x", "x", "x",
    )  # fmt: skip
