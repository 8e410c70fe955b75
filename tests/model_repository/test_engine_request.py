"""The tensorrt_llm model's mapping: input tensors → engine request, deltas → output tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc.model_config_pb2 as mc
from engine_request import (
    CLIENT_NAMES,
    INPUTS,
    SequenceOutput,
    build_request,
    health_reply,
    response_arrays,
)
from google.protobuf import text_format

from llm_stack.engine.base import (
    EngineError,
    EngineHealth,
    FinishReason,
    InvalidRequestError,
    TokenDelta,
    TokenLogprob,
)
from llm_stack.guided_decoding import Guide, GuideType
from llm_stack.model_errors import ErrorCode, ModelError
from llm_stack.sampling_contract import SAMPLING_PARAMETERS, SamplingParameter
from llm_stack.tokenizer import DETOKENIZE_WINDOW
from llm_stack.word_lists import encode_word_list

MAX_INPUT_LEN = 16


def scalar(value: Any, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A [1, 1] tensor, as Triton hands the model a batch of one."""
    return np.array([[value]], dtype=dtype)


def base_tensors(**overrides: npt.NDArray[Any] | None) -> dict[str, npt.NDArray[Any] | None]:
    tensors: dict[str, npt.NDArray[Any] | None] = {
        "input_ids": np.array([[2, 10, 11, 12]], dtype=np.int32),
        "input_lengths": scalar(4, np.int32),
        "request_output_len": scalar(8, np.int32),
    }
    tensors.update(overrides)
    return tensors


def build(**overrides: npt.NDArray[Any] | None) -> Any:
    return build_request("rid-1", base_tensors(**overrides), MAX_INPUT_LEN)


def test_the_model_reads_each_declared_input() -> None:
    text = Path(__file__).resolve().parents[2] / "model_repository/tensorrt_llm/config.pbtxt"
    config = text_format.Parse(text.read_text("utf-8"), mc.ModelConfig())
    # stop and health_check are requests of their own; the token counts always come back.
    apart = {"stop", "health_check", "return_num_input_tokens", "return_num_output_tokens"}
    assert sorted(INPUTS) == sorted({t.name for t in config.input} - apart)


@pytest.mark.parametrize("parameter", SAMPLING_PARAMETERS, ids=lambda p: p.name)
def test_each_declared_parameter_reaches_its_field(parameter: SamplingParameter) -> None:
    value = 1 if parameter.python_type is int else 0.5
    dtype = parameter.tensor.dtype
    max_tokens = {"request_output_len": scalar(4, np.int32)}
    request, _ = build(**{**max_tokens, parameter.engine_input: scalar(value, dtype)})
    assert getattr(request.sampling, parameter.engine_field) == value
    # A malformed one is named as the ensemble's input, as the client sent it.
    with pytest.raises(InvalidRequestError) as caught:
        build(**{**max_tokens, parameter.engine_input: np.array([[value, value]], dtype)})
    assert caught.value.field == CLIENT_NAMES.get(parameter.engine_input, parameter.engine_input)
    assert caught.value.field == parameter.name


def test_minimal_request_defaults() -> None:
    request, streaming = build()
    assert request.request_id == "rid-1"
    assert request.prompt_ids == (2, 10, 11, 12)
    assert all(type(t) is int for t in request.prompt_ids)
    s = request.sampling
    assert (s.max_tokens, s.temperature, s.top_k, s.top_p) == (8, 1.0, 0, 1.0)
    assert (s.repetition_penalty, s.presence_penalty, s.frequency_penalty) == (1.0, 0.0, 0.0)
    assert (s.min_tokens, s.seed) == (0, None)
    assert request.stop_sequences == ()
    assert request.bad_sequences == ()
    assert request.end_id is None
    assert streaming is False


def test_every_tensor_is_mapped() -> None:
    request, streaming = build(
        request_output_len=scalar(5, np.int32),
        temperature=scalar(0.5, np.float32),
        runtime_top_k=scalar(40, np.int32),
        runtime_top_p=scalar(0.75, np.float32),
        repetition_penalty=scalar(1.25, np.float32),
        presence_penalty=scalar(0.5, np.float32),
        frequency_penalty=scalar(-0.25, np.float32),
        min_tokens=scalar(2, np.int32),
        seed=scalar(2**64 - 1, np.uint64),
        streaming=scalar(True, np.bool_),
        end_id=scalar(106, np.int32),
        pad_id=scalar(0, np.int32),
        stop_words_list=encode_word_list([[7, 8], [9]])[np.newaxis],
        bad_words_list=encode_word_list([[13]])[np.newaxis],
    )
    s = request.sampling
    assert s.max_tokens == 5
    assert s.temperature == 0.5
    assert s.top_k == 40
    assert s.top_p == 0.75
    assert s.repetition_penalty == 1.25
    assert s.presence_penalty == 0.5
    assert s.frequency_penalty == -0.25
    assert s.min_tokens == 2
    assert s.seed == 2**64 - 1
    assert request.end_id == 106
    assert request.stop_sequences == ((7, 8), (9,))
    assert request.bad_sequences == ((13,),)
    assert streaming is True


