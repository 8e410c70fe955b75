"""Rebuild a report folder's report.md, summary.json and plots from what it recorded.

Every figure is computed again from the request records, so a report can be judged
against another SLO without running the load again; the servers' and the machine's
figures are taken over from summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from loadtest.batching import CONFIGS, WORKLOADS, WorkloadResult, write_report
from loadtest.levels import reload_level
from loadtest.load_options import LoadOptions
from loadtest.report import RunContext, write_steps_report
from loadtest.stats import Slo


def rerender(out: Path, slo: Slo | None = None) -> Path:
    """Rewrite the report of folder `out`, with `slo` if given; returns report.md."""
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    ctx = RunContext.from_summary(summary, slo)
    if summary["kind"] == "steps":
        levels = [reload_level(out, entry, ctx.slo) for entry in summary["levels"]]
        return write_steps_report(out, levels, ctx)
    if summary["kind"] != "batching":
        raise ValueError(f"{out}/summary.json: unknown kind {summary['kind']!r}")
    names = [c.name for c in CONFIGS]
    results = []
    for workload in summary["workloads"]:
        runs = {run["configuration"]: run for run in workload["runs"]}
        results.append(
            WorkloadResult(
                WORKLOADS[workload["name"]],
                LoadOptions.from_description(workload["load"]),
                [reload_level(out, runs[name], ctx.slo) for name in names],
            )
        )
    return write_report(out, results, ctx)
