"""Triton's admin APIs answer only the operator's key; what the frontend calls stays open.

Against the session's real Triton (tests/conftest.py), started with TritonServer's
default flags, as `llm-stack triton` starts it. Every call sent without the key is one
that would change nothing if it went through (same log level, a model that does not
exist), so a failure here cannot break the server the other tests share.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from launcher.triton_server import ADMIN_GRPC_HEADER, ADMIN_HEADER, TritonServer
from llm_stack.ensemble_client import generate

pytestmark = pytest.mark.integration


def http(
    server: TritonServer,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Status and JSON body (empty when none) of one HTTP call to `server`."""
    request = urllib.request.Request(
        server.http_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers=dict(headers or {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else {}


# One call per restricted group, each harmless if it were let through.
HTTP_ADMIN_CALLS = {
    "logging": ("POST", "/v2/logging", {"log_verbose_level": 0}),
    "model-repository": ("POST", "/v2/repository/models/not-a-model/unload", {}),
    "trace": ("GET", "/v2/trace/setting", None),
    "shared-memory": ("GET", "/v2/systemsharedmemory/status", None),
    "statistics": ("GET", "/v2/models/stats", None),
}


@pytest.mark.parametrize("group", sorted(HTTP_ADMIN_CALLS))
def test_http_admin_call_without_the_key_is_refused(triton: TritonServer, group: str) -> None:
    method, path, body = HTTP_ADMIN_CALLS[group]
    status, answer = http(triton, method, path, body)
    assert status == 403
    assert answer == {"error": f"This API is restricted, expecting header '{ADMIN_HEADER}'"}
    wrong = http(triton, method, path, body, {ADMIN_HEADER: "not-" + triton.admin_key})
    assert wrong[0] == 403


def test_http_log_settings_open_to_the_key(triton: TritonServer) -> None:
    status, settings = http(triton, "GET", "/v2/logging", headers=triton.admin_http_headers)
    assert status == 200
    level = settings["log_verbose_level"]
    status, settings = http(
        triton, "POST", "/v2/logging", {"log_verbose_level": level}, triton.admin_http_headers
    )
    assert (status, settings["log_verbose_level"]) == (200, level)


def test_http_health_metadata_and_config_stay_open(triton: TritonServer) -> None:
    assert http(triton, "GET", "/v2/health/ready")[0] == 200
    assert http(triton, "GET", "/v2/health/live")[0] == 200
    assert http(triton, "GET", "/v2/models/ensemble/ready")[0] == 200
    status, metadata = http(triton, "GET", "/v2/models/ensemble")
    assert (status, metadata["name"]) == (200, "ensemble")
    assert http(triton, "GET", "/v2/models/ensemble/config")[0] == 200


@pytest.fixture
def grpc_client(triton: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        yield client
    finally:
        client.close()


GRPC_ADMIN_CALLS: dict[str, Callable[[grpcclient.InferenceServerClient, dict[str, str]], Any]] = {
    "logging": lambda c, h: c.update_log_settings({"log_verbose_level": 0}, headers=h),
    "model-repository": lambda c, h: c.unload_model("not-a-model", headers=h),
    "trace": lambda c, h: c.get_trace_settings(headers=h),
    "shared-memory": lambda c, h: c.get_system_shared_memory_status(headers=h),
    "statistics": lambda c, h: c.get_inference_statistics(headers=h),
}


@pytest.mark.parametrize("group", sorted(GRPC_ADMIN_CALLS))
def test_grpc_admin_call_without_the_key_is_refused(
    triton: TritonServer, grpc_client: grpcclient.InferenceServerClient, group: str
) -> None:
    for headers in ({}, {ADMIN_GRPC_HEADER: "not-" + triton.admin_key}):
        with pytest.raises(InferenceServerException) as refused:
            GRPC_ADMIN_CALLS[group](grpc_client, headers)
        assert f"This protocol is restricted, expecting header '{ADMIN_GRPC_HEADER}'" in str(
            refused.value
        )


def test_grpc_log_settings_open_to_the_key(
    triton: TritonServer, grpc_client: grpcclient.InferenceServerClient
) -> None:
    settings = grpc_client.get_log_settings(headers=triton.admin_grpc_headers, as_json=True)
    level = settings["settings"]["log_verbose_level"]["uint32_param"]
    updated = grpc_client.update_log_settings(
        {"log_verbose_level": level}, headers=triton.admin_grpc_headers, as_json=True
    )
    assert updated["settings"]["log_verbose_level"]["uint32_param"] == level


async def test_what_the_frontend_calls_stays_open(triton: TritonServer) -> None:
    # The frontend's calls (frontend/triton_client.py): the model-ready probe and streamed
    # inference, over grpc.aio without any admin header.
    client = grpcaio.InferenceServerClient(triton.grpc_url)
    try:
        assert await client.is_server_ready()
        assert await client.is_model_ready("ensemble")
        metadata = await client.get_model_metadata("ensemble", as_json=True)
        assert metadata["name"] == "ensemble"
        result = await generate(
            client, "The capital of France is", 2, temperature=0.0, return_num_output_tokens=True
        )
        assert result.error is None
        assert result.num_output_tokens > 0
    finally:
        await client.close()
