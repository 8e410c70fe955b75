"""Mapping a request onto `tensorrt_llm.SamplingParams`, refusing what the release ignores.

The PyTorch backend samples with `TorchSampler`, which accepts every `SamplingParams`
field but in the releases NVIDIA has shipped applies only some of them: a request whose
setting would be silently dropped is refused by name (`invalid_argument`) instead. Which
release added what is kept in `FEATURES`; the README lists the same.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llm_stack.engine.base import GenerationRequest, InvalidRequestError, SamplingParams
from llm_stack.guided_decoding import Guide, GuideType


@dataclass(frozen=True)
class Feature:
    """A sampling feature of the PyTorch backend and the first release that applies it."""

    name: str
    since: str | None  # None: no release NVIDIA has shipped applies it
    change: str  # the TensorRT-LLM change that added it


# The releases are TensorRT-LLM's; "since" None means the change is on its main branch only
# (the newest release, 1.2.1, predates it), so the pinned Triton image cannot apply it.
PENALTIES = Feature("repetition, presence and frequency penalties", None, "PR #16485")
BAD_WORDS = Feature("bad words", None, "PR #16052")
SEED = Feature("per-request seeds", None, "PR #17172")
# Before it the sampler compared min_tokens with prompt + output tokens: with a prompt as
# long as min_tokens the end token was never held back. Merged on the main branch in March
# 2026, after the 1.2 branch; that 1.2.1 carries it could not be checked.
MIN_TOKENS = Feature("min_tokens counted over output tokens only", None, "PR #12166")
# PR #8951 was merged in November 2025, after the 1.1 branch and before 1.2.0's release; its
# presence in 1.2.0 follows from those dates, not from reading the 1.2.0 tag.
SEVERAL_SEQUENCES = Feature("several sequences per request (n > 1)", "1.2.0", "PR #8951")
FEATURES = (PENALTIES, BAD_WORDS, SEED, MIN_TOKENS, SEVERAL_SEQUENCES)


def release_key(version: str) -> tuple[int, int, int, int]:
    """Sortable form of a TensorRT-LLM version: 1.2.0rc6 < 1.2.0 < 1.2.1."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)(.*)", version)
    if match is None:
        raise ValueError(f"not a TensorRT-LLM version: {version!r}")
    major, minor, patch, rest = match.groups()
    final = 0 if re.match(r"\.?(rc|dev|a|b)", rest) else 1
    return int(major), int(minor), int(patch), final


@dataclass(frozen=True)
class Capabilities:
    """Which of `FEATURES` the running TensorRT-LLM release applies."""

    version: str
    applied: frozenset[str]

    @classmethod
    def of(cls, version: str) -> Capabilities:
        key = release_key(version)
        applied = frozenset(
            f.name for f in FEATURES if f.since is not None and key >= release_key(f.since)
        )
        return cls(version, applied)

    def applies(self, feature: Feature) -> bool:
        return feature.name in self.applied

    def require(self, feature: Feature, field: str, value: object) -> None:
        """Refuse a request that needs `feature` where this release would ignore it."""
        if self.applies(feature):
            return
        since = (
            f"added in TensorRT-LLM {feature.since} by {feature.change}"
            if feature.since
            else f"its fix, {feature.change}, is in no release this engine knows to have it"
        )
        raise InvalidRequestError(
            f"{field}: TensorRT-LLM {self.version} does not apply {feature.name} on the "
            f"PyTorch backend ({since}); leave {field} unset",
            field=field,
            value=str(value),
        )


def to_sampling_kwargs(request: GenerationRequest, capabilities: Capabilities) -> dict[str, Any]:
    """Keyword arguments for `tensorrt_llm.SamplingParams`; raises InvalidRequestError.

    Multi-token stop sequences are left out: the engine matches them on the stream
    (`StopSequenceFilter`), since the LLM API takes them only as strings. A client's
    `end_id` goes in as a stop token, not as `end_id`: the LLM API adds the model's own
    end-of-generation tokens (generation_config.json) only when `end_id` is unset.
    """
    sampling = request.sampling
    kwargs: dict[str, Any] = {"max_tokens": sampling.max_tokens, "detokenize": False}
    if sampling.greedy:
        # top_k=1 is greedy in every LLM API version.
        kwargs["top_k"] = 1
    else:
        # top_p is always set: with top_k, top_p and temperature all unset, the runtime
        # decodes greedily.
        kwargs["temperature"] = sampling.temperature
        kwargs["top_p"] = sampling.top_p
        if sampling.top_k > 0:
            kwargs["top_k"] = sampling.top_k
        if sampling.seed is not None:
            capabilities.require(SEED, "seed", sampling.seed)
            kwargs["seed"] = sampling.seed
        elif capabilities.applies(SEED):
            # Unset, the runtime seeds every request alike: equal prompts, equal samples.
            kwargs["seed"] = secrets.randbits(64)
    # Neutral values stay unset, so the runtime skips the penalty kernels.
    for name, value, neutral in (
        ("repetition_penalty", sampling.repetition_penalty, 1.0),
        ("presence_penalty", sampling.presence_penalty, 0.0),
        ("frequency_penalty", sampling.frequency_penalty, 0.0),
    ):
        if value != neutral:
            capabilities.require(PENALTIES, name, value)
            kwargs[name] = value
    if sampling.min_tokens > 0:
        capabilities.require(MIN_TOKENS, "min_tokens", sampling.min_tokens)
        kwargs["min_tokens"] = sampling.min_tokens
    if engine_sequences(sampling) > 1:
        capabilities.require(SEVERAL_SEQUENCES, "num_return_sequences", sampling.n)
        kwargs["n"] = sampling.n  # best_of unset: the LLM API makes it n
    if sampling.logprobs is not None:
        # 0 turns them off in some versions; the one alternative is dropped.
        kwargs["logprobs"] = max(sampling.logprobs, 1)
    stop_ids = _single_tokens(request.stop_sequences)
    if request.end_id is not None:
        stop_ids = sorted({*stop_ids, request.end_id})
    if stop_ids:
        kwargs["stop_token_ids"] = stop_ids
    if request.bad_sequences:
        capabilities.require(BAD_WORDS, "bad_words", len(request.bad_sequences))
        long_bad = [seq for seq in request.bad_sequences if len(seq) > 1]
        if long_bad:
            raise InvalidRequestError(
                f"bad_words: the TensorRT-LLM engine bans single tokens only; "
                f"{len(long_bad)} bad word(s) encode to several tokens (the longest to "
                f"{max(len(seq) for seq in long_bad)})",
                field="bad_words",
            )
        kwargs["bad_token_ids"] = _single_tokens(request.bad_sequences)
    return kwargs


def engine_sequences(sampling: SamplingParams) -> int:
    """Sequences TensorRT-LLM generates for a request: greedy ones would all be the same
    (and the LLM API refuses several), so a greedy request gets one, streamed n times."""
    return 1 if sampling.greedy else sampling.n


def guided_decoding_kwargs(guide: Guide) -> dict[str, Any]:
    """Keyword arguments for `tensorrt_llm.sampling_params.GuidedDecodingParams`."""
    if guide.type is GuideType.JSON:
        return {"json_object": True}
    if guide.type is GuideType.STRUCTURAL_TAG:
        return {"structural_tag": guide.schema}
    return {"json": guide.schema}


def _single_tokens(sequences: Iterable[Sequence[int]]) -> list[int]:
    return sorted({seq[0] for seq in sequences if len(seq) == 1})
