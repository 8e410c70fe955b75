"""The client-side contract matches the ensemble's config.pbtxt, tensor by tensor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.model_config_pb2 as mc
from google.protobuf import text_format

from llm_stack.engine.base import MAX_TOP_LOGPROBS
from llm_stack.ensemble_contract import (
    ENGINE_MODEL,
    ENSEMBLE_MODEL,
    INPUTS,
    MAX_NUM_TOP_LOG_PROBS,
    OUTPUTS,
    EnsembleRequest,
    stop_request,
    stream_request,
)
from llm_stack.sampling_contract import TensorSpec

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
TRITON_TYPES = {"BYTES": "TYPE_STRING", "INT32": "TYPE_INT32", "UINT64": "TYPE_UINT64",
                "FP32": "TYPE_FP32", "BOOL": "TYPE_BOOL"}  # fmt: skip


def config(model: str) -> mc.ModelConfig:
    text = (REPOSITORY / model / "config.pbtxt").read_text("utf-8")
    return text_format.Parse(text, mc.ModelConfig())


def described(spec: TensorSpec) -> tuple[str, list[int], bool]:
    return TRITON_TYPES[spec.datatype], list(spec.dims), spec.optional


def declared(tensor: mc.ModelInput | mc.ModelOutput) -> tuple[str, list[int], bool]:
    optional = getattr(tensor, "optional", False)
    return mc.DataType.Name(tensor.data_type), list(tensor.dims), optional


def test_inputs_are_the_ensembles() -> None:
    ensemble = config(ENSEMBLE_MODEL)
    assert ensemble.name == ENSEMBLE_MODEL
    assert {t.name: declared(t) for t in ensemble.input} == {
        name: described(spec) for name, spec in INPUTS.items()
    }


def test_outputs_are_the_ensembles() -> None:
    ensemble = config(ENSEMBLE_MODEL)
    assert {t.name: declared(t)[:2] for t in ensemble.output} == {
        name: described(spec)[:2] for name, spec in OUTPUTS.items()
    }


def test_the_engine_step_takes_the_stop_request() -> None:
    engine = config(ENGINE_MODEL)
    stop = {t.name: t for t in engine.input}["stop"]
    assert mc.DataType.Name(stop.data_type) == "TYPE_BOOL"
    assert stop.optional
    payload = stop_request("abc")
    assert (payload["model_name"], payload["request_id"]) == (ENGINE_MODEL, "abc")
    assert [(t.name(), t.datatype()) for t in payload["inputs"]] == [("stop", "BOOL")]


def test_unset_inputs_are_not_sent() -> None:
    request = EnsembleRequest("hi", 4, stop_words=(), temperature=None, seed=0)
    assert [t.name() for t in request.inputs()] == ["text_input", "max_tokens", "seed"]


@pytest.mark.parametrize("name", [n for n, s in INPUTS.items() if s.datatype != "BYTES"])
def test_numbers_go_with_their_declared_type(name: str) -> None:
    value = True if INPUTS[name].dtype is np.bool_ else 3
    fields: dict[str, Any] = {"text_input": "hi", "max_tokens": 4, name: value}
    request = EnsembleRequest(**fields)
    tensor = {t.name(): t for t in request.inputs()}[name]
    content = np.frombuffer(tensor._get_content(), INPUTS[name].dtype)
    assert (tensor.datatype(), tensor.shape(), content.tolist()) == (
        INPUTS[name].datatype, [1, 1], [value],
    )  # fmt: skip


def test_stream_request_asks_for_the_final_flag_and_chosen_outputs() -> None:
    payload = stream_request(EnsembleRequest("hi", 4), "id-1", outputs=["text_output"])
    assert payload["model_name"] == ENSEMBLE_MODEL
    assert payload["request_id"] == "id-1"
    assert payload["enable_empty_final_response"] is True
    assert [o.name() for o in payload["outputs"]] == ["text_output"]
    assert stream_request(EnsembleRequest("hi", 4))["outputs"] is None


def test_the_engines_hold_top_log_probs_to_the_contracts_bound() -> None:
    assert MAX_NUM_TOP_LOG_PROBS == MAX_TOP_LOGPROBS
