"""Output tokens/s of the CPU engine: JSON-schema-constrained vs free generation.

Loads the engine in this process with the `tensorrt_llm` config.pbtxt's settings and, for
1 and 16 concurrent streams, runs free and guided sequences alternately `--repeat` times
(so a noisy neighbour hurts both alike); prints the medians side by side:

    python -m loadtest.guided_bench [--max-tokens 64] [--concurrency 1 16] [--repeat 3]

Both sides are greedy over the same prompts. Guided sequences follow a schema of one free
string, so they run to the budget like the free ones (or stop when the value closes:
tokens/s counts the tokens each produced, in the wall time of its round).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.triton_server import DEFAULT_MODEL_REPOSITORY
from llm_stack.engine.base import Engine, GenerationRequest, SamplingParams
from llm_stack.guided_decoding import Guide, GuideType, check_schema, schema_text
from llm_stack.tokenizer import GgufTokenizer
from loadtest.engine_bench import One, Run, engine_parameters, local_engine, measure, prompts

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string", "maxLength": 24}, "story": {"type": "string"}},
    "required": ["title", "story"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class GuidedComparison:
    """Alternating rounds of free and guided generation at one concurrency."""

    streams: int
    free: list[Run]
    guided: list[Run]

    @property
    def free_tokens_per_s(self) -> float:
        return statistics.median(r.tokens_per_s for r in self.free)

    @property
    def guided_tokens_per_s(self) -> float:
        return statistics.median(r.tokens_per_s for r in self.guided)

    @property
    def ratio(self) -> float:
        """Median of each round's guided/free ratio."""
        return statistics.median(
            g.tokens_per_s / f.tokens_per_s for f, g in zip(self.free, self.guided, strict=True)
        )


def engine_streams(
    engine: Engine, tokenizer: GgufTokenizer, texts: Sequence[str], max_tokens: int,
    guide: Guide | None,
) -> One:  # fmt: skip
    """One greedy sequence through the engine, guided by `guide` (None: free)."""
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    prompt_ids = [tuple(tokenizer.encode(text)) for text in texts]
    calls = 0

    async def one(i: int) -> int:
        nonlocal calls
        calls += 1
        kind = "guided" if guide else "free"
        request = GenerationRequest(
            request_id=f"{kind}-{calls}-{i}", prompt_ids=prompt_ids[i], sampling=sampling,
            guide=guide,
        )  # fmt: skip
        count = 0
        async for delta in engine.generate(request):
            count = delta.num_output_tokens
        return count

    return one


async def compare(
    engine: Engine,
    tokenizer: GgufTokenizer,
    concurrency: Sequence[int],
    max_tokens: int,
    repeat: int,
) -> list[GuidedComparison]:
    """Alternate free and guided rounds at each concurrency (the engine already started)."""
    check_schema(SCHEMA)
    guide = Guide(GuideType.JSON_SCHEMA, schema_text(SCHEMA))
    texts = prompts(max(concurrency))
    free = engine_streams(engine, tokenizer, texts, max_tokens, None)
    guided = engine_streams(engine, tokenizer, texts, max_tokens, guide)
    for side in (free, guided):
        await measure(1, side)  # warm-up, and the grammar converted once
    results = []
    for n in concurrency:
        runs: tuple[list[Run], list[Run]] = ([], [])
        for _ in range(repeat):
            runs[0].append(await measure(n, free))
            runs[1].append(await measure(n, guided))
        results.append(GuidedComparison(n, *runs))
    return results


def report(results: Sequence[GuidedComparison]) -> str:
    """A plain-text table a person can read."""
    lines = [
        f"{'streams':>7} | {'free tok/s':>10} | {'guided tok/s':>12} | {'guided/free':>11}",
        "-" * 50,
    ]
    for c in results:
        lines.append(
            f"{c.streams:>7} | {c.free_tokens_per_s:>10.1f} | {c.guided_tokens_per_s:>12.1f} | "
            f"{c.ratio:>10.2f}x"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[GuidedComparison]:
    async with local_engine(engine_parameters(args.model_repository)) as (engine, tokenizer):
        return await compare(engine, tokenizer, args.concurrency, args.max_tokens, args.repeat)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sides and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per concurrency")
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    print(
        f"output tokens/s, up to {args.max_tokens} tokens per stream, greedy; "
        f"median of {args.repeat} alternating rounds\n"
    )
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
