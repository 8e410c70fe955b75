"""GenerationService over scripted engine chunks: n choices, usage, admission and budgets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest
from limits.aio.storage import MemoryStorage

from frontend.admission import ConcurrencyGate
from frontend.errors import TokenBudgetTooSmallError, TritonInternalError
from frontend.metrics import FrontendMetrics
from frontend.rate_limit import RateLimiter, estimate_prompt_tokens
from frontend.service import (
    Admitted,
    Caller,
    ChoiceFinished,
    Completed,
    GenerationEvent,
    GenerationRecord,
    GenerationService,
    TextDelta,
    ToolCallArguments,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from frontend.triton_client import EngineChunk, PoolConfig, TritonPool
from frontend.validation import ChatMessage, ToolUse, ValidatedRequest
from llm_stack.ensemble_contract import EnsembleTokenLogprob
from llm_stack.sampling_contract import SamplingInputs
from llm_stack.tool_calls import HERMES, FunctionTool, NamedTool, ToolChoice, tools_text

CALLER = Caller("anonymous", "ip:test")
PROMPT = "Name a city:"


def request(n: int = 1, max_tokens: int = 8, logprobs: int | None = None) -> ValidatedRequest:
    sampling = SamplingInputs(temperature=1.0, seed=7, num_return_sequences=n)
    return ValidatedRequest(PROMPT, max_tokens, sampling, stream=True, logprobs=logprobs)


def chunk(
    index: int,
    text: str,
    tokens: int,
    finish: str = "",
    logprobs: Sequence[EnsembleTokenLogprob] = (),
) -> EngineChunk:
    """A response of choice `index`: the prompt's counts (5 tokens, 2 cached), its own."""
    return EngineChunk(text, 5, tokens, 2, finish, "1", index, tuple(logprobs))


class ScriptedPool(TritonPool):
    """A pool whose calls answer the scripted chunks; the gate's state is noted meanwhile."""

    def __init__(self, chunks: Sequence[EngineChunk], gate: ConcurrencyGate) -> None:
        # The channel connects lazily: nothing listens there and nothing is called.
        super().__init__(["127.0.0.1:1"], PoolConfig("ensemble", 5.0, 1.0, 1.0, 1.0),
                         FrontendMetrics())  # fmt: skip
        self.chunks = chunks
        self.gate = gate
        self.in_flight_seen: list[int] = []

    async def generate(
        self, request: ValidatedRequest, request_id: str
    ) -> AsyncIterator[EngineChunk]:
        for item in self.chunks:
            self.in_flight_seen.append(self.gate.in_flight)
            yield item


async def run(
    chunks: Sequence[EngineChunk],
    generation: ValidatedRequest,
    *,
    tpm: int = 0,
    record: GenerationRecord | None = None,
) -> tuple[list[GenerationEvent], ScriptedPool]:
    gate = ConcurrencyGate(8)
    pool = ScriptedPool(chunks, gate)
    limiter = RateLimiter(MemoryStorage(), rpm=0, tpm=tpm)
    service = GenerationService(pool, gate, limiter, FrontendMetrics())
    try:
        events = [e async for e in service.generate(generation, CALLER, "req-1", record)]
        await service.drain(5.0)
    finally:
        await pool.close()
    assert gate.in_flight == 0
    return events, pool


CITY = EnsembleTokenLogprob(b" Rome", -0.5, ((b" Rome", -0.5),))


