# syntax=docker/dockerfile:1
# Triton with TensorRT-LLM (NVIDIA's NGC image) plus this project's Python models'
# package. TRITON_VERSION (yy.mm) is set in one place: docker-compose.yml.
ARG TRITON_VERSION
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-trtllm-python-py3

# The image's own tensorrt_llm, torch, transformers and numpy stay as NVIDIA built
# them: the project goes in without dependencies, and the import below fails the build
# if a module the Triton models load needs something the image lacks.
WORKDIR /opt/llm-stack
COPY pyproject.toml README.md ./
COPY llm_stack ./llm_stack
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --no-deps . \
    && python3 -c "import llm_stack.engine.factory, llm_stack.engine.trtllm, \
llm_stack.model_config, llm_stack.model_source, llm_stack.tokenizer, llm_stack.word_lists"
# The model repository ships in the image (Kubernetes runs it as is); compose mounts the
# working copy over it.
COPY model_repository /models
# Starts tritonserver with its admin APIs behind the operator's key (the script says how).
COPY --chmod=0755 docker/triton-entrypoint.sh /opt/llm-stack/triton-entrypoint.sh

# Triton's three ports: HTTP (health, KServe v2), gRPC (the frontend), metrics
# (Prometheus). Compose and Kubernetes keep them off the host and away from other pods.
EXPOSE 8000 8001 8002
# The engine model's own answer (llm_stack.engine_probe): Triton calls its models ready
# even when the engine inside one has failed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-m", "llm_stack.engine_probe", "--timeout", "4"]
CMD ["/opt/llm-stack/triton-entrypoint.sh", "--model-repository=/models", "--http-port=8000", "--grpc-port=8001", \
     "--metrics-port=8002", "--allow-gpu-metrics=true", "--exit-timeout-secs=30"]
