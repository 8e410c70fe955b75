"""Locust run headless in a subprocess for one load level, and its CSV statistics read back."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loadtest.load_options import API_KEY_ENV, LoadOptions

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


class LocustError(RuntimeError):
    """Locust did not run to its end."""


@dataclass(frozen=True)
class LocustLevel:
    """One headless Locust run: `users` at `spawn_rate` per second for `duration_s`."""

    host: str
    users: int
    spawn_rate: float
    duration_s: int
    out_dir: Path
    options: LoadOptions
    api_key: str = ""
    html: bool = True
    # Seconds the users get at the end to finish the request each has in flight (0: they
    # are stopped at once, and requests still running are not counted).
    stop_timeout_s: int = 0

    @property
    def csv_prefix(self) -> Path:
        return self.out_dir / "locust"

    @property
    def records(self) -> Path:
        return self.out_dir / "records.jsonl"  # where levels.py reads them

    @property
    def html_report(self) -> Path:
        return self.out_dir / "locust.html"

    @property
    def ramp_s(self) -> float:
        return self.users / self.spawn_rate

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--only-summary",
            f"--host={self.host}",
            f"--users={self.users}",
            f"--spawn-rate={self.spawn_rate}",
            f"--run-time={self.duration_s}s",
            f"--csv={self.csv_prefix}",
            # Locust rewrites its CSV once a second while running, so the last second can
            # be missing there; the JSON file is written at exit with the final figures.
            f"--json-file={self.csv_prefix}",
            f"--records={self.records}",
            # Failures are findings for the report, not a reason to fail the run.
            "--exit-code-on-error=0",
            "--loglevel=WARNING",
            *self.options.locust_args(),
        ]
        if self.html:
            cmd.append(f"--html={self.html_report}")
        if self.stop_timeout_s:
            cmd.append(f"--stop-timeout={self.stop_timeout_s}")
        return cmd


def run_locust(level: LocustLevel) -> None:
    """Run Locust to the end of its run time; its output goes to `locust.log`."""
    level.out_dir.mkdir(parents=True, exist_ok=True)
    # The key travels in the environment, not on a command line that `ps` shows.
    env = {**os.environ, API_KEY_ENV: level.api_key}
    log_path = level.out_dir / "locust.log"
    log.info("Locust: %d users for %d s against %s", level.users, level.duration_s, level.host)
    with log_path.open("wb") as out:
        try:
            code = subprocess.run(
                level.command(),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=level.duration_s + level.stop_timeout_s + 120,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired as exc:
            raise LocustError(f"Locust did not stop in time; see {log_path}") from exc
    if code != 0:
        raise LocustError(f"Locust exited with code {code}; see {log_path}")


@dataclass(frozen=True)
class LocustRow:
    """One line of Locust's `_stats.csv` (times in ms, or tokens for TOKENS rows)."""

    type: str
    name: str
    count: int
    failures: int
    median: float
    average: float
    p95: float
    requests_per_s: float


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _histogram_percentile(times: dict[int, int], count: int, share: float) -> float:
    """Locust's own percentile of its rounded response-time histogram."""
    if count == 0:
        return 0.0
    wanted = int(count * share)
    seen = 0
    for value in sorted(times, reverse=True):
        seen += times[value]
        if count - seen <= wanted:
            return float(value)
    return 0.0


def read_locust_json(prefix: Path) -> list[LocustRow]:
    """The final per-entry figures from `<prefix>.json` (Locust's --json-file)."""
    entries = json.loads(Path(f"{prefix}.json").read_text(encoding="utf-8"))
    rows = []
    for entry in entries:
        count = int(entry["num_requests"])
        times = {int(k): int(v) for k, v in entry["response_times"].items()}
        span = (entry["last_request_timestamp"] or entry["start_time"]) - entry["start_time"]
        rows.append(
            LocustRow(
                type=entry["method"],
                name=entry["name"],
                count=count,
                failures=int(entry["num_failures"]),
                median=_histogram_percentile(times, count, 0.5),
                average=entry["total_response_time"] / count if count else 0.0,
                p95=_histogram_percentile(times, count, 0.95),
                requests_per_s=count / span if span > 0 else 0.0,
            )
        )
    return rows


def read_locust_stats(csv_prefix: Path) -> list[LocustRow]:
    """The per-entry rows of `<prefix>_stats.csv`, without the Aggregated line."""
    path = Path(f"{csv_prefix}_stats.csv")
    with path.open(newline="", encoding="utf-8") as f:
        return [
            LocustRow(
                type=row["Type"],
                name=row["Name"],
                count=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                median=_number(row["Median Response Time"]),
                average=_number(row["Average Response Time"]),
                p95=_number(row["95%"]),
                requests_per_s=_number(row["Requests/s"]),
            )
            for row in csv.DictReader(f)
            if row["Name"] != "Aggregated"
        ]
