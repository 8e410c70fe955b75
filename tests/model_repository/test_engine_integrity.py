"""The real Triton: a `tensorrt_llm` request cannot break the engine, and the engine's
health is a request (`health_check`) answered at once from the model's loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from launcher.triton_server import TritonServer
from llm_stack.ensemble_client import generate, metric_value
from llm_stack.model_errors import ErrorCode, decode_model_error
from llm_stack.word_lists import encode_word_list

pytestmark = pytest.mark.integration

PROMPT_IDS = [2, 9259, 1902, 236764]  # <bos> and a few words
GEMMA_VOCAB = 262144
OUT_OF_VOCABULARY = 999999
WITHIN_S = 120.0  # a generous bound on a busy 2-core machine; nothing here is timed


def tensor(name: str, value: npt.NDArray[Any]) -> grpcclient.InferInput:
    dtype = {np.dtype(np.int32): "INT32", np.dtype(np.bool_): "BOOL"}[value.dtype]
    tensor = grpcclient.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def engine_inputs(
    ids: list[int], max_tokens: int = 4, extra: Mapping[str, npt.NDArray[Any]] | None = None
) -> list[grpcclient.InferInput]:
    """A direct `tensorrt_llm` request (batch of one), greedy, not streaming."""
    return [
        tensor("input_ids", np.array([ids], dtype=np.int32)),
        tensor("input_lengths", np.array([[len(ids)]], dtype=np.int32)),
        tensor("request_output_len", np.array([[max_tokens]], dtype=np.int32)),
        tensor("runtime_top_k", np.array([[1]], dtype=np.int32)),
        *(tensor(name, value) for name, value in (extra or {}).items()),
    ]


async def single(payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield payload


async def responses(
    client: grpcclient.InferenceServerClient, inputs: list[grpcclient.InferInput]
) -> list[tuple[Any, InferenceServerException | None]]:
    """Every response of one `tensorrt_llm` request, read to the stream's end."""
    stream = client.stream_infer(
        single(
            {
                "model_name": "tensorrt_llm",
                "inputs": inputs,
                "enable_empty_final_response": True,
            }
        ),
        stream_timeout=WITHIN_S,
    )
    async with asyncio.timeout(WITHIN_S):
        return [item async for item in stream]


def health_check() -> list[grpcclient.InferInput]:
    return [tensor("health_check", np.array([[True]], dtype=np.bool_))]


@pytest.mark.parametrize(
    ("field", "extra"),
    [
        ("input_ids", {}),
        ("stop_words", {"stop_words_list": encode_word_list([[OUT_OF_VOCABULARY]])[None]}),
        ("bad_words", {"bad_words_list": encode_word_list([[OUT_OF_VOCABULARY]])[None]}),
        ("end_id", {"end_id": np.array([[OUT_OF_VOCABULARY]], dtype=np.int32)}),
    ],
)
async def test_an_out_of_vocabulary_id_is_invalid_argument_and_the_engine_serves_on(
    client: grpcclient.InferenceServerClient, field: str, extra: dict[str, npt.NDArray[Any]]
) -> None:
    ids = [2, OUT_OF_VOCABULARY] if field == "input_ids" else PROMPT_IDS
    answers = await responses(client, engine_inputs(ids, extra=extra))
    assert len(answers) == 1
    _, error = answers[0]
    assert error is not None
    model_error = decode_model_error(error.message())
    assert model_error is not None
    assert (model_error.code, model_error.field) == (ErrorCode.INVALID_ARGUMENT, field)
    assert model_error.values == {"limit": GEMMA_VOCAB, "value": OUT_OF_VOCABULARY}

    # The engine still generates, straight and through the ensemble.
    (response, after), *_ = await responses(client, engine_inputs(PROMPT_IDS))
    assert after is None
    assert response.as_numpy("num_output_tokens").reshape(-1)[0] >= 1
    result = await generate(client, "The capital of France is", 4, temperature=0.0)
    assert result.error is None
    assert result.text


async def test_a_health_check_answers_one_final_empty_response(
    client: grpcclient.InferenceServerClient, triton: TritonServer
) -> None:
    answers = await responses(client, health_check())
    assert len(answers) == 1
    response, error = answers[0]
    assert error is None
    assert response.as_numpy("finish_reason").tolist() == [[b""]]
    assert metric_value(triton.metrics_url, "llm_engine_healthy", model="tensorrt_llm") == 1


async def test_a_health_check_is_not_queued_behind_generation(
    client: grpcclient.InferenceServerClient,
) -> None:
    long = client.stream_infer(
        single(
            {
                "model_name": "tensorrt_llm",
                "inputs": [
                    *engine_inputs(PROMPT_IDS, max_tokens=2000),
                    tensor("streaming", np.array([[True]], dtype=np.bool_)),
                ],
            }
        )
    )
    try:
        async with asyncio.timeout(WITHIN_S):
            _, error = await anext(aiter(long))  # it is generating now
        assert error is None
        answers = await responses(client, health_check())
        assert [error for _, error in answers] == [None]
    finally:
        long.cancel()  # the model sees it and aborts the sequence


async def test_temperature_below_fp32_range_gives_the_greedy_text(
    client: grpcclient.InferenceServerClient,
) -> None:
    # min_tokens: an early end cannot hide what the sampler drew.
    greedy = await generate(client, "Count: one, two, three,", 8, temperature=0.0, min_tokens=8)
    tiny = await generate(client, "Count: one, two, three,", 8, temperature=1e-40, min_tokens=8)
    assert greedy.error is None
    assert tiny.error is None
    assert tiny.text == greedy.text
