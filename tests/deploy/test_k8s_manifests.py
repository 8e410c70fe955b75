"""deploy/k8s: valid Kubernetes objects (strict OpenAPI schemas), wired to each other.

Schemas come from the `kubernetes-validate` package; the oldest and newest versions
checked bracket the clusters the manifests are meant for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from frontend.metrics import FrontendMetrics
from frontend.settings import FrontendSettings
from launcher.triton_server import ADMIN_KEY_FILE_ENV
from llm_stack.model_repository_config import read_model_config

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
VERSIONS = ("1.29.0", "1.37.0")
NAMESPACE = "llm-stack"
WORKLOADS = ("Deployment", "StatefulSet")


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def workloads() -> Iterator[dict[str, Any]]:
    for kind in WORKLOADS:
        yield from objects(kind).values()


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec["containers"])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_manifest_is_valid(name: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    doc = objects("Deployment")["frontend"]
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_every_tier_is_there_in_one_namespace() -> None:
    assert set(objects("Namespace")) == {NAMESPACE}
    names = {(doc["kind"], doc["metadata"]["name"]) for _, doc in documents()}
    assert {("StatefulSet", "triton"), ("Deployment", "frontend"), ("Deployment", "redis")} <= names
    for name, doc in documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, name


def test_every_container_has_a_readiness_probe() -> None:
    for workload in workloads():
        for container in containers(workload):
            assert container.get("readinessProbe"), workload["metadata"]["name"]
            assert container.get("livenessProbe"), workload["metadata"]["name"]


def _http_probe_paths(container: dict[str, Any]) -> dict[str, str]:
    return {
        kind: container[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        if "httpGet" in container.get(kind, {})
    }


def test_probes_use_each_servers_health_endpoints() -> None:
    (triton,) = containers(objects("StatefulSet")["triton"])
    assert _http_probe_paths(triton) == {"startupProbe": "/v2/health/ready"}
    # Readiness and liveness ask the engine model itself (Triton's own readiness stays
    # true when the engine has failed).
    for kind in ("readinessProbe", "livenessProbe"):
        command = triton[kind]["exec"]["command"]
        assert command[:3] == ["python3", "-m", "llm_stack.engine_probe"], kind
    (frontend,) = containers(objects("Deployment")["frontend"])
    assert _http_probe_paths(frontend) == {
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health/live",
    }


def test_probe_and_service_ports_are_container_ports() -> None:
    for workload in workloads():
        for container in containers(workload):
            ports = {p["name"] for p in container["ports"]} | {
                p["containerPort"] for p in container["ports"]
            }
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind, {})
                for handler in ("httpGet", "tcpSocket"):
                    if handler in probe:
                        assert probe[handler]["port"] in ports
    pods = {w["metadata"]["name"]: w for w in workloads()}
    for name, service in objects("Service").items():
        selector = service["spec"]["selector"]
        matching = [
            w
            for w in pods.values()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, f"service {name} selects {len(matching)} workloads"
        names = {p["name"] for c in containers(matching[0]) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, f"service {name} port {port['name']}"


def test_triton_has_a_gpu_and_the_tensorrt_llm_engine() -> None:
    triton = objects("StatefulSet")["triton"]
    (container,) = containers(triton)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = env_of(container)
    assert env["LLM_STACK_ENGINE"] == "tensorrt_llm"
    assert triton["spec"]["serviceName"] == "triton"
    assert objects("Service")["triton"]["spec"]["clusterIP"] == "None"


def test_frontend_lists_every_triton_the_autoscaler_may_start() -> None:
    hpa = objects("HorizontalPodAutoscaler")["triton"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "triton",
    }
    config = objects("ConfigMap")["frontend-config"]["data"]
    urls = FrontendSettings(triton_urls=config["LLM_FRONTEND_TRITON_URLS"]).triton_urls
    expected = [f"triton-{i}.triton:8001" for i in range(hpa["spec"]["maxReplicas"])]
    assert urls == expected


def test_triton_scales_on_queue_metrics() -> None:
    metrics = objects("HorizontalPodAutoscaler")["triton"]["spec"]["metrics"]
    names = {m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"}
    assert names == {"nv_trt_llm_request_metrics", "nv_inference_pending_request_count"}
    assert all(m["type"] == "Pods" for m in metrics)  # no CPU metric for a GPU server


def test_frontend_scales_on_a_metric_it_exports() -> None:
    hpa = objects("HorizontalPodAutoscaler")["frontend"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "frontend"
    exported = {family.name for family in FrontendMetrics().registry.collect()}
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Pods":
            assert metric["pods"]["metric"]["name"] in exported


def test_frontend_config_names_real_settings() -> None:
    fields = set(FrontendSettings.model_fields)
    config = objects("ConfigMap")["frontend-config"]["data"]
    for name in config:
        assert name.startswith("LLM_FRONTEND_")
        assert name.removeprefix("LLM_FRONTEND_").lower() in fields, name
    settings = FrontendSettings(
        **{k.removeprefix("LLM_FRONTEND_").lower(): v for k, v in config.items()}
    )
    assert settings.auth_enabled
    assert settings.rate_limit_storage_url == "redis://redis:6379/0"


def test_triton_env_names_real_model_parameters() -> None:
    parameters: set[str] = set()
    for config in (REPO / "model_repository").glob("*/config.pbtxt"):
        parameters |= set(read_model_config(config).parameters)
    (container,) = containers(objects("StatefulSet")["triton"])
    for name in env_of(container):
        if name.startswith("LLM_STACK_") and name != ADMIN_KEY_FILE_ENV:  # read at start
            assert name.removeprefix("LLM_STACK_").lower() in parameters, name


def test_pods_that_can_run_unprivileged_do() -> None:
    for name in ("frontend", "redis"):
        pod = objects("Deployment")[name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_no_secret_values_in_the_manifests() -> None:
    assert not objects("Secret"), "secrets are created out of band, never committed"
    secret_name = re.compile(r"(^|_)(PASSWORD|SECRET|TOKEN|API_KEYS?|PRIVATE_KEY)(_|$)")
    for workload in workloads():
        for container in containers(workload):
            for name, value in env_of(container).items():
                assert not secret_name.search(name) or name.endswith("_FILE"), (name, value)
    for name in objects("ConfigMap")["frontend-config"]["data"]:
        assert not secret_name.search(name) or name.endswith("_FILE"), name


def test_triton_admin_key_comes_from_a_secret_mounted_for_the_images_start() -> None:
    pod = objects("StatefulSet")["triton"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The image's own start (docker/triton-entrypoint.sh) restricts the admin APIs.
    assert "command" not in container
    assert "args" not in container
    path = Path(env_of(container)[ADMIN_KEY_FILE_ENV])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (name,) = [n for n, m in mounts.items() if path.parent == Path(m["mountPath"])]
    assert mounts[name]["readOnly"] is True
    assert volumes[name]["secret"]["secretName"] == "triton-admin-key"
    assert path.name == "admin_key"  # the secret's key (kubectl create ... admin_key=...)


def _pod_labels(kind: str, name: str) -> dict[str, str]:
    labels: dict[str, str] = objects(kind)[name]["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are read here"
    return bool(selector["matchLabels"].items() <= labels.items())


def _triton_ingress() -> list[dict[str, Any]]:
    """The ingress rules of the policies that select Triton's pods."""
    triton = _pod_labels("StatefulSet", "triton")
    policies = [
        p for p in objects("NetworkPolicy").values() if _selects(p["spec"]["podSelector"], triton)
    ]
    assert policies, "no NetworkPolicy selects Triton's pods"
    rules: list[dict[str, Any]] = []
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        rules += policy["spec"].get("ingress", [])
    return rules


