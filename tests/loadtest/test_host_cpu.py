"""CPU shares of the machine: the whole of it, and processes outside the test."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.host_cpu import CpuMeter, CpuSample, cpu_figures

TICK = 100  # clock ticks per second of the fake /proc trees


def test_shares_between_samples() -> None:
    before = CpuSample(at=0.0, busy_s=100.0, total_s=400.0, ours_s=50.0)
    after = CpuSample(at=10.0, busy_s=115.0, total_s=420.0, ours_s=62.0)
    figures = cpu_figures(before, after, servers_are_ours=True)
    assert figures.machine_busy == pytest.approx(15 / 20)
    assert figures.others == pytest.approx(3 / 20)
    assert figures.cores == os.cpu_count()
    assert cpu_figures(before, after, servers_are_ours=False).others is None


def test_others_never_negative() -> None:
    # Process times and machine times tick apart; a little more "ours" than busy is noise.
    before = CpuSample(0.0, 10.0, 20.0, 5.0)
    after = CpuSample(1.0, 11.0, 22.0, 6.5)
    assert cpu_figures(before, after, servers_are_ours=True).others == 0.0


def _fake_process(
    proc: Path, pid: int, comm: str, group: int, times: tuple[int, int, int, int]
) -> None:
    # Fields after the command name, as proc(5) numbers them from 3 (state) on.
    fields = ["S", "1", str(group), str(group), "0", "-1", "0", "0", "0", "0", "0"]
    fields += [str(t) for t in times] + ["20", "0", "1", "0", "123"]
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    """A /proc with this process (100), a server group (200) and an outsider (300)."""
    # user nice system idle iowait irq softirq steal guest guest_nice
    (tmp_path / "stat").write_text(
        "cpu  1000 20 300 4000 50 6 7 8 0 0\ncpu0 500 10 150 2000 25 3 3 4 0 0\n"
    )
    _fake_process(tmp_path, 100, "python", group=100, times=(10, 5, 7, 3))
    _fake_process(tmp_path, 200, "tritonserver", group=200, times=(40, 2, 0, 0))
    # A server's worker whose name holds spaces and a parenthesis, in the same group.
    _fake_process(tmp_path, 201, "stub ) x 9", group=200, times=(30, 1, 0, 0))
    _fake_process(tmp_path, 300, "other", group=300, times=(5000, 500, 900, 900))
    (tmp_path / "400").mkdir()  # a process that exited between the listing and the read
    (tmp_path / "self").mkdir()
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")
    return tmp_path


def test_machine_times_from_proc_stat(fake_proc: Path) -> None:
    sample = CpuMeter(groups=(), proc=fake_proc, pid=100, tick=TICK).sample()
    busy = 1000 + 20 + 300 + 6 + 7 + 8
    assert sample.busy_s == pytest.approx(busy / TICK)
    assert sample.total_s == pytest.approx((busy + 4000 + 50) / TICK)


def test_this_process_counts_with_its_waited_children(fake_proc: Path) -> None:
    sample = CpuMeter(groups=(), proc=fake_proc, pid=100, tick=TICK).sample()
    assert sample.ours_s == pytest.approx((10 + 5 + 7 + 3) / TICK)


def test_server_process_groups_count_as_ours(fake_proc: Path) -> None:
    sample = CpuMeter(groups=[200], proc=fake_proc, pid=100, tick=TICK).sample()
    this, server, worker = 10 + 5 + 7 + 3, 40 + 2, 30 + 1
    assert sample.ours_s == pytest.approx((this + server + worker) / TICK)
    # Every process of the group counts, and a process outside it never does.
    only_servers = CpuMeter(groups=[200, 999], proc=fake_proc, pid=0, tick=TICK).sample()
    assert only_servers.ours_s == pytest.approx((server + worker) / TICK)


def test_waited_children_count_as_ours_on_this_machine() -> None:
    meter = CpuMeter(groups=())
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = meter.sample()
    # A child like Locust: it runs, exits and is waited for between the samples.
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    after = meter.sample()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert child_cpu > 0
    # /proc and getrusage read the same finished child's times; /proc truncates cutime and
    # cstime to whole ticks (under a tick each), getrusage to microseconds. This process's
    # own time only ever adds.
    assert after.ours_s - before.ours_s >= child_cpu - 2 * tick - 1e-5


_SERVER = """
import sys
sys.stdin.readline()
sum(i * i for i in range(3_000_000))
print("done", flush=True)
sys.stdin.readline()
"""


def test_server_process_groups_count_as_ours_on_this_machine() -> None:
    # A server in its own session, as the stacks run. Its CPU time never decreases, so
    # reading it after the first sample and before the second brackets what the meter saw:
    # the meter's growth is at least what was read in between, however the ticks fall.
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    # pid 0 is no process: only the server's group counts, not this process's own time.
    meter = CpuMeter(groups=[server.pid], pid=0)
    try:
        before = meter.sample()
        server_before = _ticks_of(server.pid)
        server.stdin.write("go\n")
        server.stdin.flush()
        assert server.stdout.readline() == "done\n"
        server_after = _ticks_of(server.pid)
        after = meter.sample()
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    hz = os.sysconf("SC_CLK_TCK")
    assert server_after - server_before > 0
    assert round((after.ours_s - before.ours_s) * hz) >= server_after - server_before


def _ticks_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
