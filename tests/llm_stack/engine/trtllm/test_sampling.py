"""Mapping a request onto `SamplingParams`: every setting applied, or refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from llm_stack.engine.base import InvalidRequestError
from llm_stack.engine.trtllm.sampling import (
    BAD_WORDS,
    FEATURES,
    MIN_TOKENS,
    PENALTIES,
    SEED,
    SEVERAL_SEQUENCES,
    Capabilities,
    engine_sequences,
    release_key,
)
from llm_stack.engine.trtllm.sampling import to_sampling_kwargs as map_request
from llm_stack.model_errors import ErrorCode
from tests.llm_stack.engine.trtllm.fakes import (
    GENERATION_EOS,
    VERSION,
    FakeLLM,
    FakeSamplingParams,
    check_arguments,
)
from tests.llm_stack.engine.trtllm.helpers import make_request

PINNED = Capabilities.of(VERSION)
# A release applying every feature, for the mapping of each field.
EVERYTHING = Capabilities("9.9.9", frozenset(f.name for f in FEATURES))


def to_sampling_kwargs(request: Any, capabilities: Capabilities = PINNED) -> dict[str, Any]:
    """The mapping, checked against the recorded SamplingParams fields and types."""
    kwargs = map_request(request, capabilities)
    check_arguments("SamplingParams", kwargs)
    return kwargs


def test_sampling_maps_every_field() -> None:
    request = make_request(
        max_tokens=20,
        temperature=0.7,
        top_k=40,
        top_p=0.9,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
        min_tokens=3,
        seed=2**64 - 1,
        end_id=2,
        stops=((7,), (9,), (7,), (4, 5)),
        bad=((11,), (10,)),
    )
    assert to_sampling_kwargs(request, EVERYTHING) == {
        "max_tokens": 20,
        "detokenize": False,
        "temperature": 0.7,
        "top_k": 40,
        "top_p": 0.9,
        "seed": 2**64 - 1,
        "repetition_penalty": 1.1,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "min_tokens": 3,
        "stop_token_ids": [2, 7, 9],  # the client's end id among them: see below
        "bad_token_ids": [10, 11],
    }


def test_sampling_defaults_leave_runtime_defaults_unset() -> None:
    # top_k 0 (no cut) and neutral penalties stay unset; top_p is always set, because
    # all of top_k, top_p and temperature unset would mean greedy to the runtime.
    assert to_sampling_kwargs(make_request(max_tokens=5)) == {
        "max_tokens": 5,
        "detokenize": False,
        "temperature": 1.0,
        "top_p": 1.0,
    }


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 0.0},
        {"temperature": 0.0, "top_p": 0.5, "top_k": 50, "seed": 3},
        {"top_k": 1},
    ],
)
def test_greedy_is_top_k_one_without_temperature(sampling: dict[str, Any]) -> None:
    kwargs = to_sampling_kwargs(make_request(**sampling))
    assert kwargs["top_k"] == 1
    assert "temperature" not in kwargs
    assert "top_p" not in kwargs
    assert "seed" not in kwargs


def test_penalties_apply_to_greedy_too() -> None:
    kwargs = to_sampling_kwargs(make_request(temperature=0.0, repetition_penalty=1.3), EVERYTHING)
    assert kwargs["repetition_penalty"] == 1.3


def test_multi_token_stops_are_left_to_the_stream_filter() -> None:
    kwargs = to_sampling_kwargs(make_request(stops=((4, 5), (6, 7, 8))))
    assert "stop_token_ids" not in kwargs
    assert "stop" not in kwargs


def test_multi_token_bad_words_are_rejected_naming_the_field() -> None:
    with pytest.raises(InvalidRequestError, match=r"^bad_words: .*longest to 3"):
        to_sampling_kwargs(make_request(bad=((5,), (1, 2, 3))), EVERYTHING)


def test_n_and_logprobs_map_to_sampling_params() -> None:
    request = make_request(max_tokens=6, temperature=0.8, seed=7, n=3, logprobs=5)
    assert to_sampling_kwargs(request, EVERYTHING) == {
        "max_tokens": 6,
        "detokenize": False,
        "temperature": 0.8,
        "top_p": 1.0,
        "seed": 7,  # the runtime seeds sequence i with seed + i
        "n": 3,  # best_of stays unset: the LLM API makes it n, keeping each output's index
        "logprobs": 5,
    }


@pytest.mark.parametrize(("asked", "sent"), [(None, None), (0, 1), (1, 1), (20, 20)])
def test_logprobs_zero_asks_for_one_alternative(asked: int | None, sent: int | None) -> None:
    # Some releases turn logprobs on with bool(logprobs): 0 would mean off.
    kwargs = to_sampling_kwargs(make_request(temperature=0.5, logprobs=asked))
    assert kwargs.get("logprobs") == sent


def test_one_sequence_leaves_n_unset() -> None:
    assert "n" not in to_sampling_kwargs(make_request(temperature=0.5, n=1))


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"top_k": 1, "temperature": 0.7}])
def test_greedy_n_asks_for_one_sequence(sampling: dict[str, Any]) -> None:
    # The LLM API refuses greedy decoding with best_of > 1; the n would all be equal.
    request = make_request(n=4, **sampling)
    assert engine_sequences(request.sampling) == 1
    assert "n" not in to_sampling_kwargs(request)
    assert engine_sequences(make_request(n=4, temperature=0.7).sampling) == 4


# -- what the pinned release's sampler would ignore is refused by name ------------------


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        ({"repetition_penalty": 1.2}, "repetition_penalty"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -0.5}, "frequency_penalty"),
        ({"temperature": 0.0, "frequency_penalty": 0.5}, "frequency_penalty"),
        ({"temperature": 0.8, "seed": 7}, "seed"),
        ({"min_tokens": 4}, "min_tokens"),
    ],
)
def test_the_pinned_release_refuses_what_its_sampler_ignores(
    sampling: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        map_request(make_request(**sampling), PINNED)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.field == field
    assert f"TensorRT-LLM {VERSION} does not apply" in str(caught.value)


def test_the_pinned_release_refuses_bad_words() -> None:
    with pytest.raises(InvalidRequestError, match="bad words") as caught:
        map_request(make_request(bad=((11,),)), PINNED)
    assert caught.value.field == "bad_words"


def test_neutral_settings_are_not_refused() -> None:
    request = make_request(temperature=0.8, repetition_penalty=1.0, presence_penalty=0.0)
    assert map_request(request, PINNED) == {
        "max_tokens": 8,
        "detokenize": False,
        "temperature": 0.8,
        "top_p": 1.0,
    }


def test_the_pinned_release_applies_none_of_the_unreleased_sampler_fixes() -> None:
    assert not any(PINNED.applies(f) for f in (PENALTIES, BAD_WORDS, SEED, MIN_TOKENS))
    assert PINNED.applies(SEVERAL_SEQUENCES)


def test_a_release_applying_seeds_gets_a_random_seed_for_unseeded_requests() -> None:
    first = map_request(make_request(temperature=0.8), EVERYTHING)["seed"]
    second = map_request(make_request(temperature=0.8), EVERYTHING)["seed"]
    assert first != second
    assert 0 <= first < 2**64
    assert map_request(make_request(temperature=0.8, seed=5), EVERYTHING)["seed"] == 5
    assert "seed" not in map_request(make_request(temperature=0.0), EVERYTHING)


def test_several_sequences_need_a_release_that_serves_them() -> None:
    older = Capabilities.of("1.0.0")  # Triton 25.10's: n > 1 asserts or hangs there
    with pytest.raises(InvalidRequestError, match="PR #8951") as caught:
        map_request(make_request(temperature=0.8, n=2), older)
    assert caught.value.field == "num_return_sequences"
    assert map_request(make_request(temperature=0.8, n=2), PINNED)["n"] == 2
    # Greedy n is one engine sequence streamed n times: any release serves it.
    assert "n" not in map_request(make_request(temperature=0.0, n=2), older)


def test_releases_compare_as_versions() -> None:
    assert release_key("1.2.0rc6") < release_key("1.2.0") < release_key("1.2.1")
    assert not Capabilities.of("1.2.0rc6").applies(SEVERAL_SEQUENCES)
    assert Capabilities.of("1.2.0").applies(SEVERAL_SEQUENCES)
    with pytest.raises(ValueError, match="not a TensorRT-LLM version"):
        release_key("main")


def test_a_client_end_id_is_a_stop_token_and_keeps_the_models_own_end_tokens() -> None:
    kwargs = map_request(make_request(end_id=5, temperature=0.0, stops=((7,),)), PINNED)
    # Unset end_id: the LLM API then sets up the model's end tokens from its
    # generation_config.json as well; a set one would replace them.
    assert "end_id" not in kwargs
    assert "pad_id" not in kwargs
    assert kwargs["stop_token_ids"] == [5, 7]
    assert FakeLLM.stop_tokens(FakeSamplingParams(**kwargs)) == {5, 7, *GENERATION_EOS}
