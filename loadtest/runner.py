"""Load-test runner: `python -m loadtest` or `llm-stack loadtest`.

    run       a step profile of users (e.g. 1 4 16) against a running stack (or one it
              starts with --start-stack); writes a report folder
    batching  the same load against stacks it starts one after another: in-flight
              batching on and off, dynamic batching of pre/postprocessing on and off
    report    rewrite a report folder from its records, e.g. with another SLO
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher.triton_server import TritonLaunchError
from loadtest.batching import CONFIGS, WORKLOADS, Experiment, run_experiment, write_report
from loadtest.levels import LevelResult, MetricsEndpoints, measure_level
from loadtest.load_options import API_KEY_ENV, LoadOptions, add_load_arguments
from loadtest.locust_process import LocustError, LocustLevel
from loadtest.report import RunContext, level_table, write_steps_report
from loadtest.rerender import rerender
from loadtest.stack import LocalStack, StackError
from loadtest.stats import Slo

log = logging.getLogger("loadtest")

_DURATION = re.compile(r"^(\d+)\s*([smh]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600}


def duration_s(text: str) -> int:
    """`60`, `60s`, `2m` or `1h` in seconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 60s, 2m")
    return int(match[1]) * _UNIT_S[match[2]]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _add_common(parser: argparse.ArgumentParser, users_default: list[int]) -> None:
    parser.add_argument(
        "--users",
        type=_positive_int,
        nargs="+",
        default=users_default,
        help="concurrent users; several values make a step profile, one Locust run each",
    )
    parser.add_argument(
        "--duration", type=duration_s, default=60, help="run time per step, e.g. 60s or 2m"
    )
    parser.add_argument(
        "--spawn-rate",
        type=float,
        default=None,
        help="users started per second (default: all of a step's users within one second)",
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder (new or empty)")
    parser.add_argument("--slo-ttft-ms", type=float, default=2000.0, help="TTFT objective")
    parser.add_argument("--slo-itl-ms", type=float, default=100.0, help="ITL objective")
    parser.add_argument(
        "--locust-html",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write Locust's HTML report per step (about 1 MB each)",
    )
    add_load_arguments(parser.add_argument_group("request mix"))


def build_parser() -> argparse.ArgumentParser:
    """The runner's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="step profile against a running stack")
    _add_common(run, [1, 4, 16])
    run.add_argument("--host", default="http://127.0.0.1:8080", help="the frontend's base URL")
    run.add_argument(
        "--frontend-metrics", default=None, help="the frontend's /metrics (default: HOST/metrics)"
    )
    run.add_argument(
        "--triton-metrics", default="http://127.0.0.1:8002/metrics", help="Triton's /metrics"
    )
    run.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="mixed",
        help="mixed: the request mix of the options below; short: short prompts, 64 tokens; "
        "shared_prefix: one ~400-token instruction block with distinct last lines, 32 tokens",
    )
    run.add_argument(
        "--start-stack",
        action="store_true",
        help="start Triton and the frontend on free ports for this run (ignores --host)",
    )
    run.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV, ""),
        help=f"API key for the frontend (default: ${API_KEY_ENV})",
    )

    batching = sub.add_parser(
        "batching", help="in-flight and dynamic batching on vs off, stacks started here"
    )
    report = sub.add_parser(
        "report", help="rewrite a report folder from its records, e.g. with another SLO"
    )
    report.add_argument("folder", type=Path, help="a folder written by run or batching")
    report.add_argument("--slo-ttft-ms", type=float, default=None, help="TTFT objective")
    report.add_argument("--slo-itl-ms", type=float, default=None, help="ITL objective")

    _add_common(batching, [16])
    batching.add_argument(
        "--workloads",
        nargs="+",
        choices=sorted(WORKLOADS),
        default=["short", "mixed"],
        help="short: short prompts, 64 tokens, greedy (loadtest.engine_bench's shape); "
        "mixed: the request mix given by the options below",
    )
    return parser


def _command_line(argv: Sequence[str]) -> str:
    """The invocation for the report, without the API key's value."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append("***")
            hide_next = False
        elif arg == "--api-key":
            shown.append(arg)
            hide_next = True
        elif arg.startswith("--api-key="):
            shown.append("--api-key=***")
        else:
            shown.append(arg)
    return shlex.join(["python", "-m", "loadtest", *shown])


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise StackError(f"{out} is not empty: choose a new --out folder")
    out.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class _Plan:
    users: list[int]
    duration_s: int
    spawn_rate: float | None
    options: LoadOptions
    slo: Slo
    html: bool

    def level(self, host: str, users: int, out_dir: Path, api_key: str) -> LocustLevel:
        return LocustLevel(
            host=host,
            users=users,
            spawn_rate=self.spawn_rate or float(users),
            duration_s=self.duration_s,
            out_dir=out_dir,
            options=self.options,
            api_key=api_key,
            html=self.html,
        )


def _plan(args: argparse.Namespace) -> _Plan:
    return _Plan(
        users=list(args.users),
        duration_s=args.duration,
        spawn_rate=args.spawn_rate,
        options=WORKLOADS[getattr(args, "workload", "mixed")].derive(
            LoadOptions.from_namespace(args)
        ),
        slo=Slo(ttft_s=args.slo_ttft_ms / 1000, itl_s=args.slo_itl_ms / 1000),
        html=args.locust_html,
    )


@contextmanager
def _target(args: argparse.Namespace) -> Iterator[tuple[str, MetricsEndpoints]]:
    """The frontend URL and metrics endpoints: given, or of a stack started here."""
    if not args.start_stack:
        host = args.host.rstrip("/")
        frontend_metrics = args.frontend_metrics or host + "/metrics"
        yield host, MetricsEndpoints(frontend_metrics, args.triton_metrics)
        return
    with (
        tempfile.TemporaryDirectory(prefix="llm-stack-loadtest-") as tmp,
        LocalStack(Path(tmp), log_dir=args.out / "logs") as stack,
    ):
        stack.warm_up()
        yield stack.url, MetricsEndpoints(
            stack.url + "/metrics", stack.triton_metrics_url, tuple(stack.process_groups)
        )


def cmd_run(args: argparse.Namespace, command: str) -> Path:
    """A step profile; returns the report's path."""
    plan = _plan(args)
    out: Path = args.out
    _prepare_out(out)
    levels: list[LevelResult] = []
    with _target(args) as (host, endpoints):
        for users in plan.users:
            level = plan.level(host, users, out / "steps" / f"u{users}", args.api_key)
            levels.append(measure_level(level, endpoints, plan.slo))
            log.info("%d users: %.1f output tok/s", users, levels[-1].stats.output_tokens_per_s)
    ctx = RunContext(host, plan.duration_s, plan.options, plan.slo, command)
    report = write_steps_report(out, levels, ctx)
    print(level_table(levels))
    return report


def cmd_batching(args: argparse.Namespace, command: str) -> Path:
    """Each workload and configuration on its own stack; returns the report's path."""
    plan = _plan(args)
    if len(plan.users) != 1:
        raise StackError("batching takes one --users value")
    out: Path = args.out
    _prepare_out(out)
    experiment = Experiment(
        users=plan.users[0],
        duration_s=plan.duration_s,
        spawn_rate=plan.spawn_rate,
        options=plan.options,
        slo=plan.slo,
        html=plan.html,
        workloads=args.workloads,
    )
    results = run_experiment(experiment, out)
    ctx = RunContext(
        "stacks started by the runner", plan.duration_s, plan.options, plan.slo, command
    )
    report = write_report(out, results, ctx)
    names = [c.name for c in CONFIGS]
    for result in results:
        print(f"{result.workload.name}:")
        print(level_table(result.levels, names, first="configuration"))
    return report


def cmd_report(args: argparse.Namespace, _command: str) -> Path:
    """Rewrite a report folder; returns its report's path."""
    slo = None
    if args.slo_ttft_ms is not None or args.slo_itl_ms is not None:
        if args.slo_ttft_ms is None or args.slo_itl_ms is None:
            raise ValueError("give both --slo-ttft-ms and --slo-itl-ms, or neither")
        slo = Slo(ttft_s=args.slo_ttft_ms / 1000, itl_s=args.slo_itl_ms / 1000)
    return rerender(args.folder, slo)


_COMMANDS = {"run": cmd_run, "batching": cmd_batching, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); 0 on success."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # One line per scrape would bury the progress lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    command = _command_line(argv)
    try:
        report = _COMMANDS[args.command](args, command)
    except (LocustError, StackError, TritonLaunchError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 1
    print(f"report: {report}")
    return 0
