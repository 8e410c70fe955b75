"""Building the LLM: its arguments from the parameters, held to the recorded `TorchLlmArgs`."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llm_stack.engine.base import EngineStoppedError, InvalidRequestError
from llm_stack.engine.factory import create_engine
from llm_stack.engine.trtllm import CHECKED_VERSION, LlmBuildError, LlmSettings, TrtLlmEngine
from llm_stack.engine.trtllm.build import (
    config_vocab_size,
    is_engine_dir,
    llm_kwargs,
    read_llm_args,
)
from llm_stack.engine.trtllm.sampling import guided_decoding_kwargs
from llm_stack.guided_decoding import Guide, GuideType
from llm_stack.model_config import ModelConfigError
from llm_stack.model_repository_config import model_parameters
from tests.llm_stack.engine.trtllm.conftest import BuiltLLMs
from tests.llm_stack.engine.trtllm.fakes import (
    VERSION,
    FakeGuidedDecodingParams,
    FakeKvCacheConfig,
    FakeLLM,
    FakeRequestError,
    check_arguments,
)
from tests.llm_stack.engine.trtllm.helpers import make_request, refused, settings, started, submit

REPO_ROOT = Path(__file__).resolve().parents[4]
CONFIG = REPO_ROOT / "model_repository" / "tensorrt_llm" / "config.pbtxt"


def hf_checkpoint(path: Path, tokenizer: bool = True) -> Path:
    path.mkdir()
    (path / "config.json").write_text('{"vocab_size": 32000}')
    (path / "model.safetensors").write_bytes(b"")
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


def engine_dir(path: Path) -> Path:
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "rank0.engine").write_bytes(b"")
    return path


async def test_a_checkpoint_loads_with_the_recorded_llm_arguments(
    tensorrt_llm: BuiltLLMs, tmp_path: Path
) -> None:
    model = hf_checkpoint(tmp_path / "llama")
    engine = TrtLlmEngine(
        LlmSettings(str(model), max_batch_size=8, max_input_len=1024, max_seq_len=2048), 2
    )
    await engine.start()
    [llm] = tensorrt_llm.built
    assert llm.args == {
        "model": str(model),
        "max_batch_size": 8,
        "max_input_len": 1024,
        "max_seq_len": 2048,
        "max_num_tokens": 8192,
        "enable_chunked_prefill": False,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "kv_cache_config": FakeKvCacheConfig(enable_block_reuse=True, free_gpu_memory_fraction=0.9),
        "guided_decoding_backend": "xgrammar",
        # Without it the PyTorch backend's get_stats_async yields nothing.
        "enable_iter_perf_stats": True,
    }
    assert engine.capabilities.version == VERSION == CHECKED_VERSION
    assert FakeRequestError in engine._request_errors


async def test_parallelism_and_chunked_prefill_reach_the_llm(tensorrt_llm: BuiltLLMs) -> None:
    engine = TrtLlmEngine(
        settings(
            max_input_len=16000,
            max_seq_len=20000,
            max_num_tokens=4096,
            enable_chunked_prefill=True,
            tensor_parallel_size=4,
            pipeline_parallel_size=2,
        ),
        2,
    )
    await engine.start()
    [llm] = tensorrt_llm.built
    assert {k: llm.args[k] for k in ("tensor_parallel_size", "pipeline_parallel_size")} == {
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 2,
    }
    assert (llm.args["max_num_tokens"], llm.args["enable_chunked_prefill"]) == (4096, True)
    assert engine.settings.gpus == 8


def test_an_input_limit_beyond_one_iteration_needs_chunked_prefill() -> None:
    with pytest.raises(LlmBuildError, match=r"max_input_len \(16000\) exceeds max_num_tokens"):
        settings(max_input_len=16000, max_seq_len=20000)
    assert settings(max_input_len=16000, max_seq_len=20000, enable_chunked_prefill=True)


async def test_an_engine_directory_fails_the_load_naming_what_to_serve(
    tensorrt_llm: BuiltLLMs, tmp_path: Path
) -> None:
    model = engine_dir(tmp_path / "engine")
    engine = TrtLlmEngine(settings(model_path=str(model)), 2)
    with pytest.raises(EngineStoppedError, match="TensorRT engine directory") as caught:
        await engine.start()
    assert "Hugging Face checkpoint" in str(caught.value)
    assert tensorrt_llm.built == []
    assert "tensorrt_llm._tensorrt_engine" not in sys.modules


async def test_a_checkpoint_without_a_tokenizer_gets_the_tokenizer_path(
    tensorrt_llm: BuiltLLMs, tmp_path: Path
) -> None:
    model = hf_checkpoint(tmp_path / "llama", tokenizer=False)
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / "tokenizer_config.json").write_text("{}")
    engine = TrtLlmEngine(settings(model_path=str(model), tokenizer_path=str(tokenizer)), 2)
    await engine.start()
    assert tensorrt_llm.built[0].args["tokenizer"] == str(tokenizer)


async def test_a_checkpoint_with_its_own_tokenizer_keeps_it(
    tensorrt_llm: BuiltLLMs, tmp_path: Path
) -> None:
    model = hf_checkpoint(tmp_path / "llama")
    engine = TrtLlmEngine(settings(model_path=str(model), tokenizer_path=str(tmp_path)), 2)
    await engine.start()
    assert "tokenizer" not in tensorrt_llm.built[0].args


async def test_no_tokenizer_anywhere_fails_the_load(
    tensorrt_llm: BuiltLLMs, tmp_path: Path
) -> None:
    model = hf_checkpoint(tmp_path / "llama", tokenizer=False)
    engine = TrtLlmEngine(settings(model_path=str(model), tokenizer_path="gemma3-270m"), 2)
    with pytest.raises(EngineStoppedError, match="has no tokenizer"):
        await engine.start()
    assert tensorrt_llm.built == []


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("fraction", [0.25, 1.0])
async def test_kv_cache_config_follows_the_parameters(
    tensorrt_llm: BuiltLLMs, reuse: bool, fraction: float
) -> None:
    engine = TrtLlmEngine(settings(enable_block_reuse=reuse, free_gpu_memory_fraction=fraction), 2)
    await engine.start()
    assert tensorrt_llm.built[0].args["kv_cache_config"] == FakeKvCacheConfig(
        enable_block_reuse=reuse, free_gpu_memory_fraction=fraction
    )


async def test_extra_llm_arguments_pass_through(tensorrt_llm: BuiltLLMs) -> None:
    extra = {"enable_attention_dp": False, "trust_remote_code": True}
    engine = TrtLlmEngine(settings(extra=extra), 2)
    await engine.start()
    assert tensorrt_llm.built[0].args["trust_remote_code"] is True


async def test_an_extra_argument_the_release_lacks_fails_the_load(
    tensorrt_llm: BuiltLLMs,
) -> None:
    engine = TrtLlmEngine(settings(extra={"enable_magic": True}), 2)
    with pytest.raises(EngineStoppedError, match="could not load"):
        await engine.start()


def test_an_extra_argument_a_parameter_sets_is_refused() -> None:
    with pytest.raises(LlmBuildError, match="'tensor_parallel_size', which the model parameter"):
        settings(extra={"tensor_parallel_size": 2})


def test_the_llm_arguments_file_is_read_as_yaml(tmp_path: Path) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("trust_remote_code: true\nkv_cache_dtype: fp8\n")
    assert read_llm_args(path) == {"trust_remote_code": True, "kv_cache_dtype": "fp8"}
    path.write_text("triton_config:\n  max_batch_size: 8\n")
    with pytest.raises(LlmBuildError, match="triton_config section"):
        read_llm_args(path)
    path.write_text("- a list\n")
    with pytest.raises(LlmBuildError, match="must hold a mapping"):
        read_llm_args(path)
    with pytest.raises(LlmBuildError, match="cannot read"):
        read_llm_args(tmp_path / "missing.yaml")


async def test_the_installed_release_decides_what_is_applied(
    tensorrt_llm: BuiltLLMs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys.modules["tensorrt_llm"], "__version__", "1.0.0")
    engine = TrtLlmEngine(settings(), 2)
    with caplog.at_level(logging.WARNING):
        await engine.start()
    assert f"checked against {CHECKED_VERSION}" in caplog.text
    with pytest.raises(InvalidRequestError, match=r"TensorRT-LLM 1\.0\.0"):
        await refused(engine, make_request(temperature=0.8, n=2))


async def test_guides_reach_sampling_params_as_guided_decoding_params(
    tensorrt_llm: BuiltLLMs,
) -> None:
    engine = TrtLlmEngine(settings(), 2)
    await engine.start()
    [llm] = tensorrt_llm.built
    guide = Guide(GuideType.JSON_SCHEMA, '{"type":"string"}')
    await submit(engine, make_request(guide=guide))
    assert llm.calls[-1]["params"]["guided_decoding"] == FakeGuidedDecodingParams(
        json='{"type":"string"}'
    )


def test_guides_map_to_guided_decoding_params_fields() -> None:
    schema = '{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}'
    tag = '{"type":"structural_tag","format":{"type":"triggered_tags"}}'  # passed as text
    assert guided_decoding_kwargs(Guide(GuideType.JSON_SCHEMA, schema)) == {"json": schema}
    assert guided_decoding_kwargs(Guide(GuideType.JSON)) == {"json_object": True}
    assert guided_decoding_kwargs(Guide(GuideType.STRUCTURAL_TAG, tag)) == {"structural_tag": tag}
    for guide_type in GuideType:
        guide = Guide(guide_type, None if guide_type is GuideType.JSON else schema)
        check_arguments("GuidedDecodingParams", guided_decoding_kwargs(guide))


async def test_a_guided_request_without_guided_decoding_is_refused() -> None:
    llm = FakeLLM()
    engine = await started(llm, guided_decoding_params_factory=None)
    with pytest.raises(InvalidRequestError) as caught:
        await refused(engine, make_request(guide=Guide(GuideType.JSON)))
    assert caught.value.field == "guided_decoding_guide_type"
    assert llm.calls == []


# -- the factory, from the real config.pbtxt ------------------------------------------


def trtllm_from_config(model: Path, **env: str) -> TrtLlmEngine:
    environ = {"LLM_STACK_ENGINE": "tensorrt_llm", "LLM_STACK_MODEL_PATH": str(model), **env}
    engine = create_engine(model_parameters(CONFIG, environ=environ))
    assert isinstance(engine, TrtLlmEngine)
    return engine


def test_the_config_builds_a_one_gpu_engine_with_block_reuse(tmp_path: Path) -> None:
    engine = trtllm_from_config(hf_checkpoint(tmp_path / "llama"))
    kwargs = llm_kwargs(engine.settings, kv_cache_config=None)
    check_arguments("TorchLlmArgs", {**kwargs, "kv_cache_config": None})
    assert (engine.settings.enable_block_reuse, engine.settings.free_gpu_memory_fraction) == (
        True,
        0.9,
    )
    assert (kwargs["tensor_parallel_size"], kwargs["pipeline_parallel_size"]) == (1, 1)
    assert (kwargs["max_num_tokens"], kwargs["enable_chunked_prefill"]) == (8192, False)


def test_env_overrides_reach_the_llm_parameters(tmp_path: Path) -> None:
    args = tmp_path / "model.yaml"
    args.write_text("trust_remote_code: true\n")
    engine = trtllm_from_config(
        hf_checkpoint(tmp_path / "llama"),
        LLM_STACK_ENABLE_PREFIX_CACHE="false",
        LLM_STACK_KV_CACHE_FREE_GPU_MEMORY_FRACTION="0.6",
        LLM_STACK_TENSOR_PARALLEL_SIZE="2",
        LLM_STACK_PIPELINE_PARALLEL_SIZE="2",
        LLM_STACK_MAX_INPUT_LEN="12000",
        LLM_STACK_MAX_SEQ_LEN="16000",
        LLM_STACK_ENABLE_CHUNKED_PREFILL="true",
        LLM_STACK_MAX_NUM_TOKENS="2048",
        LLM_STACK_LLM_ARGS_FILE=str(args),
    )
    s = engine.settings
    assert (s.enable_block_reuse, s.free_gpu_memory_fraction) == (False, 0.6)
    assert (s.tensor_parallel_size, s.pipeline_parallel_size, s.gpus) == (2, 2, 4)
    assert (s.max_input_len, s.max_num_tokens, s.enable_chunked_prefill) == (12000, 2048, True)
    assert s.extra == {"trust_remote_code": True}


def test_an_input_limit_beyond_max_num_tokens_fails_the_load(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=r"max_input_len .* exceeds max_num_tokens"):
        trtllm_from_config(
            hf_checkpoint(tmp_path / "llama"),
            LLM_STACK_MAX_INPUT_LEN="9000",
            LLM_STACK_MAX_SEQ_LEN="12000",
        )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("kv_cache_free_gpu_memory_fraction", "0", "must be in \\(0, 1\\], got 0.0"),
        ("kv_cache_free_gpu_memory_fraction", "most", "must be a number"),
        ("tensor_parallel_size", "0", "must be >= 1"),
        ("enable_chunked_prefill", "maybe", "must be true or false"),
    ],
)
def test_a_bad_parameter_fails_the_load_naming_it(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ModelConfigError, match=f"parameter '{name}' {message}"):
        trtllm_from_config(
            hf_checkpoint(tmp_path / "llama"), **{f"LLM_STACK_{name.upper()}": value}
        )


async def test_start_without_tensorrt_llm_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # makes the import fail
    with pytest.raises(EngineStoppedError, match="tensorrt_llm is not installed"):
        await TrtLlmEngine(settings(), 1).start()


async def test_a_failing_load_is_an_engine_stopped_error() -> None:
    def broken() -> Any:
        raise RuntimeError("CUDA error: no device")

    engine = TrtLlmEngine(
        settings(model_path="/m"), 1, llm_factory=broken, sampling_params_factory=dict
    )
    with pytest.raises(EngineStoppedError, match="could not load /m"):
        await engine.start()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
        ({"max_input_len": 32}, "max_input_len \\(32\\) must be below max_seq_len \\(32\\)"),
        ({"free_gpu_memory_fraction": float("nan")}, "free_gpu_memory_fraction must be in"),
        ({"pipeline_parallel_size": 0}, "pipeline_parallel_size must be >= 1"),
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(LlmBuildError, match=message):
        settings(**overrides)


def test_a_negative_queue_is_refused() -> None:
    with pytest.raises(LlmBuildError, match="max_queue must be >= 0"):
        TrtLlmEngine(settings(), -1)


def test_importing_the_package_does_not_import_tensorrt_llm(tmp_path: Path) -> None:
    poisoned = tmp_path / "tensorrt_llm"
    poisoned.mkdir()
    (poisoned / "__init__.py").write_text("raise RuntimeError('tensorrt_llm was imported')\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import llm_stack.engine.trtllm, sys; assert 'tensorrt_llm' not in sys.modules",
        ],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_engine_dir_is_told_from_a_checkpoint(tmp_path: Path) -> None:
    assert not is_engine_dir(hf_checkpoint(tmp_path / "hf"))
    assert is_engine_dir(engine_dir(tmp_path / "engine"))
    assert not is_engine_dir(tmp_path / "missing")


@pytest.mark.parametrize(
    ("config", "size"),
    [
        ('{"vocab_size": 128256}', 128256),  # a Hugging Face checkpoint
        ('{"text_config": {"vocab_size": 262208}}', 262208),  # multimodal (Gemma 3 4B)
        ("{}", None),
        ('{"vocab_size": "many"}', None),
    ],
)
def test_the_vocabulary_size_comes_from_config_json(
    tmp_path: Path, config: str, size: int | None
) -> None:
    (tmp_path / "config.json").write_text(config)
    assert config_vocab_size(tmp_path) == size
    assert config_vocab_size(tmp_path / "none") is None
