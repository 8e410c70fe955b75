"""Does one client's worst input slow everyone else? A normal request's latency, idle and
beside noisy clients, in one run.

A probe client sends one short request at a time (a 4-token completion at temperature 0)
to the frontend of a local stack (CPU engine, default model). Its latency is measured on
the idle stack, then while `--noisy` clients send, back to back, the most expensive
inputs that still pass the frontend's own limits:

- `schema`: a chat request whose `response_format` JSON schema is the largest the
  frontend's validation lets through (an `enum` of distinct strings, as large as the
  schema rules and the body limit allow): grammar conversion and compilation;
- `refused-prompt`: a chat as long as the frontend allows, of text that tokenizes to far
  more tokens than the engine's `max_input_len`, so preprocessing refuses it
  (`prompt_too_long`) after the work of reading it;
- `special-text`: the same length of `<eos>` strings, text that looks like control tokens.

Each scenario's probe p50 is printed next to the idle p50 (target: within 2x), with the
noisy clients' answers by status, so a refusal that came too late shows as well.

    python -m loadtest.isolation_bench [--probes 30] [--noisy 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from frontend.errors import FrontendError
from frontend.settings import FrontendSettings
from frontend.validation import OutputFormat, guide_for
from loadtest.stack import LocalStack

PROBE_PROMPT = "The capital of France is"
MODEL = "gemma-3-270m"
Body = dict[str, Any]


@dataclass
class Scenario:
    """Noisy clients' request body (None: an idle stack) and what came of their requests."""

    name: str
    body: Body | None
    probe_latencies_s: list[float] = field(default_factory=list)
    noisy_statuses: Counter[int] = field(default_factory=Counter)
    noisy_latencies_s: list[float] = field(default_factory=list)

    def probe_ms(self, q: float) -> float:
        ordered = sorted(self.probe_latencies_s)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


def _schema_body(values: int) -> Body:
    schema = {
        "type": "object",
        "properties": {"v": {"enum": [f"v{i}" for i in range(values)]}},
        "required": ["v"],
    }
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Pick one."}],
        "max_tokens": 8,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "pick", "schema": schema},
        },
    }


def _passes_frontend(body: Body, settings: FrontendSettings) -> bool:
    """Whether the body fits the frontend's body limit and its schema rules."""
    if len(json.dumps(body).encode()) > settings.max_body_bytes:
        return False
    json_schema = body["response_format"]["json_schema"]
    try:
        guide_for(OutputFormat("json_schema", True, json_schema["schema"]))
    except FrontendError:
        return False
    return True


def largest_schema_body(settings: FrontendSettings) -> Body:
    """The chat body with the largest `enum` the frontend's validation accepts."""
    low, high = 1, 1
    while _passes_frontend(_schema_body(high * 2), settings):
        high *= 2
        if high > 1 << 22:
            break
    high *= 2
    while high - low > 1:  # low passes, high does not
        middle = (low + high) // 2
        low, high = (
            (middle, high) if _passes_frontend(_schema_body(middle), settings) else (low, middle)
        )
    return _schema_body(low)


def long_chat_body(settings: FrontendSettings, piece: str) -> Body:
    """A chat as long as the frontend allows, `piece` repeated."""
    content = (piece * (settings.max_prompt_chars // len(piece) + 1))[: settings.max_prompt_chars]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 4}


async def _probe(client: httpx.AsyncClient, scenario: Scenario, count: int) -> None:
    body = {"model": MODEL, "prompt": PROBE_PROMPT, "max_tokens": 4, "temperature": 0}
    for _ in range(count):
        began = time.perf_counter()
        response = await client.post("/v1/completions", json=body)
        elapsed = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError(f"the probe was answered {response.status_code}: {response.text}")
        scenario.probe_latencies_s.append(elapsed)


async def _noisy(client: httpx.AsyncClient, scenario: Scenario, stop: asyncio.Event) -> None:
    assert scenario.body is not None
    while not stop.is_set():
        began = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=scenario.body)
        scenario.noisy_latencies_s.append(time.perf_counter() - began)
        scenario.noisy_statuses[response.status_code] += 1


async def run_scenario(url: str, scenario: Scenario, probes: int, noisy: int) -> None:
    """The probe's `probes` requests, beside `noisy` clients when the scenario has a body."""
    limits = httpx.Limits(max_connections=noisy + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600.0, limits=limits) as client:
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_noisy(client, scenario, stop))
            for _ in range(noisy if scenario.body is not None else 0)
        ]
        try:
            if tasks:
                await asyncio.sleep(1.0)  # the noisy clients' first requests are in
            await _probe(client, scenario, probes)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


def report(scenarios: Sequence[Scenario]) -> str:
    idle = scenarios[0]
    lines = [
        f"{'scenario':<15} {'probe p50 ms':>12} {'p90 ms':>8} {'vs idle':>8}  "
        f"{'noisy answers':<24} {'noisy p50 ms':>12}"
    ]
    for s in scenarios:
        answers = ", ".join(f"{code}: {n}" for code, n in sorted(s.noisy_statuses.items()))
        noisy_p50 = (
            f"{statistics.median(s.noisy_latencies_s) * 1000:>12.0f}"
            if s.noisy_latencies_s
            else f"{'-':>12}"
        )
        lines.append(
            f"{s.name:<15} {s.probe_ms(50):>12.0f} {s.probe_ms(90):>8.0f} "
            f"{s.probe_ms(50) / idle.probe_ms(50):>7.2f}x  {answers or '-':<24} {noisy_p50}"
        )
    return "\n".join(lines)


def scenarios_for(settings: FrontendSettings) -> list[Scenario]:
    """The idle baseline and each noisy scenario, bodies sized by the frontend's limits."""
    makers: list[tuple[str, Callable[[], Body]]] = [
        ("schema", lambda: largest_schema_body(settings)),
        ("refused-prompt", lambda: long_chat_body(settings, "7 ")),
        ("special-text", lambda: long_chat_body(settings, "<eos>")),
    ]
    return [Scenario("idle", None), *(Scenario(name, make()) for name, make in makers)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--probes", type=int, default=30, help="probe requests per scenario")
    parser.add_argument("--noisy", type=int, default=4, help="noisy clients per scenario")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = FrontendSettings()
    scenarios = scenarios_for(settings)
    for s in scenarios[1:]:
        assert s.body is not None
        print(f"{s.name}: {len(json.dumps(s.body).encode())} bytes a request", flush=True)
    with tempfile.TemporaryDirectory(prefix="isolation-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        # The frontend's own bounds off, so that everything noisy reaches Triton.
        frontend_env = {"LLM_FRONTEND_MAX_CONCURRENT_REQUESTS": str(args.noisy * 4 + 8)}
        with LocalStack(work, frontend_env=frontend_env) as stack:
            stack.warm_up()
            for scenario in scenarios:
                asyncio.run(run_scenario(stack.url, scenario, args.probes, args.noisy))
                print(f"{scenario.name}: done", flush=True)
    print(report(scenarios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
