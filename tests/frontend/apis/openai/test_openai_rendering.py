"""OpenAI objects and chunks from hand-made service events: n choices and log-probabilities."""

from __future__ import annotations

import json
import math
from typing import Any

import openai.types.chat as openai_types
import pytest

from frontend.apis.openai.logprobs import CompletionLogprobsWriter, token_logprobs, token_text
from frontend.apis.openai.protocol import StreamOptions
from frontend.apis.openai.rendering import ChatFormat, CompletionFormat, OpenAIFormat
from frontend.event_stream import Collected, CollectedChoice
from frontend.service import (
    Admitted,
    ChoiceFinished,
    Completed,
    GenerationEvent,
    TextDelta,
    ToolCallArguments,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from llm_stack.ensemble_contract import EnsembleTokenLogprob
from llm_stack.tool_calls import ToolCall
from tests.frontend.conftest import sse_payloads

QUOTE = "\u2019"  # the right single quote, three bytes in UTF-8
# " Paris" and the quote in three tokens: " Paris", then the quote's bytes split in two.
PARIS = EnsembleTokenLogprob(b" Paris", -0.25, ((b" Paris", -0.25), (b" Lyon", -1.5)))
QUOTE_HEAD = EnsembleTokenLogprob(b"\xe2\x80", -0.5, ((b"\xe2\x80", -0.5), (b"!", -2.0)))
QUOTE_TAIL = EnsembleTokenLogprob(b"\x99", -0.125, ((b"\x99", -0.125), (b"\x9c", -3.0)))
ROME = EnsembleTokenLogprob(b" Rome", -1.0, ((b" Paris", -0.5), (b" Rome", -1.0)))
USAGE = Usage(prompt_tokens=6, completion_tokens=4, cached_tokens=2)
COMPLETED = Completed(("stop", "length"), USAGE, "1")


def entry(token: str, logprob: float, raw: bytes, top: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"token": token, "logprob": logprob, "bytes": list(raw)}
    if top is not None:
        out["top_logprobs"] = top
    return out


PARIS_ENTRY = entry(" Paris", -0.25, b" Paris", [
    entry(" Paris", -0.25, b" Paris"), entry(" Lyon", -1.5, b" Lyon"),
])  # fmt: skip
QUOTE_HEAD_ENTRY = entry("bytes:\\xe2\\x80", -0.5, b"\xe2\x80", [
    entry("bytes:\\xe2\\x80", -0.5, b"\xe2\x80"), entry("!", -2.0, b"!"),
])  # fmt: skip
QUOTE_TAIL_ENTRY = entry("bytes:\\x99", -0.125, b"\x99", [
    entry("bytes:\\x99", -0.125, b"\x99"), entry("bytes:\\x9c", -3.0, b"\x9c"),
])  # fmt: skip
ROME_ENTRY = entry(" Rome", -1.0, b" Rome", [
    entry(" Paris", -0.5, b" Paris"), entry(" Rome", -1.0, b" Rome"),
])  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b" Paris", " Paris"),
        (QUOTE.encode(), QUOTE),
        (b"\xe2\x80", "bytes:\\xe2\\x80"),
        (b" \xf0\x9f", "bytes: \\xf0\\x9f"),
        (b"a\\\xff", "bytes:a\\x5c\\xff"),
        (b"", ""),
    ],
)
def test_token_text_is_the_text_or_the_escaped_bytes(raw: bytes, text: str) -> None:
    assert token_text(raw) == text


def test_chat_entries_keep_bytes_and_bound_infinities() -> None:
    sure = EnsembleTokenLogprob(b"x", 0.0, ((b"x", 0.0), (b"y", -math.inf)))
    [rendered] = token_logprobs([sure])
    assert rendered.model_dump() == entry("x", 0.0, b"x", [
        entry("x", 0.0, b"x"), entry("y", -9999.0, b"y"),
    ])  # fmt: skip


def test_completion_offsets_count_characters_from_the_prompts_start() -> None:
    writer = CompletionLogprobsWriter(prompt_chars=10)
    first = writer.write([PARIS, QUOTE_HEAD])
    second = writer.write([QUOTE_TAIL, ROME])
    # " Paris" is 6 characters; the quote's halves start where the quote does.
    assert first["text_offset"] == [10, 16]
    assert second["text_offset"] == [16, 17]
    tokens = first["tokens"] + second["tokens"]
    assert tokens == [" Paris", "bytes:\\xe2\\x80", "bytes:\\x99", " Rome"]
    assert second["token_logprobs"] == [-0.125, -1.0]
    # The sampled token is listed among the likeliest even where it is not one of them.
    outside = EnsembleTokenLogprob(b"z", -4.0, ((b"a", -0.5),))
    assert writer.write([outside])["top_logprobs"] == [{"a": -0.5, "z": -4.0}]


def collected(*choices: CollectedChoice) -> Collected:
    return Collected(Admitted({}), choices, COMPLETED)


