"""This machine's CPU use during a load level: all of it, and that of processes outside the test.

A load generator sharing the machine with the servers measures them only while nothing else
competes for the cores; the report states how much else ran (Linux /proc only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

_PROC = Path("/proc")
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal
_IDLE_FIELDS = (3, 4)  # idle iowait


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds: busy on the whole machine, in all, and used by the test's processes."""

    at: float
    busy_s: float
    total_s: float
    ours_s: float


def _machine_seconds(proc: Path, tick: int) -> tuple[float, float]:
    fields = [int(v) for v in (proc / "stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[i] for i in _BUSY_FIELDS if i < len(fields))
    idle = sum(fields[i] for i in _IDLE_FIELDS)
    return busy / tick, (busy + idle) / tick


def _process_times(proc: Path, pid: str) -> tuple[int, list[int]] | None:
    """(process group, [utime, stime, cutime, cstime]) of a process, in ticks."""
    try:
        text = (proc / pid / "stat").read_text()
    except OSError:  # gone since the listing
        return None
    # The command name is in parentheses and may itself hold spaces and ")".
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[2]), [int(v) for v in fields[11:15]]


class CpuMeter:
    """Samples CPU use; `groups` are the process groups of the servers the test started.

    This process counts with the children it has waited for: Locust, once its level ended.
    `proc`, `pid` (the process counted as this one) and `tick` (clock ticks per second)
    default to the live system; tests pass their own.
    """

    def __init__(
        self,
        groups: Iterable[int],
        *,
        proc: Path = _PROC,
        pid: int | None = None,
        tick: int | None = None,
    ) -> None:
        self.groups = frozenset(groups)
        self._proc = proc
        self._me = str(os.getpid() if pid is None else pid)
        self._tick = os.sysconf("SC_CLK_TCK") if tick is None else tick

    def sample(self) -> CpuSample:
        busy, total = _machine_seconds(self._proc, self._tick)
        ours = 0
        for entry in self._proc.iterdir():
            if not entry.name.isdigit():
                continue
            times = _process_times(self._proc, entry.name)
            if times is None:
                continue
            group, (utime, stime, cutime, cstime) = times
            if entry.name == self._me:
                ours += utime + stime + cutime + cstime
            elif group in self.groups:
                ours += utime + stime
        return CpuSample(time.time(), busy, total, ours / self._tick)


@dataclass(frozen=True)
class CpuFigures:
    """Shares of the machine's CPU capacity (all cores) between two samples."""

    cores: int
    machine_busy: float
    others: float | None  # None when the servers were not started by the test

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def cpu_figures(before: CpuSample, after: CpuSample, servers_are_ours: bool) -> CpuFigures:
    """Busy share of the machine, and the share used outside the test's processes."""
    total = max(after.total_s - before.total_s, 1e-9)
    busy = after.busy_s - before.busy_s
    others = max(busy - (after.ours_s - before.ours_s), 0.0) / total
    return CpuFigures(
        cores=os.cpu_count() or 1,
        machine_busy=min(busy / total, 1.0),
        others=others if servers_are_ours else None,
    )
