"""Server figures from two scrapes of Triton's and the frontend's /metrics."""

from __future__ import annotations

import pytest

from loadtest.server_metrics import Snapshot, parse_samples, scrape, server_figures
from tests.conftest import free_port

TRITON = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{{model="ensemble",version="1"}} {ens}
nv_inference_request_success{{model="preprocessing",version="1"}} {ens}
nv_inference_request_success{{model="tensorrt_llm",version="1"}} {ens}
nv_inference_request_success{{model="postprocessing",version="1"}} {post}
# TYPE nv_inference_count counter
nv_inference_count{{model="preprocessing",version="1"}} {ens}
nv_inference_count{{model="postprocessing",version="1"}} {post}
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{{model="preprocessing",version="1"}} {ens}
nv_inference_exec_count{{model="postprocessing",version="1"}} {post_exec}
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{{model="tensorrt_llm",version="1"}} {queue_us}
# TYPE llm_engine_generated_tokens_total counter
llm_engine_generated_tokens_total{{model="tensorrt_llm"}} {tokens}
# TYPE llm_engine_steps_total counter
llm_engine_steps_total{{model="tensorrt_llm"}} {steps}
# TYPE llm_engine_peak_step_batch gauge
llm_engine_peak_step_batch{{model="tensorrt_llm"}} {peak}
"""

FRONTEND = """\
# TYPE {p}generations_total counter
{p}generations_total{{outcome="length"}} {length}
{p}generations_total{{outcome="stop"}} 1.0
# TYPE {p}rejected_requests_total counter
{p}rejected_requests_total{{reason="rate_limited"}} {limited}
# TYPE {p}time_to_first_token_seconds histogram
{p}time_to_first_token_seconds_bucket{{le="+Inf"}} {ttft_n}
{p}time_to_first_token_seconds_count {ttft_n}
{p}time_to_first_token_seconds_sum {ttft_sum}
"""


def _triton(at: float, **v: float) -> Snapshot:
    return Snapshot("triton", TRITON.format(**v), at)


def _frontend(at: float, prefix: str, **v: float) -> Snapshot:
    return Snapshot("frontend", FRONTEND.format(p=prefix, **v), at)


@pytest.mark.parametrize("prefix", ["frontend_", "llm_frontend_"])
def test_differences_between_scrapes(prefix: str) -> None:
    before_t = _triton(
        100.0, ens=10, post=100, post_exec=100, queue_us=0, tokens=500, steps=500, peak=1
    )
    after_t = _triton(
        110.0, ens=30, post=500, post_exec=200, queue_us=40_000, tokens=2500, steps=1000, peak=8
    )
    before_f = _frontend(100.0, prefix, length=10, limited=0, ttft_n=10, ttft_sum=1.0)
    after_f = _frontend(110.0, prefix, length=30, limited=5, ttft_n=30, ttft_sum=5.0)
    figures = server_figures((before_t, after_t), (before_f, after_f))
    assert figures.elapsed_s == pytest.approx(10.0)
    assert figures.engine_tokens_per_s == pytest.approx(200.0)
    assert figures.engine_tokens_per_step == pytest.approx(4.0)
    assert figures.engine_peak_step_batch == 8
    assert figures.triton_requests["ensemble"] == 20
    assert figures.triton_requests["postprocessing"] == 400
    assert figures.triton_queue_ms["tensorrt_llm"] == pytest.approx(2.0)
    assert figures.triton_batch_size == {"preprocessing": 1.0, "postprocessing": 4.0}
    assert figures.frontend_generations == {"length": 20.0, "stop": 0.0}
    assert figures.frontend_rejected == {"rate_limited": 5.0}
    assert figures.frontend_ttft_mean_s == pytest.approx(0.2)


def test_unreachable_endpoints_give_no_figures() -> None:
    empty = Snapshot("x", "", 0.0), Snapshot("x", "", 5.0)
    figures = server_figures(empty, empty)
    assert figures.engine_tokens_per_s is None
    assert figures.engine_peak_step_batch is None
    assert figures.triton_requests == {}
    assert figures.frontend_ttft_mean_s is None


def test_parse_samples_keys_by_name_and_labels() -> None:
    samples = parse_samples('# TYPE g gauge\ng{b="2",a="1"} 3\n')
    assert samples == {("g", (("a", "1"), ("b", "2"))): 3.0}


def test_scrape_of_a_closed_port_is_empty() -> None:
    snapshot = scrape(f"http://127.0.0.1:{free_port()}/metrics", timeout_s=2.0)
    assert snapshot.text == ""
    assert snapshot.samples == {}
