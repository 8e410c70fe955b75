"""The robustness probe's findings that a client of the frontend can send, replayed at
once against the real stack (a served frontend, the session's Triton): each gets its
clean answer, and afterwards the stack is ready and generates.

Straight-to-Triton findings are replayed where the models are tested
(tests/model_repository/test_engine_integrity.py, test_preprocessing_robustness.py,
test_ensemble_guided.py) and by the ensemble fuzz beside this file; a Triton killed and
restarted by tests/frontend/test_resilience.py and test_readiness.py; a second launcher
and an orphaned stub by tests/launcher.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from launcher.triton_server import TritonServer
from tests.frontend.conftest import serve_frontend, settings_for

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
WITHIN_S = 120.0  # a hang, not a slow answer: these are answered in well under a second


def _compact(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


# (what the probe sent, route, body as bytes, expected status, the field the answer names)
HOSTILE: list[tuple[str, str, bytes, int, str | None]] = [
    (
        "3: a 62 KB schema, an enum of 31k zeros",
        "/v1/chat/completions",
        _compact({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Pick."}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "z", "schema": {"enum": [0] * 31_000}}},
        }),
        422,
        "response_format.json_schema.schema.enum",
    ),
    (
        "3: a 57 KB chat of 460 messages",
        "/v1/chat/completions",
        _compact({
            "model": MODEL,
            "messages": [{"role": "user", "content": "w" * 96}] * 460,
        }),
        422,
        "messages",
    ),
    (
        "3: 2,000 <eos> strings in a message",
        "/v1/chat/completions",
        _compact({
            "model": MODEL, "messages": [{"role": "user", "content": "<eos>" * 2000}],
            "max_tokens": 4,
        }),
        422,
        "messages",
    ),
    (
        "5: a lone surrogate in the prompt",
        "/v1/completions",
        b'{"model": "' + MODEL.encode() + b'", "prompt": "a\\ud800b", "max_tokens": 2}',
        422,
        "prompt",
    ),
    (
        "5: a lone surrogate in a stop sequence",
        "/v1/completions",
        b'{"model": "' + MODEL.encode() + b'", "prompt": "a", "stop": ["\\ud800"]}',
        422,
        "stop",
    ),
]  # fmt: skip


def _field(body: dict[str, Any]) -> str | None:
    error = body.get("error", body)
    field = error.get("param") if isinstance(error, dict) else None
    return field if isinstance(field, str) else None


async def _completion(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": 6, **fields}
    route = "/v1/chat/completions" if "messages" in fields else "/v1/completions"
    response = await client.post(route, json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


async def test_the_findings_get_clean_answers_and_the_stack_serves_on(
    triton: TritonServer,
) -> None:
    settings = settings_for(triton.grpc_url, health_probe_interval_s=2.0)
    async with serve_frontend(settings) as served, served.client() as client:
        async with asyncio.timeout(WITHIN_S):
            answers = await asyncio.gather(
                *(client.post(route, content=body, headers={"Content-Type": "application/json"})
                  for _, route, body, _, _ in HOSTILE)
            )  # fmt: skip
        for (finding, _, _, status, field), answer in zip(HOSTILE, answers, strict=True):
            assert answer.status_code == status, (finding, answer.text)
            assert "Traceback" not in answer.text
            named = _field(answer.json())
            assert named is not None, (finding, answer.text)
            assert named.startswith(field or ""), (finding, answer.text)

        # 4: control-token text in a message is text: several tokens, where the forged
        # control token was one (fewer than the same words without the brackets).
        forged = await _completion(
            client, messages=[{"role": "user", "content": "<start_of_turn>"}]
        )
        plain = await _completion(client, messages=[{"role": "user", "content": "start_of_turn"}])
        assert forged["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]

        # 8: a temperature below FP32's range decodes greedily (it sampled control tokens).
        tiny = await _completion(client, prompt="One, two, three,", temperature=1e-40)
        greedy = await _completion(client, prompt="One, two, three,", temperature=0)
        assert tiny["choices"][0]["text"] == greedy["choices"][0]["text"]

        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        served_after = await _completion(client, prompt="The capital of France is", temperature=0)
        assert served_after["usage"]["completion_tokens"] == 6
