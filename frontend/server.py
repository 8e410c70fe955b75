"""Run the frontend under uvicorn (what `llm-stack up` and `llm-stack frontend` call).

uvicorn closes a connection idle between requests (keep-alive timeout) but has no
deadline for a request's line and headers: a client that trickles them, or connects and
sends nothing, holds its connection for good. FrontendServerConfig serves HTTP/1.1 with
HeaderDeadlineProtocol, which closes such connections; the body's deadline is
FrontendMiddleware's (it can still answer 408 then).

With `workers` > 1, uvicorn's supervisor binds the port once and runs that many worker
processes on it (spawned: each imports the frontend afresh), restarting any that dies;
each builds its own app (WorkerApp), so its own Triton channels, gate and limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

from frontend.app import create_app
from frontend.logs import configure_logging
from frontend.metrics import MULTIPROCESS_DIR_ENV
from frontend.settings import FrontendSettings

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


class ShutdownTimeoutIsAWarning(logging.Filter):
    """uvicorn logs the end of the graceful shutdown time as an error; here it is the end
    the settings give a shutdown (each request it cuts short logs a warning of its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "timeout graceful shutdown exceeded" in str(
            record.msg
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class FrontendServerConfig(uvicorn.Config):
    """uvicorn's configuration, serving HTTP/1.1 with a deadline for each request's headers."""

    def __init__(self, app: Any, *, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, http=HeaderDeadlineProtocol, **kwargs)
        self.header_timeout_s = header_timeout_s


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request line and headers are not
    complete within `header_timeout_s` of the connection's start, or of the first byte of
    a request that follows another (between requests, uvicorn's keep-alive timeout rules).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, FrontendServerConfig)
        self.header_timeout_s = config.header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        # h11 leaves IDLE for the peer once a request's line and headers are complete.
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_watching()
        elif self._header_deadline is None:
            self._header_deadline = self.loop.call_later(
                self.header_timeout_s, self._headers_too_slow
            )

    def _stop_watching(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        # No response: the request is not known yet (as nginx's client_header_timeout).
        self.transport.close()


def uvicorn_config(settings: FrontendSettings, app: Any = None, **extra: Any) -> uvicorn.Config:
    """uvicorn's configuration for `app` (default: the app built from `settings`); `extra`
    goes to uvicorn.Config as it is."""
    return FrontendServerConfig(
        create_app(settings) if app is None else app,
        header_timeout_s=settings.header_timeout_s,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the JSON logging configured by run()
        access_log=False,  # the middleware writes the access log
        server_header=False,
        lifespan="on",
        ws="none",  # no WebSocket routes: upgrades are not taken
        timeout_keep_alive=settings.idle_timeout_s,
        # X-Forwarded-For names the client only when a trusted proxy sent it.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=list(settings.forwarded_allow_ips),
        # SIGTERM/SIGINT: stop accepting, let in-flight requests finish this long, then stop.
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
        **extra,
    )


def _configure_logging(settings: FrontendSettings) -> None:
    configure_logging(settings.log_level)
    logging.getLogger("uvicorn.error").addFilter(ShutdownTimeoutIsAWarning())


class WorkerApp:
    """The app factory each worker process calls (uvicorn pickles it to the worker): the
    settings the supervisor was started with, not the worker's own environment."""

    def __init__(self, settings: FrontendSettings, supervisor_pid: int) -> None:
        self.settings = settings
        self.supervisor_pid = supervisor_pid

    def __call__(self) -> FastAPI:
        _end_with_supervisor(self.supervisor_pid)
        _configure_logging(self.settings)
        return create_app(self.settings)


def _end_with_supervisor(supervisor_pid: int) -> None:
    """Have the kernel send this worker SIGTERM when the supervisor ends, however it ends
    (SIGKILL included): a worker left behind would keep serving the port alone."""
    if not sys.platform.startswith("linux"):
        return
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != supervisor_pid:  # it ended before the call: no signal would come
        os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def worker_metrics_dir(settings: FrontendSettings) -> Iterator[Path]:
    """The directory of the workers' metric files, empty, named in the environment the
    workers start with; a temporary one (default) is removed at the end."""
    if settings.metrics_dir is not None:
        directory = settings.metrics_dir
        directory.mkdir(parents=True, exist_ok=True)
        # Files of an earlier run would add their counts to this one's.
        for stale in directory.glob("*.db"):
            stale.unlink()
        temporary = False
    else:
        directory = Path(tempfile.mkdtemp(prefix="llm-frontend-metrics-"))
        temporary = True
    previous = os.environ.get(MULTIPROCESS_DIR_ENV)
    os.environ[MULTIPROCESS_DIR_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        else:
            os.environ[MULTIPROCESS_DIR_ENV] = previous
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)


def serve_workers(settings: FrontendSettings) -> None:
    """Bind the port and run `settings.workers` worker processes on it until SIGTERM or
    SIGINT (each shuts down gracefully); a worker that dies is replaced."""
    with worker_metrics_dir(settings) as directory:
        config = uvicorn_config(
            settings, WorkerApp(settings, os.getpid()), workers=settings.workers, factory=True
        )
        log.info(
            "serving with %d workers, each with %d of the %d concurrent sequences; "
            "metric files in %s",
            settings.workers,
            settings.worker_max_concurrent_requests,
            settings.max_concurrent_requests,
            directory,
        )
        sock = config.bind_socket()
        supervisor = Multiprocess(config, sockets=[sock])
        try:
            supervisor.run()
        finally:
            sock.close()
    # A worker that could not start (its app, the port) stops them all: say so, as a
    # single process does.
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        sys.exit(STARTUP_FAILURE)


def run(settings: FrontendSettings | None = None) -> None:
    """Build the app and serve it until SIGTERM/SIGINT, shutting down gracefully."""
    settings = settings if settings is not None else FrontendSettings()
    _configure_logging(settings)
    if settings.workers > 1:
        serve_workers(settings)
        return
    uvicorn.Server(uvicorn_config(settings)).run()
