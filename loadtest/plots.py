"""PNG plots of load-test results (matplotlib's object API: no pyplot, no global state)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from loadtest.levels import LevelResult
from loadtest.records import RequestRecord

_DPI = 110


def _users_axis(ax: Any, users: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(users))
    ax.set_xticklabels([str(u) for u in users])
    ax.set_xlabel("concurrent users")
    ax.grid(True, alpha=0.3)


def throughput_and_ttft(levels: Sequence[LevelResult], path: Path) -> Path:
    """Output tokens/s (client and engine) and TTFT p50/p95, against users."""
    users = [lv.users for lv in levels]
    fig = Figure(figsize=(11, 4.2), dpi=_DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    tokens = [lv.stats.output_tokens_per_s for lv in levels]
    left.plot(users, tokens, "o-", label="measured by clients")
    engine = [lv.server.engine_tokens_per_s for lv in levels]
    if all(v is not None for v in engine):
        left.plot(users, engine, "s--", alpha=0.7, label="engine (Triton /metrics)")
    left.set_ylabel("output tokens/s")
    left.set_ylim(bottom=0)
    left.set_title("Aggregate output throughput")
    twin = left.twinx()
    twin.plot(
        users,
        [lv.stats.goodput_per_s for lv in levels],
        "^:",
        color="tab:green",
        label="goodput (req/s in SLO)",
    )
    twin.set_ylabel("requests/s meeting the SLO")
    twin.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()
    twin_handles = twin.get_legend_handles_labels()
    left.legend(
        handles[0] + twin_handles[0],
        handles[1] + twin_handles[1],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=3,
        fontsize="small",
    )
    _users_axis(left, users)

    for q, style in (("p50", "o-"), ("p95", "s--")):
        values = [getattr(lv.stats, f"ttft_{q}") for lv in levels]
        right.plot(users, [np.nan if v is None else v * 1000 for v in values], style, label=q)
    right.set_ylabel("time to first token, ms")
    right.set_ylim(bottom=0)
    right.set_title("Time to first token (streamed requests)")
    right.legend(loc="upper left")
    _users_axis(right, users)
    fig.savefig(path)
    return path


def _cdf(ax: Any, values: Sequence[float], label: str) -> None:
    if not values:
        return
    xs = np.sort(np.asarray(values, dtype=float))
    ys = np.arange(1, len(xs) + 1) / len(xs)
    ax.step(xs, ys, where="post", label=label)


def latency_distribution(levels: Sequence[LevelResult], path: Path) -> Path:
    """Cumulative distributions of TTFT, ITL and end-to-end latency, one line per level."""
    fig = Figure(figsize=(13, 4), dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    panels: tuple[tuple[str, Callable[[RequestRecord], float | None]], ...] = (
        ("time to first token, ms", lambda r: r.ttft_s),
        ("inter-token latency (mean per request), ms", lambda r: r.itl_s),
        ("end-to-end latency, s", lambda r: r.e2e_s),
    )
    for ax, (title, value) in zip(axes, panels, strict=True):
        scale = 1.0 if title.endswith(", s") else 1000.0
        for lv in levels:
            ok = [r for r in lv.records if r.outcome == "ok"]
            data = [v * scale for r in ok if (v := value(r)) is not None]
            who = f"{lv.users} user" + ("" if lv.users == 1 else "s")
            _cdf(ax, data, f"{who} (n={len(data)})")
        ax.set_xlabel(title)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
    axes[0].set_ylabel("fraction of requests")
    axes[0].legend(loc="lower right")
    fig.suptitle("Latency distributions (successful requests)")
    fig.savefig(path)
    return path


def batching_bars(
    names: Sequence[str], groups: Sequence[tuple[str, Sequence[LevelResult]]], path: Path
) -> Path:
    """Output tokens/s and TTFT p50 per configuration, one bar per workload."""
    fig = Figure(figsize=(12, 4.2), dpi=_DPI, layout="constrained")
    left, right = fig.subplots(1, 2)
    x = np.arange(len(names))
    width = 0.8 / len(groups)
    for i, (workload, levels) in enumerate(groups):
        offset = (i - (len(groups) - 1) / 2) * width
        bars = left.bar(x + offset, [lv.stats.output_tokens_per_s for lv in levels], width,
                        label=workload)  # fmt: skip
        left.bar_label(bars, fmt="%.0f", fontsize="small")
        ttft = [(lv.stats.ttft_p50 or np.nan) * 1000 for lv in levels]
        bars = right.bar(x + offset, ttft, width, label=workload)
        right.bar_label(bars, fmt="%.0f", fontsize="small")
    users = groups[0][1][0].users
    left.set_ylabel("output tokens/s")
    left.set_title(f"Aggregate output throughput, {users} users")
    right.set_yscale("log")
    right.set_ylabel("time to first token p50, ms (log scale)")
    right.set_title("Time to first token")
    for ax in (left, right):
        ax.set_xticks(x, names)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(title="workload", fontsize="small")
    fig.savefig(path)
    return path