def test_input_lengths_truncates_padded_ids() -> None:
    request, _ = build(
        input_ids=np.array([[2, 10, 11, 0, 0]], dtype=np.int32), input_lengths=scalar(3, np.int32)
    )
    assert request.prompt_ids == (2, 10, 11)


def test_input_lengths_default_to_all_ids() -> None:
    request, _ = build(input_lengths=None)
    assert request.prompt_ids == (2, 10, 11, 12)


@pytest.mark.parametrize("length", [0, 5, -1])
def test_input_lengths_mismatch(length: int) -> None:
    with pytest.raises(InvalidRequestError) as err:
        build(input_lengths=scalar(length, np.int32))
    assert str(err.value) == f"input_lengths is {length}, but input_ids has 4 ids"


def test_input_ids_required() -> None:
    with pytest.raises(InvalidRequestError, match="input_ids is required"):
        build(input_ids=None)


def test_prompt_over_the_limit() -> None:
    ids = np.arange(1, 18, dtype=np.int32)[np.newaxis]
    with pytest.raises(InvalidRequestError) as err:
        build(input_ids=ids, input_lengths=scalar(17, np.int32))
    assert str(err.value) == "prompt has 17 tokens, exceeds the limit of 16"


def test_prompt_at_the_limit_passes() -> None:
    ids = np.arange(1, 17, dtype=np.int32)[np.newaxis]
    request, _ = build(input_ids=ids, input_lengths=scalar(16, np.int32))
    assert len(request.prompt_ids) == 16


