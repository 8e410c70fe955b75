"""The frontend benchmark's choice of model repository (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.frontend_bench import ECHO_MODEL, ECHO_REPOSITORY, main

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_default_repository_is_the_tests_echo_model() -> None:
    assert REPO_ROOT / "tests" / "echo_model_repository" == ECHO_REPOSITORY
    assert (ECHO_REPOSITORY / ECHO_MODEL / "config.pbtxt").is_file()
    assert (ECHO_REPOSITORY / ECHO_MODEL / "1" / "model.py").is_file()


def test_a_repository_without_the_echo_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-repository", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"no 'echo' model in {tmp_path}" in capsys.readouterr().err
