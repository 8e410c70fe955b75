"""What each simulated user sends: the request mix, prompts, max_tokens, sampling, think time.

The same options exist on Locust's command line (added by the locustfile, each also read
from an `LLM_LOADTEST_<NAME>` variable) and on the runner's, which passes them on.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.prompt_set import DEFAULT_PROMPTS, TokenDistribution

API_KEY_ENV = "LLM_LOADTEST_API_KEY"
DEFAULT_MAX_TOKENS = "uniform:32:128"


@dataclass(frozen=True)
class LoadOptions:
    """Per-request choices; the weights set how often each kind of request is sent."""

    max_tokens: TokenDistribution = field(
        default_factory=lambda: TokenDistribution.parse(DEFAULT_MAX_TOKENS)
    )
    temperature: float = 0.7
    generate_weight: int = 1
    stream_weight: int = 2
    chat_weight: int = 1
    think_time_s: float = 0.0
    prompts: Path = DEFAULT_PROMPTS
    chat_model: str = ""  # empty: the first model GET /v1/models lists

    def __post_init__(self) -> None:
        weights = (self.generate_weight, self.stream_weight, self.chat_weight)
        if min(weights) < 0 or not any(weights):
            raise ValueError("request weights must be >= 0, and at least one > 0")
        if self.think_time_s < 0:
            raise ValueError("think time must be >= 0")

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> LoadOptions:
        """From parsed options (the runner's or Locust's, which share these names)."""
        return cls(
            max_tokens=TokenDistribution.parse(ns.max_tokens),
            temperature=ns.temperature,
            generate_weight=ns.generate_weight,
            stream_weight=ns.stream_weight,
            chat_weight=ns.chat_weight,
            think_time_s=ns.think_time,
            prompts=Path(ns.prompts),
            chat_model=ns.chat_model,
        )

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> LoadOptions:
        """Back from `describe()` (the prompt file by its name only)."""
        weights = d["weights"]
        return cls(
            max_tokens=TokenDistribution.parse(d["max_tokens"]),
            temperature=d["temperature"],
            generate_weight=weights["generate"],
            stream_weight=weights["generate_stream"],
            chat_weight=weights["chat_stream"],
            think_time_s=d["think_time_s"],
            prompts=Path(d["prompts"]),
            chat_model=d["chat_model"],
        )

    def locust_args(self) -> list[str]:
        """The same options as Locust command-line arguments."""
        return [
            f"--max-tokens={self.max_tokens}",
            f"--temperature={self.temperature}",
            f"--generate-weight={self.generate_weight}",
            f"--stream-weight={self.stream_weight}",
            f"--chat-weight={self.chat_weight}",
            f"--think-time={self.think_time_s}",
            f"--prompts={self.prompts}",
            f"--chat-model={self.chat_model}",
        ]

    def describe(self) -> dict[str, object]:
        """For reports."""
        return {
            "max_tokens": str(self.max_tokens),
            "temperature": self.temperature,
            "weights": {
                "generate": self.generate_weight,
                "generate_stream": self.stream_weight,
                "chat_stream": self.chat_weight,
            },
            "think_time_s": self.think_time_s,
            "prompts": self.prompts.name,
            "chat_model": self.chat_model,
        }


def _max_tokens_spec(value: str) -> str:
    try:
        TokenDistribution.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_load_arguments(parser: Any, *, env: bool = False) -> None:
    """Add the options to an argparse (or Locust's configargparse) parser.

    With `env`, each option also reads `LLM_LOADTEST_<NAME>` (Locust's parser only).
    """
    d = LoadOptions()

    def add(flag: str, help_text: str, **kwargs: Any) -> None:
        if env:
            kwargs["env_var"] = "LLM_LOADTEST_" + flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, help=help_text, **kwargs)

    add(
        "--max-tokens",
        "max_tokens per request: fixed:N, uniform:LO:HI or choice:A,B,...",
        type=_max_tokens_spec,
        default=str(d.max_tokens),
    )
    add("--temperature", "sampling temperature", type=float, default=d.temperature)
    add("--generate-weight", "weight of POST /generate", type=int, default=d.generate_weight)
    add(
        "--stream-weight",
        "weight of POST /generate with stream=true",
        type=int,
        default=d.stream_weight,
    )
    add(
        "--chat-weight",
        "weight of streamed POST /v1/chat/completions (0: none)",
        type=int,
        default=d.chat_weight,
    )
    add("--think-time", "seconds a user waits between requests", type=float, default=0.0)
    add("--prompts", "JSON prompt set", default=str(d.prompts))
    add(
        "--chat-model",
        "`model` of chat requests (default: the first model GET /v1/models lists)",
        default=d.chat_model,
    )
