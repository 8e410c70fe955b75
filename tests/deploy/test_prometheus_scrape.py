"""A real Prometheus, run on the committed prometheus.yml and rules.yml, scrapes the stack.

Prometheus (Debian's package) runs as a process on loopback; the test rewrites only the
scrape targets (to the test Triton's and frontend's ports), the intervals (1 s) and the
rule file path. Then its HTTP API must show both targets up, Triton's and the frontend's
request counters, every rule evaluating cleanly and every dashboard query parsing.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc.aio as grpcclient
import yaml

from launcher.triton_server import TritonServer, free_port
from llm_stack.ensemble_client import generate

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "llm-stack.json"
# Triton metrics the rules and the dashboard read that the CPU engine also exports
# (nv_gpu_* exist on GPU hosts only).
TRITON_METRICS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_queue_duration_us",
    "nv_inference_pending_request_count",
    "nv_trt_llm_request_metrics",
    "llm_engine_generated_tokens_total",
    "nv_trt_llm_kv_cache_block_metrics",
    "llm_engine_prompt_tokens_total",
)
# Dashboard panels whose every query has data once one request went through the stack
# (the others need errors, rate limiting or a GPU).
PANELS_WITH_DATA = (
    "API request rate",
    "TTFT p95",
    "Generations in flight",
    "Requests by route and status",
    "Time to first token",
    "Inter-token latency",
    "Request duration",
    "Tokens per second",
    "In flight: frontend and engine",
    "Triton queue time per request",
    "Triton pending requests",
    "Triton endpoints seen by the frontend",
    "KV cache blocks",
    "Prefix cache: prompt tokens",
)
START_TIMEOUT_S = 30.0
SCRAPE_TIMEOUT_S = 45.0


def _host_port(url: str) -> str:
    match = re.match(r"^(?:https?://)?([^/]+)", url)
    assert match is not None, url
    return match.group(1)


class Prometheus:
    """One Prometheus process on 127.0.0.1, with its data in a temporary folder."""

    def __init__(self, binary: str, work_dir: Path, targets: Mapping[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work_dir = work_dir
        self.config_file = work_dir / "prometheus.yml"
        self.log_file = work_dir / "prometheus.log"
        self.config_file.write_text(yaml.safe_dump(self._config(targets)), encoding="utf-8")
        self._cmd = [
            binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def _config(self, targets: Mapping[str, str]) -> dict[str, Any]:
        """The committed config with loopback targets; jobs without one are dropped."""
        config: dict[str, Any] = yaml.safe_load(
            (PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8")
        )
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
        all_targets = {**targets, "prometheus": f"127.0.0.1:{self.port}"}
        jobs = []
        for job in config["scrape_configs"]:
            if job["job_name"] in all_targets:
                for static in job["static_configs"]:
                    static["targets"] = [all_targets[job["job_name"]]]
                jobs.append(job)
        assert {j["job_name"] for j in jobs} == set(all_targets), "a target has no job"
        config["scrape_configs"] = jobs
        return config

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self._cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"Prometheus exited: {self.log_file.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"Prometheus not ready in {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def api(self, path: str, **params: str) -> Any:
        resp = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = resp.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result = data["result"]
        assert isinstance(result, list)
        return result

    def wait_for_scrapes(self, jobs: tuple[str, ...], count: int = 2) -> None:
        """Until each job's target has been scraped `count` times, and is up."""
        deadline = time.monotonic() + SCRAPE_TIMEOUT_S
        pending = set(jobs)
        while pending and time.monotonic() < deadline:
            for job in list(pending):
                scrapes = self.query(f'count_over_time(up{{job="{job}"}}[1m])')
                if scrapes and float(scrapes[0]["value"][1]) >= count:
                    pending.discard(job)
            time.sleep(0.5)
        assert not pending, f"no {count} scrapes of {pending}: {self.api('targets')}"

    def wait_for_value(self, expr: str) -> float:
        """The first finite value `expr` gives (one series)."""
        deadline = time.monotonic() + SCRAPE_TIMEOUT_S
        while True:
            result = self.query(expr)
            if result and math.isfinite(number := float(result[0]["value"][1])):
                return number
            assert time.monotonic() < deadline, f"{expr} gave no value: {result}"
            time.sleep(0.5)

    def wait_for_rule_evaluations(self) -> list[dict[str, Any]]:
        """Every rule, once each has been evaluated at least once."""
        deadline = time.monotonic() + SCRAPE_TIMEOUT_S
        while True:
            rules = [r for g in self.api("rules")["groups"] for r in g["rules"]]
            if rules and all(not r["lastEvaluation"].startswith("0001") for r in rules):
                return rules
            assert time.monotonic() < deadline, "rules were not evaluated"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("prometheus is missing: apt-get install prometheus (Debian's package)")
    return path


