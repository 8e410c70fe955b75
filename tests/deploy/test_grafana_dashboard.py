"""Grafana's provisioning and dashboard, and the metric names they share with the rules.

Every frontend metric the dashboard or the rules query must be one the frontend exports
(frontend.metrics), so a renamed metric breaks this test instead of a panel. Triton's
names are checked against a live Triton in test_prometheus_scrape.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from frontend.metrics import FrontendMetrics

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "llm-stack.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "llm-stack.yml"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
COMPOSE = REPO / "docker-compose.yml"

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
PREFIXES = ("frontend_", "nv_", "llm_engine_")
# What the dashboard must show (issue 6): a metric for each.
REQUIRED = {
    "request rate": "frontend_http_requests_total",
    "errors": "frontend_rejected_requests_total",
    "TTFT": "frontend_time_to_first_token_seconds_bucket",
    "ITL": "frontend_inter_token_latency_seconds_bucket",
    "tokens/s": "frontend_completion_tokens_total",
    "in flight": "frontend_generations_in_flight",
    "queue time": "nv_inference_queue_duration_us",
    "Triton pending requests": "nv_inference_pending_request_count",
    "KV cache": "nv_trt_llm_kv_cache_block_metrics",
    # Issue 10: prefix-cache hits and prefix-aware routing.
    "prefix cache": "llm_engine_prompt_tokens_total",
    "routing": "frontend_routing_decisions_total",
}


def metric_names(promql: str) -> set[str]:
    """Metric names a PromQL expression reads (not recording rules, which have colons)."""
    bare = _QUOTED.sub('""', promql)
    return {
        name for name in _IDENTIFIER.findall(bare) if name.startswith(PREFIXES) and ":" not in name
    }


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def exported_frontend_names() -> set[str]:
    """Sample names the frontend's registry exposes, labelled or not."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
        "summary": ("_sum", "_count"),
    }
    names: set[str] = set()
    for family in FrontendMetrics().registry.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (reason) (rate(frontend_rejected_requests_total{reason="nv_x"}[5m]))'
        " / ignoring (reason) group_left frontend:api_requests:rate5m"
    )
    assert metric_names(expr) == {"frontend_rejected_requests_total"}


def test_dashboard_shows_every_required_figure() -> None:
    used = set().union(*map(metric_names, dashboard_exprs()))
    missing = {topic: name for topic, name in REQUIRED.items() if name not in used}
    assert missing == {}


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_frontend_metrics_queried_are_exported(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else rule_exprs()
    queried = {n for e in exprs for n in metric_names(e) if n.startswith("frontend_")}
    assert queried
    assert queried - exported_frontend_names() == set()


def test_panels_are_well_formed() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_dashboard_uses_the_provisioned_datasource() -> None:
    sources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert len(sources) == 1
    uid = sources[0]["uid"]
    assert sources[0]["type"] == "prometheus"
    # The compose service name and Prometheus's port.
    assert sources[0]["url"] == "http://prometheus:9090"
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid


def test_dashboard_is_provisioned_from_the_mounted_folder() -> None:
    providers = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))["providers"]
    path = providers[0]["options"]["path"]
    grafana = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["grafana"]
    mounts = dict(v.split(":")[:2][::-1] for v in grafana["volumes"] if v.startswith("./"))
    assert (REPO / mounts[path]).resolve() == DASHBOARD.parent
    assert (REPO / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{path}/{DASHBOARD.name}"
