"""Tool-call guides through the real Triton's ensemble: the structural_tag guide, end to end."""

from __future__ import annotations

import json

import jsonschema
import pytest
import tritonclient.grpc.aio as grpcclient

from llm_stack.ensemble_client import generate
from llm_stack.model_errors import ErrorCode, decode_model_error
from llm_stack.tool_calls import HERMES, NamedTool, parse_tool_calls, tool_guide
from tests.llm_stack.engine.test_llama_cpp_tools import MAX_TOKENS, PROMPT, SCHEMAS, TOOLS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stream", [False, True])
async def test_a_required_call_validates(
    client: grpcclient.InferenceServerClient, stream: bool
) -> None:
    guide = tool_guide(TOOLS, "required", parallel=False)
    assert guide is not None
    assert guide.schema is not None
    result = await generate(
        client,
        PROMPT,
        MAX_TOKENS,
        temperature=0.0,
        stream=stream,
        guided_decoding_guide_type="structural_tag",
        guided_decoding_guide=guide.schema,
    )
    assert result.error is None
    assert result.finish_reason == "stop", result.text
    parsed = parse_tool_calls(result.text, HERMES, tool_names=list(SCHEMAS))
    assert parsed.content is None, result.text
    (call,) = parsed.tool_calls
    jsonschema.validate(json.loads(call.arguments), SCHEMAS[call.name])


async def test_a_structural_tag_the_engines_cannot_enforce_is_refused_naming_where(
    client: grpcclient.InferenceServerClient,
) -> None:
    guide = tool_guide(TOOLS, NamedTool("get_time"))
    assert guide is not None
    assert guide.schema is not None
    tag = json.loads(guide.schema)
    tag["format"]["tags"][0]["content"]["json_schema"]["properties"]["zone"]["pattern"] = "x"
    result = await generate(
        client,
        PROMPT,
        8,
        guided_decoding_guide_type="structural_tag",
        guided_decoding_guide=json.dumps(tag),
    )
    assert result.error is not None
    error = decode_model_error(result.error.message() or "")
    assert error is not None
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, "guided_decoding_guide")
    assert "format.tags[0].content.json_schema.properties.zone.pattern" in error.message
