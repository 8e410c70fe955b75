"""The /generate wire format: pydantic models for bodies, responses, stream events and errors.

These check shape and types only; the value rules (ranges, lengths, limits from the
settings) live in frontend.validation so every rule has its own error. Structured output
and log-probabilities take OpenAI's shapes (frontend.apis.openai.protocol).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from frontend.apis.openai.protocol import ChatCompletionTokenLogprob, ResponseFormat


class GenerateRequest(BaseModel):
    """POST /generate body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(description="Text to continue; must not be empty.")
    max_tokens: int = Field(
        default=100, description="Completion tokens at most (1..configured max)."
    )
    temperature: float = Field(default=0.7, description="Sampling temperature, 0..2; 0 is greedy.")
    top_p: float | None = Field(default=None, description="Nucleus sampling mass, (0, 1].")
    top_k: int | None = Field(
        default=None, description="Sample among the k likeliest tokens; 0 is off."
    )
    stop: list[str] = Field(
        default_factory=list, description="Sequences that end the completion (not returned)."
    )
    seed: int | None = Field(default=None, description="Sampling seed, unsigned 64-bit.")
    stream: bool = Field(default=False, description="Answer with Server-Sent Events.")
    response_format: ResponseFormat | None = Field(
        default=None, description="Structured output, in OpenAI's shape."
    )
    logprobs: int | None = Field(
        default=None,
        description="Each output token's log-probability, with this many likeliest "
        "alternatives (0..20); null: none. One choice per request (n is the OpenAI API's).",
    )


GenerateFinishReason = Literal["stop", "length"]


class GenerateUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    tokens_used: int = Field(description="prompt_tokens + completion_tokens")
    cached_tokens: int = Field(
        default=0, description="Prompt tokens reused from the engine's prefix cache."
    )


class GenerateResponse(BaseModel):
    """POST /generate answer (stream false)."""

    text: str
    tokens_used: int = Field(description="prompt_tokens + completion_tokens")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = Field(
        default=0, description="Prompt tokens reused from the engine's prefix cache."
    )
    finish_reason: GenerateFinishReason
    model_version: str
    request_id: str
    logprobs: list[ChatCompletionTokenLogprob] | None = Field(
        default=None, description="One per output token; present when asked for."
    )


class DeltaEvent(BaseModel):
    """One SSE `data:` line per piece of new text."""

    type: Literal["delta"] = "delta"
    text: str
    logprobs: list[ChatCompletionTokenLogprob] | None = Field(
        default=None,
        description="The tokens this delta adds (its text may be empty while a character "
        "is incomplete); present when asked for.",
    )


class DoneEvent(BaseModel):
    """The last SSE event before `data: [DONE]`."""

    type: Literal["done"] = "done"
    finish_reason: GenerateFinishReason
    usage: GenerateUsage
    model_version: str
    request_id: str


class ErrorDetail(BaseModel):
    type: str = Field(description="Stable machine-readable error type.")
    message: str = Field(description="Human-readable; names the field, limit and value.")
    request_id: str
    field: str | None = Field(default=None, description="The offending field, when there is one.")


class ErrorResponse(BaseModel):
    """Every error response's JSON body."""

    error: ErrorDetail


class ErrorEvent(BaseModel):
    """An SSE event for a failure after the stream started; no [DONE] follows it."""

    type: Literal["error"] = "error"
    error: ErrorDetail