async def test_choices_stream_side_by_side_and_end_one_by_one() -> None:
    chunks = [
        chunk(0, " Rome", 1, logprobs=[CITY]),
        chunk(1, " Oslo", 1),
        chunk(1, ".", 2, "stop"),
        chunk(0, "", 2),  # a token that holds no text yet (and no logprobs asked): no event
        chunk(0, " and", 3, "length"),
    ]
    record = GenerationRecord("anonymous")
    events, pool = await run(chunks, request(n=2), record=record)
    assert events == [
        Admitted({}),
        TextDelta(" Rome", 0, (CITY,)),
        TextDelta(" Oslo", 1),
        TextDelta(".", 1),
        ChoiceFinished(1, "stop"),
        TextDelta(" and", 0),
        ChoiceFinished(0, "length"),
        # The prompt is counted once; completion tokens are summed over the choices.
        Completed(("length", "stop"), Usage(5, 3 + 2, 2), "1"),
    ]
    assert (record.prompt_tokens, record.completion_tokens) == (5, 5)
    assert record.outcome == "length"  # one choice ran out of tokens
    # The gate holds a slot for each of the request's n sequences.
    assert pool.in_flight_seen == [2] * len(chunks)


async def test_a_token_without_text_still_brings_its_logprobs() -> None:
    half = EnsembleTokenLogprob(b"\xe2\x80", -0.25)
    events, _ = await run([chunk(0, "", 1, logprobs=[half]), chunk(0, "", 1, "stop")],
                          request(logprobs=0))  # fmt: skip
    assert events[1:] == [
        TextDelta("", 0, (half,)),
        ChoiceFinished(0, "stop"),
        Completed(("stop",), Usage(5, 1, 2), "1"),
    ]


async def test_one_choice_keeps_its_single_finish_reason() -> None:
    events, _ = await run([chunk(0, " Paris", 1), chunk(0, ".", 2, "stop")], request())
    completed = events[-1]
    assert isinstance(completed, Completed)
    assert (completed.finish_reason, completed.finish_reasons) == ("stop", ("stop",))


@pytest.mark.parametrize(
    "chunks",
    [
        # The call ends while choice 1 still runs.
        [chunk(0, "a", 1, "stop"), chunk(1, "b", 1)],
        # A choice the request did not ask for.
        [chunk(2, "c", 1, "stop")],
        # Text of a choice after its end.
        [chunk(0, "a", 1, "stop"), chunk(0, "b", 2), chunk(1, "c", 1, "stop")],
        # A finish reason the frontend does not know.
        [chunk(0, "a", 1, "cancelled"), chunk(1, "c", 1, "stop")],
    ],
)
async def test_a_call_that_breaks_the_contract_is_a_model_error(
    chunks: list[EngineChunk],
) -> None:
    with pytest.raises(TritonInternalError):
        await run(chunks, request(n=2))


@pytest.mark.parametrize(("n", "fits"), [(3, True), (4, False)])
async def test_the_token_reservation_counts_every_choice(n: int, fits: bool) -> None:
    reserve = estimate_prompt_tokens(PROMPT) + n * 8
    budget = estimate_prompt_tokens(PROMPT) + 3 * 8
    chunks = [chunk(i, "x", 1, "stop") for i in range(n)]
    if fits:
        events, _ = await run(chunks, request(n=n), tpm=budget)
        assert isinstance(events[-1], Completed)
        return
    with pytest.raises(TokenBudgetTooSmallError) as caught:
        await run(chunks, request(n=n), tpm=budget)
    assert caught.value.value == reserve
    assert caught.value.limit == budget


# --- tool calls ---------------------------------------------------------------------------

