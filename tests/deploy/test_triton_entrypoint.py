"""docker/triton-entrypoint.sh, the GPU image's start: tritonserver with the admin APIs
restricted as the launcher restricts them, the key from the operator's file or random.

Run with /bin/sh against a stand-in `tritonserver` that records its arguments.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.triton_server import ADMIN_HEADER, ADMIN_KEY_FILE_ENV, RESTRICTED_APIS

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "triton-entrypoint.sh"
KEY = "0123456789abcdef-operator.key"


def run_entrypoint(
    tmp_path: Path, env: dict[str, str], *args: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The script's result, and the arguments the stand-in tritonserver was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv"
    fake = bin_dir / "tritonserver"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n', encoding="utf-8")
    fake.chmod(0o755)
    shell = shutil.which("sh")
    assert shell is not None
    proc = subprocess.run(
        [shell, str(ENTRYPOINT), *args],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    argv = record.read_text(encoding="utf-8").splitlines() if record.exists() else []
    return proc, argv


def restriction(key: str) -> list[str]:
    group = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={key}"
    return [f"--http-restricted-api={group}", f"--grpc-restricted-protocol={group}"]


def test_the_operators_key_restricts_the_launchers_apis(tmp_path: Path) -> None:
    key_file = tmp_path / "triton_admin_key"
    key_file.write_text(f"  {KEY}\n", encoding="utf-8")
    proc, argv = run_entrypoint(
        tmp_path, {ADMIN_KEY_FILE_ENV: str(key_file)}, "--model-repository=/models"
    )
    assert proc.returncode == 0, proc.stderr
    assert argv == ["--model-repository=/models", *restriction(KEY)]


def test_without_a_key_file_each_start_has_a_random_key(tmp_path: Path) -> None:
    keys = []
    for _ in range(2):
        proc, argv = run_entrypoint(tmp_path, {}, "--model-repository=/models")
        assert proc.returncode == 0, proc.stderr
        match = re.fullmatch(r"--http-restricted-api=[^:]+:admin-key=([0-9a-f]{64})", argv[1])
        assert match is not None, argv
        keys.append(match.group(1))
        assert argv[1:] == restriction(keys[-1])
    assert keys[0] != keys[1]


@pytest.mark.parametrize(
    "content", ["", "short\n", "two words and more than sixteen\n", "a:b=c,d" * 4]
)
def test_a_key_triton_cannot_carry_stops_the_start(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "triton_admin_key"
    key_file.write_text(content, encoding="utf-8")
    proc, argv = run_entrypoint(tmp_path, {ADMIN_KEY_FILE_ENV: str(key_file)})
    assert proc.returncode == 1
    assert "16 to 512 characters" in proc.stderr
    assert argv == []  # tritonserver never started


def test_a_missing_key_file_stops_the_start(tmp_path: Path) -> None:
    proc, argv = run_entrypoint(tmp_path, {ADMIN_KEY_FILE_ENV: str(tmp_path / "missing")})
    assert proc.returncode == 1
    assert "cannot read the Triton admin key file" in proc.stderr
    assert argv == []
