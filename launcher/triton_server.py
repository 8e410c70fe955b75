"""Find, start, watch and stop a Triton Inference Server process.

The default Triton comes from the `nvidia-pytriton` wheel, which ships the
`tritonserver` binary, the Python backend and one backend stub per Python version.
A user with a Triton of their own (NGC container, /opt/tritonserver) points
`triton_home` at it instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import filecmp
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

CHECKOUT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_REPOSITORY = CHECKOUT / "model_repository"

# Triton's API groups (HTTP) / protocols (gRPC) that only an operator needs: changing log
# settings, loading and unloading models, tracing, registering shared memory, statistics.
# health, metadata and inference stay open: the frontend's model-ready probe and its
# streamed inference use them, as do the health checks. model-config (read-only, a
# model's config.pbtxt as Triton parsed it) stays open for the tests that compare configs.
RESTRICTED_APIS = ("logging", "model-repository", "trace", "shared-memory", "statistics")
# The header that unlocks them over HTTP; over gRPC Triton expects it as
# `triton-grpc-protocol-<name>` metadata.
ADMIN_HEADER = "admin-key"
ADMIN_GRPC_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
# Where `llm-stack triton` reads the operator's admin key from (a file, as compose and
# Kubernetes hand out secrets); without it each start makes a key nobody is told.
ADMIN_KEY_FILE_ENV = "LLM_STACK_TRITON_ADMIN_KEY_FILE"
# Characters that survive Triton's `<apis>:<key>=<value>` parsing and an HTTP header;
# at least 16 of them, so a short guessable key is refused.
_ADMIN_KEY = re.compile(r"[A-Za-z0-9._~-]{16,512}")


class TritonLaunchError(RuntimeError):
    """Triton could not be found, started, or did not become ready in time."""


@dataclass(frozen=True)
class TritonInstall:
    """Where a Triton server's binary, backends and libraries live."""

    binary: Path
    backend_directory: Path
    library_paths: tuple[Path, ...] = ()


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise TritonLaunchError(
            "nvidia-pytriton is not installed: install the 'triton' extra or pass --triton-home"
        ) from exc
    return Path(pytriton.__file__).resolve().parent


