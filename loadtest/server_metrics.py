"""The frontend's and Triton's /metrics, scraped before and after a load level.

The differences say what the servers saw: engine tokens/s and tokens per engine step,
the largest engine batch, Triton's per-model request counts, queue times and average
dynamic batch sizes, and the frontend's generations by outcome and rejections by reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


@dataclass(frozen=True)
class Snapshot:
    """One scrape: its text (empty when the endpoint could not be read) and when."""

    url: str
    text: str
    at: float

    @property
    def samples(self) -> Samples:
        return parse_samples(self.text) if self.text else {}


def scrape(url: str, timeout_s: float = 5.0) -> Snapshot:
    """GET a metrics endpoint; an unreachable one gives an empty snapshot and a warning."""
    at = time.time()
    try:
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("cannot scrape %s: %s", url, exc)
        return Snapshot(url, "", at)
    return Snapshot(url, response.text, at)


def _matching(samples: Samples, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """Samples named `name`, or `name` under a prefix (`llm_frontend_...` for `frontend_...`).

    The parser names every counter sample `..._total`, also Triton's, which lack the suffix
    in their own exposition, so names are compared without it.
    """
    wanted = name.removesuffix("_total")
    for (sample_name, labels), value in samples.items():
        base = sample_name.removesuffix("_total")
        if base == wanted or base.endswith("_" + wanted):
            yield dict(labels), value


def _by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in _matching(samples, name):
        key = labels.get(label, "")
        totals[key] = totals.get(key, 0.0) + value
    return totals


def _total(samples: Samples, name: str) -> float | None:
    values = [value for _, value in _matching(samples, name)]
    return sum(values) if values else None


def _delta_total(before: Samples, after: Samples, name: str) -> float | None:
    """How much `name` grew between two scrapes (None: not exported)."""
    end = _total(after, name)
    return None if end is None else end - (_total(before, name) or 0.0)


def _delta_by_label(before: Samples, after: Samples, name: str, label: str) -> dict[str, float]:
    """How much `name` grew between two scrapes, per value of `label`."""
    start = _by_label(before, name, label)
    return {k: v - start.get(k, 0.0) for k, v in sorted(_by_label(after, name, label).items())}


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


@dataclass(frozen=True)
class ServerFigures:
    """What the servers counted between two scrapes (None: metric not exported)."""

    elapsed_s: float
    engine_tokens_per_s: float | None = None
    engine_tokens_per_step: float | None = None
    engine_peak_step_batch: float | None = None
    triton_requests: dict[str, float] = field(default_factory=dict)
    triton_queue_ms: dict[str, float] = field(default_factory=dict)
    triton_batch_size: dict[str, float] = field(default_factory=dict)
    frontend_generations: dict[str, float] = field(default_factory=dict)
    frontend_rejected: dict[str, float] = field(default_factory=dict)
    frontend_ttft_mean_s: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def server_figures(
    triton: tuple[Snapshot, Snapshot], frontend: tuple[Snapshot, Snapshot]
) -> ServerFigures:
    """The differences between the before and after scrapes of both servers."""
    t0, t1 = triton[0].samples, triton[1].samples
    f0, f1 = frontend[0].samples, frontend[1].samples
    elapsed = max(triton[1].at - triton[0].at, 1e-9)

    tokens = _delta_total(t0, t1, "llm_engine_generated_tokens_total")
    steps = _delta_total(t0, t1, "llm_engine_steps_total")
    requests = _delta_by_label(t0, t1, "nv_inference_request_success", "model")
    queue_us = _delta_by_label(t0, t1, "nv_inference_queue_duration_us", "model")
    inferences = _delta_by_label(t0, t1, "nv_inference_count", "model")
    executions = _delta_by_label(t0, t1, "nv_inference_exec_count", "model")
    ttft_mean = _ratio(
        _delta_total(f0, f1, "frontend_time_to_first_token_seconds_sum"),
        _delta_total(f0, f1, "frontend_time_to_first_token_seconds_count"),
    )
    return ServerFigures(
        elapsed_s=elapsed,
        engine_tokens_per_s=None if tokens is None else tokens / elapsed,
        engine_tokens_per_step=_ratio(tokens, steps),
        engine_peak_step_batch=_total(t1, "llm_engine_peak_step_batch"),
        triton_requests=requests,
        triton_queue_ms={
            m: us / 1000 / requests[m] for m, us in queue_us.items() if requests.get(m)
        },
        triton_batch_size={
            m: n / executions[m] for m, n in inferences.items() if executions.get(m)
        },
        frontend_generations=_delta_by_label(f0, f1, "frontend_generations_total", "outcome"),
        frontend_rejected=_delta_by_label(f0, f1, "frontend_rejected_requests_total", "reason"),
        frontend_ttft_mean_s=ttft_mean,
    )
