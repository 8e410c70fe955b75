"""The runner's command line and the pieces it builds on that need no server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from launcher.triton_server import DEFAULT_MODEL_REPOSITORY
from llm_stack.model_repository_config import read_model_config
from loadtest.batching import SHARED_PREFIX_PROMPTS
from loadtest.load_options import LoadOptions, add_load_arguments
from loadtest.locust_process import LocustLevel, read_locust_json
from loadtest.prompt_set import PromptSet, TokenDistribution
from loadtest.runner import _command_line, _plan, build_parser, duration_s, main
from loadtest.stack import StackError, without_dynamic_batching


@pytest.mark.parametrize(("text", "seconds"), [("60", 60), ("45s", 45), ("2m", 120), ("1h", 3600)])
def test_durations(text: str, seconds: int) -> None:
    assert duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "1.5m", "-3", "10d", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration_s(text)


def test_defaults_of_run() -> None:
    args = build_parser().parse_args(["run", "--out", "x"])
    assert args.users == [1, 4, 16]
    assert args.duration == 60
    assert args.host == "http://127.0.0.1:8080"
    assert args.triton_metrics == "http://127.0.0.1:8002/metrics"
    assert LoadOptions.from_namespace(args) == LoadOptions()


def test_load_options_survive_the_trip_to_locust() -> None:
    options = LoadOptions(
        max_tokens=TokenDistribution.parse("choice:8,16"),
        temperature=0.0,
        generate_weight=0,
        stream_weight=5,
        chat_weight=0,
        think_time_s=0.25,
        prompts=Path("/tmp/p.json"),
        chat_model="gemma",
    )
    parser = argparse.ArgumentParser()
    add_load_arguments(parser)
    assert LoadOptions.from_namespace(parser.parse_args(options.locust_args())) == options


def test_locust_command_line(tmp_path: Path) -> None:
    level = LocustLevel(
        host="http://127.0.0.1:1",
        users=4,
        spawn_rate=2.0,
        duration_s=30,
        out_dir=tmp_path,
        options=LoadOptions(),
        api_key="secret",
        html=False,
    )
    command = level.command()
    assert "--users=4" in command
    assert "--run-time=30s" in command
    assert f"--records={tmp_path / 'records.jsonl'}" in command
    assert not any(arg.startswith("--html") for arg in command)
    assert not any("secret" in arg for arg in command)
    assert level.ramp_s == 2.0


def test_api_key_is_not_written_to_reports() -> None:
    shown = _command_line(["run", "--api-key", "k1", "--out", "o", "--api-key=k2"])
    assert "k1" not in shown
    assert "k2" not in shown
    assert shown.startswith("python -m loadtest run --api-key")


def test_weights_must_leave_some_request(tmp_path: Path) -> None:
    argv = ["run", "--out", str(tmp_path / "o"), "--generate-weight", "0", "--stream-weight",
            "0", "--chat-weight", "0"]  # fmt: skip
    assert main(argv) == 1
    assert not (tmp_path / "o").exists()


def test_a_used_report_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("earlier results")
    assert main(["run", "--out", str(tmp_path), "--users", "1"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]


def test_without_dynamic_batching(tmp_path: Path) -> None:
    models = ("preprocessing", "postprocessing")
    copy = without_dynamic_batching(DEFAULT_MODEL_REPOSITORY, tmp_path / "repo", models)
    for model in models:
        original = read_model_config(DEFAULT_MODEL_REPOSITORY / model / "config.pbtxt")
        changed = read_model_config(copy / model / "config.pbtxt")
        assert original.HasField("dynamic_batching")
        assert not changed.HasField("dynamic_batching")
        assert "dynamic_batching" not in (copy / model / "config.pbtxt").read_text()
        # Nothing else changes: the same config, less the block.
        original.ClearField("dynamic_batching")
        assert changed == original
        assert changed.name == model
    for model in ("ensemble", "tensorrt_llm"):
        assert (copy / model / "config.pbtxt").read_text() == (
            DEFAULT_MODEL_REPOSITORY / model / "config.pbtxt"
        ).read_text()
    with pytest.raises(StackError, match="has no dynamic_batching block"):
        without_dynamic_batching(copy, tmp_path / "again", models)


def test_locust_json_rows(tmp_path: Path) -> None:
    entry = {
        "name": "/generate [stream]",
        "method": "TTFT",
        "start_time": 100.0,
        "last_request_timestamp": 110.0,
        "num_requests": 20,
        "num_failures": 0,
        "total_response_time": 20 * 150.0,
        # Locust's histogram of rounded times: 11 at 100 ms, 8 at 200 ms, 1 at 300 ms.
        "response_times": {"100": 11, "200": 8, "300": 1},
    }
    (tmp_path / "locust.json").write_text(json.dumps([entry]))
    (row,) = read_locust_json(tmp_path / "locust")
    assert (row.type, row.name, row.count, row.failures) == ("TTFT", "/generate [stream]", 20, 0)
    # Locust's percentile: the smallest time with at most (1 - q) of the requests above it.
    assert (row.median, row.p95, row.average) == (100.0, 300.0, 150.0)
    assert row.requests_per_s == pytest.approx(2.0)


def test_shared_prefix_workload_sends_one_block_with_distinct_last_lines() -> None:
    plan = _plan(build_parser().parse_args(["run", "--out", "x", "--workload", "shared_prefix"]))
    assert plan.options.prompts == SHARED_PREFIX_PROMPTS
    assert plan.options.max_tokens == TokenDistribution.parse("fixed:32")
    assert plan.options.temperature == 0.0
    prompts = PromptSet.load(SHARED_PREFIX_PROMPTS).prompts
    block = prompts[0].split("Question ")[0]
    assert len(block) > 1500  # several hundred tokens
    assert all(p.startswith(block) for p in prompts)
    assert len(set(prompts)) == len(prompts)
    default = _plan(build_parser().parse_args(["run", "--out", "x"]))
    assert default.options.prompts != SHARED_PREFIX_PROMPTS
