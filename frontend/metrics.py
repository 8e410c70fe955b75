"""Prometheus metrics of one app, in the app's own registry (several apps can share a process).

With several worker processes (LLM_FRONTEND_WORKERS) every metric is also written to a
file of its process in PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode,
which the supervisor switches on before the workers import the client), and /metrics on
any worker reads them all: counters and histograms summed over the workers, those that
ended included; gauges summed (or their minimum, for endpoint_up) over the live ones.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# prometheus-client reads it when first imported: a process writes metric files from then
# on exactly when it is set.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FrontendMetrics:
    """Every metric the frontend exports; label values are bounded sets."""

    def __init__(self, *, per_key: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_ENV) or None
        # Usage per API key id only when asked: /metrics needs no key, and key ids (a
        # digest's prefix for plain keys) and each caller's usage are not for everyone.
        self.per_key = per_key
        r = self.registry
        self.http_requests = Counter(
            "frontend_http_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "frontend_http_request_duration_seconds",
            "HTTP request duration, to the last byte",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "frontend_http_requests_in_flight",
            "HTTP requests being served",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.generations_in_flight = Gauge(
            "frontend_generations_in_flight",
            "Sequences of admitted generations not finished yet (n per request of n choices)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.generations_queued = Gauge(
            "frontend_generations_queued",
            "Generations waiting for a concurrency slot",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.generations = Counter(
            "frontend_generations", "Finished generations by outcome", ["outcome"], registry=r
        )
        self.time_to_first_token = Histogram(
            "frontend_time_to_first_token_seconds",
            "Admission to the first text of a streamed generation",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "frontend_inter_token_latency_seconds",
            "Time per token between successive deltas of a streamed generation",
            buckets=_TOKEN_GAP_BUCKETS,
            registry=r,
        )
        key_label = ["key_id"] if per_key else []
        per = ", per API key id" if per_key else ""
        self.prompt_tokens = Counter(
            "frontend_prompt_tokens", f"Prompt tokens{per}", key_label, registry=r
        )
        self.completion_tokens = Counter(
            "frontend_completion_tokens", f"Completion tokens{per}", key_label, registry=r
        )
        self.rate_limited = Counter(
            "frontend_rate_limited", "Requests refused by a rate limit", ["limit"], registry=r
        )
        self.rejected = Counter(
            "frontend_rejected_requests",
            "Requests answered with an error, by reason",
            ["reason"],
            registry=r,
        )
        self.triton_errors = Counter(
            "frontend_triton_errors", "Failed Triton calls, by code", ["code"], registry=r
        )
        self.endpoint_up = Gauge(
            "frontend_triton_endpoint_up",
            "1 while a Triton endpoint's model is ready (in every worker's rotation)",
            ["endpoint"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.endpoint_in_flight = Gauge(
            "frontend_triton_endpoint_in_flight",
            "Calls in flight per Triton endpoint",
            ["endpoint"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.endpoint_calls = Counter(
            "frontend_triton_calls", "Calls started per Triton endpoint", ["endpoint"], registry=r
        )
        self.routing_decisions = Counter(
            "frontend_routing_decisions",
            "Endpoint choices: by prompt prefix (affinity), past its load bound (overflow), "
            "or least loaded (no prefix key)",
            ["decision"],
            registry=r,
        )

    def show_generations(self, in_flight: int, queued: int) -> None:
        """The concurrency gate's state (its observer: set as it changes, since a gauge
        read from a function at scrape time would not reach the other workers)."""
        self.generations_in_flight.set(in_flight)
        self.generations_queued.set(queued)

    def count_tokens(self, key_id: str, prompt: int, completion: int) -> None:
        """A generation's tokens, under its key id when usage is counted per key."""
        if self.per_key:
            self.prompt_tokens.labels(key_id).inc(prompt)
            self.completion_tokens.labels(key_id).inc(completion)
        else:
            self.prompt_tokens.inc(prompt)
            self.completion_tokens.inc(completion)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type: of every worker, when there are several."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        forget_dead_workers(self.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of worker processes that have ended (a worker that died and
    was replaced, or was retired): their in-flight counts would stay in the sums."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True
