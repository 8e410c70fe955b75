"""The one validation step: raw request fields in, a `GenerationRequest` out.

It knows no wire format, so /generate and the OpenAI layer both feed it keyword
fields: a prompt (`generation`) or chat messages (`chat`), and the same sampling
fields. Each rule raises its own error naming the field, the limit and the value. The
prompt's length in tokens is the model's business: Triton's tokenizer checks it (after
rendering messages with the model's chat template).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from frontend.errors import (
    AssistantMessageLastError,
    ChoicesOutOfRangeError,
    EmptyMessagesError,
    EmptyPromptError,
    EmptyStopSequenceError,
    InvalidSchemaError,
    InvalidTextError,
    LogprobsOutOfRangeError,
    MaxTokensOutOfRangeError,
    MinTokensOutOfRangeError,
    PenaltyOutOfRangeError,
    PromptTooLongError,
    SchemaViolationError,
    SeedOutOfRangeError,
    StopSequenceTooLongError,
    TemperatureOutOfRangeError,
    TooManyMessagesError,
    TooManyStopSequencesError,
    TopKOutOfRangeError,
    TopPOutOfRangeError,
    UnknownRoleError,
    UnsupportedParameterError,
    UnsupportedSchemaKeywordError,
)
from llm_stack.ensemble_contract import MAX_NUM_TOP_LOG_PROBS
from llm_stack.guided_decoding import Guide, GuideType, Path, SchemaError, check_schema, schema_text

TEMPERATURE_MAX = 2.0
SEED_MAX = 2**64 - 1
PENALTY_MAX = 2.0  # presence and frequency penalties lie in -2..2, as in OpenAI's API
REPETITION_PENALTY_MAX = 2.0
ROLES = ("system", "user", "assistant")
# Likeliest alternatives per token: what the ensemble's num_top_log_probs takes (OpenAI
# chat's top_logprobs limit); OpenAI's completions allow 5 (their `logprobs`).
TOP_LOGPROBS_MAX = MAX_NUM_TOP_LOG_PROBS
COMPLETION_LOGPROBS_MAX = 5


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """The configurable bounds (from the settings)."""

    max_prompt_chars: int
    max_tokens: int
    max_stop_sequences: int
    max_stop_chars: int
    max_top_k: int
    max_n: int
    max_messages: int = 1024


# JSON Schema keywords by JSON type, e.g. {"integer": {"minimum": 1}}; see field_schemas.
TypedKeywords = dict[str, dict[str, Any]]
# Those keywords by field name.
FieldRules = dict[str, TypedKeywords]


def field_schemas(limits: ValidationLimits) -> FieldRules:
    """The rules below that concern one field alone, as JSON Schema keywords for the API document.

    Built from the same constants and limits as the checks, so the document cannot drift from
    them; rules across fields (min_tokens within max_tokens, the messages' total length, the
    last role) stay in the descriptions. The validator remains the one place rules are applied.
    """
    text = {"minLength": 1, "maxLength": limits.max_prompt_chars}
    stop_sequence = {"minLength": 1, "maxLength": limits.max_stop_chars}
    max_tokens = {"integer": {"minimum": 1, "maximum": limits.max_tokens}}
    penalty = {"number": {"minimum": -PENALTY_MAX, "maximum": PENALTY_MAX}}
    return {
        "prompt": {"string": text},
        "max_tokens": max_tokens,
        "max_completion_tokens": max_tokens,
        "temperature": {"number": {"minimum": 0, "maximum": TEMPERATURE_MAX}},
        "top_p": {"number": {"exclusiveMinimum": 0, "maximum": 1}},
        "top_k": {"integer": {"minimum": 0, "maximum": limits.max_top_k}},
        "stop": {
            "array": {"maxItems": limits.max_stop_sequences, "items": stop_sequence},
            "string": stop_sequence,
        },
        "seed": {"integer": {"minimum": 0, "maximum": SEED_MAX}},
        "presence_penalty": penalty,
        "frequency_penalty": penalty,
        "repetition_penalty": {
            "number": {"exclusiveMinimum": 0, "maximum": REPETITION_PENALTY_MAX}
        },
        "min_tokens": {"integer": {"minimum": 0, "maximum": limits.max_tokens}},
        "n": {"integer": {"minimum": 1, "maximum": limits.max_n}},
        # /v1/completions allows fewer (frontend.openapi narrows its `logprobs`); chat's
        # `logprobs` is a boolean, which an integer rule leaves alone.
        "logprobs": {"integer": {"minimum": 0, "maximum": TOP_LOGPROBS_MAX}},
        "top_logprobs": {"integer": {"minimum": 0, "maximum": TOP_LOGPROBS_MAX}},
        "messages": {"array": {"minItems": 1, "maxItems": limits.max_messages}},
        "role": {"string": {"enum": list(ROLES)}},
        "content": {"string": {"maxLength": limits.max_prompt_chars}},
    }


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A requested response format before validation, in OpenAI's terms."""

    type: str  # text, json_object or json_schema
    has_json_schema: bool = False  # whether response_format.json_schema was sent
    schema: Any = None  # response_format.json_schema.schema (None: absent)
    field: str = "response_format"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A generation request that passed every rule; the service accepts only this.

    A chat request has `messages` (the model's template makes them the prompt) and an
    empty `prompt`; a completion request has a `prompt` and no messages. `n` choices are
    generated from the one prompt; `logprobs` (None: off) asks for each output token's
    log-probability with that many likeliest alternatives.
    """

    prompt: str
    max_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    messages: tuple[ChatMessage, ...] = ()
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    guide: Guide | None = None  # structured output
    n: int = 1
    logprobs: int | None = None

    @property
    def input_text(self) -> str:
        """The text the caller sent as input (for estimates and logs)."""
        if self.messages:
            return "\n".join(message.content for message in self.messages)
        return self.prompt


@dataclass(frozen=True, slots=True)
class Sampling:
    """The fields shared by prompt and chat requests, before validation."""

    max_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    stop: Sequence[str]
    seed: int | None
    stream: bool
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    # The request field max_tokens came from (OpenAI chat also calls it
    # max_completion_tokens), so its errors name what the client sent.
    max_tokens_field: str = "max_tokens"
    response_format: OutputFormat | None = None
    n: int = 1
    # Alternatives per token (None: no log-probabilities), the field the count came from
    # (OpenAI chat calls it top_logprobs) and that API's largest count.
    logprobs: int | None = None
    logprobs_field: str = "logprobs"
    logprobs_max: int = TOP_LOGPROBS_MAX


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
        response_format: OutputFormat | None = None,
        logprobs: int | None = None,
    ) -> GenerationRequest:
        """Validate one generation request's fields."""
        sampling = Sampling(
            max_tokens, temperature, top_p, top_k, stop, seed, stream,
            response_format=response_format, logprobs=logprobs,
        )  # fmt: skip
        return self.completion(prompt, sampling)

    def completion(self, prompt: str, sampling: Sampling) -> GenerationRequest:
        """Validate a prompt and its sampling fields."""
        limits = self.limits
        if not prompt:
            raise EmptyPromptError
        if len(prompt) > limits.max_prompt_chars:
            raise PromptTooLongError(len(prompt), limits.max_prompt_chars)
        return self._with_sampling(prompt, (), sampling)

    def chat(self, messages: Sequence[ChatMessage], sampling: Sampling) -> GenerationRequest:
        """Validate chat messages and their sampling fields."""
        if not messages:
            raise EmptyMessagesError
        if len(messages) > self.limits.max_messages:
            raise TooManyMessagesError(len(messages), self.limits.max_messages)
        for index, message in enumerate(messages):
            if message.role not in ROLES:
                raise UnknownRoleError(index, message.role, ROLES)
        if messages[-1].role == "assistant":
            raise AssistantMessageLastError(len(messages) - 1)
        chars = sum(len(message.content) for message in messages)
        if chars > self.limits.max_prompt_chars:
            raise PromptTooLongError(chars, self.limits.max_prompt_chars, "messages")
        return self._with_sampling("", tuple(messages), sampling)

    def _with_sampling(
        self, prompt: str, messages: tuple[ChatMessage, ...], sampling: Sampling
    ) -> GenerationRequest:
        limits = self.limits
        s = sampling
        if not 1 <= s.max_tokens <= limits.max_tokens:
            raise MaxTokensOutOfRangeError(
                s.max_tokens_field, s.max_tokens, f"1..{limits.max_tokens}"
            )
        if not 1 <= s.n <= limits.max_n:
            raise ChoicesOutOfRangeError("n", s.n, f"1..{limits.max_n}")
        if s.logprobs is not None and not 0 <= s.logprobs <= s.logprobs_max:
            raise LogprobsOutOfRangeError(s.logprobs_field, s.logprobs, f"0..{s.logprobs_max}")
        # NaN fails every comparison, so it lands in the range errors too.
        if not (math.isfinite(s.temperature) and 0.0 <= s.temperature <= TEMPERATURE_MAX):
            raise TemperatureOutOfRangeError(
                "temperature", s.temperature, f"0..{TEMPERATURE_MAX:g}"
            )
        if s.top_p is not None and not (math.isfinite(s.top_p) and 0.0 < s.top_p <= 1.0):
            raise TopPOutOfRangeError("top_p", s.top_p, "(0, 1]")
        if s.top_k is not None and not 0 <= s.top_k <= limits.max_top_k:
            raise TopKOutOfRangeError("top_k", s.top_k, f"0..{limits.max_top_k}")
        if len(s.stop) > limits.max_stop_sequences:
            raise TooManyStopSequencesError(len(s.stop), limits.max_stop_sequences)
        for index, sequence in enumerate(s.stop):
            if not sequence:
                raise EmptyStopSequenceError(index)
            if len(sequence) > limits.max_stop_chars:
                raise StopSequenceTooLongError(index, len(sequence), limits.max_stop_chars)
        if s.seed is not None and not 0 <= s.seed <= SEED_MAX:
            raise SeedOutOfRangeError("seed", s.seed, f"0..{SEED_MAX}")
        for name, penalty in (
            ("presence_penalty", s.presence_penalty),
            ("frequency_penalty", s.frequency_penalty),
        ):
            if penalty is not None and not (math.isfinite(penalty) and abs(penalty) <= PENALTY_MAX):
                raise PenaltyOutOfRangeError(name, penalty, f"-{PENALTY_MAX:g}..{PENALTY_MAX:g}")
        repetition = s.repetition_penalty
        if repetition is not None and not (
            math.isfinite(repetition) and 0.0 < repetition <= REPETITION_PENALTY_MAX
        ):
            raise PenaltyOutOfRangeError(
                "repetition_penalty", repetition, f"(0, {REPETITION_PENALTY_MAX:g}]"
            )
        if s.min_tokens is not None and not 0 <= s.min_tokens <= s.max_tokens:
            raise MinTokensOutOfRangeError("min_tokens", s.min_tokens, f"0..{s.max_tokens}")
        guide = guide_for(s.response_format) if s.response_format else None
        if guide is not None and s.stop:
            # A stop sequence inside the value would cut it short, and `stop` promises a
            # complete value; the value's own end already ends the generation.
            raise UnsupportedParameterError(
                "stop", "stop is not supported with a JSON response_format"
            )
        return GenerationRequest(
            prompt=prompt,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            stop=tuple(s.stop),
            seed=s.seed,
            stream=s.stream,
            messages=messages,
            presence_penalty=s.presence_penalty,
            frequency_penalty=s.frequency_penalty,
            repetition_penalty=s.repetition_penalty,
            min_tokens=s.min_tokens,
            guide=guide,
            n=s.n,
            logprobs=s.logprobs,
        )


def check_text(body: BaseModel) -> None:
    """InvalidTextError naming the first string of `body` (a key, a value, at any depth,
    in declared and extra fields) that is not Unicode text.

    The first check of every request that carries text: a lone surrogate, which JSON's
    \\u escapes can spell, fails wherever text is encoded (the token estimate, the Triton
    request, the logs). Iterative, so no nesting the JSON parser took can exhaust the stack.
    """
    pending: list[tuple[str, object]] = [("", body)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if not _is_text(value):
                raise InvalidTextError(path)
            continue
        children: list[tuple[str, object]]
        if isinstance(value, BaseModel):
            fields = type(value).model_fields
            children = [
                (_member(path, field.alias or name), getattr(value, name))
                for name, field in fields.items()
            ]
            children += [(_member(path, k), v) for k, v in (value.model_extra or {}).items()]
        elif isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and not _is_text(key):
                    # A member name cannot name itself: the object holding it is named.
                    raise InvalidTextError(path)
            children = [(_member(path, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list | tuple):
            children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        pending.extend(reversed(children))  # depth first, in the order the body has them


def _is_text(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")  # strict UTF-8 refuses exactly the surrogates
    except UnicodeEncodeError:
        return False
    return True


def _member(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def guide_for(fmt: OutputFormat) -> Guide | None:
    """The engine's guide for a response format (None for text); raises naming the field.

    The schema's keywords are checked against the list both engines enforce
    (llm_stack.guided_decoding): an unsupported one is a 400 naming it and its path.
    """
    member = f"{fmt.field}.json_schema"
    if fmt.type != "json_schema":
        if fmt.has_json_schema:
            raise SchemaViolationError(f"{member} is only allowed with type json_schema", member)
        return Guide(GuideType.JSON) if fmt.type == "json_object" else None
    if not fmt.has_json_schema:
        raise SchemaViolationError(f"{member} is required with type json_schema", member)
    schema = {} if fmt.schema is None else fmt.schema
    field = f"{member}.schema"
    try:
        check_schema(schema)
        text = schema_text(schema)
    except SchemaError as error:
        where = field + _dotted(error.path)
        if error.unsupported:
            raise UnsupportedSchemaKeywordError(where, f"{where}: {error.rule}") from None
        raise InvalidSchemaError(where, f"{where}: {error.rule}") from None
    except ValueError:  # NaN or Infinity somewhere: JSON has no such numbers
        raise InvalidSchemaError(field, f"{field}: numbers must be finite") from None
    return Guide(GuideType.JSON_SCHEMA, text)


def _dotted(path: Path) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
