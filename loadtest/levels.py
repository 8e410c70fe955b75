"""One load level measured: the servers' /metrics scraped, Locust run, the figures computed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.host_cpu import CpuFigures, CpuMeter, cpu_figures
from loadtest.locust_process import LocustLevel, LocustRow, read_locust_json, run_locust
from loadtest.records import RequestRecord, read_records
from loadtest.server_metrics import ServerFigures, Snapshot, scrape, server_figures
from loadtest.stats import LevelStats, Slo, in_window, level_stats


@dataclass(frozen=True)
class MetricsEndpoints:
    """Where the frontend's and Triton's Prometheus metrics are read, and whose processes
    serve them: the process groups of a stack the runner started, empty otherwise."""

    frontend: str
    triton: str
    process_groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class LevelResult:
    """Everything measured at one number of users."""

    users: int
    directory: Path
    ramp_s: float
    stats: LevelStats
    server: ServerFigures
    cpu: CpuFigures
    locust: list[LocustRow]
    records: list[RequestRecord]  # those inside the measurement window

    def summary(self, root: Path) -> dict[str, object]:
        """For summary.json; paths relative to the report folder `root`."""
        return {
            "users": self.users,
            "directory": str(self.directory.relative_to(root)),
            "ramp_s": self.ramp_s,
            **self.stats.as_dict(),
            "server": self.server.as_dict(),
            "cpu": self.cpu.as_dict(),
            "locust": [row.__dict__ for row in self.locust],
        }


def _save(snapshot: Snapshot, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(snapshot.text, encoding="utf-8")


def measure_level(level: LocustLevel, endpoints: MetricsEndpoints, slo: Slo) -> LevelResult:
    """Run one level and compute its figures; raw scrapes are kept under `metrics/`."""
    metrics_dir = level.out_dir / "metrics"
    meter = CpuMeter(endpoints.process_groups)
    before = scrape(endpoints.frontend), scrape(endpoints.triton)
    cpu_before = meter.sample()
    run_locust(level)
    cpu_after = meter.sample()
    after = scrape(endpoints.frontend), scrape(endpoints.triton)
    for (fe, tr), when in ((before, "before"), (after, "after")):
        _save(fe, metrics_dir / f"frontend_{when}.prom")
        _save(tr, metrics_dir / f"triton_{when}.prom")
    return _result(
        level.out_dir,
        level.users,
        level.ramp_s,
        slo,
        server_figures((before[1], after[1]), (before[0], after[0])),
        cpu_figures(cpu_before, cpu_after, servers_are_ours=bool(endpoints.process_groups)),
    )


def _result(
    directory: Path, users: int, ramp_s: float, slo: Slo, server: ServerFigures, cpu: CpuFigures
) -> LevelResult:
    records = read_records(directory / "records.jsonl")
    chosen, _ = in_window(records, ramp_s)
    return LevelResult(
        users=users,
        directory=directory,
        ramp_s=ramp_s,
        stats=level_stats(records, users, ramp_s, slo),
        server=server,
        cpu=cpu,
        locust=read_locust_json(directory / "locust"),
        records=chosen,
    )


def reload_level(root: Path, summary: dict[str, Any], slo: Slo) -> LevelResult:
    """A level of a report folder from its summary.json entry and its records."""
    return _result(
        root / summary["directory"],
        int(summary["users"]),
        float(summary["ramp_s"]),
        slo,
        ServerFigures(**summary["server"]),
        CpuFigures(**summary["cpu"]),
    )
