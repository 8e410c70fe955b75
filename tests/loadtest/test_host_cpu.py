"""CPU shares of the machine: the whole of it, and processes outside the test."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from loadtest.host_cpu import CpuMeter, CpuSample, cpu_figures


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


def test_waited_children_count_as_ours() -> None:
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
    assert after.ours_s - before.ours_s >= child_cpu - 2 * tick
    assert after.busy_s >= before.busy_s
    assert after.total_s > before.total_s


_SERVER = """
import sys
sys.stdin.readline()
sum(i * i for i in range(3_000_000))
print("done", flush=True)
sys.stdin.readline()
"""


def test_server_process_groups_count_as_ours() -> None:
    # A server in its own session, as the stacks run: it works between the samples and
    # waits on its input while they are taken.
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        with_server, without = CpuMeter(groups=[server.pid]), CpuMeter(groups=())
        before = with_server.sample(), without.sample(), _cpu_of(server.pid)
        server.stdin.write("go\n")
        server.stdin.flush()
        assert server.stdout.readline() == "done\n"
        after = with_server.sample(), without.sample(), _cpu_of(server.pid)
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    server_cpu = after[2] - before[2]
    counted = (after[0].ours_s - before[0].ours_s) - (after[1].ours_s - before[1].ours_s)
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert server_cpu > 0
    assert counted == pytest.approx(server_cpu, abs=2 * tick)


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
