# syntax=docker/dockerfile:1
# Locust with the project's load test (the `loadtest` extra), for the `load` profile.
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 locust \
    && useradd --system --uid 10001 --gid locust --create-home --shell /usr/sbin/nologin locust
WORKDIR /app
COPY pyproject.toml README.md ./
COPY llm_stack ./llm_stack
COPY frontend ./frontend
COPY launcher ./launcher
COPY loadtest ./loadtest
RUN pip install ".[loadtest]"
USER 10001:10001
ENTRYPOINT ["locust"]
