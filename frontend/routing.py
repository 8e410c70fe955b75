"""Prefix-aware endpoint choice: requests that share a prompt prefix go to one Triton.

Each engine keeps the KV cache of prompt prefixes it has computed, so a request does
best on the endpoint that served its prefix before. The frontend does not tokenize: the
first `chars` characters of the prompt (or of the chat messages, as preprocessing will
render them in order) stand for the first cache blocks. Endpoints are ranked for that key
by rendezvous hashing (the same order on every replica, and only the keys of a removed
endpoint move), and the first one whose load stays within `load_factor` times the mean
takes the request (consistent hashing with bounded loads), so one hot prefix cannot
overload one endpoint: beyond the bound, requests overflow to the next in rank.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

from frontend.validation import ValidatedRequest


class Decision(StrEnum):
    """How an endpoint was chosen (a metric label)."""

    AFFINITY = "affinity"  # the endpoint that ranks first for the prefix
    OVERFLOW = "overflow"  # a later one in rank: the first was over the load bound
    LEAST_LOADED = "least_loaded"  # no prefix key: the endpoint with the fewest in flight


class Candidate(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def in_flight(self) -> int: ...


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True, slots=True)
class PrefixRouting:
    """`chars` 0 turns prefix routing off; `load_factor` >= 1 bounds each endpoint's share."""

    chars: int = 512
    load_factor: float = 1.5

    def __post_init__(self) -> None:
        if self.chars < 0:
            raise ValueError(f"chars must be >= 0, got {self.chars}")
        if not self.load_factor >= 1.0:
            raise ValueError(f"load_factor must be >= 1, got {self.load_factor}")

    def key(self, request: ValidatedRequest) -> bytes | None:
        """The routing key of a request, or None when prefix routing is off."""
        if self.chars == 0:
            return None
        if request.messages:
            # Role and content in order, as the chat template lays them out.
            text = "".join(f"\x1e{m.role}\x1f{m.content}" for m in request.messages)
        else:
            text = request.prompt
        return text[: self.chars].encode("utf-8")


def rank(key: bytes, urls: Sequence[str]) -> list[str]:
    """The endpoints in order of preference for `key` (rendezvous hashing)."""

    def score(url: str) -> bytes:
        return hashlib.blake2b(url.encode() + b"\x00" + key, digest_size=8).digest()

    return sorted(urls, key=score, reverse=True)


def choose(key: bytes, candidates: Sequence[C], load_factor: float) -> tuple[C, Decision]:
    """The first endpoint in rank for `key` whose load, with this request, stays in bound.

    The bound is ceil(load_factor x (calls in flight + 1) / endpoints), so some endpoint
    is always within it.
    """
    by_url = {c.url: c for c in candidates}
    total = sum(c.in_flight for c in candidates) + 1
    bound = math.ceil(load_factor * total / len(candidates))
    order = rank(key, list(by_url))
    for position, url in enumerate(order):
        candidate = by_url[url]
        if candidate.in_flight + 1 <= bound:
            return candidate, Decision.AFFINITY if position == 0 else Decision.OVERFLOW
    return min(candidates, key=lambda c: c.in_flight), Decision.OVERFLOW  # unreachable
