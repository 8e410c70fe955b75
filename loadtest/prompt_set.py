"""The prompts a load test sends and the distribution its max_tokens are drawn from."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_PROMPTS = Path(__file__).resolve().parent / "prompts.json"


@dataclass(frozen=True)
class PromptSet:
    """A fixed list of prompts, picked uniformly at random."""

    prompts: tuple[str, ...]

    @classmethod
    def load(cls, path: Path = DEFAULT_PROMPTS) -> PromptSet:
        """Read a JSON file holding `{"prompts": [str, ...]}`."""
        data = json.loads(path.read_text(encoding="utf-8"))
        prompts = data.get("prompts") if isinstance(data, dict) else None
        if not isinstance(prompts, list) or not prompts:
            raise ValueError(f"{path}: expected an object with a non-empty 'prompts' list")
        if not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"{path}: every prompt must be a non-empty string")
        return cls(tuple(prompts))

    def pick(self, rng: random.Random) -> str:
        return rng.choice(self.prompts)


DistributionKind = Literal["fixed", "uniform", "choice"]


@dataclass(frozen=True)
class TokenDistribution:
    """max_tokens per request: `fixed:N`, `uniform:LO:HI` (inclusive) or `choice:A,B,...`."""

    kind: DistributionKind
    values: tuple[int, ...]

    @classmethod
    def parse(cls, spec: str) -> TokenDistribution:
        """Parse a spec such as `uniform:32:128`; raises ValueError naming the problem."""
        kind, _, rest = spec.strip().partition(":")
        try:
            if kind == "fixed":
                dist = cls("fixed", (int(rest),))
            elif kind == "uniform":
                low, high = (int(v) for v in rest.split(":"))
                dist = cls("uniform", (low, high))
            elif kind == "choice":
                dist = cls("choice", tuple(int(v) for v in rest.split(",") if v.strip()))
            else:
                raise ValueError("expected fixed:N, uniform:LO:HI or choice:A,B,...")
        except ValueError as exc:
            raise ValueError(f"max_tokens spec {spec!r}: {exc}") from None
        if not dist.values or min(dist.values) < 1:
            raise ValueError(f"max_tokens spec {spec!r}: values must be positive integers")
        if dist.kind == "uniform" and dist.values[0] > dist.values[1]:
            raise ValueError(f"max_tokens spec {spec!r}: the low bound exceeds the high one")
        return dist

    def sample(self, rng: random.Random) -> int:
        if self.kind == "uniform":
            return rng.randint(self.values[0], self.values[1])
        return rng.choice(self.values)

    @property
    def mean(self) -> float:
        if self.kind == "uniform":
            return (self.values[0] + self.values[1]) / 2
        return sum(self.values) / len(self.values)

    def __str__(self) -> str:
        if self.kind == "uniform":
            return f"uniform:{self.values[0]}:{self.values[1]}"
        if self.kind == "fixed":
            return f"fixed:{self.values[0]}"
        return "choice:" + ",".join(str(v) for v in self.values)
