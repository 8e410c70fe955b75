"""Tokenize through Triton: a prompt's token ids, and token ids' text, free of any HTTP.

The frontend loads no tokenizer. Triton's `preprocessing` model, the one that tokenizes
every generation's prompt, answers a direct call: a prompt or a chat goes to it as the
inputs generation's ensemble request gives it (`ensemble_request` of the same
`ValidatedRequest`: the prompt, or the messages and tools the chat template renders), so
a count here is the `prompt_tokens` a generation of that request reports. Any API that
counts tokens (/tokenize, Anthropic's count_tokens) calls `tokenize`; /detokenize calls
`detokenize`. Neither holds an engine sequence, so neither takes a slot of the
generations' concurrency bound: preprocessing's own queue (bounded, with a timeout)
refuses a flood as it refuses generations (503). `charge_request` counts the call against
the caller's requests per minute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient

from frontend.errors import (
    InvalidInputError,
    InvalidTokenIdError,
    ModelRejectedRequestError,
    RateLimitedError,
    TritonInternalError,
)
from frontend.metrics import FrontendMetrics
from frontend.rate_limit import RateLimiter
from frontend.service import Caller
from frontend.triton_client import TritonPool, ensemble_request
from frontend.validation import ValidatedRequest

log = logging.getLogger(__name__)

PREPROCESSING_MODEL: Final = "preprocessing"
# The ensemble inputs that make the prompt, by preprocessing's names for them (the
# ensemble's input_map; a test holds the two to each other).
PROMPT_INPUTS: Final[Mapping[str, str]] = {
    "text_input": "QUERY",
    "messages": "MESSAGES",
    "tools": "TOOLS",
}
# Token ids are INT32 on every Triton tensor: no vocabulary reaches past this.
MAX_TOKEN_ID: Final = 2**31 - 1
TOKENS_FIELD: Final = "tokens"

_Checked = TypeVar("_Checked")


@dataclass(frozen=True, slots=True)
class Tokenized:
    """A prompt's token ids as the engine gets them, and the prompt limit they meet."""

    ids: tuple[int, ...]
    max_input_len: int  # the most prompt tokens the model accepts
    token_strings: tuple[str, ...] | None = None  # each id's vocabulary string, when asked

    @property
    def count(self) -> int:
        return len(self.ids)


def _text_tensor(name: str, text: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
    return tensor


def _bool_tensor(name: str, value: bool) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "BOOL")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.bool_))
    return tensor


def prompt_inputs(request: ValidatedRequest) -> dict[str, str]:
    """Preprocessing's prompt inputs for `request`, as its ensemble request sends them."""
    ensemble = ensemble_request(request)
    values = {name: getattr(ensemble, name, None) for name in PROMPT_INPUTS}
    if values["messages"] is not None:
        values["text_input"] = None  # ignored beside messages
    return {PROMPT_INPUTS[name]: value for name, value in values.items() if value is not None}


async def tokenize(
    pool: TritonPool,
    request: ValidatedRequest,
    request_id: str,
    *,
    add_special_tokens: bool = True,
    token_strings: bool = False,
) -> Tokenized:
    """The prompt ids a generation of `request` would give the engine (its count is that
    generation's prompt_tokens). `add_special_tokens` false leaves the tokenizer's BOS off
    a prompt (a chat's template writes its own: false is refused there as invalid);
    `token_strings` asks for each id's vocabulary string. Raises FrontendError subclasses
    (a prompt over the model's limit: PromptTooManyTokensError)."""
    inputs = [_text_tensor(name, text) for name, text in prompt_inputs(request).items()]
    if not add_special_tokens:
        inputs.append(_bool_tensor("ADD_SPECIAL_TOKENS", False))
    outputs = ["INPUT_ID", "MAX_INPUT_LEN"]
    if token_strings:
        inputs.append(_bool_tensor("RETURN_TOKEN_STRINGS", True))
        outputs.append("TOKEN_STRINGS")
    result = await pool.infer(PREPROCESSING_MODEL, inputs, outputs, request_id)
    ids = tuple(int(token) for token in _output(result, "INPUT_ID").reshape(-1))
    strings = None
    if token_strings:
        strings = tuple(
            bytes(text).decode("utf-8", errors="replace")
            for text in _output(result, "TOKEN_STRINGS").reshape(-1)
        )
    limit = int(_output(result, "MAX_INPUT_LEN").reshape(-1)[0])
    return Tokenized(ids, limit, strings)


def check_token_ids(ids: Sequence[int], field: str = TOKENS_FIELD) -> None:
    """InvalidTokenIdError naming the first id no vocabulary has (negative, or past the
    INT32 ids Triton carries); the model checks the rest against its own vocabulary."""
    for index, token in enumerate(ids):
        if not 0 <= token <= MAX_TOKEN_ID:
            where = f"{field}[{index}]"
            raise InvalidTokenIdError(
                where, f"{where}: {token} is not a token id (ids are 0 or more)", token
            )


async def detokenize(pool: TritonPool, ids: Sequence[int], request_id: str) -> str:
    """The text of `ids`, control tokens written as their texts ("<bos>"): tokenized as a
    prompt without added special tokens, it gives the ids back. Raises InvalidTokenIdError
    naming an id outside the model's vocabulary, else FrontendError subclasses."""
    check_token_ids(ids)
    if not ids:
        return ""
    tensor = grpcclient.InferInput("TOKEN_IDS", [1, len(ids)], "INT32")
    tensor.set_data_from_numpy(np.array([list(ids)], dtype=np.int32).reshape(1, len(ids)))
    try:
        result = await pool.infer(PREPROCESSING_MODEL, [tensor], ["TEXT"], request_id)
    except ModelRejectedRequestError as refused:
        if refused.field is not None and refused.field.startswith(f"{TOKENS_FIELD}["):
            raise InvalidTokenIdError(refused.field, refused.message) from None
        raise
    text = _output(result, "TEXT").reshape(-1)[0]
    return bytes(text).decode("utf-8", errors="replace")


async def charge_request(
    limiter: RateLimiter, metrics: FrontendMetrics, caller: Caller
) -> dict[str, str]:
    """Count one request against the caller's requests per minute (no tokens: nothing is
    generated); the rate-limit headers to answer with. RateLimitedError once spent."""
    if not limiter.enabled:
        return {}
    try:
        reservation = await limiter.admit(caller.rate_key, 0)
    except RateLimitedError as limited:
        metrics.rate_limited.labels(limited.limit_name).inc()
        raise
    return reservation.headers()


async def checked(
    limiter: RateLimiter, metrics: FrontendMetrics, caller: Caller, check: Callable[[], _Checked]
) -> _Checked:
    """What `check` returns; when it refuses the request as invalid, the refusal counts
    against the caller's requests per minute, as GenerationService.validated counts it."""
    try:
        return check()
    except InvalidInputError:
        if limiter.enabled:
            try:
                await limiter.charge_refused(caller.rate_key)
            except RateLimitedError as limited:
                metrics.rate_limited.labels(limited.limit_name).inc()
                raise limited from None
        raise


def _output(result: grpcclient.InferResult, name: str) -> Any:
    array = result.as_numpy(name)
    if array is None:
        log.error("%s answered without %s", PREPROCESSING_MODEL, name)
        raise TritonInternalError
    return array
