"""The committed Prometheus files pass promtool, and the alert rules fire when they should."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_TESTS = Path(__file__).with_name("prometheus_rules_test.yml")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is missing: apt-get install prometheus (Debian's package)")
    return path


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_config_is_valid(promtool: str) -> None:
    # Also loads and checks the rule files the config names.
    proc = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout


def test_rules_are_valid(promtool: str) -> None:
    proc = run(promtool, "check", "rules", str(PROMETHEUS_DIR / "rules.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_fire_on_their_thresholds(promtool: str) -> None:
    proc = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_rule_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    # The same tests against rules whose error threshold is 0.5 must fail.
    rules = (PROMETHEUS_DIR / "rules.yml").read_text(encoding="utf-8")
    assert rules.count("frontend:api_errors:ratio_rate5m > 0.05") == 1
    loose = tmp_path / "deploy" / "prometheus" / "rules.yml"
    loose.parent.mkdir(parents=True)
    loose.write_text(rules.replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.5"), encoding="utf-8")
    tests = tmp_path / "tests" / "deploy" / RULE_TESTS.name
    tests.parent.mkdir(parents=True)
    shutil.copy(RULE_TESTS, tests)
    proc = run(promtool, "test", "rules", tests.name, cwd=tests.parent)
    assert proc.returncode != 0
    assert "LLMFrontendHighErrorRate" in proc.stdout + proc.stderr
