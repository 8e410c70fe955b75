"""Report folders written from synthetic results: tables, ratios, JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.batching import CONFIGS, WORKLOADS, WorkloadResult, comparisons, write_report
from loadtest.host_cpu import CpuFigures
from loadtest.levels import LevelResult
from loadtest.load_options import LoadOptions
from loadtest.records import RecordWriter, RequestRecord
from loadtest.report import RunContext, write_steps_report
from loadtest.rerender import rerender
from loadtest.server_metrics import ServerFigures
from loadtest.stats import Slo, level_stats

SLO = Slo(ttft_s=1.0, itl_s=0.1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _level(root: Path, name: str, users: int, tokens: int, ttft: float) -> LevelResult:
    """`users` streams for 10 s, each finishing a request of `tokens` every second."""
    records = [
        RequestRecord("/generate [stream]", True, 100.0 + t, 1.0, "ok", 200, 10, tokens, ttft, 0.02)
        for t in range(11)
        for _ in range(users)
    ]
    directory = root / name
    directory.mkdir(parents=True)
    with RecordWriter(directory / "records.jsonl") as writer:
        for record in records:
            writer.write(record)
    (directory / "locust.json").write_text("[]")
    return LevelResult(
        users=users,
        directory=directory,
        ramp_s=1.0,
        stats=level_stats(records, users, ramp_s=1.0, slo=SLO),
        server=ServerFigures(elapsed_s=10.0, engine_tokens_per_s=1.0, engine_peak_step_batch=users),
        cpu=CpuFigures(cores=2, machine_busy=0.9, others=0.2 if users == 4 else 0.01),
        locust=[],
        records=records,
    )


def _ctx() -> RunContext:
    return RunContext("http://127.0.0.1:1", 10, LoadOptions(), SLO, "python -m loadtest run")


def test_steps_report(tmp_path: Path) -> None:
    levels = [
        _level(tmp_path, f"steps/u{u}", u, tokens, ttft)
        for u, tokens, ttft in ((1, 50, 0.1), (4, 40, 0.3), (16, 30, 0.9))
    ]
    report = write_steps_report(tmp_path, levels, _ctx()).read_text()
    for name in ("throughput_ttft.png", "latency_distribution.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    # 16 users x 30 tokens each second: 480 output tokens/s, all within the SLO.
    assert "| 16 | 16.00 | 480.0 | 900 ms | 900 ms | 20 ms | 20 ms |" in report
    assert "| 1 | 1.00 | 50.0 | 100 ms |" in report
    # Other processes took 20% of the machine during the 4-user step only.
    assert "**Warning:**" in report
    assert "during 4 users (20.0%)" in report
    assert "| 90.0% / 1.0% |" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [lv["users"] for lv in summary["levels"]] == [1, 4, 16]
    assert summary["levels"][2]["goodput_per_s"] == pytest.approx(16.0)
    assert summary["levels"][2]["directory"] == "steps/u16"
    assert summary["slo"] == {"ttft_ms": 1000.0, "itl_ms": 100.0}


def test_batching_report(tmp_path: Path) -> None:
    # baseline 16 x 50 tok/s; one sequence at a time: 4 x 50; no dynamic batching: 15 x 50.
    shape = {
        "baseline": (16, 0.2),
        "no_inflight_batching": (4, 4.0),
        "no_dynamic_batching": (15, 0.2),
    }
    results = []
    for workload in ("short", "mixed"):
        levels = []
        for config in CONFIGS:
            streams, ttft = shape[config.name]
            level = _level(tmp_path, f"{workload}/{config.name}", streams, 50, ttft)
            levels.append(level)
        options = WORKLOADS[workload].derive(LoadOptions())
        results.append(WorkloadResult(WORKLOADS[workload], options, levels))
    ratios = comparisons(results[0])
    assert ratios["inflight_batching"]["output_tokens_per_s"] == pytest.approx(4.0)
    assert ratios["inflight_batching"]["ttft_p50"] == pytest.approx(0.05)
    assert ratios["dynamic_batching"]["output_tokens_per_s"] == pytest.approx(16 / 15)

    report = write_report(tmp_path, results, _ctx()).read_text()
    assert (tmp_path / "batching.png").read_bytes().startswith(PNG_MAGIC)
    assert "- `short`: output tokens/s **4.00x** (800.0 vs 200.0), TTFT p50 0.05x" in report
    assert "| output tok/s | 4.00x | 1.07x |" in report
    assert "## Workload `mixed`" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    short, mixed = summary["workloads"]
    assert short["load"]["max_tokens"] == "fixed:64"
    assert short["load"]["temperature"] == 0.0
    assert mixed["load"]["max_tokens"] == "uniform:32:128"
    assert [run["configuration"] for run in short["runs"]] == [c.name for c in CONFIGS]
    assert short["ratios_on_over_off"]["inflight_batching"]["output_tokens_per_s"] == 4.0
    # Rebuilt from its records, the folder tells the same.
    assert rerender(tmp_path).read_text() == report


def test_rerender_with_another_slo(tmp_path: Path) -> None:
    levels = [_level(tmp_path, f"steps/u{u}", u, 30, ttft) for u, ttft in ((1, 0.1), (16, 0.9))]
    first = write_steps_report(tmp_path, levels, _ctx()).read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())

    # The same SLO gives the same report.
    assert rerender(tmp_path).read_text() == first
    # TTFT within 500 ms: the 16-user step's requests (900 ms) no longer count.
    rerender(tmp_path, Slo(ttft_s=0.5, itl_s=0.1))
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["slo"] == {"ttft_ms": 500.0, "itl_ms": 100.0}
    assert [lv["goodput_per_s"] for lv in again["levels"]] == pytest.approx([1.0, 0.0])
    assert again["created"] == summary["created"]
    assert again["levels"][1]["output_tokens_per_s"] == summary["levels"][1]["output_tokens_per_s"]
    assert again["levels"][1]["cpu"] == summary["levels"][1]["cpu"]


def test_rerender_refuses_unknown_folders(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "other", **_summary_stub()}))
    with pytest.raises(ValueError, match="unknown kind"):
        rerender(tmp_path)


def _summary_stub() -> dict[str, object]:
    return {"host": "h", "duration_s_per_step": 1, "load": LoadOptions().describe(),
            "slo": {"ttft_ms": 1, "itl_ms": 1}, "command": "c", "created": "t",
            "machine": {"cpus": 2}}  # fmt: skip