CHOICES = (
    CollectedChoice(" Paris" + QUOTE, (PARIS, QUOTE_HEAD, QUOTE_TAIL)),
    CollectedChoice(" Rome", (ROME,)),
)


def test_chat_answer_has_a_choice_per_index_with_its_logprobs() -> None:
    output = ChatFormat("chatcmpl-1", 100, "m", None, logprobs=True)
    body = output.answer(collected(*CHOICES)).model_dump(mode="json")
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": " Paris" + QUOTE},
         "logprobs": {"content": [PARIS_ENTRY, QUOTE_HEAD_ENTRY, QUOTE_TAIL_ENTRY],
                      "refusal": None},
         "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": " Rome"},
         "logprobs": {"content": [ROME_ENTRY], "refusal": None}, "finish_reason": "length"},
    ]  # fmt: skip
    assert body["usage"] == {
        "prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 2},
    }  # fmt: skip


def test_without_logprobs_choices_say_null() -> None:
    chat = ChatFormat("chatcmpl-1", 100, "m", None).answer(collected(*CHOICES))
    completion = CompletionFormat("cmpl-1", 100, "m", None).answer(collected(*CHOICES))
    for body in (chat.model_dump(mode="json"), completion.model_dump(mode="json")):
        assert [choice["logprobs"] for choice in body["choices"]] == [None, None]


def test_completion_answer_has_the_legacy_logprobs_shape() -> None:
    output = CompletionFormat("cmpl-1", 100, "m", None, logprobs=True, prompt_chars=24)
    body = output.answer(collected(*CHOICES)).model_dump(mode="json")
    first, second = body["choices"]
    assert (first["index"], first["text"], first["finish_reason"]) == (0, " Paris" + QUOTE, "stop")
    assert first["logprobs"] == {
        "tokens": [" Paris", "bytes:\\xe2\\x80", "bytes:\\x99"],
        "token_logprobs": [-0.25, -0.5, -0.125],
        "top_logprobs": [
            {" Paris": -0.25, " Lyon": -1.5},
            {"bytes:\\xe2\\x80": -0.5, "!": -2.0},
            {"bytes:\\x99": -0.125, "bytes:\\x9c": -3.0},
        ],
        "text_offset": [24, 30, 30],
    }
    # Each choice counts its offsets from the prompt's end on its own.
    assert second["logprobs"]["text_offset"] == [24]
    assert (second["index"], second["finish_reason"]) == (1, "length")


# Two choices streaming side by side, as the service yields them.
EVENTS: list[GenerationEvent] = [
    TextDelta(" Paris", 0, (PARIS,)),
    TextDelta(" Rome", 1, (ROME,)),
    TextDelta("", 0, (QUOTE_HEAD,)),  # half a character: no text yet
    ChoiceFinished(1, "length"),
    TextDelta(QUOTE, 0, (QUOTE_TAIL,)),
    ChoiceFinished(0, "stop"),
    COMPLETED,
]


def rendered(output: OpenAIFormat, event: GenerationEvent) -> list[dict[str, Any]]:
    return [json.loads(payload) for payload in sse_payloads(output.frames(event).decode())]


def stream(output: OpenAIFormat) -> list[dict[str, Any]]:
    return [chunk for event in EVENTS for chunk in rendered(output, event)]


def test_chat_chunks_name_their_choice_and_carry_their_tokens() -> None:
    options = StreamOptions(include_usage=True)
    chunks = stream(ChatFormat("chatcmpl-1", 100, "m", options, logprobs=True))
    *pieces, usage = chunks
    assert all(c["id"] == "chatcmpl-1" and c["usage"] is None for c in pieces)
    choices = [(c["choices"][0]) for c in pieces]
    assert all(len(c["choices"]) == 1 for c in pieces)

    def logprobs(*entries: dict[str, Any]) -> dict[str, Any]:
        return {"content": list(entries), "refusal": None}

    role = {"role": "assistant", "content": ""}
    assert [(c["index"], c["delta"], c["logprobs"], c["finish_reason"]) for c in choices] == [
        (0, role, None, None),
        (0, {"content": " Paris"}, logprobs(PARIS_ENTRY), None),
        (1, role, None, None),
        (1, {"content": " Rome"}, logprobs(ROME_ENTRY), None),
        (0, {"content": ""}, logprobs(QUOTE_HEAD_ENTRY), None),
        (1, {}, None, "length"),
        (0, {"content": QUOTE}, logprobs(QUOTE_TAIL_ENTRY), None),
        (0, {}, None, "stop"),
    ]
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 6
    assert usage["usage"]["completion_tokens"] == 4


def test_a_choice_that_ends_without_text_still_gets_its_role_chunk() -> None:
    output = ChatFormat("chatcmpl-1", 100, "m", None)
    finished = rendered(output, ChoiceFinished(2, "stop"))
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in finished] == [
        (2, {"role": "assistant", "content": ""}),
        (2, {}),
    ]
    assert all("usage" not in c for c in finished)