WEATHER = FunctionTool(
    "get_weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def tool_request(n: int = 1, choice: ToolChoice = "auto") -> ValidatedRequest:
    sampling = SamplingInputs(temperature=1.0, seed=7, num_return_sequences=n)
    tools = ToolUse((WEATHER,), choice, True, HERMES)
    return ValidatedRequest("", 64, sampling, stream=True, tools=tools)


def split(text: str, *sizes: int) -> list[str]:
    pieces, at = [], 0
    for size in sizes:
        pieces.append(text[at : at + size])
        at += size
    return [*pieces, text[at:]]


CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize("choice", ["auto", "none"])
async def test_the_token_reservation_counts_the_tools_text(choice: ToolChoice) -> None:
    # The chat template writes the tools into the prompt, whatever the choice.
    generation = replace(
        tool_request(choice=choice), messages=(ChatMessage("user", PROMPT),), max_tokens=8
    )
    with_tools = estimate_prompt_tokens(f"{PROMPT}\n{tools_text([WEATHER])}") + 8
    assert with_tools > estimate_prompt_tokens(PROMPT) + 8 + 20
    chunks = [chunk(0, "x", 1, "stop")]
    events, _ = await run(chunks, generation, tpm=with_tools)
    assert isinstance(events[-1], Completed)
    with pytest.raises(TokenBudgetTooSmallError) as caught:
        await run(chunks, generation, tpm=with_tools - 1)
    assert caught.value.value == with_tools


async def test_tool_calls_become_call_events_per_choice() -> None:
    # Choice 0 writes text then a call, in pieces that cut the markup anywhere; choice 1
    # only text.
    pieces = split("Let me see. " + CALL_TEXT, 5, 9, 3, 20, 7, 30)
    chunks = [chunk(0, piece, i + 1) for i, piece in enumerate(pieces[:-1])]
    chunks += [chunk(1, "Sunny.", 1, "stop"), chunk(0, pieces[-1], len(pieces), "stop")]
    events, _ = await run(chunks, tool_request(n=2))
    by_choice = {
        index: [e for e in events if getattr(e, "index", None) == index] for index in (0, 1)
    }
    start = next(e for e in by_choice[0] if isinstance(e, ToolCallStart))
    assert start.id.startswith("call_")
    assert len(start.id) == 29
    assert start.name == "get_weather"
    assert start.call == 0
    text = "".join(e.text for e in by_choice[0] if isinstance(e, TextDelta))
    arguments = "".join(e.text for e in by_choice[0] if isinstance(e, ToolCallArguments))
    assert text == "Let me see."
    assert arguments == '{"city": "Paris"}'
    assert [e for e in by_choice[0] if isinstance(e, ToolCallEnd)] == [ToolCallEnd(0, 0, True)]
    assert by_choice[0][-1] == ChoiceFinished(0, "tool_calls")
    # The call's events come in order: start, arguments, end.
    kinds = [type(e) for e in by_choice[0] if not isinstance(e, TextDelta)]
    assert kinds[0] is ToolCallStart
    assert kinds[-2:] == [ToolCallEnd, ChoiceFinished]
    assert by_choice[1] == [TextDelta("Sunny.", 1), ChoiceFinished(1, "stop")]
    assert events[-1] == Completed(("tool_calls", "stop"), Usage(5, len(pieces) + 1, 2), "1")


async def test_a_call_cut_by_max_tokens_ends_incomplete_with_length() -> None:
    chunks = [chunk(0, CALL_TEXT[:60], 10, "length")]
    events, _ = await run(chunks, tool_request(choice="required"))
    assert [type(e) for e in events[1:]] == [
        ToolCallStart, ToolCallArguments, ToolCallEnd, ChoiceFinished, Completed,
    ]  # fmt: skip
    assert events[3] == ToolCallEnd(0, 0, False)
    assert events[4] == ChoiceFinished(0, "length")


@pytest.mark.parametrize(
    ("choice", "text"), [("required", None), (NamedTool("get_weather"), None), ("auto", "<")]
)
async def test_where_only_calls_are_allowed_the_trigger_cut_short_is_no_text(
    choice: ToolChoice, text: str | None
) -> None:
    # One token of max_tokens: the start of the trigger.
    events, _ = await run([chunk(0, "<", 1, "length")], tool_request(choice=choice))
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ([] if text is None else [text])
    assert events[-2:] == [ChoiceFinished(0, "length"), Completed(("length",), Usage(5, 1, 2), "1")]


async def test_without_tools_or_with_tool_choice_none_the_text_is_as_generated() -> None:
    chunks = [chunk(0, CALL_TEXT, 3, "stop")]
    for generation in (request(), tool_request(choice="none")):
        events, _ = await run(chunks, generation)
        assert events[1:3] == [TextDelta(CALL_TEXT, 0), ChoiceFinished(0, "stop")]
