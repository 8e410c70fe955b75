"""Aggregate output tokens/s: the CPU engine alone vs through Triton's ensemble.

Loads the engine in this process and starts a real Triton serving model_repository/
(engine settings taken from the `tensorrt_llm` config.pbtxt), then, for 1, 4 and 16
concurrent streams, runs the engine alone and the ensemble alternately `--repeat`
times, so a noisy neighbour hurts both sides alike, and prints the medians side by side:

    python -m loadtest.engine_bench [--max-tokens 64] [--concurrency 1 4 16] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as grpcclient

from launcher.triton_server import (
    DEFAULT_MODEL_REPOSITORY,
    TritonPorts,
    TritonServer,
    wheel_install,
)
from llm_stack.engine.base import Engine, GenerationRequest, SamplingParams
from llm_stack.engine.factory import create_engine
from llm_stack.ensemble_client import generate
from llm_stack.ensemble_contract import NUM_OUTPUT_TOKENS, TEXT_OUTPUT
from llm_stack.model_config import ModelParameters
from llm_stack.model_repository_config import model_parameters
from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import GgufTokenizer


def engine_parameters(repository: Path) -> ModelParameters:
    """The `tensorrt_llm` model's parameters (with LLM_STACK_* overrides), as Triton sees them."""
    return model_parameters(repository / "tensorrt_llm" / "config.pbtxt")


def prompts(count: int) -> list[str]:
    """Distinct prompts of similar length, one per stream."""
    topics = ["rivers", "mountains", "cities", "forests", "oceans", "deserts", "islands", "moons"]
    return [
        f"Story {i}: a long tale about {topics[i % len(topics)]}. Once upon a time"
        for i in range(count)
    ]


@dataclass(frozen=True)
class Run:
    """One measurement: `streams` concurrent sequences of `tokens` output tokens in total."""

    streams: int
    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass(frozen=True)
class Comparison:
    """Alternating runs of the engine alone and of the ensemble at one concurrency."""

    streams: int
    engine: list[Run]
    triton: list[Run]

    @property
    def engine_tokens_per_s(self) -> float:
        return statistics.median(r.tokens_per_s for r in self.engine)

    @property
    def triton_tokens_per_s(self) -> float:
        return statistics.median(r.tokens_per_s for r in self.triton)

    @property
    def ratio(self) -> float:
        """Median of each round's Triton/engine ratio (runs of one round are back to back)."""
        return statistics.median(
            t.tokens_per_s / e.tokens_per_s for e, t in zip(self.engine, self.triton, strict=True)
        )


One = Callable[[int], Awaitable[int]]


async def measure(streams: int, one: One) -> Run:
    """Run `streams` sequences at once; `one(i)` returns its output token count."""
    start = time.perf_counter()
    counts = await asyncio.gather(*[one(i) for i in range(streams)])
    return Run(streams, sum(counts), time.perf_counter() - start)


def engine_stream(
    engine: Engine, tokenizer: GgufTokenizer, texts: Sequence[str], max_tokens: int
) -> One:
    """One sequence through the engine in this process, no Triton."""
    sampling = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens, temperature=0.0)
    prompt_ids = [tuple(tokenizer.encode(text)) for text in texts]
    calls = 0

    async def one(i: int) -> int:
        nonlocal calls
        calls += 1
        request = GenerationRequest(
            request_id=f"bench-{calls}-{i}", prompt_ids=prompt_ids[i], sampling=sampling
        )
        count = 0
        async for delta in engine.generate(request):
            count = delta.num_output_tokens
        return count

    return one


# What a streaming client reads: the text, and the token count for the total.
STREAM_OUTPUTS = (TEXT_OUTPUT, NUM_OUTPUT_TOKENS)


