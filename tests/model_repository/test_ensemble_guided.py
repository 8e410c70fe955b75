"""Structured outputs through the real Triton's ensemble: the guide tensors, end to end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest
import tritonclient.grpc.aio as grpcclient

from llm_stack.ensemble_client import generate
from llm_stack.guided_decoding import MAX_ENUM_VALUES, MAX_GUIDE_BYTES, schema_text
from llm_stack.model_errors import ErrorCode, decode_model_error

pytestmark = pytest.mark.integration

PROMPT = "A city and its population, as JSON:"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "population": {"type": "integer"},
        "capital": {"type": "boolean"},
    },
    "required": ["city", "population", "capital"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True])
async def test_json_schema_output_validates(
    client: grpcclient.InferenceServerClient, stream: bool
) -> None:
    result = await generate(
        client,
        PROMPT,
        96,
        temperature=0.0,
        stream=stream,
        guided_decoding_guide_type="json_schema",
        guided_decoding_guide=schema_text(SCHEMA),
    )
    assert result.error is None
    assert result.finish_reason == "stop", result.text
    jsonschema.validate(json.loads(result.text), SCHEMA)


async def test_a_bad_guide_is_refused_alone(client: grpcclient.InferenceServerClient) -> None:
    bad = generate(
        client,
        PROMPT,
        16,
        guided_decoding_guide_type="json_schema",
        guided_decoding_guide='{"type": "string", "pattern": "^a+$"}',
    )
    good = generate(client, PROMPT, 8, temperature=0.0, guided_decoding_guide_type="json")
    refused, served = await asyncio.gather(bad, good)
    assert refused.error is not None
    error = decode_model_error(refused.error.message())
    assert error is not None
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, "guided_decoding_guide")
    assert "/pattern: keyword 'pattern' is not supported" in error.message
    assert served.error is None
    assert served.text.startswith("{")


# Issue 21: 62 KB through the frontend took 2.6 s per request, four of them slowed all
# others; 3 MB straight to the ensemble froze every request for minutes.
ENUM_31K = schema_text({"enum": [0] * 31_000})
ENUM_300K = schema_text({"enum": [f"v{i:06d}" for i in range(300_000)]})


@pytest.mark.parametrize(
    ("guide", "message", "values"),
    [
        (
            ENUM_31K,
            f"guided_decoding_guide: /enum: enum has 31000 values, over the limit of "
            f"{MAX_ENUM_VALUES}",
            {"value": 31_000, "limit": MAX_ENUM_VALUES},
        ),
        (
            ENUM_300K,
            f"guided_decoding_guide is {len(ENUM_300K)} bytes, over the limit of {MAX_GUIDE_BYTES}",
            {"value": len(ENUM_300K), "limit": MAX_GUIDE_BYTES},
        ),
    ],
    ids=["enum-31k-values", "guide-3mb"],
)
async def test_an_oversized_guide_is_refused_naming_its_limit(
    client: grpcclient.InferenceServerClient, guide: str, message: str, values: dict[str, int]
) -> None:
    refused = await generate(
        client,
        PROMPT,
        8,
        guided_decoding_guide_type="json_schema",
        guided_decoding_guide=guide,
    )
    assert refused.error is not None
    error = decode_model_error(refused.error.message())
    assert error is not None
    assert (error.code, error.field, error.message) == (
        ErrorCode.INVALID_ARGUMENT,
        "guided_decoding_guide",
        message,
    )
    assert {k: error.values.get(k) for k in values} == values
    served = await generate(client, PROMPT, 4, temperature=0.0)
    assert served.error is None
    assert served.num_output_tokens == 4
