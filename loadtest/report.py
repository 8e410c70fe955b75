"""The report folder: summary.json, report.md and its PNG plots, for steps or the batching runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtest import plots
from loadtest.levels import LevelResult
from loadtest.load_options import LoadOptions
from loadtest.stats import Slo

METHOD = """\
How the figures are computed: each step is one headless Locust run of closed-loop users
(each sends its next request when the previous one ends). A step's window starts when every
user has sent its first request and ends when the first user's last finished request ends
(later tokens may belong to requests cut off at the end of the step, which leave no record).
Output tokens/s counts the tokens generated inside the window, spread evenly over each
request from its first token to its end; req/s, rates and latencies count the requests that
finished inside it. TTFT and ITL are measured by the clients on streamed requests: TTFT from
sending the request to the first text, ITL as one request's mean gap between tokens after
the first, (last text - first text) / (tokens - 1). e2e is the whole request, body read to
its end. Errors are failed requests (bad status, bad body, broken stream), rejections are
429 and 503 answers (load shed); both as a share of all requests. Goodput is the successful
requests per second that met the SLO: TTFT and ITL within it for a streamed request, and
for a non-streamed one, the whole answer within TTFT + ITL x (tokens - 1). The server
figures come from the frontend's and Triton's /metrics scraped before and after each step
(engine tokens/s over that whole interval, Locust's start-up included). Machine CPU: the
busy share of all cores during the step, and the share used by processes other than the
stack (when the runner started it) and Locust."""


@dataclass(frozen=True)
class RunContext:
    """What a report states about how it was made."""

    host: str
    duration_s: int
    options: LoadOptions
    slo: Slo
    command: str
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    )
    machine: dict[str, Any] = field(default_factory=lambda: this_machine())

    @classmethod
    def from_summary(cls, summary: dict[str, Any], slo: Slo | None = None) -> RunContext:
        """The context a summary.json states, optionally with another SLO."""
        return cls(
            host=summary["host"],
            duration_s=summary["duration_s_per_step"],
            options=LoadOptions.from_description(summary["load"]),
            slo=slo or Slo(summary["slo"]["ttft_ms"] / 1000, summary["slo"]["itl_ms"] / 1000),
            command=summary["command"],
            created=summary["created"],
            machine=summary["machine"],
        )

    def describe(self) -> dict[str, object]:
        return {
            "created": self.created,
            "command": self.command,
            "host": self.host,
            "duration_s_per_step": self.duration_s,
            "machine": self.machine,
            "load": self.options.describe(),
            "slo": {"ttft_ms": self.slo.ttft_s * 1000, "itl_ms": self.slo.itl_s * 1000},
        }


def this_machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "locust": metadata.version("locust"),
    }


def users_text(users: int) -> str:
    return f"{users} user" if users == 1 else f"{users} users"


def ms_text(seconds: float | None) -> str:
    """Seconds as whole milliseconds; '-' for none."""
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def load_line(o: LoadOptions, slo: Slo) -> str:
    """The request mix and SLO in one sentence."""
    return (
        f"Request mix (weights): /generate {o.generate_weight}, /generate streamed "
        f"{o.stream_weight}, /v1/chat/completions streamed {o.chat_weight}; max_tokens "
        f"`{o.max_tokens}`, temperature {o.temperature}, think time {o.think_time_s:g} s, "
        f"prompts from `{o.prompts.name}`. SLO: TTFT <= {slo.ttft_s * 1000:g} ms and "
        f"ITL <= {slo.itl_s * 1000:g} ms."
    )


def level_table(
    levels: Sequence[LevelResult], labels: Sequence[str] | None = None, first: str = "users"
) -> str:
    """The client-side figures, one row per level (labelled by users unless `labels`)."""
    names = labels if labels is not None else [str(lv.users) for lv in levels]
    header = [
        first, "req/s", "output tok/s", "TTFT p50", "TTFT p95", "ITL p50", "ITL p95",
        "e2e p50", "e2e p95", "errors", "rejected", "goodput req/s",
    ]  # fmt: skip
    rows = [
        [
            name,
            _num(s.requests_per_s, 2),
            _num(s.output_tokens_per_s),
            ms_text(s.ttft_p50),
            ms_text(s.ttft_p95),
            ms_text(s.itl_p50),
            ms_text(s.itl_p95),
            _s(s.e2e_p50),
            _s(s.e2e_p95),
            _pct(s.error_rate),
            _pct(s.rejection_rate),
            _num(s.goodput_per_s, 2),
        ]
        for name, lv in zip(names, levels, strict=True)
        for s in (lv.stats,)
    ]
    return markdown_table(header, rows)


def _per_model(values: dict[str, float], models: Sequence[str], digits: int = 1) -> str:
    return " / ".join(_num(values.get(m), digits) for m in models)


_QUEUED_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing")


def server_table(
    levels: Sequence[LevelResult], labels: Sequence[str] | None = None, first: str = "users"
) -> str:
    """The servers' view of each level, from /metrics."""
    names = labels if labels is not None else [str(lv.users) for lv in levels]
    header = [
        first,
        "engine tok/s",
        "tokens per engine step",
        "peak engine batch",
        "ensemble requests",
        "queue ms pre / engine / post",
        "batch size pre / post",
        "frontend generations",
        "machine CPU busy / others",
    ]
    rows = []
    for name, lv in zip(names, levels, strict=True):
        sv = lv.server
        gens = ", ".join(f"{k}: {v:.0f}" for k, v in sv.frontend_generations.items() if v)
        rows.append(
            [
                name,
                _num(sv.engine_tokens_per_s),
                _num(sv.engine_tokens_per_step, 2),
                _num(sv.engine_peak_step_batch, 0),
                _num(sv.triton_requests.get("ensemble"), 0),
                _per_model(sv.triton_queue_ms, _QUEUED_MODELS, 2),
                _per_model(sv.triton_batch_size, ("preprocessing", "postprocessing"), 2),
                gens or "-",
                f"{_pct(lv.cpu.machine_busy)} / "
                + ("-" if lv.cpu.others is None else _pct(lv.cpu.others)),
            ]
        )
    return markdown_table(header, rows)


# Above this share of the machine, other processes visibly slow a CPU engine.
_OTHERS_WARN = 0.05


def cpu_warning(levels: Sequence[LevelResult], labels: Sequence[str] | None = None) -> str:
    """A warning naming the levels during which other processes competed for the CPU."""
    names = labels if labels is not None else [users_text(lv.users) for lv in levels]
    busy = [
        f"{name} ({_pct(lv.cpu.others)})"
        for name, lv in zip(names, levels, strict=True)
        if lv.cpu.others is not None and lv.cpu.others > _OTHERS_WARN
    ]
    if not busy:
        return ""
    return (
        "**Warning:** processes outside the test used more than "
        f"{_OTHERS_WARN:.0%} of the machine's CPU during " + ", ".join(busy)
        + "; those figures understate the stack."
    )


def files_section(
    levels: Sequence[LevelResult], root: Path, labels: Sequence[str] | None = None
) -> str:
    names = labels if labels is not None else [users_text(lv.users) for lv in levels]
    lines = ["## Files", ""]
    for name, lv in zip(names, levels, strict=True):
        rel = lv.directory.relative_to(root)
        html = lv.directory / "locust.html"
        parts = [
            f"[`records.jsonl`]({rel}/records.jsonl)",
            f"[`locust_stats.csv`]({rel}/locust_stats.csv)",
        ]
        if html.exists():
            parts.insert(0, f"[Locust report]({rel}/locust.html)")
        parts.append(f"`{rel}/metrics/*.prom` (raw /metrics before and after)")
        lines.append(f"- {name}: " + ", ".join(parts))
    return "\n".join(lines)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_steps_report(out: Path, levels: Sequence[LevelResult], ctx: RunContext) -> Path:
    """summary.json, report.md and the plots of a step profile; returns report.md."""
    plots.throughput_and_ttft(levels, out / "throughput_ttft.png")
    plots.latency_distribution(levels, out / "latency_distribution.png")
    write_json(
        out / "summary.json",
        {"kind": "steps", **ctx.describe(), "levels": [lv.summary(out) for lv in levels]},
    )
    users = ", ".join(str(lv.users) for lv in levels)
    parts = [
        f"# Load test: {users} users",
        f"{ctx.created}, `{ctx.command}` against {ctx.host}; {ctx.machine['cpus']} CPUs; "
        f"{ctx.duration_s} s per step. {load_line(ctx.options, ctx.slo)}",
        level_table(levels),
        cpu_warning(levels),
        "![Throughput and TTFT against users](throughput_ttft.png)",
        "![Latency distributions](latency_distribution.png)",
        "## What the servers saw",
        server_table(levels),
        files_section(levels, out),
        METHOD,
    ]
    text = "\n\n".join(part for part in parts if part) + "\n"
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path