def triton_stream(
    client: grpcclient.InferenceServerClient, texts: Sequence[str], max_tokens: int
) -> One:
    """The same sequence through the ensemble over gRPC, streaming."""

    async def one(i: int) -> int:
        result = await generate(
            client,
            texts[i],
            max_tokens,
            temperature=0.0,
            min_tokens=max_tokens,
            stream=True,
            outputs=STREAM_OUTPUTS,
        )
        if result.error is not None:
            raise RuntimeError(f"Triton answered an error: {result.error}")
        return result.num_output_tokens

    return one


@contextlib.asynccontextmanager
async def local_engine(params: ModelParameters) -> AsyncIterator[tuple[Engine, GgufTokenizer]]:
    """The `tensorrt_llm` model's engine started in this process, and its tokenizer."""
    engine = create_engine(params)
    tokenizer = GgufTokenizer(resolve_model_path(params.get_str("model_path")))
    await engine.start()
    try:
        yield engine, tokenizer
    finally:
        await engine.shutdown()


async def compare(
    params: ModelParameters,
    server: TritonServer,
    concurrency: Sequence[int],
    max_tokens: int,
    repeat: int,
) -> list[Comparison]:
    """Alternate engine-alone and ensemble runs at each concurrency."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    texts = prompts(max(concurrency))
    results = []
    try:
        async with local_engine(params) as (engine, tokenizer):
            sides = (
                engine_stream(engine, tokenizer, texts, max_tokens),
                triton_stream(client, texts, max_tokens),
            )
            for side in sides:
                await measure(1, side)  # warm-up
            for n in concurrency:
                runs: tuple[list[Run], list[Run]] = ([], [])
                for _ in range(repeat):
                    for side, side_runs in zip(sides, runs, strict=True):
                        side_runs.append(await measure(n, side))
                results.append(Comparison(n, *runs))
    finally:
        await client.close()
    return results


def report(results: Sequence[Comparison]) -> str:
    """A plain-text table a person can read."""
    lines = [
        f"{'streams':>7} | {'engine tok/s':>12} | {'Triton tok/s':>12} | {'Triton/engine':>13}",
        "-" * 54,
    ]
    for c in results:
        lines.append(
            f"{c.streams:>7} | {c.engine_tokens_per_s:>12.1f} | {c.triton_tokens_per_s:>12.1f} | "
            f"{c.ratio:>12.2f}x"
        )
    first, last = results[0], results[-1]
    lines.append("")
    lines.append(
        f"scaling {last.streams} vs {first.streams} streams: engine "
        f"{last.engine_tokens_per_s / first.engine_tokens_per_s:.2f}x, Triton "
        f"{last.triton_tokens_per_s / first.triton_tokens_per_s:.2f}x"
    )
    ratios = ", ".join(
        f"{t.tokens_per_s / e.tokens_per_s:.2f}"
        for e, t in zip(last.engine, last.triton, strict=True)
    )
    lines.append(f"Triton/engine per round at {last.streams} streams: {ratios}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sides and print the table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5, help="rounds per concurrency")
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    params = engine_parameters(args.model_repository)
    with tempfile.TemporaryDirectory() as work:
        server = TritonServer(
            install=wheel_install(Path(work)),
            model_repository=args.model_repository.resolve(),
            ports=TritonPorts.free(),
            log_file=Path(work) / "triton.log",
        )
        with server:
            server.start()
            server.wait_ready("ensemble", timeout=300)
            results = asyncio.run(
                compare(params, server, args.concurrency, args.max_tokens, args.repeat)
            )
    print(
        f"output tokens/s, {args.max_tokens} tokens per stream, greedy; "
        f"median of {args.repeat} alternating rounds\n"
    )
    print(report(results))
    if args.json:
        figures: dict[str, Any] = {
            "max_tokens": args.max_tokens,
            "repeat": args.repeat,
            "engine": {c.streams: [r.tokens_per_s for r in c.engine] for c in results},
            "triton": {c.streams: [r.tokens_per_s for r in c.triton] for c in results},
            "ratio": {c.streams: c.ratio for c in results},
        }
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
