"""A throwaway stack for experiments: Triton and the frontend on free loopback ports.

Used by the batching experiment (one stack per configuration, one after another) and by
`run --start-stack`. The model repository can be a modified copy, e.g. without the
dynamic batching of pre- and postprocessing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from launcher.triton_server import (
    DEFAULT_MODEL_REPOSITORY,
    TritonPorts,
    TritonServer,
    die_with_this_thread,
    free_port,
    wheel_install,
)
from llm_stack.model_repository_config import read_model_config, write_model_config


class StackError(RuntimeError):
    """A part of the stack did not start or become ready in time."""


def without_dynamic_batching(source: Path, target: Path, models: tuple[str, ...]) -> Path:
    """Copy a model repository to `target`, removing `models`' dynamic_batching blocks.

    The rewritten configs lose their comments: the copy is only ever served, never read.
    """
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for model in models:
        path = target / model / "config.pbtxt"
        config = read_model_config(path)
        if not config.HasField("dynamic_batching"):
            raise StackError(f"{path}: has no dynamic_batching block to remove")
        config.ClearField("dynamic_batching")
        write_model_config(path, config)
    return target


@dataclass
class FrontendProcess:
    """`python -m frontend` against given Triton gRPC endpoints, on a free port."""

    triton_urls: list[str]
    log_file: Path
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, ready_timeout_s: float = 60.0) -> None:
        """Start it and wait until /health/ready answers 200."""
        env = {
            **os.environ,
            "LLM_FRONTEND_HOST": "127.0.0.1",
            "LLM_FRONTEND_PORT": str(self.port),
            "LLM_FRONTEND_TRITON_URLS": ",".join(self.triton_urls),
            "LLM_FRONTEND_LOG_LEVEL": "warning",
            **self.env,
        }
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "frontend"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # A benchmark stopped by SIGTERM or killed takes its frontend with it.
                preexec_fn=die_with_this_thread(),
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise StackError(
                    f"the frontend exited with code {self._process.returncode}; "
                    f"see {self.log_file}"
                )
            try:
                if httpx.get(self.url + "/health/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise StackError(f"the frontend was not ready within {ready_timeout_s:.0f} s")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL after `timeout_s`."""
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class LocalStack:
    """Triton on `model_repository` (engine settings from `triton_env`) and a frontend.

    Their logs go to `log_dir` (default: `work_dir`), which can outlive a temporary
    `work_dir` so that a failed start can be looked into.
    """

    work_dir: Path
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    log_dir: Path | None = None
    triton_env: Mapping[str, str] = field(default_factory=dict)
    frontend_env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 300.0
    triton: TritonServer | None = field(default=None, init=False)
    frontend: FrontendProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        assert self.frontend is not None, "the stack is not started"
        return self.frontend.url

    @property
    def process_groups(self) -> list[int]:
        """Triton's (with its backend stubs) and the frontend's; each leads its own."""
        parts = (self.triton, self.frontend)
        return [part.pid for part in parts if part is not None and part.pid is not None]

    @property
    def triton_metrics_url(self) -> str:
        assert self.triton is not None, "the stack is not started"
        return self.triton.metrics_url

    def start(self) -> None:
        logs = self.log_dir or self.work_dir
        for folder in (self.work_dir, logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.triton = TritonServer(
            install=wheel_install(self.work_dir / "triton"),
            model_repository=self.model_repository,
            ports=TritonPorts.free(),
            log_file=logs / "triton.log",
            extra_env=dict(self.triton_env),
        )
        try:
            self.triton.start()
            self.triton.wait_ready("ensemble", timeout=self.ready_timeout_s)
            self.frontend = FrontendProcess(
                [self.triton.grpc_url], logs / "frontend.log", self.frontend_env
            )
            self.frontend.start()
        except BaseException:
            self.stop()
            raise

    def warm_up(self) -> None:
        """One short generation, so that one-off start-up costs stay out of measurements."""
        response = httpx.post(
            self.url + "/generate", json={"prompt": "Hello", "max_tokens": 4}, timeout=120.0
        )
        if response.status_code != 200:
            raise StackError(f"the warm-up request was answered {response.status_code}")

    def stop(self) -> None:
        if self.frontend is not None:
            self.frontend.stop()
            self.frontend = None
        if self.triton is not None:
            self.triton.stop()
            self.triton = None

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
