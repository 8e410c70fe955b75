"""The recorded API surface: where it came from, the script that writes it, the fakes it
makes strict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm_stack.engine.trtllm import CHECKED_VERSION
from tests.llm_stack.engine.trtllm import record_api
from tests.llm_stack.engine.trtllm.fakes import (
    SURFACE,
    FakeKvCacheConfig,
    FakeLLM,
    FakeSamplingParams,
    matches,
)

HERE = Path(__file__).parent


def test_the_surface_is_the_pinned_release_read_at_a_commit() -> None:
    assert SURFACE["tensorrt_llm_version"] == CHECKED_VERSION
    assert len(SURFACE["commit"]) == 40
    assert SURFACE["ref"] == f"v{CHECKED_VERSION}"
    for name in (
        "TorchLlmArgs",
        "KvCacheConfig",
        "SamplingParams",
        "GuidedDecodingParams",
        "RequestOutput",
        "CompletionOutput",
    ):
        assert SURFACE["classes"][name]["fields"] or SURFACE["classes"][name]["attributes"]


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (FakeSamplingParams, {"stop_token_id": [1]}),  # misspelt: stop_token_ids
        (FakeSamplingParams, {"end_ids": 2}),
        (FakeSamplingParams, {"max_tokens": "8"}),  # an int field
        (FakeKvCacheConfig, {"enable_block_reuses": True}),
        (FakeLLM, {"enable_iter_perf_stat": True}),  # misspelt: enable_iter_perf_stats
        (FakeLLM, {"tensor_parallel": 2}),
    ],
)
def test_the_fakes_refuse_names_and_types_the_release_lacks(
    make: type, kwargs: dict[str, object]
) -> None:
    with pytest.raises(TypeError):
        make(**kwargs)


@pytest.mark.parametrize(
    ("annotation", "value", "fits"),
    [
        ("int", 3, True),
        ("int", True, False),
        ("Optional[int]", None, True),
        ("Optional[float]", 2, True),
        ("Optional[List[int]]", [1, 2], True),
        ("Optional[List[int]]", [1, "2"], False),
        ("Union[str, Path]", "/m", True),
        ("Literal['pytorch', 'tensorrt']", "pytorch", True),
        ("Literal['pytorch', 'tensorrt']", "onnx", False),
        ("int | None", None, True),
        ("KvCacheConfig", object(), True),  # a class of its own: not judged
    ],
)
def test_annotations_are_judged_where_they_are_plain(
    annotation: str, value: object, fits: bool
) -> None:
    assert matches(annotation, value) is fits


def mini_tree(root: Path) -> Path:
    """A TensorRT-LLM source tree of a few lines, as the script reads one."""
    files = {
        "tensorrt_llm/version.py": '__version__ = "9.8.7"\n',
        "tensorrt_llm/__init__.py": "",
        "tensorrt_llm/llmapi/__init__.py": "",
        "tensorrt_llm/executor/__init__.py": "",
        "tensorrt_llm/executor/utils.py": "class RequestError(RuntimeError):\n    pass\n",
        "tensorrt_llm/llmapi/llm_args.py": (
            "class StrictBaseModel:\n    pass\n"
            "class BaseLlmArgs(StrictBaseModel):\n"
            "    model: str = Field(description='x')\n"
            "    max_batch_size: Optional[int] = Field(default=None)\n"
            "    _private: int = 0\n"
            "class TorchLlmArgs(BaseLlmArgs):\n"
            "    enable_iter_perf_stats: bool = False\n"
            "class KvCacheConfig(StrictBaseModel):\n"
            "    enable_block_reuse: bool = True\n"
        ),
        "tensorrt_llm/sampling_params.py": (
            "class GuidedDecodingParams:\n    json: Optional[str] = None\n"
            "class SamplingParams:\n"
            "    end_id: Optional[int] = None\n"
            "    _stream: bool = field(default=False, init=False)\n"
            "    def _setup(self, tokenizer):\n        self.end_id = 1\n"
        ),
        "tensorrt_llm/executor/result.py": (
            "class CompletionOutput:\n    index: int\n    token_ids: Optional[List[int]] = None\n"
            "class GenerationResultBase:\n"
            "    def __init__(self):\n        self.cached_tokens = 0\n"
            "    @property\n    def outputs(self):\n        return []\n"
        ),
        "tensorrt_llm/llmapi/llm.py": (
            "class RequestOutput(GenerationResultBase):\n    pass\n"
            "class BaseLLM:\n"
            "    def generate_async(self, inputs, sampling_params=None, streaming=False):\n"
            "        pass\n"
            "class _TorchLLM(BaseLLM):\n    pass\n"
            "class LLM(_TorchLLM):\n    pass\n"
        ),
        "cpp/tensorrt_llm/executor/jsonSerialization.cpp": (
            "NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(KvCacheStats, maxNumBlocks, usedNumBlocks);\n"
            "NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(InflightBatchingStats, numScheduledRequests);\n"
            "NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(IterationStats, iter,\n"
            "    // a comment\n    kvCacheStats);\n"
        ),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_script_records_a_source_tree(tmp_path: Path) -> None:
    source = mini_tree(tmp_path / "src")
    meta = {"ref": "v9.8.7", "commit": "0" * 40, "triton_release": "99.01"}
    recorded = record_api.record(source, source / record_api.STATS_FILE, meta)
    assert recorded["tensorrt_llm_version"] == "9.8.7"
    torch_args = recorded["classes"]["TorchLlmArgs"]
    assert torch_args["fields"] == {
        "model": "str",
        "max_batch_size": "Optional[int]",
        "enable_iter_perf_stats": "bool",
    }
    assert torch_args["required"] == ["model"]
    assert torch_args["bases"] == ["StrictBaseModel", "BaseLlmArgs"]
    sampling = recorded["classes"]["SamplingParams"]
    assert sampling["fields"] == {"end_id": "Optional[int]"}
    output = recorded["classes"]["RequestOutput"]
    assert output["attributes"] == ["cached_tokens"]
    assert output["properties"] == ["outputs"]
    llm = recorded["classes"]["LLM"]
    assert llm["methods"]["generate_async"] == ["inputs", "sampling_params", "streaming"]
    assert recorded["iteration_stats"] == {
        "KvCacheStats": ["maxNumBlocks", "usedNumBlocks"],
        "InflightBatchingStats": ["numScheduledRequests"],
        "IterationStats": ["iter", "kvCacheStats"],
    }
    assert recorded["exceptions"] == {"RequestError": "tensorrt_llm/executor/utils.py"}
    assert recorded["modules"]["tensorrt_llm.executor.utils"] is True
    assert recorded["modules"]["tensorrt_llm.sampling_params"] is True


def test_the_script_runs_from_the_command_line(tmp_path: Path) -> None:
    source = mini_tree(tmp_path / "src")
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "record_api.py"),
            "--source",
            str(source),
            "--ref",
            "v9.8.7",
            "--commit",
            "0" * 40,
            "--triton",
            "99.01",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout)["triton_release"] == "99.01"
