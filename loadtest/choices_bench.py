"""Several choices of one prompt on the CPU engine: one request with n vs n requests.

Loads the engine in this process with the `tensorrt_llm` config.pbtxt's settings and runs,
alternately `--repeat` times, one request for `--n` sequences and `--n` concurrent
requests of one sequence each, all of the same prompt, sampled (temperature 1, seeded);
prints the medians side by side:

    python -m loadtest.choices_bench [--n 4] [--prompt-tokens 512] [--max-tokens 32]

Every round has a prompt of its own, so the prefix cache serves neither side: the
difference is the prompt computed once for the n sequences instead of n times.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.triton_server import DEFAULT_MODEL_REPOSITORY
from llm_stack.engine.base import Engine, GenerationRequest, SamplingParams
from llm_stack.tokenizer import GgufTokenizer
from loadtest.engine_bench import engine_parameters, local_engine


@dataclass(frozen=True)
class Round:
    """n sequences of one prompt: until every one had its first token, and until all ended."""

    first_tokens_s: float
    seconds: float
    output_tokens: int
    prompt_tokens_computed: int

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds


@dataclass(frozen=True)
class ChoicesComparison:
    """Alternating rounds of one request with n and of n requests."""

    n: int
    together: list[Round]
    apart: list[Round]

    def median(self, side: list[Round], figure: str) -> float:
        return float(statistics.median(getattr(r, figure) for r in side))

    def ratio(self, figure: str) -> float:
        """Median over rounds of together / apart."""
        return float(
            statistics.median(
                getattr(t, figure) / getattr(a, figure)
                for t, a in zip(self.together, self.apart, strict=True)
            )
        )


def round_prompt(tokenizer: GgufTokenizer, round_number: int, tokens: int) -> tuple[int, ...]:
    """A prompt of about `tokens` tokens that no other round's starts with."""
    text = f"Round {round_number}. Notes on rivers, mountains and cities, numbered:"
    counter = 0
    while len(tokenizer.encode(text)) < tokens:
        counter += 1
        text += (
            f" {counter}. the {('rivers', 'mountains', 'cities')[counter % 3]} of place {counter};"
        )
    return tuple(tokenizer.encode(text))


async def one_round(
    engine: Engine, prompt: tuple[int, ...], n: int, max_tokens: int, together: bool, tag: str
) -> Round:
    """Run the n sequences one way; time each one's first token and the end."""
    computed = engine.stats().prompt_tokens_computed
    started = time.perf_counter()
    firsts: dict[tuple[str, int], float] = {}
    counts: dict[tuple[str, int], int] = {}

    async def consume(request: GenerationRequest) -> None:
        async for delta in engine.generate(request):
            key = (request.request_id, delta.index)
            if delta.token_ids and key not in firsts:
                firsts[key] = time.perf_counter() - started
            counts[key] = delta.num_output_tokens

    def request(request_id: str, seed: int, count: int) -> GenerationRequest:
        sampling = SamplingParams(
            max_tokens=max_tokens, min_tokens=max_tokens, temperature=1.0, seed=seed, n=count
        )
        return GenerationRequest(request_id=request_id, prompt_ids=prompt, sampling=sampling)

    if together:
        await consume(request(f"{tag}-n", 1, n))
    else:
        await asyncio.gather(*(consume(request(f"{tag}-{i}", 1 + i, 1)) for i in range(n)))
    return Round(
        first_tokens_s=max(firsts.values()),
        seconds=time.perf_counter() - started,
        output_tokens=sum(counts.values()),
        prompt_tokens_computed=engine.stats().prompt_tokens_computed - computed,
    )


async def compare(
    engine: Engine, tokenizer: GgufTokenizer, n: int, prompt_tokens: int, max_tokens: int,
    repeat: int,
) -> ChoicesComparison:  # fmt: skip
    """Alternate the two ways (the engine already started), after one warm-up of each."""
    sides: tuple[list[Round], list[Round]] = ([], [])
    for number in range(repeat + 1):
        for together, side in ((True, sides[0]), (False, sides[1])):
            prompt = round_prompt(tokenizer, 2 * number + together, prompt_tokens)
            result = await one_round(engine, prompt, n, max_tokens, together, f"r{number}")
            if number > 0:
                side.append(result)
    return ChoicesComparison(n, *sides)


def report(c: ChoicesComparison) -> str:
    """A plain-text table a person can read."""
    rows = [
        ("every first token, s", "first_tokens_s", ".2f"),
        ("all done, s", "seconds", ".2f"),
        ("output tokens/s", "tokens_per_s", ".1f"),
        ("prompt tokens computed", "prompt_tokens_computed", ".0f"),
    ]
    together, apart = f"1 request, n={c.n}", f"{c.n} requests"
    lines = [f"{'':>22} | {together:>16} | {apart:>12} | {'ratio':>6}", "-" * 66]
    for label, figure, fmt in rows:
        lines.append(
            f"{label:>22} | {c.median(c.together, figure):>16{fmt}} | "
            f"{c.median(c.apart, figure):>12{fmt}} | {c.ratio(figure):>5.2f}x"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> ChoicesComparison:
    async with local_engine(engine_parameters(args.model_repository)) as (engine, tokenizer):
        return await compare(
            engine, tokenizer, args.n, args.prompt_tokens, args.max_tokens, args.repeat
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run both ways and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each way")
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(
        f"{args.n} sampled sequences of one ~{args.prompt_tokens}-token prompt, "
        f"{args.max_tokens} tokens each; median of {args.repeat} alternating rounds\n"
    )
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
