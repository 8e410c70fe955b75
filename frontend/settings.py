"""The frontend's settings: one pydantic-settings class, environment prefix `LLM_FRONTEND_`.

Lists (Triton URLs, API keys, CORS origins) take a JSON array or a comma-separated
string, e.g. `LLM_FRONTEND_TRITON_URLS=127.0.0.1:8001,127.0.0.1:9001`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llm_stack.ensemble_contract import ENGINE_MODEL, ENSEMBLE_MODEL
from llm_stack.tool_calls import DEFAULT_FORMAT, FORMATS

LogLevel = Literal["debug", "info", "warning", "error"]


def _split_list(value: object) -> object:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class FrontendSettings(BaseSettings):
    """Everything the frontend reads from its environment, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="LLM_FRONTEND_", extra="ignore")

    # HTTP server
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    # Worker processes serving the port (as vLLM's --api-server-count), each with its own
    # event loop and Triton channels: one process's CPU bounds the tokens/s it streams.
    # With more than one, the concurrency bound and its queue are divided among them
    # (each takes max_concurrent_requests // workers), rate limits need the shared Redis
    # storage, and /metrics on any of them reports all of them.
    workers: int = Field(default=1, ge=1, le=64)
    # Where several workers keep their metric files (prometheus-client's multiprocess
    # mode); emptied at start. Default: a fresh temporary directory, removed at exit.
    metrics_dir: Path | None = None
    log_level: LogLevel = "info"
    # Prompts are user data: they reach the logs only when this is switched on.
    log_prompts: bool = False
    graceful_shutdown_s: int = Field(default=30, ge=1)
    # Client addresses whose X-Forwarded-For/-Proto are believed (the reverse proxies in
    # front; "*" for any). None by default: a client could name any address it likes, and
    # per-IP rate limits would key on it.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Slow clients hold a connection each (slowloris): a request's line and headers must
    # arrive within header_timeout_s of the connection's start or of the request's first
    # byte, its body within body_timeout_s (408 after), and a connection idle between
    # requests is closed after idle_timeout_s.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    idle_timeout_s: int = Field(default=5, ge=1)

    # Triton
    triton_urls: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:8001"])
    model_name: str = ENSEMBLE_MODEL
    request_timeout_s: float = Field(default=120.0, gt=0)
    # Readiness: the model ready and the engine model's health check answered (see
    # TritonPool), probed every interval, and every down interval while out of rotation.
    health_probe_interval_s: float = Field(default=2.0, gt=0)
    health_probe_down_interval_s: float = Field(default=0.25, gt=0)
    health_probe_timeout_s: float = Field(default=1.0, gt=0)
    # gRPC reconnects to a restarted Triton within this back-off at most; with the down
    # interval it bounds how long a Triton ready again stays out of rotation.
    reconnect_backoff_max_s: float = Field(default=0.5, gt=0)
    # Triton's default refuses keep-alive pings more often than every 5 minutes.
    grpc_keepalive_s: float = Field(default=300.0, gt=0)
    # The decoupled engine model inside the ensemble; a client that goes away gets its
    # sequence aborted there with a `stop` request. Empty: cancel the stream only.
    abort_model: str = ENGINE_MODEL
    # With several endpoints, requests whose first characters agree go to the same one
    # (its engine holds their prefix's KV cache), while it stays under load_factor x
    # the mean load. 0 chars: least in flight only.
    prefix_routing_chars: int = Field(default=512, ge=0)
    prefix_routing_load_factor: float = Field(default=1.5, ge=1.0)

    # The OpenAI API (/v1): the model id clients name, and what /v1/models says of it.
    served_model_name: str = Field(default="gemma-3-270m", min_length=1)
    served_model_owner: str = "llm-stack"
    # How the model writes tool calls, as vLLM's --tool-call-parser: hermes (the default
    # model's documented format, Hermes 2 Pro, Qwen 2.5/3) or llama3_json (Llama 3.1/3.2).
    # Tool calls' grammar writes it and the frontend's parser reads it.
    tool_call_parser: str = DEFAULT_FORMAT.name

    # Request limits
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_prompt_chars: int = Field(default=32_000, ge=1)
    max_tokens_limit: int = Field(default=1024, ge=1)
    max_stop_sequences: int = Field(default=4, ge=0)
    max_stop_chars: int = Field(default=64, ge=1)
    max_top_k: int = Field(default=1000, ge=1)
    # Choices (OpenAI's n) per request: each is a sequence of its own in the engine.
    max_n: int = Field(default=8, ge=1)
    # Chat messages per request; the preprocessing model's own bound (max_messages) is the
    # same, so a chat the frontend lets through is never refused for its count there.
    max_messages: int = Field(default=1024, ge=1)

    # API keys: plain keys here, or a file of hashed keys (see frontend.auth).
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_keys_file: Path | None = None

    # Rate limits per API key (per client IP without keys); 0 switches a limit off.
    rate_limit_rpm: int = Field(default=0, ge=0)
    rate_limit_tpm: int = Field(default=0, ge=0)
    # memory:// for one process; redis://host:port/db to share budgets between replicas.
    rate_limit_storage_url: str = "memory://"

    # Overload protection: sequences generating at once (a request of n choices holds n),
    # and requests waiting for room; across all workers (see `workers`).
    max_concurrent_requests: int = Field(default=256, ge=1)
    max_queued_requests: int = Field(default=0, ge=0)
    queue_timeout_s: float = Field(default=0.5, gt=0)
    overload_retry_after_s: int = Field(default=1, ge=1)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # /metrics needs no key: token usage per API key id is exported only when this is on
    # (then keep /metrics where only the operators' Prometheus reaches it).
    metrics_per_key: bool = False

    @field_validator(
        "triton_urls", "api_keys", "cors_origins", "forwarded_allow_ips", mode="before"
    )
    @classmethod
    def _lists_from_env(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("tool_call_parser")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMATS:
            raise ValueError(f"tool_call_parser must be one of {', '.join(FORMATS)}, got {value!r}")
        return value

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError(
                "rate_limit_storage_url must start with memory://, redis:// or rediss://"
            )
        return value

    @model_validator(mode="after")
    def _some_endpoint(self) -> FrontendSettings:
        if not self.triton_urls:
            raise ValueError("triton_urls needs at least one Triton gRPC endpoint")
        return self

    @model_validator(mode="after")
    def _workers_share(self) -> FrontendSettings:
        if self.workers == 1:
            return self
        limited = self.rate_limit_rpm or self.rate_limit_tpm
        if limited and self.rate_limit_storage_url.startswith("memory://"):
            # Each worker would keep its own windows: a caller would get workers x its limits.
            raise ValueError(
                f"workers={self.workers} with rate limits needs a storage the workers share: "
                "rate_limit_storage_url is memory://, set LLM_FRONTEND_RATE_LIMIT_STORAGE_URL "
                "to redis://host:port/db (or LLM_FRONTEND_WORKERS to 1)"
            )
        if self.max_concurrent_requests < self.workers:
            raise ValueError(
                f"max_concurrent_requests ({self.max_concurrent_requests}) is divided among "
                f"the workers ({self.workers}): it must be at least the number of workers"
            )
        return self

    @property
    def worker_max_concurrent_requests(self) -> int:
        """One worker's share of the concurrency bound: together they hold it exactly."""
        return self.max_concurrent_requests // self.workers

    @property
    def worker_max_queued_requests(self) -> int:
        """One worker's share of the wait queue."""
        return self.max_queued_requests // self.workers

    @property
    def auth_enabled(self) -> bool:
        """API keys are required as soon as any are configured."""
        return bool(self.api_keys) or self.api_keys_file is not None
