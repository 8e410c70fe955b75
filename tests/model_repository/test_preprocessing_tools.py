"""The preprocessing model's TOOLS input and tool messages, through the real Triton."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpcclient
from chat_template import load_chat_template, parse_messages, parse_tools_input

from llm_stack.model_errors import ErrorCode
from llm_stack.tokenizer import GgufTokenizer
from tests.model_repository.test_chat_template import TOOL_CHAT_JSON, WEATHER_TOOL
from tests.model_repository.test_preprocessing_robustness import (
    bytes_input,
    inputs,
    preprocess,
    refusal,
)

pytestmark = pytest.mark.integration


async def test_tools_and_tool_messages_tokenize_as_the_template_renders_them(
    client: grpcclient.InferenceServerClient, gguf_tokenizer: GgufTokenizer, tmp_path: Path
) -> None:
    tools = json.dumps([WEATHER_TOOL])
    tensors = [*inputs(messages=TOOL_CHAT_JSON.encode()), bytes_input("TOOLS", [[tools.encode()]])]
    ids = await preprocess(client, tensors)
    template = load_chat_template(
        "auto",
        model_template=gguf_tokenizer.chat_template,
        model_dir=tmp_path,
        bos_token=gguf_tokenizer.bos_token,
        eos_token=gguf_tokenizer.eos_token,
    )
    segments = template.render_segments(parse_messages(TOOL_CHAT_JSON), parse_tools_input(tools))
    assert ids == gguf_tokenizer.encode_segments(segments)
    rendered = "".join(s.text for s in segments)
    assert '"name": "get_weather"' in rendered
    assert "<tool_response>" in rendered
    # Without TOOLS the same chat has no tool list.
    without = await preprocess(client, inputs(messages=TOOL_CHAT_JSON.encode()))
    assert len(without) < len(ids)


async def test_bad_tools_are_refused_naming_the_field(
    client: grpcclient.InferenceServerClient,
) -> None:
    bad = json.loads(json.dumps(WEATHER_TOOL))
    bad["function"]["parameters"]["properties"]["city"]["pattern"] = "x"
    chat = json.dumps([{"role": "user", "content": "Hi"}]).encode()
    tensors = [*inputs(messages=chat), bytes_input("TOOLS", [[json.dumps([bad]).encode()]])]
    error = await refusal(client, tensors)
    assert (error.code, error.field) == (ErrorCode.INVALID_ARGUMENT, "tools")
    assert "tools[0].function.parameters.properties.city.pattern" in error.message
    # Tools without a chat have no template to go to.
    tensors = [*inputs(query=b"Hi"), bytes_input("TOOLS", [[b"[]"]])]
    error = await refusal(client, tensors)
    assert error.field == "tools"
    # A tool message answering no call.
    orphan = json.dumps(
        [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c", "content": "r"}]
    )
    error = await refusal(client, inputs(messages=orphan.encode()))
    assert (error.code, error.field) == (ErrorCode.INVALID_MESSAGES, "messages")
