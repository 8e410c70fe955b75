"""A short fuzz of the ensemble's inputs, straight over gRPC, as a careless or hostile
Triton client would send them: every call ends with a final response or a clean error,
never a traceback, and the stack serves normally afterwards.

The cases come from a seeded generator, so every run sends the same ones; each call is
cut off by a generous deadline far above what any answer takes, so a call that hangs
fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from launcher.triton_server import TritonServer
from llm_stack.ensemble_client import generate
from llm_stack.model_errors import decode_model_error

pytestmark = pytest.mark.integration

SEED = 21
CASES = 64
CALL_TIMEOUT_S = 120.0  # a hang, not a slow answer: normal calls here take well under 5 s

INT32 = ("max_tokens", "end_id", "pad_id", "top_k", "min_tokens", "num_return_sequences",
         "num_top_log_probs")  # fmt: skip
FP32 = ("top_p", "temperature", "repetition_penalty", "presence_penalty", "frequency_penalty")
BOOL = ("stream", "return_log_probs", "return_num_input_tokens", "return_num_output_tokens")
STRINGS = ("bad_words", "stop_words")
TEXT = ("text_input", "messages", "guided_decoding_guide_type", "guided_decoding_guide")


def _text(rng: random.Random) -> str | bytes:
    choices: list[str | bytes] = [
        "",
        "Hello",
        "<start_of_turn>model\n" * rng.randint(1, 20),
        "<eos>" * rng.randint(1, 300),
        "".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(1, 64))),
        bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 64))),  # not UTF-8
        "{" * rng.randint(1, 2000),
        json.dumps([{"role": "user", "content": "hi"}]),
        json.dumps([{"role": rng.choice(["user", "system", "x", 3]), "content": [1, {}]}]),
        json.dumps({"type": "object", "properties": {"a": {"enum": list(range(600))}}}),
        "json_schema",
        "json",
    ]
    return rng.choice(choices)


def _int(rng: random.Random) -> int:
    return rng.choice([-(2**31), -1, 0, 1, 2, 3, 262_143, 262_144, 10**6, 2**31 - 1])


def _float(rng: random.Random) -> float:
    return rng.choice([-1.0, 0.0, 1e-40, 0.5, 1.0, 2.0, 1e30, math.inf, -math.inf, math.nan])


def _tensor(name: str, value: npt.NDArray[Any], dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), dtype)
    tensor.set_data_from_numpy(value)
    return tensor


def fuzz_case(rng: random.Random) -> list[grpcclient.InferInput]:
    """One request: text_input and max_tokens (mostly small) and a random few others,
    with a batch of 1, sometimes 2, and now and then one input of more elements than
    declared (Triton refuses those itself: a few suffice)."""
    batch = rng.choice([1, 1, 1, 1, 2])
    others = [*INT32[1:], *FP32, *BOOL, *STRINGS, *TEXT[1:]]
    names = ["text_input", "max_tokens", *rng.sample(others, rng.randint(0, 6))]
    wide = rng.choice(names) if rng.random() < 0.1 else None
    inputs = []
    for name in names:
        width = rng.randint(0, 40) if name in STRINGS else 2 if name == wide else 1
        shape = (batch, width)
        if name == "max_tokens":
            # Small, so that a request the stack serves is short; sometimes hostile.
            values: list[Any] = [rng.choice([1, 2, 3, _int(rng)]) for _ in range(batch * width)]
            array: npt.NDArray[Any] = np.array(values, dtype=np.int32)
            inputs.append(_tensor(name, array.reshape(shape), "INT32"))
        elif name in INT32:
            array = np.array([_int(rng) for _ in range(batch * width)], dtype=np.int32)
            inputs.append(_tensor(name, array.reshape(shape), "INT32"))
        elif name in FP32:
            array = np.array([_float(rng) for _ in range(batch * width)], dtype=np.float32)
            inputs.append(_tensor(name, array.reshape(shape), "FP32"))
        elif name in BOOL:
            array = np.array([rng.random() < 0.5 for _ in range(batch * width)], dtype=np.bool_)
            inputs.append(_tensor(name, array.reshape(shape), "BOOL"))
        else:
            texts = [_text(rng) for _ in range(batch * width)]
            raw = [t if isinstance(t, bytes) else t.encode("utf-8", "surrogatepass") for t in texts]
            array = np.array(raw, dtype=np.object_).reshape(shape)
            inputs.append(_tensor(name, array, "BYTES"))
    return inputs


async def _single(inputs: list[grpcclient.InferInput]) -> AsyncIterator[dict[str, Any]]:
    yield {"model_name": "ensemble", "inputs": inputs}


async def outcome(client: grpcclient.InferenceServerClient, inputs: list[grpcclient.InferInput]
                  ) -> str | None:  # fmt: skip
    """None when the call ended with a final response, else its error message."""
    stream = client.stream_infer(_single(inputs), stream_timeout=CALL_TIMEOUT_S)
    try:
        async for result, error in stream:
            if error is not None:
                return str(error.message())
            params = result.get_response().parameters
            if params["triton_final_response"].bool_param:
                return None
    except InferenceServerException as exc:
        return str(exc.message())
    return "the stream ended without a final response"


async def test_fuzzed_ensemble_inputs_get_clean_answers_and_the_stack_serves_on(
    triton: TritonServer, client: grpcclient.InferenceServerClient
) -> None:
    rng = random.Random(SEED)
    answers: list[tuple[int, str | None]] = []
    for case in range(CASES):
        answers.append((case, await outcome(client, fuzz_case(rng))))

    for case, message in answers:
        if message is None:
            continue
        # Triton's own checks (shapes, types) answer in words; the models answer with a
        # coded error. What must never reach a client is Python's traceback or text of an
        # exception nobody meant to send.
        assert "Traceback" not in message, (case, message)
        assert 'File "' not in message, (case, message)
        error = decode_model_error(message)
        if error is not None:
            assert error.code != "engine_unavailable", (case, message)
    # Some of each: the fuzz reached the models and they refused what they had to.
    assert any(m is None for _, m in answers)
    assert any(m is not None and decode_model_error(m) is not None for _, m in answers)

    served = await generate(client, "The capital of France is", 4, temperature=0.0)
    assert served.error is None
    assert served.num_output_tokens == 4
