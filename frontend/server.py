"""Run the frontend under uvicorn (what `llm-stack up` and `llm-stack frontend` call)."""

from __future__ import annotations

import logging

import uvicorn

from frontend.app import create_app
from frontend.logs import configure_logging
from frontend.settings import FrontendSettings


class ShutdownTimeoutIsAWarning(logging.Filter):
    """uvicorn logs the end of the graceful shutdown time as an error; here it is the end
    the settings give a shutdown (each request it cuts short logs a warning of its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "timeout graceful shutdown exceeded" in str(
            record.msg
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def uvicorn_config(settings: FrontendSettings) -> uvicorn.Config:
    """uvicorn's configuration for the app built from `settings`."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the JSON logging configured by run()
        access_log=False,  # the middleware writes the access log
        server_header=False,
        lifespan="on",
        # SIGTERM/SIGINT: stop accepting, let in-flight requests finish this long, then stop.
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )


def run(settings: FrontendSettings | None = None) -> None:
    """Build the app and serve it until SIGTERM/SIGINT, shutting down gracefully."""
    settings = settings if settings is not None else FrontendSettings()
    configure_logging(settings.log_level)
    logging.getLogger("uvicorn.error").addFilter(ShutdownTimeoutIsAWarning())
    uvicorn.Server(uvicorn_config(settings)).run()
