"""The Triton launcher: the wheel's install layout, the environment, refusing busy ports,
the admin key."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytriton

from launcher.cli import _triton_from_args, build_parser
from launcher.triton_server import (
    ADMIN_HEADER,
    ADMIN_KEY_FILE_ENV,
    RESTRICTED_APIS,
    TritonInstall,
    TritonLaunchError,
    TritonPorts,
    TritonServer,
    free_port,
    home_install,
    wheel_install,
)

PYTRITON = Path(pytriton.__file__).resolve().parent
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> TritonInstall:
    return wheel_install(tmp_path_factory.mktemp("triton"))


def test_wheel_install_builds_a_python_backend_directory(install: TritonInstall) -> None:
    python_dir = install.backend_directory / "python"
    assert (python_dir / "libtriton_python.so").is_file()
    stub = python_dir / "triton_python_backend_stub"
    source = PYTRITON / "tritonserver" / "python_backend_stubs" / PY_VERSION / stub.name
    assert stub.read_bytes() == source.read_bytes()  # the stub of this interpreter
    assert os.access(stub, os.X_OK)
    assert install.binary == PYTRITON / "tritonserver" / "bin" / "tritonserver"
    assert install.binary.is_file()
    assert install.library_paths == (PYTRITON.parent / "nvidia_pytriton.libs",)


def test_wheel_install_is_repeatable(tmp_path: Path) -> None:
    first = wheel_install(tmp_path)
    second = wheel_install(tmp_path)
    assert first == second
    assert sorted(p.name for p in (tmp_path / "backends" / "python").iterdir()) == sorted(
        ["libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub"]
    )


def test_environment_puts_this_venv_and_the_wheel_libs_first(
    install: TritonInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/previous/lib")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = TritonServer(install=install, extra_env={"LLM_STACK_ENGINE": "cpu"}).environment()
    path = env["PATH"].split(os.pathsep)
    assert path[0] == str(Path(sys.executable).parent)
    assert (Path(path[0]) / "python3").exists() or (Path(path[0]) / "python").exists()
    assert path[1:] == ["/usr/bin", "/bin"]
    lib_paths = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert lib_paths[0] == str(PYTRITON.parent / "nvidia_pytriton.libs")
    assert lib_paths[-1] == "/opt/previous/lib"  # kept, after ours
    assert env["LLM_STACK_ENGINE"] == "cpu"
    assert str(Path(pytriton.__file__).resolve().parents[1]) in env["PYTHONPATH"].split(os.pathsep)


def test_command_binds_loopback_on_the_given_ports(install: TritonInstall, tmp_path: Path) -> None:
    server = TritonServer(
        install=install, model_repository=tmp_path, ports=TritonPorts(http=1, grpc=2, metrics=3)
    )
    cmd = server.command()
    assert cmd[0] == str(install.binary)
    for flag in (
        f"--model-repository={tmp_path}",
        f"--backend-directory={install.backend_directory}",
        "--http-port=1",
        "--grpc-port=2",
        "--metrics-port=3",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
    ):
        assert flag in cmd
    assert (server.grpc_url, server.http_url, server.metrics_url) == (
        "127.0.0.1:2",
        "http://127.0.0.1:1",
        "http://127.0.0.1:3/metrics",
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_start_refuses_a_port_in_use(
    install: TritonInstall, busy_port: int, tmp_path: Path
) -> None:
    server = TritonServer(
        install=install,
        model_repository=tmp_path,
        ports=TritonPorts(http=free_port(), grpc=busy_port, metrics=free_port()),
    )
    try:
        with pytest.raises(TritonLaunchError) as err:
            server.start()
        assert str(err.value) == f"port {busy_port} on 127.0.0.1 is already in use"
        assert server.pid is None  # no process was started
    finally:
        server.stop()


def test_stop_and_wait_without_a_process(install: TritonInstall) -> None:
    server = TritonServer(install=install)
    server.stop()
    assert server.wait() == 0
    assert server.pid is None


def test_home_install_without_binary_raises(tmp_path: Path) -> None:
    with pytest.raises(TritonLaunchError) as err:
        home_install(tmp_path)
    assert str(err.value) == f"no tritonserver binary at {tmp_path / 'bin' / 'tritonserver'}"


def test_home_install_layout(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tritonserver").write_bytes(b"")
    assert home_install(tmp_path) == TritonInstall(
        binary=tmp_path / "bin" / "tritonserver",
        backend_directory=tmp_path / "backends",
        library_paths=(tmp_path / "lib",),
    )


def test_command_restricts_the_admin_apis_to_a_random_key(install: TritonInstall) -> None:
    server, other = TritonServer(install=install), TritonServer(install=install)
    assert re.fullmatch(r"[0-9a-f]{64}", server.admin_key)
    assert server.admin_key != other.admin_key  # one per server, nobody told
    group = (
        "logging,model-repository,trace,shared-memory,statistics"
        f":{ADMIN_HEADER}={server.admin_key}"
    )
    cmd = server.command()
    assert f"--http-restricted-api={group}" in cmd
    assert f"--grpc-restricted-protocol={group}" in cmd
    # What the frontend calls (health, metadata, inference) stays open.
    assert not {"health", "metadata", "inference"} & set(RESTRICTED_APIS)
    assert server.admin_http_headers == {"admin-key": server.admin_key}
    assert server.admin_grpc_headers == {"triton-grpc-protocol-admin-key": server.admin_key}
    assert server.admin_key not in repr(server)


def test_the_logged_command_leaves_the_key_out(
    install: TritonInstall, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = TritonServer(
        install=TritonInstall(binary=Path("/bin/true"), backend_directory=tmp_path),
        model_repository=tmp_path,
        ports=TritonPorts.free(),
    )
    with caplog.at_level(logging.INFO, logger="launcher.triton_server"):
        server.start()
        server.wait()
    started = [r.getMessage() for r in caplog.records if "starting Triton" in r.getMessage()]
    assert len(started) == 1
    assert server.admin_key not in started[0]
    assert f"--http-restricted-api={','.join(RESTRICTED_APIS)}:admin-key=<admin-key>" in started[0]


@pytest.mark.parametrize("key", ["short", "x" * 15, "with space in it!!", "a:b=c,d" * 4, ""])
def test_a_key_triton_cannot_carry_is_refused(install: TritonInstall, key: str) -> None:
    with pytest.raises(TritonLaunchError) as err:
        TritonServer(install=install, admin_key=key).command()
    assert "16 to 512 characters" in str(err.value)
    if key:  # the refusal does not echo what may be a real secret
        assert key not in str(err.value)


def test_no_restriction_when_asked(install: TritonInstall) -> None:
    cmd = TritonServer(install=install, restricted_apis=()).command()
    assert not [arg for arg in cmd if "restricted" in arg]


@pytest.fixture
def cli_install(monkeypatch: pytest.MonkeyPatch, install: TritonInstall) -> None:
    monkeypatch.setattr("launcher.cli.wheel_install", lambda _work_dir: install)
    monkeypatch.delenv(ADMIN_KEY_FILE_ENV, raising=False)


@pytest.mark.usefixtures("cli_install")
def test_cli_reads_the_operators_key_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "triton_admin_key"
    key_file.write_text("0123456789abcdef0123\n", encoding="utf-8")
    flag = build_parser().parse_args(["triton", "--admin-key-file", str(key_file)])
    assert _triton_from_args(flag).admin_key == "0123456789abcdef0123"
    monkeypatch.setenv(ADMIN_KEY_FILE_ENV, str(key_file))
    assert _triton_from_args(build_parser().parse_args(["triton"])).admin_key == (
        "0123456789abcdef0123"
    )


@pytest.mark.usefixtures("cli_install")
def test_cli_without_a_key_file_makes_a_key_per_start() -> None:
    first = _triton_from_args(build_parser().parse_args(["triton"])).admin_key
    second = _triton_from_args(build_parser().parse_args(["triton"])).admin_key
    assert first != second


@pytest.mark.usefixtures("cli_install")
def test_cli_refuses_a_missing_or_weak_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(TritonLaunchError, match="cannot read the Triton admin key file"):
        _triton_from_args(build_parser().parse_args(["triton", "--admin-key-file", str(missing)]))
    weak = tmp_path / "weak"
    weak.write_text("admin\n", encoding="utf-8")
    with pytest.raises(TritonLaunchError, match="16 to 512 characters"):
        _triton_from_args(build_parser().parse_args(["triton", "--admin-key-file", str(weak)]))
