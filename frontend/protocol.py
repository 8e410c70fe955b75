"""The /generate wire format: pydantic models for bodies, responses, stream events and errors.

These check shape and types only; the value rules (ranges, lengths, limits from the
settings) live in frontend.validation so every rule has its own error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$", description="The schema's name."
    )
    description: str | None = Field(default=None, description="What the output is for.")
    schema_: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="A JSON Schema of the supported keywords (see the README); others are "
        "refused with 400 naming the keyword. Absent: any JSON value.",
    )
    strict: bool | None = Field(
        default=None, description="Accepted; the schema is always enforced."
    )


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: text, any JSON object, or JSON valid against a schema."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"] = Field(
        description="json_object: a JSON object; json_schema: a value valid against "
        "json_schema.schema. Generation stops (finish_reason stop) when the value is complete."
    )
    json_schema: JsonSchemaFormat | None = Field(
        default=None, description="Required with type json_schema, refused otherwise."
    )


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


FinishReasonName = Literal["stop", "length"]


class TopLogprob(BaseModel):
    """One of the likeliest tokens at a position (OpenAI chat's shape)."""

    token: str = Field(
        description="The token's text; a token that is not whole UTF-8 characters reads "
        "`bytes:` and its bytes escaped, e.g. `bytes:\\xe2\\x80`."
    )
    logprob: float = Field(description="Natural log of its probability (-9999.0: about 0).")
    bytes: list[int] = Field(description="The token's UTF-8 bytes.")


class TokenLogprob(TopLogprob):
    """One output token: its log-probability and the likeliest tokens at its position."""

    top_logprobs: list[TopLogprob] = Field(description="Likeliest first; as many as asked for.")


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
    finish_reason: FinishReasonName
    model_version: str
    request_id: str
    logprobs: list[TokenLogprob] | None = Field(
        default=None, description="One per output token; present when asked for."
    )


class DeltaEvent(BaseModel):
    """One SSE `data:` line per piece of new text."""

    type: Literal["delta"] = "delta"
    text: str
    logprobs: list[TokenLogprob] | None = Field(
        default=None,
        description="The tokens this delta adds (its text may be empty while a character "
        "is incomplete); present when asked for.",
    )


class DoneEvent(BaseModel):
    """The last SSE event before `data: [DONE]`."""

    type: Literal["done"] = "done"
    finish_reason: FinishReasonName
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


class LiveResponse(BaseModel):
    status: Literal["live"] = "live"


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    model: str
    endpoints: dict[str, bool] = Field(description="Triton gRPC endpoint -> model ready")