def _port_names(rule: dict[str, Any]) -> set[str]:
    (container,) = containers(objects("StatefulSet")["triton"])
    by_number = {p["containerPort"]: p["name"] for p in container["ports"]}
    assert rule.get("ports"), "a rule without ports opens every port"
    return {by_number.get(p["port"], p["port"]) for p in rule["ports"]}


def test_only_the_frontend_reaches_tritons_grpc_port() -> None:
    rules = _triton_ingress()
    grpc = [r for r in rules if "grpc" in _port_names(r)]
    assert grpc
    frontend = _pod_labels("Deployment", "frontend")
    for rule in grpc:
        assert rule.get("from"), "a rule without peers lets every source in"
        for peer in rule["from"]:
            # A pod selector alone: pods of this namespace only, and the frontend's only.
            assert set(peer) == {"podSelector"}, peer
            assert _selects(peer["podSelector"], frontend)
            assert not _selects(peer["podSelector"], _pod_labels("Deployment", "redis"))


def test_nothing_in_the_cluster_reaches_tritons_http_port() -> None:
    # Its probes come from the kubelet on the node, which policies always let through.
    assert not [r for r in _triton_ingress() if "http" in _port_names(r)]


def test_only_prometheus_reaches_tritons_metrics_port() -> None:
    rules = [r for r in _triton_ingress() if "metrics" in _port_names(r)]
    assert len(rules) == 1
    assert _port_names(rules[0]) == {"metrics"}
    (peer,) = rules[0]["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    # The pods' scrape annotation names that port.
    annotations = objects("StatefulSet")["triton"]["spec"]["template"]["metadata"]["annotations"]
    (container,) = containers(objects("StatefulSet")["triton"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