def test_max_tokens_required() -> None:
    with pytest.raises(InvalidRequestError) as err:
        build(request_output_len=None)
    assert str(err.value) == "max_tokens is required"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"request_output_len": scalar(0, np.int32)}, "max_tokens must be >= 1, got 0"),
        ({"runtime_top_p": scalar(1.5, np.float32)}, "top_p must be in (0, 1], got 1.5"),
        ({"runtime_top_p": scalar(0.0, np.float32)}, "top_p must be in (0, 1], got 0.0"),
        ({"runtime_top_k": scalar(-1, np.int32)}, "top_k must be >= 0, got -1"),
        ({"temperature": scalar(-0.5, np.float32)}, "temperature must be >= 0, got -0.5"),
        (
            {"repetition_penalty": scalar(0.0, np.float32)},
            "repetition_penalty must be > 0, got 0.0",
        ),
        ({"min_tokens": scalar(-2, np.int32)}, "min_tokens must be >= 0, got -2"),
        (
            {"request_output_len": np.array([[4, 5]], dtype=np.int32)},
            "max_tokens must hold one value, got shape [1, 2]",
        ),
        (
            {"runtime_top_k": np.array([[1], [2]], dtype=np.int32)},
            "top_k must hold one value, got shape [2, 1]",
        ),
        (
            {"stop_words_list": np.array([[[7, 8], [2, 1]]], dtype=np.int32)},
            "stop_words: word list offsets are not increasing within bounds: [2, 1]",
        ),
        (
            {"bad_words_list": np.zeros((1, 3, 2), dtype=np.int32)},
            "bad_words: a word list must have shape [2, L], got [1, 3, 2]",
        ),
    ],
)
def test_errors_name_the_client_field(overrides: dict[str, npt.NDArray[Any]], message: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        build(**overrides)
    assert str(err.value) == message


def test_end_id_minus_one_means_the_model_end_tokens() -> None:
    request, _ = build(end_id=scalar(-1, np.int32))
    assert request.end_id is None
    request, _ = build(end_id=scalar(0, np.int32))
    assert request.end_id == 0


def test_seed_zero_is_kept() -> None:
    request, _ = build(seed=scalar(0, np.uint64))
    assert request.sampling.seed == 0


def test_empty_word_lists_mean_none() -> None:
    empty = encode_word_list([])[np.newaxis]
    request, _ = build(stop_words_list=empty, bad_words_list=empty)
    assert (request.stop_sequences, request.bad_sequences) == ((), ())


def text(value: str | bytes) -> npt.NDArray[Any]:
    """A [1, 1] string tensor, as Triton hands TYPE_STRING inputs over: bytes."""
    return np.array([[value.encode() if isinstance(value, str) else value]], dtype=np.object_)


SCHEMA = '{"type":"object","properties":{"a":{"enum":[1,2]}},"required":["a"]}'


def test_guides_are_mapped() -> None:
    request, _ = build()
    assert request.guide is None
    request, _ = build(guided_decoding_guide_type=text("json"))
    assert request.guide == Guide(GuideType.JSON)
    request, _ = build(
        guided_decoding_guide_type=text("json_schema"), guided_decoding_guide=text(SCHEMA)
    )
    assert request.guide == Guide(GuideType.JSON_SCHEMA, SCHEMA)


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"guided_decoding_guide_type": text("regex"), "guided_decoding_guide": text("a+")},
            "guided_decoding_guide_type",
            "guided_decoding_guide_type 'regex' is not supported: only json, json_schema",
        ),
        (
            {"guided_decoding_guide": text(SCHEMA)},
            "guided_decoding_guide_type",
            "guided_decoding_guide needs guided_decoding_guide_type",
        ),
        (
            {"guided_decoding_guide_type": text("json_schema")},
            "guided_decoding_guide",
            "guided_decoding_guide is required for json_schema",
        ),
        (
            {"guided_decoding_guide_type": text("json_schema"), "guided_decoding_guide": text("{")},
            "guided_decoding_guide",
            "guided_decoding_guide is not JSON",
        ),
        (
            {
                "guided_decoding_guide_type": text("json_schema"),
                "guided_decoding_guide": text(b"\xff"),
            },
            "guided_decoding_guide",
            "guided_decoding_guide is not UTF-8",
        ),
        (
            {
                "guided_decoding_guide_type": text("json_schema"),
                "guided_decoding_guide": text('{"type":"string","pattern":"^a$"}'),
            },
            "guided_decoding_guide",
            "guided_decoding_guide: /pattern: keyword 'pattern' is not supported",
        ),
        (
            {
                "guided_decoding_guide_type": text("json_schema"),
                "guided_decoding_guide": text('{"type":"object","required":["x"]}'),
            },
            "guided_decoding_guide",
            "guided_decoding_guide: /required: 'x' is required but not in properties",
        ),
    ],
)
def test_bad_guides_name_their_tensor(
    overrides: dict[str, npt.NDArray[Any]], field: str, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as err:
        build(**overrides)
    assert err.value.field == field
    assert str(err.value).startswith(message)


def test_response_arrays_shapes_and_types() -> None:
    delta = TokenDelta((12, 13), num_input_tokens=4, num_output_tokens=3)
    arrays = response_arrays([12, 13], [11], 1, delta)
    assert arrays["output_ids"].shape == (1, 1, 2)
    assert arrays["output_ids"].dtype == np.int32
    assert arrays["output_ids"].tolist() == [[[12, 13]]]  # the new ids only
    assert arrays["context_ids"].dtype == np.int32
    assert arrays["context_ids"].tolist() == [[11]]
    for name, value in (
        ("sequence_length", 2),
        ("output_offset", 1),
        ("num_input_tokens", 4),
        ("num_output_tokens", 3),
    ):
        assert arrays[name].shape == (1, 1), name
        assert arrays[name].dtype == np.int32, name
        assert arrays[name].tolist() == [[value]], name
    assert arrays["finish_reason"].shape == (1, 1)
    assert arrays["finish_reason"].dtype == np.object_
    assert arrays["finish_reason"][0, 0] == b""


@pytest.mark.parametrize("reason", list(FinishReason))
def test_response_arrays_finish_reason_bytes(reason: FinishReason) -> None:
    arrays = response_arrays([5], [], 0, TokenDelta((5,), 4, 1, reason))
    assert arrays["finish_reason"][0, 0] == reason.value.encode()


def test_response_arrays_with_no_output() -> None:
    arrays = response_arrays([], [], 0, TokenDelta((), 4, 0, FinishReason.STOP))
    assert arrays["output_ids"].shape == (1, 1, 0)
    assert arrays["output_ids"].dtype == np.int32
    assert arrays["context_ids"].shape == (1, 0)
    assert arrays["sequence_length"].tolist() == [[0]]


def test_choices_and_logprobs_are_mapped() -> None:
    request, _ = build(
        num_return_sequences=scalar(3, np.int32),
        return_log_probs=scalar(True, np.bool_),
        num_top_log_probs=scalar(5, np.int32),
    )
    assert (request.sampling.n, request.sampling.logprobs) == (3, 5)
    alone, _ = build(return_log_probs=scalar(True, np.bool_))
    assert alone.sampling.logprobs == 0  # the sampled token's own, no alternatives
    off, _ = build(num_top_log_probs=scalar(5, np.int32))
    assert off.sampling.logprobs is None  # alternatives only with return_log_probs


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_return_sequences": scalar(0, np.int32)}, "num_return_sequences"),
        (
            {"return_log_probs": scalar(True, np.bool_), "num_top_log_probs": scalar(21, np.int32)},
            "num_top_log_probs",
        ),
    ],
)
def test_choice_and_logprob_errors_name_their_input(
    overrides: dict[str, npt.NDArray[Any]], field: str
) -> None:
    with pytest.raises(InvalidRequestError) as error:
        build(**overrides)
    assert error.value.field == field


