"""config.pbtxt files read and written through Triton's ModelConfig schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_stack.model_config import ModelConfigError
from llm_stack.model_repository_config import (
    model_parameters,
    read_model_config,
    string_parameters,
    write_model_config,
)

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"

# Layouts a line-based reader gets wrong: a parameter split over lines, a commented-out
# one, and the `key:` of a warmup input, which is no parameter.
CONFIG = """
# parameters { key: "commented_out" value: { string_value: "no" } }
backend: "python"
max_batch_size: 8
dynamic_batching {
  # a comment inside the block
  max_queue_delay_microseconds: 100
  preferred_batch_size: [ 4, 8 ]
}
parameters {
  key: "engine"
  value: {
    string_value: "cpu"
  }
}
parameters { key: "empty" value: { string_value: "" } }
model_warmup [ { name: "warm" batch_size: 1
  inputs { key: "QUERY" value: { data_type: TYPE_STRING dims: [ 1 ] zero_data: true } } } ]
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_model" / "config.pbtxt"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def test_parameters_are_read(config_file: Path) -> None:
    config = read_model_config(config_file)
    assert string_parameters(config) == {"engine": "cpu", "empty": ""}
    params = model_parameters(config_file, environ={})
    assert params.get_str("engine") == "cpu"
    assert params.model_name == "my_model"  # the directory's name, as Triton names it


def test_missing_and_unfilled_parameters_name_the_model(config_file: Path) -> None:
    params = model_parameters(config_file, environ={})
    with pytest.raises(ModelConfigError, match="model 'my_model': parameter 'commented_out' is"):
        params.get_str("commented_out")
    with pytest.raises(ModelConfigError, match="parameter 'QUERY' is missing"):
        params.get_str("QUERY")
    with pytest.raises(ModelConfigError, match="parameter 'empty' is not filled in"):
        params.get_str("empty")


def test_environment_overrides_apply(config_file: Path) -> None:
    params = model_parameters(config_file, environ={"LLM_STACK_ENGINE": "tensorrt_llm"})
    assert params.get_str("engine") == "tensorrt_llm"


def test_a_file_triton_would_refuse_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text('name: "m"\nno_such_field: 1\n')
    with pytest.raises(ModelConfigError, match=r"config\.pbtxt: 2:1 : .*no_such_field"):
        read_model_config(path)


def test_dynamic_batching_removed_and_written_back(config_file: Path) -> None:
    config = read_model_config(config_file)
    assert config.dynamic_batching.preferred_batch_size == [4, 8]
    config.ClearField("dynamic_batching")
    write_model_config(config_file, config)
    written = read_model_config(config_file)
    assert not written.HasField("dynamic_batching")
    assert "dynamic_batching" not in config_file.read_text()
    assert written == config
    assert written.max_batch_size == 8
    assert string_parameters(written) == {"engine": "cpu", "empty": ""}
    assert written.model_warmup[0].inputs["QUERY"].zero_data


@pytest.mark.parametrize(
    "path", sorted(REPOSITORY.glob("*/config.pbtxt")), ids=lambda p: p.parent.name
)
def test_the_repository_configs_parse(path: Path) -> None:
    config = read_model_config(path)
    assert config.name == path.parent.name


def test_the_repository_engine_parameters() -> None:
    params = model_parameters(REPOSITORY / "tensorrt_llm" / "config.pbtxt", environ={})
    assert params.model_name == "tensorrt_llm"
    assert params.get_choice("engine", ("cpu", "tensorrt_llm")) == "cpu"
