"""The Dockerfiles, parsed with BuildKit's own parser (the `dockerfile` package).

No image is built here (no Docker engine); these hold the properties the deployment
relies on: slim non-root images, the frontend without ML libraries, NVIDIA's TensorRT-LLM
image for the GPU Triton, and sources that exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest

from frontend.settings import FrontendSettings

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "Dockerfile"
TRITON_GPU = REPO / "docker" / "triton.Dockerfile"
TRITON_CPU = REPO / "docker" / "triton-cpu.Dockerfile"
LOCUST = REPO / "docker" / "locust.Dockerfile"
ALL = [FRONTEND, TRITON_GPU, TRITON_CPU, LOCUST]
# Libraries that must never reach the frontend image.
HEAVY = ("torch", "tensorrt", "transformers", "llama-cpp-python", "nvidia-pytriton", "vllm")


def parse(path: Path) -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(path)))


def stages(commands: list[dockerfile.Command]) -> list[list[dockerfile.Command]]:
    """Commands grouped by FROM; global ARGs before the first FROM are dropped."""
    groups: list[list[dockerfile.Command]] = []
    for command in commands:
        if command.cmd == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(command)
    return groups


def global_args(commands: list[dockerfile.Command]) -> dict[str, str]:
    args: dict[str, str] = {}
    for command in commands:
        if command.cmd == "FROM":
            break
        if command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            args[name] = default
    return args


def base_image(path: Path, stage: int = -1) -> str:
    commands = parse(path)
    image = str(stages(commands)[stage][0].value[0])
    for name, default in global_args(commands).items():
        image = image.replace("${" + name + "}", default)
    return image


def final_user(path: Path) -> str | None:
    users = [c.value[0] for c in stages(parse(path))[-1] if c.cmd == "USER"]
    return users[-1] if users else None


def run_lines(path: Path) -> str:
    return "\n".join(c.value[0] for c in parse(path) if c.cmd == "RUN")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_copied_sources_exist(path: Path) -> None:
    for command in parse(path):
        if command.cmd != "COPY" or any(f.startswith("--from") for f in command.flags):
            continue
        for source in command.value[:-1]:
            assert (REPO / source).exists(), f"{path.name}: COPY {source}"


@pytest.mark.parametrize("path", [FRONTEND, TRITON_CPU, LOCUST], ids=lambda p: p.name)
def test_python_images_are_slim_and_run_as_a_user(path: Path) -> None:
    for index in range(len(stages(parse(path)))):
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base_image(path, index)), path.name
    user = final_user(path)
    assert user is not None, f"{path.name} runs as root"
    assert user.split(":")[0] not in ("0", "root")


def test_frontend_image_installs_the_core_dependencies_only() -> None:
    runs = run_lines(FRONTEND)
    installs = re.findall(r"pip install ([^\n&]+)", runs)
    assert installs == ["."], "the frontend installs the project without extras"
    core = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["dependencies"]
    for requirement in core:
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()
        assert not name.startswith(HEAVY), f"{name} is a core dependency"


def image_env(path: Path) -> dict[str, str]:
    """The variables the final stage's ENV instructions set."""
    env: dict[str, str] = {}
    for command in stages(parse(path))[-1]:
        if command.cmd == "ENV":
            pairs = command.value  # name, value, name, value, ...
            env.update(zip(pairs[::2], pairs[1::2], strict=True))
    return env


def copied_sources(path: Path) -> set[str]:
    """What the Dockerfile copies from the build context."""
    return {
        source.rstrip("/")
        for command in parse(path)
        if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags)
        for source in command.value[:-1]
    }


def test_frontend_image_serves_the_frontend() -> None:
    commands = parse(FRONTEND)
    cmd = next(c for c in reversed(commands) if c.cmd == "CMD")
    assert cmd.json
    assert list(cmd.value) == ["python", "-m", "frontend"]
    env = image_env(FRONTEND)
    assert env["LLM_FRONTEND_HOST"] == "0.0.0.0"  # reachable from the other containers
    assert env["LLM_FRONTEND_PORT"] == "8080"
    assert "8080" in next(c for c in commands if c.cmd == "EXPOSE").value
    health = next(c for c in commands if c.cmd == "HEALTHCHECK")
    assert "/health/ready" in " ".join(health.value)


