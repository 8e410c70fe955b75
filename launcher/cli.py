"""`llm-stack`: run Triton, the frontend, or both; run load tests."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from launcher.triton_server import (
    ADMIN_HEADER,
    ADMIN_KEY_FILE_ENV,
    DEFAULT_MODEL_REPOSITORY,
    TritonLaunchError,
    TritonPorts,
    TritonServer,
    default_work_dir,
    generate_admin_key,
    home_install,
    read_admin_key,
    wheel_install,
)

log = logging.getLogger("launcher")


def _add_triton_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Triton")
    group.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    group.add_argument("--host", default="127.0.0.1", help="address Triton listens on")
    group.add_argument("--http-port", type=int, default=8000)
    group.add_argument("--grpc-port", type=int, default=8001)
    group.add_argument("--metrics-port", type=int, default=8002)
    group.add_argument(
        "--triton-home",
        type=Path,
        default=None,
        help="a Triton install to use (e.g. /opt/tritonserver) instead of the wheel's",
    )
    group.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the backend directory for the wheel's Triton is assembled "
        "(default: one folder per Python environment and checkout under ~/.cache/llm-stack)",
    )
    group.add_argument(
        "--admin-key-file",
        type=Path,
        default=None,
        help="a file holding the key that opens Triton's admin APIs (logging, model control, "
        f"tracing, ...) in the '{ADMIN_HEADER}' header; default ${ADMIN_KEY_FILE_ENV}, "
        "else a random key per start (the APIs stay closed)",
    )
    group.add_argument("--ready-timeout", type=float, default=300.0)
    group.add_argument("--log-verbose", type=int, default=0)


def _admin_key(args: argparse.Namespace) -> str:
    """The operator's key from --admin-key-file or $LLM_STACK_TRITON_ADMIN_KEY_FILE, else
    a random one: the admin APIs are never open to whoever reaches the port."""
    path = args.admin_key_file or os.environ.get(ADMIN_KEY_FILE_ENV) or None
    return read_admin_key(Path(path)) if path else generate_admin_key()


def _triton_from_args(args: argparse.Namespace) -> TritonServer:
    if args.triton_home:
        install = home_install(args.triton_home)
    else:
        install = wheel_install(args.work_dir or default_work_dir())
    return TritonServer(
        install=install,
        model_repository=args.model_repository.resolve(),
        ports=TritonPorts(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port),
        host=args.host,
        log_verbose=args.log_verbose,
        admin_key=_admin_key(args),
    )


class _StopSignal(Exception):  # noqa: N818 - a signal, not an error
    """Raised in the main thread by SIGTERM/SIGINT."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _StopSignal(signal.Signals(signum).name)


def _start_triton(args: argparse.Namespace) -> TritonServer:
    server = _triton_from_args(args)
    server.start()
    server.wait_ready("ensemble", timeout=args.ready_timeout)
    log.info(
        "Triton ready: HTTP %s, gRPC %s, metrics %s",
        server.http_url,
        server.grpc_url,
        server.metrics_url,
    )
    return server


def cmd_triton(args: argparse.Namespace) -> int:
    """Run Triton in the foreground until it exits or is told to stop."""
    server = _start_triton(args)
    try:
        code = server.wait()
        log.error("Triton exited with code %d", code)
        return code or 1
    except _StopSignal as stop:
        log.info("%s: stopping Triton", stop)
        server.stop()
        return 0


def cmd_frontend(args: argparse.Namespace) -> int:
    """Run the frontend against a running Triton."""
    from frontend.server import run
    from frontend.settings import FrontendSettings

    # Flags given on the command line win over LLM_FRONTEND_* variables.
    flags = {
        "host": args.frontend_host,
        "port": args.frontend_port,
        "workers": args.frontend_workers,
        "triton_urls": list(args.triton_url) if args.triton_url else None,
    }
    # Built with them, not updated after: the settings' checks see the flags too.
    run(FrontendSettings(**{k: v for k, v in flags.items() if v is not None}))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Triton, then the frontend against it; stopping one stops both."""
    server = _start_triton(args)
    args.triton_url = [server.grpc_url]
    watcher = threading.Thread(target=_exit_with, args=(server,), daemon=True)
    watcher.start()
    try:
        return cmd_frontend(args)
    except _StopSignal as stop:
        log.info("%s: stopping", stop)
        return 0
    finally:
        server.stop()


def _exit_with(server: TritonServer) -> None:
    code = server.wait()
    # An exit that stop() asked for is not Triton failing (stop() reports its code).
    if code and not server.stopping:
        log.error("Triton exited with code %d; stopping", code)
        signal.raise_signal(signal.SIGTERM)


def cmd_loadtest(args: argparse.Namespace) -> int:
    """Run the load test runner (see `llm-stack loadtest --help`)."""
    from loadtest.runner import main as loadtest_main

    return int(loadtest_main(args.loadtest_args))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `llm-stack`."""
    parser = argparse.ArgumentParser(prog="llm-stack", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    triton = sub.add_parser("triton", help="run Triton on the model repository")
    _add_triton_args(triton)
    triton.set_defaults(func=cmd_triton)

    for name, func, helptext in (
        ("frontend", cmd_frontend, "run the frontend against a running Triton"),
        ("up", cmd_up, "run Triton and the frontend"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "up":
            _add_triton_args(p)
        p.add_argument("--frontend-host", default=None, help="default 127.0.0.1")
        p.add_argument("--frontend-port", type=int, default=None, help="default 8080")
        p.add_argument(
            "--frontend-workers", type=int, default=None, help="worker processes; default 1"
        )
        p.add_argument(
            "--triton-url",
            action="append",
            default=None,
            help="Triton gRPC endpoint host:port (repeat for several); default from settings",
        )
        p.set_defaults(func=func)

    loadtest = sub.add_parser(
        "loadtest", help="run Locust against a running stack (see: llm-stack loadtest --help)",
        add_help=False, prefix_chars="\0",
    )
    # Everything after `loadtest`, --help included, goes to the load-test runner.
    loadtest.add_argument("loadtest_args", nargs="*")
    loadtest.set_defaults(func=cmd_loadtest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `llm-stack` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        return int(args.func(args))
    except TritonLaunchError as exc:
        log.error("%s", exc)
        return 1
    except _StopSignal:
        return 0


if __name__ == "__main__":
    sys.exit(main())
