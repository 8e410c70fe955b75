"""The real Locust, headless, against the real stack: a report with sane figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.triton_server import TritonServer
from loadtest.load_options import LoadOptions
from loadtest.locust_process import (
    LocustLevel,
    read_locust_json,
    read_locust_stats,
    run_locust,
)
from loadtest.prompt_set import TokenDistribution
from loadtest.records import read_records
from loadtest.runner import main
from tests.loadtest.conftest import StartFrontend

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_writes_a_report_with_sane_figures(
    triton: TritonServer, start_frontend: StartFrontend, tmp_path: Path
) -> None:
    frontend = start_frontend()
    out = tmp_path / "report"
    argv = [
        "run",
        "--host", frontend.url,
        "--triton-metrics", triton.metrics_url,
        "--users", "2",
        "--duration", "6s",
        "--out", str(out),
        "--max-tokens", "uniform:6:12",
    ]  # fmt: skip
    assert main(argv) == 0

    step = out / "steps" / "u2"
    for name in ("throughput_ttft.png", "latency_distribution.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert "<html" in (step / "locust.html").read_text().lower()
    for name in ("frontend_before", "frontend_after", "triton_before", "triton_after"):
        assert "# TYPE" in (step / "metrics" / f"{name}.prom").read_text()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "steps"
    (level,) = summary["levels"]
    assert level["users"] == 2
    assert level["ok"] > 0
    assert level["failed"] == 0
    assert level["rejected"] == 0
    assert level["requests_per_s"] > 0
    assert level["output_tokens_per_s"] > 0
    assert 1 <= level["mean_output_tokens"] <= 12
    assert 0 < level["ttft_p50"] <= level["ttft_p95"]
    assert 0 < level["itl_p50"] <= level["itl_p95"]
    assert level["ttft_p50"] < level["e2e_p95"]
    assert 0 < level["goodput_per_s"] <= level["requests_per_s"]
    server = level["server"]
    assert server["engine_tokens_per_s"] > 0
    assert server["engine_peak_step_batch"] >= 1
    assert server["triton_requests"]["ensemble"] >= level["ok"]
    assert sum(server["frontend_generations"].values()) >= level["ok"]
    # The stack was not started by the runner: only the machine's busy share is known.
    assert 0 < level["cpu"]["machine_busy"] <= 1
    assert level["cpu"]["others"] is None

    # Locust's own statistics hold the custom entries, TTFT among them.
    csv_rows = {(row.type, row.name): row for row in read_locust_stats(step / "locust")}
    assert csv_rows[("TTFT", "/generate [stream]")].count > 0
    rows = {(row.type, row.name): row for row in read_locust_json(step / "locust")}
    ttft = rows[("TTFT", "/generate [stream]")]
    assert ttft.count > 0
    assert ttft.median > 0
    summary_rows = {(r["type"], r["name"]): r for r in level["locust"]}
    assert summary_rows[("TTFT", "/generate [stream]")]["count"] == ttft.count
    assert rows[("ITL", "/generate [stream]")].count > 0
    assert rows[("TOKENS", "/generate [stream]")].median >= 1
    assert sum(row.failures for row in rows.values()) == 0

    report = (out / "report.md").read_text()
    assert "| users | req/s | output tok/s | TTFT p50" in report
    assert "\n| 2 | " in report
    assert "](throughput_ttft.png)" in report
    assert "](steps/u2/locust.html)" in report


def test_rejections_are_counted_apart_from_failures(
    start_frontend: StartFrontend, tmp_path: Path
) -> None:
    # One request a minute for the key: the two users' first requests start at once (the
    # second half a second after the first), so one is accepted and the rest of the run is
    # answered 429 however slowly the machine generates; in-flight requests finish.
    frontend = start_frontend(LLM_FRONTEND_API_KEYS="load-key", LLM_FRONTEND_RATE_LIMIT_RPM="1")
    level = LocustLevel(
        host=frontend.url,
        users=2,
        spawn_rate=2.0,
        duration_s=4,
        out_dir=tmp_path / "locust",
        options=LoadOptions(max_tokens=TokenDistribution.parse("fixed:4"), chat_weight=0),
        api_key="load-key",
        html=False,
        stop_timeout_s=60,
    )
    run_locust(level)

    records = read_records(level.records)
    outcomes = [r.outcome for r in records]
    assert outcomes.count("ok") == 1  # the key was accepted, up to its limit
    assert outcomes.count("failed") == 0
    rejected = [r for r in records if r.outcome == "rejected"]
    assert rejected
    assert {r.status for r in rejected} == {429}

    rows = read_locust_json(level.csv_prefix)
    assert sum(r.count for r in rows if r.type == "REJECTED") == len(rejected)
    assert all(r.name.startswith("429 /generate") for r in rows if r.type == "REJECTED")
    assert sum(r.failures for r in rows) == 0
    assert sum(r.count for r in rows if r.type == "POST") == 1


def test_streamed_chat_completions_are_measured(
    start_frontend: StartFrontend, tmp_path: Path
) -> None:
    frontend = start_frontend()
    level = LocustLevel(
        host=frontend.url,
        users=2,
        spawn_rate=2.0,
        duration_s=3,
        out_dir=tmp_path / "locust",
        options=LoadOptions(
            max_tokens=TokenDistribution.parse("fixed:5"),
            generate_weight=0,
            stream_weight=0,
            chat_weight=1,
        ),
        html=False,
        # Each user's first request is counted however long the machine takes with it.
        stop_timeout_s=60,
    )
    run_locust(level)

    records = read_records(level.records)
    assert records
    assert {r.endpoint for r in records} == {"/v1/chat/completions [stream]"}
    assert {r.outcome for r in records} == {"ok"}
    # max_tokens 5: at most five tokens, and a finish before that stops a request early.
    assert all(1 <= r.completion_tokens <= 5 and r.prompt_tokens > 0 for r in records)
    assert all(r.ttft_s is not None and 0 < r.ttft_s <= r.e2e_s for r in records)
    rows = {(row.type, row.name): row for row in read_locust_json(level.csv_prefix)}
    # The model was discovered with GET /v1/models, once per user.
    assert rows[("GET", "/v1/models")].count == 2
    assert rows[("TTFT", "/v1/chat/completions [stream]")].count == len(records)
    assert sum(row.failures for row in rows.values()) == 0