def test_frontend_image_environment_is_what_the_frontend_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The settings ignore unknown variables: a misspelt name would be dropped silently.
    image = {k: v for k, v in image_env(FRONTEND).items() if k.startswith("LLM_FRONTEND_")}
    fields = {"LLM_FRONTEND_" + name.upper(): name for name in FrontendSettings.model_fields}
    assert set(image) <= set(fields)
    for name in list(os.environ):
        if name.startswith("LLM_FRONTEND_"):
            monkeypatch.delenv(name)
    for name, value in image.items():
        monkeypatch.setenv(name, value)
    settings = FrontendSettings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    for name, value in image.items():
        assert str(getattr(settings, fields[name])) == value, name


def test_frontend_image_leaves_out_the_load_tests() -> None:
    sources = copied_sources(FRONTEND)
    assert "loadtest" not in sources
    assert "tests" not in sources
    # The `llm-stack` command installed with the project must find its module.
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert {target.split(".")[0] for target in scripts.values()} <= sources
    # Nothing the image runs pulls the load tests in.
    probe = (
        "import sys, frontend.app, frontend.server, launcher.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'loadtest', 'locust', 'tests'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_gpu_triton_is_nvidias_tensorrt_llm_image() -> None:
    commands = parse(TRITON_GPU)
    assert str(stages(commands)[0][0].value[0]) == (
        "nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-trtllm-python-py3"
    )
    # The version comes from docker-compose.yml alone.
    assert global_args(commands) == {"TRITON_VERSION": ""}
    runs = run_lines(TRITON_GPU)
    assert "--no-deps" in runs  # keeps NVIDIA's torch, tensorrt_llm and numpy as built
    # The build imports the modules the Triton models load; each must exist.
    checked = re.search(r'python3 -c "import ([\w., ]+)"', runs)
    assert checked is not None
    for module in checked.group(1).split(","):
        path = REPO / module.strip().replace(".", "/")
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), module
    cmd = next(c for c in reversed(commands) if c.cmd == "CMD")
    # tritonserver through the script that restricts its admin APIs (test_triton_entrypoint).
    assert cmd.value[0] == "/opt/llm-stack/triton-entrypoint.sh"
    copy = next(c for c in commands if c.cmd == "COPY" and c.value[-1] == cmd.value[0])
    assert list(copy.value[:-1]) == ["docker/triton-entrypoint.sh"]
    assert "--chmod=0755" in copy.flags
    assert "--model-repository=/models" in cmd.value
    assert "--metrics-port=8002" in cmd.value
    assert not [arg for arg in cmd.value if "restricted" in arg]  # the script adds them


def test_cpu_triton_builds_llama_cpp_and_runs_the_launcher() -> None:
    commands = parse(TRITON_CPU)
    build_stage = stages(commands)[0]
    env = " ".join(" ".join(c.value) for c in build_stage if c.cmd == "ENV")
    assert "-DLLAVA_BUILD=OFF" in env
    runs = run_lines(TRITON_CPU)
    assert "cmake" in runs
    assert 'pip install ".[triton,cpu]"' in runs
    cmd = next(c for c in reversed(commands) if c.cmd == "CMD")
    assert list(cmd.value[:2]) == ["llm-stack", "triton"]
    assert cmd.value[cmd.value.index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize("path", [TRITON_GPU, TRITON_CPU], ids=lambda p: p.name)
def test_triton_images_check_the_engine(path: Path) -> None:
    health = next(c for c in parse(path) if c.cmd == "HEALTHCHECK")
    assert "-m llm_stack.engine_probe" in " ".join(health.value)


def test_build_context_leaves_out_local_state() -> None:
    ignored = (REPO / ".dockerignore").read_text("utf-8").split()
    assert {".git", ".venv", "*.gguf"} <= set(ignored)
