"""Streamed chunks rendered without a model per chunk are the bytes the models dump."""

from __future__ import annotations

import math

import pytest

from frontend.apis.generate.protocol import DeltaEvent
from frontend.apis.generate.routes import _renderer
from frontend.apis.openai.logprobs import CompletionLogprobsWriter, token_logprobs
from frontend.apis.openai.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    ChatLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    StreamOptions,
)
from frontend.apis.openai.rendering import ChatFormat, CompletionFormat
from frontend.service import ChoiceFinished, TextDelta
from frontend.sse import ChoicesFrame, sse
from llm_stack.ensemble_contract import EnsembleTokenLogprob

TEXTS = [
    "",
    " plain words",
    'quotes " and \\ backslashes / slashes',
    "controls \x00\x01\x1f\t\n\r\x7f",
    "separators \u2028\u2029 and \ufeff",
    "accents é, CJK 漢字, emoji 😀🏳️‍🌈",
    '</script><!-- "choices":[] -->',
]
# Numbers in every form a log-probability takes: small ones pydantic writes without an
# exponent, large ones with, and the bound for -inf.
LOGPROBS = (
    EnsembleTokenLogprob(b" a", -1.2e-05, ((b" a", -1.2e-05), (b" b", -13.75))),
    EnsembleTokenLogprob(b"\xe2\x80", -0.0, ((b"\xe2\x80", 0.0), (b"\\", -math.inf))),
    EnsembleTokenLogprob(b"\x99", -1e-300, ((b"\x99", -1e-300),)),
    EnsembleTokenLogprob(b'"', -123456.789, ()),
)
USAGE_OPTIONS = [None, StreamOptions(include_usage=False), StreamOptions(include_usage=True)]


def dump(chunk: CompletionResponse | ChatCompletionChunk, options: StreamOptions | None) -> bytes:
    """How the stream rendered a chunk with its model."""
    include_usage = options is not None and options.include_usage
    return sse(chunk.model_dump_json(exclude=None if include_usage else {"usage"}))


@pytest.mark.parametrize("options", USAGE_OPTIONS)
@pytest.mark.parametrize("logprobs", [False, True])
def test_completion_chunks_are_the_models_bytes(
    options: StreamOptions | None, logprobs: bool
) -> None:
    ident, model = "cmpl-x.1:2", 'm "quoted" é'
    output = CompletionFormat(ident, 1_800_000_000, model, options, logprobs=logprobs,
                              prompt_chars=7)  # fmt: skip
    writers = {index: CompletionLogprobsWriter(7) for index in (0, 3)}
    for index in (0, 3):
        for text in TEXTS:
            entries = LOGPROBS if logprobs else ()
            lp = (
                CompletionLogprobs.model_validate(writers[index].write(entries))
                if logprobs
                else None
            )
            choice = CompletionChoice(text=text, index=index, logprobs=lp, finish_reason=None)
            expected = dump(
                CompletionResponse(id=ident, created=1_800_000_000, model=model, choices=[choice]),
                options,
            )
            assert output.frames(TextDelta(text, index, entries)) == expected
        last = CompletionChoice(text="", index=index, finish_reason="length")
        expected = dump(
            CompletionResponse(id=ident, created=1_800_000_000, model=model, choices=[last]),
            options,
        )
        assert output.frames(ChoiceFinished(index, "length")) == expected


@pytest.mark.parametrize("options", USAGE_OPTIONS)
@pytest.mark.parametrize("logprobs", [False, True])
def test_chat_chunks_are_the_models_bytes(options: StreamOptions | None, logprobs: bool) -> None:
    ident, model = "chatcmpl-x", "gemma-3-270m"
    output = ChatFormat(ident, 5, model, options, logprobs=logprobs)

    def chunk(index: int, delta: ChatDelta, **fields: object) -> bytes:
        choice = ChatChunkChoice.model_validate({"index": index, "delta": delta, **fields})
        return dump(ChatCompletionChunk(id=ident, created=5, model=model, choices=[choice]),
                    options)  # fmt: skip

    for index in (0, 2):
        for position, text in enumerate(TEXTS):
            entries = LOGPROBS if logprobs else ()
            lp = ChatLogprobs(content=token_logprobs(entries)) if logprobs else None
            expected = chunk(index, ChatDelta(content=text), logprobs=lp)
            if position == 0:  # the choice's first chunk names the speaker first
                expected = chunk(index, ChatDelta(role="assistant", content="")) + expected
            assert output.frames(TextDelta(text, index, entries)) == expected
        expected = chunk(index, ChatDelta(), finish_reason="stop")
        assert output.frames(ChoiceFinished(index, "stop")) == expected


@pytest.mark.parametrize("logprobs", [False, True])
def test_generate_deltas_are_the_models_bytes(logprobs: bool) -> None:
    render = _renderer("req-1", logprobs)
    for text in TEXTS:
        entries = LOGPROBS if logprobs else ()
        event = DeltaEvent(text=text, logprobs=token_logprobs(entries) if logprobs else None)
        assert render(TextDelta(text, 0, entries)) == sse(event.model_dump_json(exclude_none=True))


def test_a_chunk_without_an_empty_choices_member_is_refused() -> None:
    with pytest.raises(ValueError, match="choices"):
        ChoicesFrame('{"id":"x","choices":[{"index":0}]}')
