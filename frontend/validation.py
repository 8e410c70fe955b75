"""The one validation step: raw request fields in, a `GenerationRequest` out.

It knows no wire format, so /generate and an OpenAI-style layer both feed it keyword
fields. Each rule raises its own error naming the field, the limit and the value. The
prompt's length in tokens is the model's business: Triton's tokenizer checks it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from frontend.errors import (
    EmptyPromptError,
    EmptyStopSequenceError,
    MaxTokensOutOfRangeError,
    PromptTooLongError,
    SeedOutOfRangeError,
    StopSequenceTooLongError,
    TemperatureOutOfRangeError,
    TooManyStopSequencesError,
    TopKOutOfRangeError,
    TopPOutOfRangeError,
)

TEMPERATURE_MAX = 2.0
SEED_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """The configurable bounds (from the settings)."""

    max_prompt_chars: int
    max_tokens: int
    max_stop_sequences: int
    max_stop_chars: int
    max_top_k: int


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A generation request that passed every rule; the service accepts only this."""

    prompt: str
    max_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    stop: tuple[str, ...]
    seed: int | None
    stream: bool


class RequestValidator:
    """Applies the rules in a fixed order and reports the first one broken."""

    def __init__(self, limits: ValidationLimits) -> None:
        self.limits = limits

    def generation(
        self,
        *,
        prompt: str,
        max_tokens: int,
        temperature: float,
        top_p: float | None,
        top_k: int | None,
        stop: Sequence[str],
        seed: int | None,
        stream: bool,
    ) -> GenerationRequest:
        """Validate one generation request's fields."""
        limits = self.limits
        if not prompt:
            raise EmptyPromptError
        if len(prompt) > limits.max_prompt_chars:
            raise PromptTooLongError(len(prompt), limits.max_prompt_chars)
        if not 1 <= max_tokens <= limits.max_tokens:
            raise MaxTokensOutOfRangeError("max_tokens", max_tokens, f"1..{limits.max_tokens}")
        # NaN fails every comparison, so it lands in the range errors too.
        if not (math.isfinite(temperature) and 0.0 <= temperature <= TEMPERATURE_MAX):
            raise TemperatureOutOfRangeError("temperature", temperature, f"0..{TEMPERATURE_MAX:g}")
        if top_p is not None and not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
            raise TopPOutOfRangeError("top_p", top_p, "(0, 1]")
        if top_k is not None and not 0 <= top_k <= limits.max_top_k:
            raise TopKOutOfRangeError("top_k", top_k, f"0..{limits.max_top_k}")
        if len(stop) > limits.max_stop_sequences:
            raise TooManyStopSequencesError(len(stop), limits.max_stop_sequences)
        for index, sequence in enumerate(stop):
            if not sequence:
                raise EmptyStopSequenceError(index)
            if len(sequence) > limits.max_stop_chars:
                raise StopSequenceTooLongError(index, len(sequence), limits.max_stop_chars)
        if seed is not None and not 0 <= seed <= SEED_MAX:
            raise SeedOutOfRangeError("seed", seed, f"0..{SEED_MAX}")
        return GenerationRequest(
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=tuple(stop),
            seed=seed,
            stream=stream,
        )