def default_work_dir(prefix: Path | None = None, checkout: Path = CHECKOUT) -> Path:
    """This environment's own folder for the wheel's backend directory.

    Keyed by the Python environment (`prefix`, default `sys.prefix`) and the checkout:
    two checkouts on one machine then never assemble their backends in one folder that
    a running Triton of the other is executing from.
    """
    env = (prefix or Path(sys.prefix)).resolve()
    digest = hashlib.sha256(f"{env}\0{checkout.resolve()}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "llm-stack" / "triton" / digest


def install_file(src: Path, dst: Path) -> None:
    """Put a copy of `src` at `dst`, unless `dst` already holds the same bytes.

    A running Triton executes the stub and maps `libtriton_python.so` from `dst`: writing
    into them fails ("Text file busy") or corrupts that server. A changed file is written
    under a temporary name and renamed over `dst`, so running processes keep the old
    inode; contents are compared, not mtimes, since every install of the wheel has its own.
    """
    if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
        return
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as source:
            shutil.copyfileobj(source, out)
        shutil.copystat(src, tmp)  # the stub's executable bit
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def wheel_install(work_dir: Path) -> TritonInstall:
    """Locate Triton inside the nvidia-pytriton wheel and build a backend directory.

    The wheel keeps one Python backend stub per Python version apart from the backend;
    Triton expects the stub beside `libtriton_python.so`, so a backend directory with
    the stub matching this interpreter is assembled under `work_dir`. Safe while another
    Triton runs from the same `work_dir` (see `install_file`).
    """
    root = _pytriton_root()
    server_root = root / "tritonserver"
    binary = server_root / "bin" / "tritonserver"
    backend_src = server_root / "backends" / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    libs = root.parent / "nvidia_pytriton.libs"
    for path in (binary, backend_src / "libtriton_python.so", stub, libs):
        if not path.exists():
            raise TritonLaunchError(f"nvidia-pytriton is incomplete: {path} is missing")

    backend_dir = work_dir / "backends"
    python_dir = backend_dir / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for src in (*backend_src.iterdir(), stub):
        if src.is_file():
            install_file(src, python_dir / src.name)
    return TritonInstall(binary=binary, backend_directory=backend_dir, library_paths=(libs,))


def home_install(triton_home: Path) -> TritonInstall:
    """Use a Triton installed elsewhere (e.g. /opt/tritonserver in NVIDIA's container)."""
    binary = triton_home / "bin" / "tritonserver"
    if not binary.exists():
        raise TritonLaunchError(f"no tritonserver binary at {binary}")
    return TritonInstall(
        binary=binary,
        backend_directory=triton_home / "backends",
        library_paths=(triton_home / "lib",),
    )


def generate_admin_key() -> str:
    """A fresh random admin key (256 bits, hex)."""
    return secrets.token_hex(32)


def check_admin_key(key: str) -> str:
    """`key` if Triton's flag and an HTTP header can carry it and it is long enough."""
    if not _ADMIN_KEY.fullmatch(key):
        raise TritonLaunchError(
            "the Triton admin key must be 16 to 512 characters of A-Z a-z 0-9 . _ ~ - "
            "(e.g. `openssl rand -hex 32`)"
        )
    return key


def read_admin_key(path: Path) -> str:
    """The admin key in the file `path` (surrounding whitespace dropped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TritonLaunchError(f"cannot read the Triton admin key file {path}: {exc}") from exc
    try:
        return check_admin_key(text.strip())
    except TritonLaunchError as exc:
        raise TritonLaunchError(f"{path}: {exc}") from None


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_this_thread() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send the child SIGTERM when this thread ends.

    Triton (and the load tests' frontend) runs in a session of its own, so nothing else
    would stop it (and its backend stubs, which hold its ports) when the launcher is
    killed without a chance to stop it. SIGTERM, not SIGKILL: Triton then unloads its
    models and removes its shared memory regions. The signal is tied to the thread that
    forks (the kernel's "parent" is a thread), and survives the exec of tritonserver,
    which is not setuid. None off Linux and outside the main thread.
    """
    # The signal follows the forking thread: from any other thread than the main one, the
    # child would be stopped when that thread ends, so it is not set there.
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    # Looked up before the fork: the child only makes the call (loading a library
    # between fork and exec in a process with threads can deadlock).
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the launcher died before the call: no signal comes
            os._exit(1)

    return preexec


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as Triton sets it: a port held only in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


@dataclass(frozen=True)
class TritonPorts:
    """Triton's three listening ports (its usual defaults)."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> TritonPorts:
        """Three ports free on `host` right now (for tests and benchmarks)."""
        return cls(http=free_port(host), grpc=free_port(host), metrics=free_port(host))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class TritonServer:
    """One tritonserver process on a model repository, ready-checked over HTTP.

    Its admin APIs (`restricted_apis`) answer only requests that carry `admin_key` in
    the `ADMIN_HEADER` header; by default the key is random, so nobody holds it.
    """

    install: TritonInstall
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    ports: TritonPorts = field(default_factory=TritonPorts)
    host: str = "127.0.0.1"
    log_verbose: int = 0
    extra_args: Sequence[str] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_file: Path | None = None
    admin_key: str = field(default_factory=generate_admin_key, repr=False)
    restricted_apis: Sequence[str] = RESTRICTED_APIS
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _stopping: bool = field(default=False, init=False, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    @property
    def admin_http_headers(self) -> dict[str, str]:
        """The header that opens the restricted APIs over HTTP."""
        return {ADMIN_HEADER: self.admin_key}

    @property
    def admin_grpc_headers(self) -> dict[str, str]:
        """The metadata that opens the restricted protocols over gRPC."""
        return {ADMIN_GRPC_HEADER: self.admin_key}

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        """The tritonserver command line."""
        return [
            str(self.install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.install.backend_directory}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=10",
            f"--log-verbose={self.log_verbose}",
            *self._restriction_args(),
            *self.extra_args,
        ]

    def _restriction_args(self) -> list[str]:
        if not self.restricted_apis:
            return []
        key = check_admin_key(self.admin_key)
        group = f"{','.join(self.restricted_apis)}:{ADMIN_HEADER}={key}"
        return [f"--http-restricted-api={group}", f"--grpc-restricted-protocol={group}"]

    def display_command(self) -> str:
        """The command line as logged: the admin key left out."""
        return " ".join(self.command()).replace(self.admin_key, "<admin-key>")

    def environment(self) -> dict[str, str]:
        """Environment for Triton and its Python backend stubs.

        The stub is linked against libpython and imports this interpreter's packages,
        so this interpreter's library directory and site-packages go first.
        """
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR")
        lib_paths = [str(p) for p in self.install.library_paths]
        if libdir:
            lib_paths.append(str(libdir))
        if env.get("LD_LIBRARY_PATH"):
            lib_paths.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_paths)
        py_paths = [p for p in sys.path if p and Path(p).is_dir()]
        if env.get("PYTHONPATH"):
            py_paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(py_paths))
        # The stub's embedded interpreter ignores PYTHONPATH; it finds its prefix by
        # looking up `python3` on PATH, and a virtual environment's pyvenv.cfg there
        # brings that environment's site-packages.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(self.extra_env)
        return env

    @property
    def stopping(self) -> bool:
        """True once stop() has told the process to end (until the next start)."""
        return self._stopping

    def start(self) -> None:
        """Start tritonserver in the background (not waiting for readiness).

        Started from the main thread, Triton is sent SIGTERM by the kernel when this
        process ends, however it ends (SIGKILL included).
        """
        if self._process is not None and self._process.poll() is None:
            raise TritonLaunchError("Triton is already running")
        # A server left on these ports would answer the readiness probe in our place.
        for port in (self.ports.http, self.ports.grpc, self.ports.metrics):
            if _port_in_use(self.host, port):
                raise TritonLaunchError(f"port {port} on {self.host} is already in use")
        preexec = die_with_this_thread()
        if preexec is None:
            log.debug("Triton started outside the main thread: it will not die with us")
        stdout = self.log_file.open("ab") if self.log_file else None
        self._stopping = False
        log.info("starting Triton: %s", self.display_command())
        self._process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=stdout,
            stderr=subprocess.STDOUT if stdout else None,
            start_new_session=True,
            preexec_fn=preexec,
        )
        if stdout:
            stdout.close()

    def is_ready(self, model: str | None = None) -> bool:
        """True when the server (and `model`, if given) answers ready over HTTP."""
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, model: str | None = "ensemble", timeout: float = 180.0) -> None:
        """Block until ready; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise TritonLaunchError(
                    f"Triton exited with code {self._process.returncode} before it was ready"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if self.is_ready(model):
                return
            time.sleep(0.25)
        raise TritonLaunchError(f"Triton was not ready within {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; also ends the backend stubs."""
        proc = self._process
        if proc is None or proc.poll() is not None:
            self._process = None
            return
        self._stopping = True
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("Triton did not stop in %.0f s, killing it", timeout)
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(timeout=10)
        if code:
            # Triton ends with 1 when requests outlive its exit timeout.
            log.warning("Triton stopped with exit code %d", code)
        self._process = None

    def wait(self) -> int:
        """Wait for the process to exit and return its code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
