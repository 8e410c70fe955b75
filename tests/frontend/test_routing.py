"""Prefix routing: stable ranks per key, the load bound, keys from prompts and chats."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from frontend.routing import Decision, PrefixRouting, choose, rank
from frontend.validation import ChatMessage, ValidatedRequest

URLS = [f"10.0.0.{i}:8001" for i in range(1, 5)]


@dataclass
class Endpoint:
    url: str
    in_flight: int = 0


def prompt(text: str) -> ValidatedRequest:
    return ValidatedRequest(text, 8)


def test_rank_is_a_stable_order_of_all_endpoints() -> None:
    order = rank(b"key", URLS)
    assert sorted(order) == sorted(URLS)
    assert rank(b"key", list(reversed(URLS))) == order


def test_removing_an_endpoint_moves_only_its_keys() -> None:
    keys = [f"prefix {i}".encode() for i in range(200)]
    before = {k: rank(k, URLS)[0] for k in keys}
    after = {k: rank(k, URLS[1:])[0] for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == URLS[0]}
    assert len({before[k] for k in keys}) == len(URLS)  # every endpoint takes some keys


def test_the_key_is_the_first_characters() -> None:
    routing = PrefixRouting(chars=16)
    shared = "You are a helpful assistant. "
    assert routing.key(prompt(shared + "Question one?")) == routing.key(prompt(shared + "Two?"))
    assert routing.key(prompt("short")) == b"short"
    assert routing.key(prompt("another short")) != routing.key(prompt("short"))
    assert PrefixRouting(chars=0).key(prompt(shared)) is None


def test_chat_keys_follow_roles_and_contents_in_order() -> None:
    routing = PrefixRouting(chars=64)

    def chat(*messages: tuple[str, str]) -> ValidatedRequest:
        turns = tuple(ChatMessage(r, c) for r, c in messages)
        return ValidatedRequest("", 8, messages=turns)

    system = ("system", "Answer in JSON. " * 8)
    assert routing.key(chat(system, ("user", "a"))) == routing.key(chat(system, ("user", "b")))
    assert routing.key(chat(("user", "x"), ("user", "y"))) != routing.key(chat(("user", "xy")))
    assert routing.key(chat(("user", "x"))) != routing.key(prompt("x"))


def test_choose_takes_the_first_in_rank_within_the_bound() -> None:
    endpoints = [Endpoint(u) for u in URLS]
    first, second = rank(b"hot", URLS)[:2]
    by_url = {e.url: e for e in endpoints}
    assert choose(b"hot", endpoints, 1.5) == (by_url[first], Decision.AFFINITY)
    # bound = ceil(1.5 x (3 + 1) / 4) = 2: the first is at 3, so the next in rank.
    by_url[first].in_flight = 3
    assert choose(b"hot", endpoints, 1.5) == (by_url[second], Decision.OVERFLOW)
    by_url[first].in_flight = 1  # bound ceil(1.5 x 2 / 4) = 1: 1 + 1 > 1
    assert choose(b"hot", endpoints, 1.5)[0] is by_url[second]
    assert choose(b"hot", endpoints, 4.0) == (by_url[first], Decision.AFFINITY)


def test_one_hot_prefix_spreads_no_further_than_the_bound() -> None:
    endpoints = [Endpoint(u) for u in URLS]
    for _ in range(40):
        chosen, _decision = choose(b"hot", endpoints, 1.25)
        chosen.in_flight += 1
    loads = sorted(e.in_flight for e in endpoints)
    assert sum(loads) == 40
    assert max(loads) <= 13  # ceil(1.25 x 40 / 4)


@pytest.mark.parametrize(("chars", "factor"), [(-1, 1.5), (10, 0.9)])
def test_bad_settings_are_refused(chars: int, factor: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        PrefixRouting(chars, factor)
