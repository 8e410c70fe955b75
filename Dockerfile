# syntax=docker/dockerfile:1
# The frontend image: the project's core dependencies only (FastAPI, tritonclient,
# redis, ...), no extras, so no torch, llama.cpp or Triton server in it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llm_stack ./llm_stack
COPY frontend ./frontend
# The `llm-stack` command installed with the project (`llm-stack frontend`); the load
# tests (loadtest/) and their dependencies stay out of this image.
COPY launcher ./launcher
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# Settings come from LLM_FRONTEND_* variables (frontend/settings.py); these two make it
# listen beyond loopback, on the port compose and Kubernetes expect.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LLM_FRONTEND_HOST=0.0.0.0 \
    LLM_FRONTEND_PORT=8080
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/ready', timeout=2)"]
CMD ["python", "-m", "frontend"]
