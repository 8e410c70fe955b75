"""config.pbtxt parameters: missing, unfilled, env overrides, typed parsing."""

from __future__ import annotations

from typing import Any

import pytest

from llm_stack.model_config import ModelConfigError, ModelParameters


def params(environ: dict[str, str] | None = None, **values: str) -> ModelParameters:
    """Parameters as Triton passes them: {"key": {"string_value": "..."}}."""
    config: dict[str, Any] = {
        "name": "tensorrt_llm",
        "parameters": {k: {"string_value": v} for k, v in values.items()},
    }
    return ModelParameters(config, environ=environ or {})


def test_string_value() -> None:
    assert params(model_path="/models/x.gguf").get_str("model_path") == "/models/x.gguf"


def test_value_is_stripped() -> None:
    assert params(max_batch_size="  8 ").get_int("max_batch_size") == 8


def test_plain_values_are_accepted() -> None:
    p = ModelParameters({"name": "m", "parameters": {"n": 3}}, environ={})
    assert p.get_int("n") == 3


def test_missing_parameter() -> None:
    with pytest.raises(ModelConfigError) as err:
        params().get_int("max_batch_size")
    assert str(err.value) == (
        "model 'tensorrt_llm': parameter 'max_batch_size' is missing from config.pbtxt "
        "(or set LLM_STACK_MAX_BATCH_SIZE)"
    )


def test_no_parameters_block() -> None:
    with pytest.raises(ModelConfigError, match="parameter 'engine' is missing"):
        ModelParameters({"name": "m"}, environ={}).get_str("engine")


@pytest.mark.parametrize("value", ["${engine_dir}", "", "   "])
def test_unfilled_parameter(value: str) -> None:
    with pytest.raises(ModelConfigError) as err:
        params(engine_dir=value).get_str("engine_dir")
    message = str(err.value)
    assert "parameter 'engine_dir' is not filled in" in message
    assert "LLM_STACK_ENGINE_DIR" in message
    assert repr(value.strip()) in message


def test_env_override_wins_over_config() -> None:
    p = params({"LLM_STACK_MAX_BATCH_SIZE": "32"}, max_batch_size="16")
    assert p.get_int("max_batch_size") == 32


def test_env_fills_a_placeholder_and_a_missing_parameter() -> None:
    env = {"LLM_STACK_ENGINE": "tensorrt_llm", "LLM_STACK_MODEL_PATH": "/m"}
    p = params(env, engine="${engine}")
    assert p.get_choice("engine", ("cpu", "tensorrt_llm")) == "tensorrt_llm"
    assert p.get_str("model_path") == "/m"


def test_empty_env_value_does_not_override() -> None:
    assert params({"LLM_STACK_ENGINE": ""}, engine="cpu").get_str("engine") == "cpu"


def test_environ_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_STACK_N_THREADS", "3")
    p = ModelParameters({"name": "m", "parameters": {"n_threads": {"string_value": "0"}}})
    assert p.get_int("n_threads") == 3


def test_int_parsing() -> None:
    p = params(a="-4", b="x", c="1.5")
    assert p.get_int("a") == -4
    with pytest.raises(ModelConfigError) as err:
        p.get_int("b")
    assert str(err.value) == "model 'tensorrt_llm': parameter 'b' must be an integer, got 'x'"
    with pytest.raises(ModelConfigError, match=r"parameter 'c' must be an integer, got '1\.5'"):
        p.get_int("c")


def test_int_minimum() -> None:
    p = params(n="0")
    assert p.get_int("n", minimum=0) == 0
    with pytest.raises(ModelConfigError) as err:
        p.get_int("n", minimum=1)
    assert str(err.value) == "model 'tensorrt_llm': parameter 'n' must be >= 1, got 0"


def test_float_parsing() -> None:
    p = params(t="600", h="0.5", bad="soon")
    assert p.get_float("t") == 600.0
    assert p.get_float("h", minimum=0.5) == 0.5
    with pytest.raises(ModelConfigError) as err:
        p.get_float("bad")
    assert str(err.value) == "model 'tensorrt_llm': parameter 'bad' must be a number, got 'soon'"
    with pytest.raises(ModelConfigError, match=r"parameter 'h' must be >= 1\.0, got 0\.5"):
        p.get_float("h", minimum=1.0)


@pytest.mark.parametrize(("value", "expected"), [("0.9", 0.9), ("1", 1.0), ("1e-3", 0.001)])
def test_fraction_parsing(value: str, expected: float) -> None:
    assert params(f=value).get_fraction("f") == expected


@pytest.mark.parametrize("value", ["0", "-0.5", "1.01", "nan", "inf"])
def test_fraction_outside_zero_to_one_is_refused(value: str) -> None:
    with pytest.raises(ModelConfigError) as err:
        params(f=value).get_fraction("f")
    assert str(err.value) == (
        f"model 'tensorrt_llm': parameter 'f' must be in (0, 1], got {float(value)}"
    )


def test_fraction_must_be_a_number() -> None:
    with pytest.raises(ModelConfigError, match=r"parameter 'f' must be a number, got 'most'"):
        params(f="most").get_fraction("f")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *(("true", True), ("True", True), ("1", True), ("yes", True)),
        *(("false", False), ("FALSE", False), ("0", False), ("no", False)),
    ],
)
def test_bool_parsing(value: str, expected: bool) -> None:
    assert params(flag=value).get_bool("flag") is expected


def test_bool_rejects_other_values() -> None:
    with pytest.raises(ModelConfigError) as err:
        params(flag="maybe").get_bool("flag")
    assert str(err.value) == (
        "model 'tensorrt_llm': parameter 'flag' must be true or false, got 'maybe'"
    )


def test_choice() -> None:
    p = params(engine="gpu")
    with pytest.raises(ModelConfigError) as err:
        p.get_choice("engine", ("cpu", "tensorrt_llm"))
    assert str(err.value) == (
        "model 'tensorrt_llm': parameter 'engine' is 'gpu', expected one of cpu, tensorrt_llm"
    )
    assert params(engine="cpu").get_choice("engine", ("cpu", "tensorrt_llm")) == "cpu"


def test_env_value_is_parsed_like_config() -> None:
    with pytest.raises(ModelConfigError, match=r"parameter 'n' must be an integer, got 'many'"):
        params({"LLM_STACK_N": "many"}, n="1").get_int("n")