def start_prometheus(binary: str, work_dir: Path, targets: Mapping[str, str]) -> Prometheus:
    work_dir.mkdir(parents=True, exist_ok=True)
    prometheus = Prometheus(binary, work_dir, targets)
    prometheus.start()
    return prometheus


@pytest.fixture(scope="module")
def frontend_url(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The frontend as its own process (`python -m frontend`), on the test Triton."""
    port = free_port()
    log_file = tmp_path_factory.mktemp("frontend") / "frontend.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLM_FRONTEND_")},
        "LLM_FRONTEND_HOST": "127.0.0.1",
        "LLM_FRONTEND_PORT": str(port),
        "LLM_FRONTEND_TRITON_URLS": triton.grpc_url,
        "LLM_FRONTEND_GRACEFUL_SHUTDOWN_S": "2",
    }
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "frontend"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"frontend exited: {log_file.read_text()}"
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"frontend not ready: {log_file.read_text()}"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def dashboard_queries(titles: tuple[str, ...] | None = None) -> list[str]:
    """The dashboard's queries (of the panels titled `titles`), with a fixed rate window."""
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    chosen = [p for p in panels if p["type"] != "row" and (titles is None or p["title"] in titles)]
    if titles is not None:
        assert {p["title"] for p in chosen} == set(titles)
    return [t["expr"].replace("$__rate_interval", "1m") for p in chosen for t in p["targets"]]


def value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


async def ensemble_request(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        result = await generate(client, "Hello", 2, temperature=0.0)
    finally:
        await client.close()
    assert result.error is None


async def test_prometheus_scrapes_triton(
    triton: TritonServer, prometheus_binary: str, tmp_path: Path
) -> None:
    await ensemble_request(triton)
    prometheus = start_prometheus(
        prometheus_binary, tmp_path / "prometheus", {"triton": _host_port(triton.metrics_url)}
    )
    try:
        prometheus.wait_for_scrapes(("triton", "prometheus"))
        up = prometheus.query('up{job="triton"}')
        assert [value(s) for s in up] == [1.0]

        success = prometheus.query('nv_inference_request_success{model="ensemble"}')
        assert success, "Triton's request counter was not scraped"
        assert value(success[0]) >= 1
        for name in TRITON_METRICS:
            assert prometheus.query(f'count({{__name__="{name}", job="triton"}})'), name

        # The committed rules load and evaluate on real series without errors.
        rules = prometheus.wait_for_rule_evaluations()
        assert {r["health"] for r in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]
        assert {r["name"] for r in rules if r["type"] == "alerting"} >= {
            "LLMFrontendHighErrorRate",
            "LLMFrontendSlowTimeToFirstToken",
            "LLMFrontendRejectingRequests",
        }
        # A request while Prometheus watches gives the queue-time rule a rate to divide by.
        await ensemble_request(triton)
        queue = prometheus.wait_for_value(
            'model:nv_inference_queue_duration_us:mean_rate5m{model="ensemble"}'
        )
        assert queue >= 0

        # Every dashboard query is PromQL that Prometheus accepts.
        for expr in dashboard_queries():
            prometheus.query(expr)
    finally:
        prometheus.stop()


async def test_prometheus_scrapes_triton_and_the_frontend(
    triton: TritonServer, frontend_url: str, prometheus_binary: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=frontend_url, timeout=60) as http:
        resp = await http.post("/generate", json={"prompt": "Hello", "max_tokens": 2})
        assert resp.status_code == 200, resp.text
        streamed = await http.post(
            "/generate", json={"prompt": "Hello", "max_tokens": 3, "stream": True}
        )
        assert streamed.status_code == 200, streamed.text

    prometheus = start_prometheus(
        prometheus_binary,
        tmp_path / "prometheus",
        {"triton": _host_port(triton.metrics_url), "frontend": _host_port(frontend_url)},
    )
    try:
        prometheus.wait_for_scrapes(("triton", "frontend"))
        up = {s["metric"]["job"]: value(s) for s in prometheus.query('up{job=~"triton|frontend"}')}
        assert up == {"triton": 1.0, "frontend": 1.0}

        assert prometheus.query('nv_inference_request_success{job="triton", model="ensemble"}')
        requests = prometheus.query(
            'frontend_http_requests_total{job="frontend", route="/generate", status="200"}'
        )
        assert requests, "the frontend's request counter was not scraped"
        assert value(requests[0]) >= 1
        rules = prometheus.wait_for_rule_evaluations()
        assert {r["health"] for r in rules} == {"ok"}

        # The dashboard's selectors and vector matches fit the real label sets.
        empty = [expr for expr in dashboard_queries(PANELS_WITH_DATA) if not prometheus.query(expr)]
        assert empty == []
    finally:
        prometheus.stop()
