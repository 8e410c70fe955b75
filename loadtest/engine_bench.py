"""Aggregate output tokens/s: the CPU engine alone vs through Triton's ensemble.

Runs 1, 4 and 16 concurrent streams against the engine in-process, then against a
real Triton serving model_repository/, with the engine settings taken from the
`tensorrt_llm` config.pbtxt, and prints both side by side:

    python -m loadtest.engine_bench [--max-tokens 64] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as grpcclient

from llm_stack.engine.base import GenerationRequest, SamplingParams
from llm_stack.engine.llama_cpp_engine import LlamaCppConfig, LlamaCppEngine
from llm_stack.ensemble_client import generate
from llm_stack.model_config import ModelParameters
from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import GgufTokenizer
from llm_stack.triton_server import (
    DEFAULT_MODEL_REPOSITORY,
    TritonPorts,
    TritonServer,
    wheel_install,
)

_PARAM = re.compile(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"')


def engine_parameters(repository: Path) -> ModelParameters:
    """The `tensorrt_llm` model's parameters (with LLM_STACK_* overrides), as Triton sees them."""
    text = (repository / "tensorrt_llm" / "config.pbtxt").read_text()
    params = {k: {"string_value": v} for k, v in _PARAM.findall(text)}
    return ModelParameters({"name": "tensorrt_llm", "parameters": params})


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


async def measure(streams: int, one: Callable[[int], Awaitable[int]]) -> Run:
    """Run `streams` sequences at once; `one(i)` returns its output token count."""
    start = time.perf_counter()
    counts = await asyncio.gather(*[one(i) for i in range(streams)])
    return Run(streams, sum(counts), time.perf_counter() - start)


async def bench_engine(
    params: ModelParameters, concurrency: Sequence[int], max_tokens: int
) -> list[Run]:
    """The engine in this process, no Triton."""
    engine = LlamaCppEngine(
        LlamaCppConfig(
            model_path=resolve_model_path(params.get_str("model_path")),
            max_batch_size=params.get_int("max_batch_size"),
            max_queue=params.get_int("max_queue_size"),
            kv_cache_tokens=params.get_int("kv_cache_tokens"),
            max_seq_len=params.get_int("max_seq_len"),
            max_step_tokens=params.get_int("max_step_tokens"),
            n_threads=params.get_int("n_threads"),
        )
    )
    tokenizer = GgufTokenizer(resolve_model_path(params.get_str("model_path")))
    await engine.start()
    texts = prompts(max(concurrency))
    sampling = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens, temperature=0.0)
    runs = []
    try:
        for n in concurrency:

            async def one(i: int, n: int = n) -> int:
                request = GenerationRequest(
                    request_id=f"bench-{n}-{i}",
                    prompt_ids=tuple(tokenizer.encode(texts[i])),
                    sampling=sampling,
                )
                count = 0
                async for delta in engine.generate(request):
                    count = delta.num_output_tokens
                return count

            await measure(1, one)  # warm-up
            runs.append(await measure(n, one))
    finally:
        await engine.shutdown()
    return runs


async def bench_triton(
    server: TritonServer, concurrency: Sequence[int], max_tokens: int
) -> list[Run]:
    """The same load through the ensemble over gRPC, streaming."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    texts = prompts(max(concurrency))
    runs = []
    try:
        for n in concurrency:

            async def one(i: int) -> int:
                result = await generate(
                    client,
                    texts[i],
                    max_tokens,
                    temperature=0.0,
                    min_tokens=max_tokens,
                    stream=True,
                )
                if result.error is not None:
                    raise RuntimeError(f"Triton answered an error: {result.error}")
                return result.num_output_tokens

            await measure(1, one)
            runs.append(await measure(n, one))
    finally:
        await client.close()
    return runs


def report(engine: list[Run], triton: list[Run]) -> str:
    """A plain-text table a person can read."""
    lines = [
        f"{'streams':>7} | {'engine tok/s':>12} | {'Triton tok/s':>12} | {'Triton/engine':>13}",
        "-" * 54,
    ]
    for e, t in zip(engine, triton, strict=True):
        lines.append(
            f"{e.streams:>7} | {e.tokens_per_s:>12.1f} | {t.tokens_per_s:>12.1f} | "
            f"{t.tokens_per_s / e.tokens_per_s:>12.2f}x"
        )
    lines.append("")
    lines.append(
        f"scaling {engine[-1].streams} vs {engine[0].streams} streams: engine "
        f"{engine[-1].tokens_per_s / engine[0].tokens_per_s:.2f}x, Triton "
        f"{triton[-1].tokens_per_s / triton[0].tokens_per_s:.2f}x"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks and print the table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    params = engine_parameters(args.model_repository)
    engine_runs = asyncio.run(bench_engine(params, args.concurrency, args.max_tokens))
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
            triton_runs = asyncio.run(bench_triton(server, args.concurrency, args.max_tokens))
    print(f"output tokens/s, {args.max_tokens} tokens per stream, greedy\n")
    print(report(engine_runs, triton_runs))
    if args.json:
        figures: dict[str, Any] = {
            "max_tokens": args.max_tokens,
            "engine": {r.streams: r.tokens_per_s for r in engine_runs},
            "triton": {r.streams: r.tokens_per_s for r in triton_runs},
        }
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