def test_completion_chunks_name_their_choice_and_continue_offsets() -> None:
    output = CompletionFormat("cmpl-1", 100, "m", None, logprobs=True, prompt_chars=24)
    chunks = stream(output)
    assert all("usage" not in chunk for chunk in chunks)  # no usage chunk unless asked
    choices = [chunk["choices"][0] for chunk in chunks]
    assert [(c["index"], c["text"], c["finish_reason"]) for c in choices] == [
        (0, " Paris", None), (1, " Rome", None), (0, "", None), (1, "", "length"),
        (0, QUOTE, None), (0, "", "stop"),
    ]  # fmt: skip
    offsets = [c["logprobs"] and c["logprobs"]["text_offset"] for c in choices]
    assert offsets == [[24], [24], [30], None, [30], None]
    assert choices[4]["logprobs"]["tokens"] == ["bytes:\\x99"]


# --- tool calls ---------------------------------------------------------------------------

TOOLS_COMPLETED = Completed(("tool_calls", "length"), USAGE, "1")
CALL = ToolCall("call_" + "a" * 24, "get_weather", '{"city": "Paris"}')
TOOL_EVENTS: list[GenerationEvent] = [
    TextDelta("Let me look.", 0),
    ToolCallStart(0, 0, CALL.id, CALL.name),
    ToolCallArguments(0, 0, '{"city": '),
    ToolCallArguments(0, 0, '"Paris"}'),
    ToolCallEnd(0, 0, True),
    ToolCallStart(1, 0, "call_" + "b" * 24, "get_time"),
    ToolCallArguments(1, 0, "{}"),
    ToolCallEnd(1, 0, True),
    ToolCallStart(1, 1, "call_" + "c" * 24, "get_time"),
    ToolCallArguments(1, 1, '{"zone'),
    ToolCallEnd(1, 1, False),
    ChoiceFinished(0, "tool_calls"),
    ChoiceFinished(1, "length"),
    TOOLS_COMPLETED,
]
TOOL_CHOICES = (
    CollectedChoice("Let me look.", tool_calls=(CALL,)),
    CollectedChoice("", tool_calls=(
        ToolCall("call_" + "b" * 24, "get_time", "{}"),
        ToolCall("call_" + "c" * 24, "get_time", '{"zone', complete=False),
    )),
)  # fmt: skip


def test_chat_answer_carries_tool_calls_and_null_content_without_text() -> None:
    output = ChatFormat("chatcmpl-1", 100, "m", None)
    answer = Collected(Admitted({}), TOOL_CHOICES, TOOLS_COMPLETED)
    body = output.answer(answer).model_dump(mode="json")
    assert [(c["message"], c["finish_reason"]) for c in body["choices"]] == [
        ({"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": CALL.id, "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]}, "tool_calls"),
        ({"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_" + "b" * 24, "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}},
            {"id": "call_" + "c" * 24, "type": "function",
             "function": {"name": "get_time", "arguments": '{"zone'}},
        ]}, "length"),
    ]  # fmt: skip
    # The SDK reads it as its own type.
    sdk = openai_types.ChatCompletion.model_validate(body)
    assert sdk.choices[0].message.tool_calls is not None
    # Without calls, there is no tool_calls member.
    plain = output.answer(collected(*CHOICES)).model_dump(mode="json")
    assert "tool_calls" not in plain["choices"][0]["message"]


def test_streamed_tool_calls_have_openais_delta_shape_and_reassemble() -> None:
    output = ChatFormat("chatcmpl-1", 100, "m", None)
    chunks = [chunk for event in TOOL_EVENTS for chunk in rendered(output, event)]
    deltas = [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in chunks]
    assert deltas[:5] == [
        (0, {"role": "assistant", "content": ""}),
        (0, {"content": "Let me look."}),
        (0, {"tool_calls": [{"index": 0, "id": CALL.id, "type": "function",
                             "function": {"name": "get_weather", "arguments": ""}}]}),
        (0, {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        (0, {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    ]  # fmt: skip
    # Reassembled as the SDK's stream helpers do: by choice, then by call index.
    calls: dict[tuple[int, int], dict[str, str]] = {}
    for chunk in chunks:
        sdk = openai_types.ChatCompletionChunk.model_validate(chunk)
        choice = sdk.choices[0]
        for piece in choice.delta.tool_calls or ():
            call = calls.setdefault((choice.index, piece.index), {"arguments": ""})
            if piece.id:
                call["id"] = piece.id
            assert piece.function is not None
            if piece.function.name:
                call["name"] = piece.function.name
            call["arguments"] += piece.function.arguments or ""
    assert calls == {
        (index, number): {"id": call.id, "name": call.name, "arguments": call.arguments}
        for index, choice in enumerate(TOOL_CHOICES)
        for number, call in enumerate(choice.tool_calls)
    }
    finishes = [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks]
    assert finishes[-2:] == [(0, "tool_calls"), (1, "length")]