def test_each_sequence_sends_its_own_tokens_and_logprobs() -> None:
    outputs = [SequenceOutput(), SequenceOutput()]
    first = TokenDelta((5, 6), 4, 2, index=1, logprobs=(lp(-0.5, 9), lp(-1.0, 6)))
    outputs[1].add(first, logprobs=True)
    arrays = outputs[1].take(logprobs=True)
    assert arrays["sequence_index"].tolist() == [[1]]
    assert arrays["output_ids"].tolist() == [[[5, 6]]]
    assert arrays["output_log_probs"].tolist() == [[-0.5, -1.0]]
    assert arrays["top_token_ids"].tolist() == [[[9], [6]]]
    assert arrays["top_log_probs"].shape == (1, 2, 1)
    last = TokenDelta((7,), 4, 3, FinishReason.LENGTH, index=1, logprobs=(lp(-2.0, 7),))
    outputs[1].add(last, logprobs=True)
    arrays = outputs[1].take(logprobs=True)
    # The new ids, after the ids before them; logprobs of the new ones only.
    assert arrays["output_ids"].tolist() == [[[7]]]
    assert (arrays["context_ids"].tolist(), arrays["output_offset"].tolist()) == ([[5, 6]], [[2]])
    assert arrays["output_log_probs"].tolist() == [[-2.0]]
    assert arrays["num_output_tokens"].tolist() == [[3]]
    assert outputs[0].pending == []
    assert outputs[0].last is None


def test_context_is_the_last_window_of_ids_sent() -> None:
    output = SequenceOutput()
    for token in range(20):
        output.add(TokenDelta((token,), 4, token + 1), logprobs=False)
        arrays = output.take(logprobs=False)
        assert arrays["context_ids"].tolist() == [
            list(range(max(0, token - DETOKENIZE_WINDOW), token))
        ]
        assert arrays["output_offset"].tolist() == [[token]]


def test_without_logprobs_the_tensors_are_empty() -> None:
    output = SequenceOutput()
    output.add(TokenDelta((5,), 4, 1), logprobs=False)
    arrays = output.take(logprobs=False)
    assert arrays["output_log_probs"].shape == (1, 0)
    assert arrays["top_log_probs"].shape == (1, 0, 0)
    assert arrays["top_token_ids"].shape == (1, 0, 0)


def test_logprobs_that_do_not_match_the_tokens_are_an_engine_error() -> None:
    output = SequenceOutput()
    with pytest.raises(EngineError, match="1 logprobs for 2 tokens"):
        output.add(TokenDelta((5, 6), 4, 2, logprobs=(lp(-0.5, 5),)), logprobs=True)
    assert output.pending == []  # nothing kept


def lp(value: float, top_token: int) -> TokenLogprob:
    return TokenLogprob(value, ((top_token, value),))


def test_a_temperature_below_fp32_range_is_greedy() -> None:
    # 1e-40 survives as an FP32 subnormal; dividing logits by it would overflow.
    request, _ = build(temperature=scalar(1e-40, np.float32))
    assert request.sampling.temperature > 0.0
    assert request.sampling.greedy


def test_a_healthy_engine_answers_one_empty_finish_reason() -> None:
    reply = health_reply(EngineHealth(True))
    assert isinstance(reply, dict)
    assert list(reply) == ["finish_reason"]
    assert reply["finish_reason"].dtype == object
    assert reply["finish_reason"].tolist() == [[b""]]


def test_an_unhealthy_engine_answers_engine_unavailable_with_the_reason() -> None:
    reply = health_reply(EngineHealth(False, "the engine's step thread died: RuntimeError"))
    assert reply == ModelError(
        ErrorCode.ENGINE_UNAVAILABLE,
        "the engine cannot generate: the engine's step thread died: RuntimeError",
    )
