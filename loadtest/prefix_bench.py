"""Prefix cache on vs off through the whole stack, in one run.

Two stacks (Triton with the CPU engine, and the frontend) stay up side by side: one with
`enable_prefix_cache` on, one with it off. At each concurrency they take turns, round
after round, so both see the same machine. Each stream sends requests one after another
to POST /generate (streamed, greedy): a shared instruction block of several hundred
tokens and a distinct last line (`shared_prefix`), or a different block for every request
(`distinct`, the cost of the cache when nothing is shared). Printed per level: output
tokens/s, TTFT p50/p95, ITL p50 for each side with the on/off ratio, and the share of
prompt tokens the engine took from its cache (Triton's metrics).

    python -m loadtest.prefix_bench [--concurrency 1 4 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llm_stack.ensemble_client import metric_value
from loadtest.stack import LocalStack
from loadtest.streams import GenerateStream

WORKLOADS = ("shared_prefix", "distinct")
PROMPT_TOKENS_METRIC = "llm_engine_prompt_tokens_total"
_TOPICS = (
    "billing", "shipping", "returns", "accounts", "passwords", "refunds", "warranties",
    "orders", "payments", "invoices", "coupons", "gift cards", "subscriptions", "deliveries",
)  # fmt: skip
_RULES = (
    "Answer questions about {t} in plain words and keep each answer under three sentences.",
    "When a customer asks about {t}, first repeat the question, then give the answer.",
    "Never promise a date for {t} that the order system has not confirmed in writing.",
    "If a question about {t} needs an account number, ask for it once and only once.",
    "Say which page of the help centre covers {t} when the answer is longer than a line.",
)


def instruction_block(variant: int, rules: int = 20) -> str:
    """About 400 tokens of numbered support rules; `variant` changes it from the start."""
    lines = [f"Support desk handbook, edition {variant}. Follow every rule below."]
    for i in range(rules):
        topic = _TOPICS[(i + variant) % len(_TOPICS)]
        lines.append(f"{i + 1}. " + _RULES[(i + variant) % len(_RULES)].format(t=topic))
    return "\n".join(lines) + "\n\n"


def prompt(workload: str, index: int) -> str:
    """The prompt of request `index`: shared block or its own, then its own question."""
    block = instruction_block(0 if workload == "shared_prefix" else 1 + index)
    return f"{block}Question {index}: what should I tell a customer about order {index}?\n"


@dataclass
class Round:
    """One round of one side: every request's figures."""

    seconds: float
    output_tokens: int
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds


@dataclass
class Side:
    name: str
    stack: LocalStack
    rounds: list[Round] = field(default_factory=list)
    cached_before: float = 0.0
    computed_before: float = 0.0
    cached: float = 0.0
    computed: float = 0.0

    def prompt_tokens(self) -> tuple[float, float]:
        url = self.stack.triton_metrics_url
        return (
            metric_value(url, PROMPT_TOKENS_METRIC, source="cached"),
            metric_value(url, PROMPT_TOKENS_METRIC, source="computed"),
        )

    def median(self, figure: str) -> float:
        """Rounds' median of output tokens/s, or requests' median of ttft_s / itl_s."""
        if figure == "tokens_per_s":
            return statistics.median(r.tokens_per_s for r in self.rounds)
        return statistics.median(self._all(figure))

    def percentile(self, figure: str, q: float) -> float:
        values = sorted(self._all(figure))
        return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]

    def _all(self, figure: str) -> list[float]:
        return [v for r in self.rounds for v in getattr(r, figure)]


async def one_request(
    client: httpx.AsyncClient, text: str, max_tokens: int
) -> tuple[float, float | None, int]:
    """(TTFT, ITL or None, output tokens) of one streamed /generate request."""
    body = {"prompt": text, "max_tokens": max_tokens, "temperature": 0.0, "stream": True}
    stream = GenerateStream()
    sent = time.perf_counter()
    async with client.stream("POST", "/generate", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"/generate answered {response.status_code}")
        async for line in response.aiter_lines():
            stream.feed(line, time.perf_counter())
    done = stream.result()
    if done.first_token_at is None or done.last_token_at is None:
        raise RuntimeError("a stream without text")
    itl = None
    if done.completion_tokens > 1:
        itl = (done.last_token_at - done.first_token_at) / (done.completion_tokens - 1)
    return done.first_token_at - sent, itl, done.completion_tokens


