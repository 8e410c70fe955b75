"""frontend.tokenization without Triton: the preprocessing inputs a request becomes (the
ensemble's own, by preprocessing's names), the ids refused before any call, the rate limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tritonclient.grpc.model_config_pb2 as mc
from google.protobuf import text_format

from frontend.errors import InvalidInputError, InvalidTokenIdError, RateLimitedError
from frontend.metrics import FrontendMetrics
from frontend.rate_limit import RateLimiter, make_storage
from frontend.service import Caller
from frontend.tokenization import (
    MAX_TOKEN_ID,
    PREPROCESSING_MODEL,
    PROMPT_INPUTS,
    charge_request,
    check_token_ids,
    checked,
    prompt_inputs,
)
from frontend.triton_client import ensemble_request
from frontend.validation import ChatMessage, RequestedGeneration, RequestValidator, ValidationLimits
from llm_stack.ensemble_contract import ENSEMBLE_MODEL, INPUTS

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
VALIDATOR = RequestValidator(
    ValidationLimits(
        max_prompt_chars=1000,
        max_tokens=16,
        max_stop_sequences=4,
        max_stop_chars=16,
        max_top_k=100,
        max_n=2,
    )
)
CALLER = Caller("anonymous", "ip:127.0.0.1")


def config(model: str) -> mc.ModelConfig:
    text = (REPOSITORY / model / "config.pbtxt").read_text("utf-8")
    return text_format.Parse(text, mc.ModelConfig())


def test_the_prompt_inputs_are_the_ensembles_to_preprocessing() -> None:
    [step] = [s for s in config(ENSEMBLE_MODEL).ensemble_scheduling.step
              if s.model_name == PREPROCESSING_MODEL]  # fmt: skip
    mapped = {ensemble: own for own, ensemble in step.input_map.items()}
    assert {name: mapped[name] for name in PROMPT_INPUTS} == dict(PROMPT_INPUTS)
    # Every ensemble input that preprocessing renders into the prompt is here.
    prompt_making = {"QUERY", "MESSAGES", "TOOLS"}
    assert {e for e, own in mapped.items() if own in prompt_making} == set(PROMPT_INPUTS)
    assert set(PROMPT_INPUTS) <= set(INPUTS)
    # And preprocessing takes each of them, optional for a direct call.
    inputs = {t.name: t for t in config(PREPROCESSING_MODEL).input}
    assert all(inputs[own].optional for own in PROMPT_INPUTS.values())


def test_a_prompt_goes_as_query_alone() -> None:
    request = VALIDATOR.completion("Hello", RequestedGeneration(max_tokens=1))
    assert prompt_inputs(request) == {"QUERY": "Hello"}


def test_a_chat_goes_as_the_ensemble_request_sends_it() -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi <b>")]
    request = VALIDATOR.chat(messages, RequestedGeneration(max_tokens=1))
    inputs = prompt_inputs(request)
    assert inputs == {"MESSAGES": ensemble_request(request).messages}
    assert [m["content"] for m in json.loads(inputs["MESSAGES"])] == ["Be brief.", "Hi <b>"]


@pytest.mark.parametrize(
    ("ids", "field", "value"),
    [([1, -1], "tokens[1]", -1), ([MAX_TOKEN_ID + 1], "tokens[0]", MAX_TOKEN_ID + 1)],
)
def test_ids_no_vocabulary_has_are_refused_naming_them(
    ids: list[int], field: str, value: int
) -> None:
    with pytest.raises(InvalidTokenIdError) as caught:
        check_token_ids(ids)
    assert (caught.value.field, caught.value.value) == (field, value)
    assert caught.value.message == f"{field}: {value} is not a token id (ids are 0 or more)"
    check_token_ids([0, MAX_TOKEN_ID])


async def test_a_request_costs_one_of_the_minutes_requests() -> None:
    limiter = RateLimiter(make_storage("memory://"), rpm=2, tpm=10)
    metrics = FrontendMetrics()
    headers = await charge_request(limiter, metrics, CALLER)
    assert headers["X-RateLimit-Remaining-Requests"] == "1"
    # No tokens are reserved: nothing is generated.
    assert headers["X-RateLimit-Remaining-Tokens"] == "10"

    def refuse() -> None:
        raise InvalidTokenIdError("tokens[0]", "tokens[0]: -1 is not a token id", -1)

    with pytest.raises(InvalidInputError):
        await checked(limiter, metrics, CALLER, refuse)  # the refusal spends the second
    with pytest.raises(RateLimitedError):
        await charge_request(limiter, metrics, CALLER)
    assert await checked(limiter, metrics, CALLER, lambda: 7) == 7  # passing checks cost nothing
    assert (
        await charge_request(RateLimiter(make_storage("memory://"), rpm=0, tpm=0), metrics, CALLER)
        == {}
    )
