"""n choices and token logprobs end to end: the official openai SDK, the real Triton.

Greedy choices of one prompt are equal; seeded sampled ones repeat call after call (the
engine seeds choice i with seed + i); streamed ones reassemble into the plain answer.
Log-probabilities are the engine's: with temperature 0 the sampled token is the
likeliest, so it heads its own list of alternatives.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionTokenLogprob

from frontend.app import create_app
from launcher.triton_server import TritonServer
from tests.frontend.apis.conftest import openai_sdk as sdk
from tests.frontend.conftest import ServedApp, serve, settings_for, sse_payloads

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
CHAT: Any = [{"role": "user", "content": "Name an animal."}]
PROMPT = "The capital of France is"
# An open prompt, whose sampled continuations part early (as the ensemble's own test).
OPEN_PROMPT = "My favourite animal is the"


@pytest.fixture
async def served(triton: TritonServer) -> AsyncIterator[ServedApp]:
    settings = settings_for(triton.grpc_url, max_tokens_limit=64, max_n=4)
    async with serve(create_app(settings)) as app:
        yield app


# --- n --------------------------------------------------------------------------------------


async def test_greedy_choices_are_equal_and_the_prompt_counts_once(served: ServedApp) -> None:
    client = sdk(served)
    # min_tokens: every choice has 8 tokens. The choices are compared with each other, not
    # with a call of n=1: a batch of another shape may round a near tie the other way.
    request: dict[str, Any] = {
        "model": MODEL, "messages": CHAT, "max_tokens": 8, "temperature": 0,
        "extra_body": {"min_tokens": 8},
    }  # fmt: skip
    one = await client.chat.completions.create(**request)
    three = await client.chat.completions.create(**request, n=3)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert len({c.message.content for c in three.choices}) == 1
    assert [c.finish_reason for c in three.choices] == ["length"] * 3
    assert one.usage is not None
    assert three.usage is not None
    assert three.usage.prompt_tokens == one.usage.prompt_tokens
    assert three.usage.completion_tokens == 3 * 8
    assert three.usage.total_tokens == one.usage.prompt_tokens + 3 * 8


async def seeded_texts(client: openai.AsyncOpenAI, **changes: Any) -> list[str]:
    completion = await client.completions.create(
        model=MODEL, prompt=OPEN_PROMPT, max_tokens=24, temperature=1, seed=3, n=3,
        extra_body={"min_tokens": 24}, **changes,
    )  # fmt: skip
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3 * 24
    return [c.text for c in completion.choices]


async def test_seeded_choices_repeat_and_differ(served: ServedApp) -> None:
    client = sdk(served)
    first = await seeded_texts(client)
    assert await seeded_texts(client) == first
    assert await seeded_texts(client, best_of=3) == first  # best_of equal to n: the same
    # Each choice has a seed of its own; 24 sampled tokens of an open prompt part ways.
    assert len(set(first)) == 3


async def test_streamed_choices_reassemble_into_the_plain_ones(served: ServedApp) -> None:
    client = sdk(served)
    request: dict[str, Any] = {
        "model": MODEL, "messages": CHAT, "max_tokens": 12, "temperature": 1, "seed": 11,
        "n": 3,
    }  # fmt: skip
    plain = await client.chat.completions.create(**request)
    stream = await client.chat.completions.create(
        **request, stream=True, stream_options={"include_usage": True}
    )
    *chunks, usage = [chunk async for chunk in stream]
    assert usage.choices == []
    assert usage.usage == plain.usage
    by_choice: dict[int, list[Any]] = defaultdict(list)
    for chunk in chunks:
        [choice] = chunk.choices  # one choice per chunk, named by its index
        by_choice[choice.index].append(choice)
    assert sorted(by_choice) == [0, 1, 2]
    for index, pieces in by_choice.items():
        first, *middle, last = pieces
        assert first.delta.role == "assistant"
        assert all(p.delta.role is None and p.finish_reason is None for p in middle)
        assert last.finish_reason == plain.choices[index].finish_reason
        text = "".join(p.delta.content or "" for p in pieces)
        assert text == plain.choices[index].message.content


async def test_completion_choices_stream_with_their_index(served: ServedApp) -> None:
    client = sdk(served)
    request: dict[str, Any] = {
        "model": MODEL, "prompt": OPEN_PROMPT, "max_tokens": 10, "temperature": 1, "seed": 5,
        "n": 2,
    }  # fmt: skip
    plain = await client.completions.create(**request)
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, str | None] = {}
    async for chunk in await client.completions.create(**request, stream=True):
        [choice] = chunk.choices
        assert choice.index not in finishes  # nothing of a choice after its last chunk
        texts[choice.index] += choice.text
        if choice.finish_reason is not None:
            finishes[choice.index] = choice.finish_reason
    assert dict(texts) == {c.index: c.text for c in plain.choices}
    assert finishes == {c.index: c.finish_reason for c in plain.choices}


# --- logprobs -------------------------------------------------------------------------------


def check_greedy_entry(entry: ChatCompletionTokenLogprob, alternatives: int) -> None:
    """The sampled token heads its alternatives, likeliest first, all log-probabilities."""
    top = entry.top_logprobs
    assert len(top) == alternatives
    assert top[0].token == entry.token
    assert top[0].bytes == entry.bytes
    assert top[0].logprob == pytest.approx(entry.logprob)
    values = [t.logprob for t in top]
    assert values == sorted(values, reverse=True)
    assert all(v <= 0.0 for v in [entry.logprob, *values])


async def test_chat_logprobs_with_the_likeliest_five(served: ServedApp) -> None:
    chat = await sdk(served).chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=10, temperature=0, logprobs=True, top_logprobs=5
    )
    [choice] = chat.choices
    assert choice.logprobs is not None
    content = choice.logprobs.content
    assert content is not None
    assert chat.usage is not None
    assert len(content) == chat.usage.completion_tokens
    for entry in content:
        check_greedy_entry(entry, 5)
        assert entry.bytes is not None
    # The tokens' bytes are the text's.
    joined = b"".join(bytes(entry.bytes or []) for entry in content)
    assert joined.decode("utf-8") == choice.message.content


async def test_logprobs_without_alternatives_and_not_asked_for(served: ServedApp) -> None:
    client = sdk(served)
    asked = await client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=4, temperature=0, logprobs=True
    )
    content = (asked.choices[0].logprobs and asked.choices[0].logprobs.content) or []
    assert len(content) >= 1
    assert all(entry.top_logprobs == [] for entry in content)
    plain = await client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=4, temperature=0
    )
    assert plain.choices[0].logprobs is None


async def test_streamed_logprobs_join_to_the_plain_ones(served: ServedApp) -> None:
    client = sdk(served)
    request: dict[str, Any] = {
        "model": MODEL, "messages": CHAT, "max_tokens": 12, "temperature": 0, "logprobs": True,
        "top_logprobs": 2, "n": 2,
    }  # fmt: skip
    plain = await client.chat.completions.create(**request)
    streamed: dict[int, list[ChatCompletionTokenLogprob]] = defaultdict(list)
    async for chunk in await client.chat.completions.create(**request, stream=True):
        [choice] = chunk.choices
        if choice.logprobs is not None:
            streamed[choice.index].extend(choice.logprobs.content or [])
    for choice in plain.choices:
        assert choice.logprobs is not None
        content = choice.logprobs.content or []
        assert len(content) >= 1
        # The same tokens; their figures to rounding, should a batch differ between calls.
        assert [e.token for e in streamed[choice.index]] == [e.token for e in content]
        assert [e.logprob for e in streamed[choice.index]] == pytest.approx(
            [e.logprob for e in content], abs=1e-3
        )


async def test_completion_logprobs_in_the_legacy_shape(served: ServedApp) -> None:
    completion = await sdk(served).completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3
    )
    [choice] = completion.choices
    logprobs = choice.logprobs
    assert logprobs is not None
    assert completion.usage is not None
    tokens = logprobs.tokens or []
    assert len(tokens) == completion.usage.completion_tokens
    assert len(logprobs.token_logprobs or []) == len(tokens)
    assert len(logprobs.top_logprobs or []) == len(tokens)
    assert "".join(tokens) == choice.text  # whole characters here: tokens are texts
    # Offsets count from the prompt's start, one token after another.
    offsets = [len(PROMPT)]
    for token in tokens[:-1]:
        offsets.append(offsets[-1] + len(token))
    assert logprobs.text_offset == offsets
    for token, value, top in zip(tokens, logprobs.token_logprobs or [], logprobs.top_logprobs or [],
                                 strict=True):  # fmt: skip
        # Greedy: the sampled token is the likeliest of its three, listed with its value.
        assert len(top) == 3
        assert max(top.values()) == pytest.approx(value) == pytest.approx(top[token])
        assert value <= 0.0


async def test_completion_logprobs_stream_with_continuing_offsets(served: ServedApp) -> None:
    client = sdk(served)
    request: dict[str, Any] = {
        "model": MODEL, "prompt": PROMPT, "max_tokens": 8, "temperature": 0, "logprobs": 1,
    }  # fmt: skip
    plain = await client.completions.create(**request)
    tokens: list[str] = []
    offsets: list[int] = []
    async for chunk in await client.completions.create(**request, stream=True):
        logprobs = chunk.choices[0].logprobs
        if logprobs is not None:
            tokens += logprobs.tokens or []
            offsets += logprobs.text_offset or []
    expected = plain.choices[0].logprobs
    assert expected is not None
    assert (tokens, offsets) == (expected.tokens, expected.text_offset)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "changes", "status", "param", "message"),
    [
        ("chat", {"n": 0}, 422, "n", "n 0 is outside 1..4"),
        ("chat", {"n": 5}, 422, "n", "n 5 is outside 1..4"),
        ("completions", {"n": 5}, 422, "n", "n 5 is outside 1..4"),
        ("chat", {"logprobs": True, "top_logprobs": 21}, 422, "top_logprobs",
         "top_logprobs 21 is outside 0..20"),
        ("chat", {"top_logprobs": 2}, 422, "top_logprobs",
         "top_logprobs 2 is only allowed with logprobs true"),
        ("completions", {"n": 2, "best_of": 3}, 400, "best_of",
         "best_of 3 is not supported: only best_of equal to n (2)"),
        ("completions", {"logprobs": 6}, 422, "logprobs", "logprobs 6 is outside 0..5"),
    ],
)  # fmt: skip
async def test_refusals_name_the_parameter(
    served: ServedApp,
    endpoint: str,
    changes: dict[str, Any],
    status: int,
    param: str,
    message: str,
) -> None:
    client = sdk(served)
    call: Awaitable[object]
    if endpoint == "completions":
        call = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, **changes)
    else:
        call = client.chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=2, **changes
        )
    with pytest.raises(openai.APIStatusError) as caught:
        await call
    assert caught.value.status_code == status
    code = "unsupported_parameter" if status == 400 else "invalid_request"
    assert caught.value.body == {
        "message": message, "type": "invalid_request_error", "param": param, "code": code,
    }  # fmt: skip


# --- /generate ------------------------------------------------------------------------------


async def test_generate_takes_logprobs_and_keeps_its_shape_without(served: ServedApp) -> None:
    request = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0.0}
    async with served.client() as client:
        plain = (await client.post("/generate", json=request)).json()
        asked = (await client.post("/generate", json={**request, "logprobs": 2})).json()
        streamed = await client.post("/generate", json={**request, "logprobs": 2, "stream": True})
        quiet = await client.post("/generate", json={**request, "stream": True})
    assert "logprobs" not in plain
    assert asked["text"] == plain["text"]
    entries = asked["logprobs"]
    assert len(entries) == asked["completion_tokens"]
    assert all(set(e) == {"token", "logprob", "bytes", "top_logprobs"} for e in entries)
    assert all(e["top_logprobs"][0]["token"] == e["token"] for e in entries)
    assert all(len(e["top_logprobs"]) == 2 for e in entries)
    assert b"".join(bytes(e["bytes"]) for e in entries).decode() == asked["text"]
    events = [json.loads(p) for p in sse_payloads(streamed.text)[:-1]]
    deltas = [e for e in events if e["type"] == "delta"]
    assert [entry for d in deltas for entry in d["logprobs"]] == entries
    quiet_events = [json.loads(p) for p in sse_payloads(quiet.text)[:-1]]
    assert all("logprobs" not in e for e in quiet_events)


async def test_generate_refuses_too_many_alternatives(served: ServedApp) -> None:
    async with served.client() as client:
        response = await client.post(
            "/generate", json={"prompt": PROMPT, "max_tokens": 2, "logprobs": 21}
        )
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["field"], error["message"]) == ("logprobs", "logprobs 21 is outside 0..20")
