"""The batching experiment: one load, stacks with and without each kind of batching.

Configurations: `baseline` (the committed settings), `no_inflight_batching` (the engine
runs one sequence at a time) and `no_dynamic_batching` (pre- and postprocessing without
Triton's dynamic batcher). Each runs on a fresh stack, one after another, under each
workload: `short` (short prompts, 64 tokens, greedy: the shape of loadtest.engine_bench,
whose engine-alone gain is the ceiling) and `mixed` (the request mix as given).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launcher.triton_server import DEFAULT_MODEL_REPOSITORY
from loadtest import plots
from loadtest.levels import LevelResult, MetricsEndpoints, measure_level
from loadtest.load_options import LoadOptions
from loadtest.locust_process import LocustLevel
from loadtest.prompt_set import TokenDistribution
from loadtest.report import (
    METHOD,
    RunContext,
    cpu_warning,
    files_section,
    level_table,
    load_line,
    markdown_table,
    ms_text,
    server_table,
    write_json,
)
from loadtest.stack import LocalStack, without_dynamic_batching
from loadtest.stats import Slo

log = logging.getLogger(__name__)

SHORT_PROMPTS = Path(__file__).resolve().parent / "prompts_short.json"
# loadtest.prefix_bench's shared_prefix prompts: one ~400-token block, 48 last lines.
SHARED_PREFIX_PROMPTS = Path(__file__).resolve().parent / "prompts_shared_prefix.json"


@dataclass(frozen=True)
class BatchingConfig:
    """One stack configuration."""

    name: str
    description: str
    inflight_batching: bool
    dynamic_batching: bool
    triton_env: dict[str, str] = field(default_factory=dict)


CONFIGS = (
    BatchingConfig(
        "baseline",
        "the committed settings: in-flight batching, dynamic batching of pre/postprocessing",
        inflight_batching=True,
        dynamic_batching=True,
    ),
    BatchingConfig(
        "no_inflight_batching",
        "`LLM_STACK_MAX_BATCH_SIZE=1`: the engine runs one sequence at a time",
        inflight_batching=False,
        dynamic_batching=True,
        triton_env={"LLM_STACK_MAX_BATCH_SIZE": "1"},
    ),
    BatchingConfig(
        "no_dynamic_batching",
        "`dynamic_batching` removed from preprocessing and postprocessing (in a copy of the "
        "model repository)",
        inflight_batching=True,
        dynamic_batching=False,
    ),
)


@dataclass(frozen=True)
class Workload:
    """A request mix, derived from the one given on the command line."""

    name: str
    description: str
    derive: Callable[[LoadOptions], LoadOptions]


WORKLOADS = {
    "short": Workload(
        "short",
        "Short prompts (5 to 12 words), 64 output tokens, greedy: the shape of "
        "`loadtest.engine_bench`, whose engine-alone gain is the ceiling",
        lambda given: dataclasses.replace(
            given,
            prompts=SHORT_PROMPTS,
            max_tokens=TokenDistribution.parse("fixed:64"),
            temperature=0.0,
        ),
    ),
    "mixed": Workload(
        "mixed",
        "The request mix as given: prompts of varied lengths, so prefill takes a share of "
        "the engine's compute",
        lambda given: given,
    ),
    "shared_prefix": Workload(
        "shared_prefix",
        "One instruction block of about 400 tokens with a distinct last line, 32 output "
        "tokens, greedy: what the prefix cache serves from memory",
        lambda given: dataclasses.replace(
            given,
            prompts=SHARED_PREFIX_PROMPTS,
            max_tokens=TokenDistribution.parse("fixed:32"),
            temperature=0.0,
        ),
    ),
}


@dataclass(frozen=True)
class WorkloadResult:
    workload: Workload
    options: LoadOptions
    levels: list[LevelResult]  # in the order of CONFIGS

    def level(self, config: str) -> LevelResult:
        return self.levels[[c.name for c in CONFIGS].index(config)]


_RATIO_FIGURES = (
    ("output_tokens_per_s", "output tok/s"),
    ("requests_per_s", "req/s"),
    ("goodput_per_s", "goodput req/s"),
    ("ttft_p50", "TTFT p50"),
    ("ttft_p95", "TTFT p95"),
    ("itl_p50", "ITL p50"),
    ("e2e_p50", "e2e p50"),
)


def ratios(on: LevelResult, off: LevelResult) -> dict[str, float | None]:
    """Each figure with the feature on divided by the same figure with it off."""
    a, b = on.stats.as_dict(), off.stats.as_dict()
    result: dict[str, float | None] = {}
    for key, _ in _RATIO_FIGURES:
        num, den = a[key], b[key]
        result[key] = num / den if num is not None and den else None
    return result


def comparisons(result: WorkloadResult) -> dict[str, dict[str, float | None]]:
    base = result.level("baseline")
    return {
        "inflight_batching": ratios(base, result.level("no_inflight_batching")),
        "dynamic_batching": ratios(base, result.level("no_dynamic_batching")),
    }


@dataclass(frozen=True)
class Experiment:
    """What to run: users, duration, the request mix, and which workloads."""

    users: int
    duration_s: int
    spawn_rate: float | None
    options: LoadOptions
    slo: Slo
    html: bool
    workloads: Sequence[str]


def run_experiment(exp: Experiment, out: Path) -> list[WorkloadResult]:
    """Every workload against every configuration, each on a fresh stack."""
    results: list[WorkloadResult] = []
    with tempfile.TemporaryDirectory(prefix="llm-stack-batching-") as tmp:
        no_dynamic = without_dynamic_batching(
            DEFAULT_MODEL_REPOSITORY,
            Path(tmp) / "model_repository",
            ("preprocessing", "postprocessing"),
        )
        for name in exp.workloads:
            workload = WORKLOADS[name]
            options = workload.derive(exp.options)
            levels: list[LevelResult] = []
            for config in CONFIGS:
                repository = DEFAULT_MODEL_REPOSITORY if config.dynamic_batching else no_dynamic
                log.info("workload %s, configuration %s: starting its stack", name, config.name)
                with LocalStack(
                    Path(tmp) / name / config.name,
                    model_repository=repository,
                    log_dir=out / name / config.name / "logs",
                    triton_env=config.triton_env,
                ) as stack:
                    stack.warm_up()
                    level = LocustLevel(
                        host=stack.url,
                        users=exp.users,
                        spawn_rate=exp.spawn_rate or float(exp.users),
                        duration_s=exp.duration_s,
                        out_dir=out / name / config.name,
                        options=options,
                        html=exp.html,
                    )
                    endpoints = MetricsEndpoints(
                        stack.url + "/metrics",
                        stack.triton_metrics_url,
                        tuple(stack.process_groups),
                    )
                    levels.append(measure_level(level, endpoints, exp.slo))
                log.info(
                    "%s / %s: %.1f output tok/s",
                    name,
                    config.name,
                    levels[-1].stats.output_tokens_per_s,
                )
            results.append(WorkloadResult(workload, options, levels))
    return results


def _times(value: float | None) -> str:
    """A ratio: two decimals, or two significant digits below 0.1."""
    if value is None:
        return "-"
    return f"{value:.2g}x" if value < 0.1 else f"{value:.2f}x"


def write_report(out: Path, results: Sequence[WorkloadResult], ctx: RunContext) -> Path:
    """summary.json, report.md and batching.png; returns report.md."""
    names = [c.name for c in CONFIGS]
    plots.batching_bars(
        names, [(r.workload.name, r.levels) for r in results], out / "batching.png"
    )
    users = results[0].levels[0].users
    write_json(
        out / "summary.json",
        {
            "kind": "batching",
            **ctx.describe(),
            "users": users,
            "configurations": [dataclasses.asdict(c) for c in CONFIGS],
            "workloads": [
                {
                    "name": r.workload.name,
                    "description": r.workload.description,
                    "load": r.options.describe(),
                    "runs": [
                        {"configuration": n, **lv.summary(out)}
                        for n, lv in zip(names, r.levels, strict=True)
                    ],
                    "ratios_on_over_off": comparisons(r),
                }
                for r in results
            ],
        },
    )
    headline = []
    sections = []
    for r in results:
        comp = comparisons(r)
        inflight = comp["inflight_batching"]
        on, off = r.level("baseline").stats, r.level("no_inflight_batching").stats
        headline.append(
            f"- `{r.workload.name}`: output tokens/s **{_times(inflight['output_tokens_per_s'])}**"
            f" ({on.output_tokens_per_s:.1f} vs {off.output_tokens_per_s:.1f}), TTFT p50 "
            f"{_times(inflight['ttft_p50'])} ({ms_text(on.ttft_p50)} vs {ms_text(off.ttft_p50)}); "
            f"dynamic batching on / off: output tokens/s "
            f"{_times(comp['dynamic_batching']['output_tokens_per_s'])}"
        )
        ratio_rows = [
            [label, _times(comp["inflight_batching"][key]), _times(comp["dynamic_batching"][key])]
            for key, label in _RATIO_FIGURES
        ]
        sections.append(
            "\n\n".join(
                part
                for part in [
                    f"## Workload `{r.workload.name}`",
                    f"{r.workload.description}. {load_line(r.options, ctx.slo)}",
                    level_table(r.levels, names, first="configuration"),
                    cpu_warning(r.levels, names),
                    "Ratios, the feature on over off (`baseline` over the configuration "
                    "without it):",
                    markdown_table(
                        ["figure", "in-flight batching on / off", "dynamic batching on / off"],
                        ratio_rows,
                    ),
                    "What the servers saw:",
                    server_table(r.levels, names, first="configuration"),
                    files_section(
                        r.levels, out, [f"{r.workload.name} / {n}" for n in names]
                    ).removeprefix("## Files\n\n"),
                ]
                if part
            )
        )
    config_rows = [[f"`{c.name}`", c.description] for c in CONFIGS]
    parts = [
        f"# Batching experiment: {users} users, {ctx.duration_s} s per run",
        f"{ctx.created}, `{ctx.command}`; {ctx.machine['cpus']} CPUs. One stack (Triton and the "
        "frontend) per run, started fresh, one after another; the same load against each "
        "configuration.",
        markdown_table(["configuration", "what changes"], config_rows),
        f"In-flight batching on / off, at {users} users:\n\n" + "\n".join(headline),
        "![Throughput and TTFT per configuration](batching.png)",
        *sections,
        METHOD,
    ]
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path
