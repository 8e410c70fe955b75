"""wheel_install while a Triton runs from the same backend directory.

A second `llm-stack up` (another checkout, another virtual environment) assembles the
backend directory again while the first Triton executes its stub and maps its library.
The stand-in stub here is a real executable (`sleep`), run from the installed copy, so
the kernel treats the file exactly as it treats a running backend stub.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher import triton_server
from launcher.cli import _triton_from_args, build_parser
from launcher.triton_server import (
    ADMIN_KEY_FILE_ENV,
    TritonInstall,
    default_work_dir,
    wheel_install,
)

PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
STUB = "triton_python_backend_stub"
LIBRARY = "libtriton_python.so"


def _executable(name: str) -> Path:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"no `{name}` executable on PATH")
    return Path(found).resolve()


def fake_wheel(root: Path, stub: Path, library: bytes) -> Path:
    """The nvidia-pytriton layout wheel_install reads, with `stub` as the backend stub."""
    package = root / "pytriton"
    server = package / "tritonserver"
    (server / "bin").mkdir(parents=True)
    (server / "bin" / "tritonserver").write_bytes(b"")
    backend = server / "backends" / "python"
    backend.mkdir(parents=True)
    (backend / LIBRARY).write_bytes(library)
    (backend / "triton_python_backend_utils.py").write_text("# utils\n", encoding="utf-8")
    stubs = server / "python_backend_stubs" / PY_VERSION
    stubs.mkdir(parents=True)
    shutil.copyfile(stub, stubs / STUB)
    (stubs / STUB).chmod(0o755)
    (root / "nvidia_pytriton.libs").mkdir()
    return package


def install_from(
    monkeypatch: pytest.MonkeyPatch, package: Path, work_dir: Path
) -> TritonInstall:
    """wheel_install as a checkout whose wheel is `package` runs it."""
    monkeypatch.setattr(triton_server, "_pytriton_root", lambda: package)
    return wheel_install(work_dir)


def newer(package: Path) -> None:
    """Date every file of `package` a day later, as a later install of the wheel is."""
    for path in package.rglob("*"):
        stat = path.stat()
        os.utime(path, (stat.st_atime + 86400, stat.st_mtime + 86400))


@pytest.fixture
def run_stub() -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    """Runs an installed stub (a `sleep`) until the test ends."""
    processes: list[subprocess.Popen[bytes]] = []

    def run(stub: Path) -> subprocess.Popen[bytes]:
        # Popen returns once exec has succeeded: the file is being executed from here on.
        process = subprocess.Popen([str(stub), "600"])
        processes.append(process)
        return process

    yield run
    for process in processes:
        process.kill()
        process.wait()


def test_same_files_from_a_newer_install_leave_a_running_stub_alone(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_stub: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    sleep = _executable("sleep")
    work = tmp_path / "work"
    first = install_from(monkeypatch, fake_wheel(tmp_path / "a", sleep, b"lib"), work)
    stub = first.backend_directory / "python" / STUB
    process = run_stub(stub)
    before = {p.name: p.stat() for p in stub.parent.iterdir()}

    # Another checkout: the same wheel, its files installed later.
    second_wheel = fake_wheel(tmp_path / "b", sleep, b"lib")
    newer(second_wheel)
    second = install_from(monkeypatch, second_wheel, work)  # was: OSError "Text file busy"

    assert second.backend_directory == first.backend_directory
    after = {p.name: p.stat() for p in stub.parent.iterdir()}
    assert set(after) == set(before)  # no temporary file left behind
    for name, stat in after.items():  # not rewritten: same inode, same mtime
        assert (stat.st_ino, stat.st_mtime_ns) == (before[name].st_ino, before[name].st_mtime_ns)
    assert process.poll() is None


def test_changed_files_replace_the_running_ones_without_touching_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_stub: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    sleep, true = _executable("sleep"), _executable("true")
    work = tmp_path / "work"
    first = install_from(monkeypatch, fake_wheel(tmp_path / "a", sleep, b"old lib"), work)
    python_dir = first.backend_directory / "python"
    process = run_stub(python_dir / STUB)
    # A running Triton maps the library: an open handle sees what a mapping would.
    with (python_dir / LIBRARY).open("rb") as mapped:
        # Another checkout with another wheel version: every file differs.
        install_from(monkeypatch, fake_wheel(tmp_path / "b", true, b"new lib"), work)
        mapped.seek(0)
        assert mapped.read() == b"old lib"  # written beside, then renamed over
    assert (python_dir / LIBRARY).read_bytes() == b"new lib"
    assert (python_dir / STUB).read_bytes() == true.read_bytes()
    assert os.access(python_dir / STUB, os.X_OK)
    # The running stub still executes the file it started from, now unlinked.
    running = Path(f"/proc/{process.pid}/exe")
    assert running.stat().st_ino != (python_dir / STUB).stat().st_ino
    assert process.poll() is None
    assert sorted(p.name for p in python_dir.iterdir()) == sorted(
        [LIBRARY, STUB, "triton_python_backend_utils.py"]
    )


def test_each_environment_and_checkout_has_its_own_work_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    venv_a, venv_b = tmp_path / "a" / ".venv", tmp_path / "b" / ".venv"
    checkout_a, checkout_b = tmp_path / "a", tmp_path / "b"
    dirs = {
        default_work_dir(venv_a, checkout_a),
        default_work_dir(venv_b, checkout_b),
        default_work_dir(venv_a, checkout_b),
    }
    assert len(dirs) == 3
    assert all(d.parent == tmp_path / "cache" / "llm-stack" / "triton" for d in dirs)
    assert default_work_dir(venv_a, checkout_a) == default_work_dir(venv_a, checkout_a)


def test_cli_assembles_the_backend_in_this_environments_work_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(ADMIN_KEY_FILE_ENV, raising=False)
    seen: list[Path] = []

    def fake_install(work_dir: Path) -> TritonInstall:
        seen.append(work_dir)
        return TritonInstall(binary=Path("tritonserver"), backend_directory=work_dir)

    monkeypatch.setattr("launcher.cli.wheel_install", fake_install)
    _triton_from_args(build_parser().parse_args(["triton"]))
    _triton_from_args(build_parser().parse_args(["triton", "--work-dir", str(tmp_path / "w")]))
    assert seen == [default_work_dir(), tmp_path / "w"]
