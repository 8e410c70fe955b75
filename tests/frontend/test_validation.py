"""Every validation rule: its error type, the field it names, and its message."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from frontend.errors import (
    AssistantMessageLastError,
    ChoicesOutOfRangeError,
    EmptyMessagesError,
    EmptyPromptError,
    EmptyStopSequenceError,
    FieldRuleViolationError,
    LogprobsOutOfRangeError,
    MaxTokensOutOfRangeError,
    PromptTooLongError,
    SeedOutOfRangeError,
    StopSequenceTooLongError,
    TemperatureOutOfRangeError,
    TooManyMessagesError,
    TooManyStopSequencesError,
    TopKOutOfRangeError,
    TopPOutOfRangeError,
    UnknownRoleError,
    error_kind,
)
from frontend.validation import (
    ChatMessage,
    GenerationRequest,
    OutputFormat,
    RequestValidator,
    Sampling,
    ValidationLimits,
)
from llm_stack.guided_decoding import Guide, GuideType

LIMITS = ValidationLimits(
    max_prompt_chars=100, max_tokens=64, max_stop_sequences=2, max_stop_chars=8, max_top_k=50,
    max_n=4,
)  # fmt: skip
VALID: dict[str, Any] = {
    "prompt": "Hello",
    "max_tokens": 16,
    "temperature": 0.7,
    "top_p": None,
    "top_k": None,
    "stop": [],
    "seed": None,
    "stream": False,
}


def validate(**changes: Any) -> GenerationRequest:
    return RequestValidator(LIMITS).generation(**{**VALID, **changes})


def test_valid_request_becomes_the_internal_type() -> None:
    request = validate(stop=["\n", "END"], top_p=0.9, top_k=40, seed=2**64 - 1, stream=True)
    assert request == GenerationRequest(
        prompt="Hello", max_tokens=16, temperature=0.7, top_p=0.9, top_k=40,
        stop=("\n", "END"), seed=2**64 - 1, stream=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "error_type", "field", "message"),
    [
        ({"prompt": ""}, EmptyPromptError, "prompt", "prompt must not be empty"),
        ({"prompt": "x" * 101}, PromptTooLongError, "prompt",
         "prompt of 101 characters exceeds the 100 limit"),
        ({"max_tokens": 0}, MaxTokensOutOfRangeError, "max_tokens",
         "max_tokens 0 is outside 1..64"),
        ({"max_tokens": 65}, MaxTokensOutOfRangeError, "max_tokens",
         "max_tokens 65 is outside 1..64"),
        ({"temperature": -0.1}, TemperatureOutOfRangeError, "temperature",
         "temperature -0.1 is outside 0..2"),
        ({"temperature": 2.5}, TemperatureOutOfRangeError, "temperature",
         "temperature 2.5 is outside 0..2"),
        ({"temperature": math.nan}, TemperatureOutOfRangeError, "temperature",
         "temperature nan is outside 0..2"),
        ({"top_p": 0.0}, TopPOutOfRangeError, "top_p", "top_p 0.0 is outside (0, 1]"),
        ({"top_p": 1.5}, TopPOutOfRangeError, "top_p", "top_p 1.5 is outside (0, 1]"),
        ({"top_k": -1}, TopKOutOfRangeError, "top_k", "top_k -1 is outside 0..50"),
        ({"top_k": 51}, TopKOutOfRangeError, "top_k", "top_k 51 is outside 0..50"),
        ({"stop": ["a", "b", "c"]}, TooManyStopSequencesError, "stop",
         "stop has 3 sequences, exceeds the 2 limit"),
        ({"stop": ["a", ""]}, EmptyStopSequenceError, "stop[1]", "stop[1] must not be empty"),
        ({"stop": ["123456789"]}, StopSequenceTooLongError, "stop[0]",
         "stop[0] of 9 characters exceeds the 8 limit"),
        ({"seed": -1}, SeedOutOfRangeError, "seed", "seed -1 is outside 0..18446744073709551615"),
        ({"seed": 2**64}, SeedOutOfRangeError, "seed",
         "seed 18446744073709551616 is outside 0..18446744073709551615"),
        ({"logprobs": -1}, LogprobsOutOfRangeError, "logprobs", "logprobs -1 is outside 0..20"),
        ({"logprobs": 21}, LogprobsOutOfRangeError, "logprobs", "logprobs 21 is outside 0..20"),
    ],
)  # fmt: skip
def test_each_rule_has_its_own_error(
    changes: dict[str, Any], error_type: type[FieldRuleViolationError], field: str, message: str
) -> None:
    with pytest.raises(error_type) as caught:
        validate(**changes)
    assert caught.value.field == field
    assert caught.value.message == message
    assert error_kind(caught.value).status == 422


def test_rule_errors_carry_the_value_and_the_limit() -> None:
    with pytest.raises(MaxTokensOutOfRangeError) as caught:
        validate(max_tokens=1000)
    assert caught.value.value == 1000
    assert caught.value.limit == "1..64"


def test_bounds_themselves_are_allowed() -> None:
    request = validate(
        prompt="x" * 100, max_tokens=64, temperature=2.0, top_p=1.0, top_k=0,
        stop=["12345678", "a"], seed=0,
    )  # fmt: skip
    assert request.max_tokens == 64
    assert validate(max_tokens=1, temperature=0.0, top_k=50).top_k == 50
    assert validate(logprobs=0).logprobs == 0
    assert validate(logprobs=20).logprobs == 20
    assert validate().logprobs is None


# --- chat and the OpenAI-only sampling fields ---------------------------------------------

SAMPLING = Sampling(
    max_tokens=16, temperature=0.7, top_p=None, top_k=None, stop=[], seed=None, stream=False
)
USER = ChatMessage("user", "Hello")


def chat(*messages: ChatMessage, **changes: Any) -> GenerationRequest:
    return RequestValidator(LIMITS).chat(list(messages), replace(SAMPLING, **changes))


def test_chat_request_carries_messages_and_no_prompt() -> None:
    request = chat(
        ChatMessage("system", "Be brief."), USER, presence_penalty=-2.0, frequency_penalty=2.0,
        repetition_penalty=2.0, min_tokens=16,
    )  # fmt: skip
    assert request.prompt == ""
    assert request.messages == (ChatMessage("system", "Be brief."), USER)
    assert request.input_text == "Be brief.\nHello"
    assert (request.presence_penalty, request.frequency_penalty) == (-2.0, 2.0)
    assert (request.repetition_penalty, request.min_tokens) == (2.0, 16)


def test_completion_keeps_the_prompt_as_input_text() -> None:
    request = RequestValidator(LIMITS).completion("Hello", SAMPLING)
    assert request.input_text == "Hello"
    assert request.messages == ()


@pytest.mark.parametrize(
    ("messages", "error_type", "field", "message"),
    [
        ((), EmptyMessagesError, "messages", "messages must not be empty"),
        ((ChatMessage("bot", "x"),), UnknownRoleError, "messages[0].role",
         "messages[0].role must be one of system, user, assistant, got 'bot'"),
        ((USER, ChatMessage("assistant", "Hi")), AssistantMessageLastError, "messages[1].role",
         "messages[1].role: the last message must be the user's or the system's, not the "
         "assistant's"),
        ((USER, ChatMessage("user", "x" * 96)), PromptTooLongError, "messages",
         "messages of 101 characters exceeds the 100 limit"),
        ((USER,) * 1025, TooManyMessagesError, "messages",
         "messages has 1,025 entries, exceeds the 1,024 limit"),
    ],
)  # fmt: skip
def test_chat_rules(
    messages: tuple[ChatMessage, ...],
    error_type: type[FieldRuleViolationError],
    field: str,
    message: str,
) -> None:
    with pytest.raises(error_type) as caught:
        chat(*messages)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert error_kind(caught.value).status == 422


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"presence_penalty": 2.1}, "presence_penalty", "presence_penalty 2.1 is outside -2..2"),
        ({"frequency_penalty": math.inf}, "frequency_penalty",
         "frequency_penalty inf is outside -2..2"),
        ({"repetition_penalty": 0.0}, "repetition_penalty",
         "repetition_penalty 0.0 is outside (0, 2]"),
        ({"min_tokens": 17}, "min_tokens", "min_tokens 17 is outside 0..16"),
        ({"max_tokens": 65, "max_tokens_field": "max_completion_tokens"},
         "max_completion_tokens", "max_completion_tokens 65 is outside 1..64"),
    ],
)  # fmt: skip
def test_sampling_rules_of_the_openai_fields(
    changes: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(FieldRuleViolationError) as caught:
        chat(USER, **changes)
    assert (caught.value.field, caught.value.message) == (field, message)


# --- n choices and log-probabilities --------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error_type", "field", "message", "value", "limit"),
    [
        ({"n": 0}, ChoicesOutOfRangeError, "n", "n 0 is outside 1..4", 0, "1..4"),
        ({"n": 5}, ChoicesOutOfRangeError, "n", "n 5 is outside 1..4", 5, "1..4"),
        ({"n": -3}, ChoicesOutOfRangeError, "n", "n -3 is outside 1..4", -3, "1..4"),
        ({"logprobs": 21, "logprobs_field": "top_logprobs"}, LogprobsOutOfRangeError,
         "top_logprobs", "top_logprobs 21 is outside 0..20", 21, "0..20"),
        ({"logprobs": 6, "logprobs_max": 5}, LogprobsOutOfRangeError, "logprobs",
         "logprobs 6 is outside 0..5", 6, "0..5"),
    ],
)  # fmt: skip
def test_choices_and_logprobs_rules(
    changes: dict[str, Any],
    error_type: type[FieldRuleViolationError],
    field: str,
    message: str,
    value: int,
    limit: str,
) -> None:
    with pytest.raises(error_type) as caught:
        chat(USER, **changes)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert (caught.value.value, caught.value.limit) == (value, limit)
    assert error_kind(caught.value).status == 422


def test_choices_and_logprobs_reach_the_request() -> None:
    assert chat(USER).n == 1
    request = chat(USER, n=4, logprobs=5, logprobs_max=5)
    assert (request.n, request.logprobs) == (4, 5)
    completion = RequestValidator(LIMITS).completion("Hello", replace(SAMPLING, n=2, logprobs=0))
    assert (completion.n, completion.logprobs) == (2, 0)


def test_several_choices_go_with_a_json_format() -> None:
    request = chat(USER, n=3, response_format=OutputFormat("json_object"))
    assert request.n == 3
    assert request.guide == Guide(GuideType.JSON)