async def run_round(
    url: str, workload: str, streams: int, per_stream: int, max_tokens: int, offset: int
) -> Round:
    """`streams` closed-loop streams, `per_stream` requests each."""
    result = Round(seconds=0.0, output_tokens=0)
    limits = httpx.Limits(max_connections=streams + 1)
    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as client:

        async def stream(worker: int) -> None:
            for k in range(per_stream):
                index = offset + worker * per_stream + k
                ttft, itl, tokens = await one_request(client, prompt(workload, index), max_tokens)
                result.ttft_s.append(ttft)
                if itl is not None:
                    result.itl_s.append(itl)
                result.output_tokens += tokens

        started = time.perf_counter()
        await asyncio.gather(*(stream(w) for w in range(streams)))
        result.seconds = time.perf_counter() - started
    return result


async def compare(
    sides: Sequence[Side],
    workload: str,
    streams: int,
    rounds: int,
    per_stream: int,
    max_tokens: int,
) -> None:
    """Alternate the sides round by round; new questions (and blocks) every round."""
    for side in sides:
        side.rounds.clear()
        side.cached_before, side.computed_before = side.prompt_tokens()
    offset = 1000 * streams
    for r in range(rounds):
        order = sides if r % 2 == 0 else list(reversed(sides))
        for side in order:
            side.rounds.append(
                await run_round(
                    side.stack.url,
                    workload,
                    streams,
                    per_stream,
                    max_tokens,
                    offset + r * streams * per_stream,
                )
            )
    for side in sides:
        cached, computed = side.prompt_tokens()
        side.cached = cached - side.cached_before
        side.computed = computed - side.computed_before


def report_lines(workload: str, streams: int, on: Side, off: Side) -> list[str]:
    """One table row per level: on / off and their ratio for each figure."""

    def pair(figure: str, unit: str, scale: float, value: Any) -> str:
        a, b = value(on, figure) * scale, value(off, figure) * scale
        return f"{a:.0f} / {b:.0f} {unit} ({a / b:.2f}x)"

    def p50(side: Side, figure: str) -> float:
        return side.median(figure)

    def p95(side: Side, figure: str) -> float:
        return side.percentile(figure, 95)

    total = on.cached + on.computed
    hit = on.cached / total if total else 0.0
    return [
        f"| {workload} | {streams} | {pair('tokens_per_s', 'tok/s', 1, p50)} | "
        f"{pair('ttft_s', 'ms', 1000, p50)} | {pair('ttft_s', 'ms', 1000, p95)} | "
        f"{pair('itl_s', 'ms', 1000, p50)} | {hit:.0%} |"
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Start both stacks, run every workload and level, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side and level")
    parser.add_argument("--per-stream", type=int, default=3, help="requests per stream a round")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work:
        stacks = {
            name: LocalStack(Path(work) / name, triton_env={"LLM_STACK_ENABLE_PREFIX_CACHE": value})
            for name, value in (("on", "true"), ("off", "false"))
        }
        with stacks["on"], stacks["off"]:
            sides = [Side(name, stack) for name, stack in stacks.items()]
            for side in sides:
                side.stack.warm_up()
            lines = [
                "| workload | streams | output tok/s on / off | TTFT p50 on / off | "
                "TTFT p95 on / off | ITL p50 on / off | prompt tokens from cache (on) |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            figures: dict[str, Any] = {}
            for workload in args.workloads:
                for streams in args.concurrency:
                    asyncio.run(
                        compare(
                            sides, workload, streams, args.rounds, args.per_stream, args.max_tokens
                        )
                    )
                    on, off = sides
                    lines += report_lines(workload, streams, on, off)
                    print(lines[-1], flush=True)
                    figures[f"{workload}/{streams}"] = {
                        s.name: {
                            "tokens_per_s": [r.tokens_per_s for r in s.rounds],
                            "ttft_p50_s": s.median("ttft_s"),
                            "ttft_p95_s": s.percentile("ttft_s", 95),
                            "itl_p50_s": s.median("itl_s"),
                            "cached_prompt_tokens": s.cached,
                            "computed_prompt_tokens": s.computed,
                        }
                        for s in sides
                    }
    print(
        f"\n/generate streamed, greedy, {args.max_tokens} tokens, {args.per_stream} requests "
        f"per stream a round, medians of {args.rounds} alternating rounds\n"
    )
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
