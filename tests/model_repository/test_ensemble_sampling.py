"""n sequences and token logprobs through the real Triton's ensemble, over gRPC."""

from __future__ import annotations

import math
from typing import Any

import pytest
import tritonclient.grpc.aio as grpcclient

from launcher.triton_server import TritonServer
from llm_stack.ensemble_client import generate, metric_value
from llm_stack.tokenizer import GgufTokenizer

pytestmark = pytest.mark.integration

PROMPT = "1, 2, 3, 4, 5,"
OPEN_PROMPT = "My favourite animal is the"


def computed_prompt_tokens(triton: TritonServer) -> float:
    return metric_value(triton.metrics_url, "llm_engine_prompt_tokens_total", source="computed")


def prompt_tokens(triton: TritonServer) -> float:
    return computed_prompt_tokens(triton) + metric_value(
        triton.metrics_url, "llm_engine_prompt_tokens_total", source="cached"
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_three_greedy_sequences_equal_one_and_count_the_prompt_once(
    client: grpcclient.InferenceServerClient, triton: TritonServer, stream: bool
) -> None:
    single = await generate(client, PROMPT, 12, temperature=0.0, min_tokens=12)
    before = prompt_tokens(triton)
    three = await generate(
        client, PROMPT, 12, temperature=0.0, min_tokens=12, num_return_sequences=3, stream=stream
    )
    assert three.error is None
    assert sorted(three.sequences) == [0, 1, 2]
    for sequence in three.sequences.values():
        assert sequence.text == single.text
        assert (sequence.finish_reason, sequence.num_output_tokens) == ("length", 12)
        assert sequence.num_input_tokens == single.num_input_tokens
    # The engine took the prompt once (computed or from the prefix cache) for three.
    assert prompt_tokens(triton) - before == single.num_input_tokens


async def test_seeded_sequences_are_reproducible(client: grpcclient.InferenceServerClient) -> None:
    async def texts() -> list[str]:
        result = await generate(
            client, OPEN_PROMPT, 16, temperature=1.0, seed=3, min_tokens=16, num_return_sequences=3
        )
        assert result.error is None
        return [result.sequences[i].text for i in range(3)]

    first = await texts()
    assert first == await texts()
    assert len(set(first)) == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_greedy_logprobs_name_the_sampled_token_first(
    client: grpcclient.InferenceServerClient, gguf_tokenizer: GgufTokenizer, stream: bool
) -> None:
    result = await generate(
        client,
        PROMPT,
        10,
        temperature=0.0,
        min_tokens=10,
        stream=stream,
        return_log_probs=True,
        num_top_log_probs=4,
    )
    assert result.error is None
    assert len(result.logprobs) == 10
    assert b"".join(e.token for e in result.logprobs).decode() == result.text
    for entry in result.logprobs:
        assert len(entry.top) == 4
        assert entry.top[0][0] == entry.token
        assert entry.top[0][1] == pytest.approx(entry.logprob)
        values = [v for _, v in entry.top]
        assert values == sorted(values, reverse=True)
        assert all(math.isfinite(v) and v <= 0.0 for v in values)
    # The texts are the tokens' own: each alternative encodes back to one token.
    for token, _ in result.logprobs[0].top:
        assert len(gguf_tokenizer.encode(token.decode(), add_special=False)) == 1


async def test_logprobs_without_alternatives_and_with_n(
    client: grpcclient.InferenceServerClient,
) -> None:
    result = await generate(
        client,
        OPEN_PROMPT,
        6,
        temperature=0.7,
        seed=1,
        min_tokens=6,
        num_return_sequences=2,
        return_log_probs=True,
    )
    assert result.error is None
    for sequence in result.sequences.values():
        assert len(sequence.logprobs) == 6
        assert all(e.top == () and e.logprob <= 0.0 for e in sequence.logprobs)


async def test_logprobs_not_asked_for_are_empty(client: grpcclient.InferenceServerClient) -> None:
    result = await generate(client, PROMPT, 4, temperature=0.0)
    assert result.error is None
    assert result.logprobs == []


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"num_return_sequences": 0}, "num_return_sequences"),
        ({"return_log_probs": True, "num_top_log_probs": 21}, "num_top_log_probs"),
        ({"num_return_sequences": 99}, "num_return_sequences"),
    ],
)
async def test_out_of_range_values_name_their_input(
    client: grpcclient.InferenceServerClient, inputs: dict[str, Any], field: str
) -> None:
    result = await generate(client, PROMPT, 4, **inputs)
    assert result.error is not None
    assert field in (result.error.message() or "")
