"""The bundled prompt set and the max_tokens distributions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from loadtest.prompt_set import PromptSet, TokenDistribution


def test_bundled_prompts_have_varied_lengths() -> None:
    prompts = PromptSet.load().prompts
    words = sorted(len(p.split()) for p in prompts)
    assert len(prompts) >= 20
    assert words[0] <= 10
    assert words[-1] >= 150
    assert len(set(prompts)) == len(prompts)


@pytest.mark.parametrize(
    "content", [[], {"prompts": []}, {"prompts": ["ok", ""]}, {"prompts": "text"}]
)
def test_bad_prompt_files_are_refused(tmp_path: Path, content: object) -> None:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="prompts"):
        PromptSet.load(path)


def test_pick_draws_from_the_set() -> None:
    prompts = PromptSet(("a", "b", "c"))
    rng = random.Random(1)
    assert {prompts.pick(rng) for _ in range(200)} == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fixed:64", {64}),
        ("uniform:3:6", {3, 4, 5, 6}),
        ("choice:16,128", {16, 128}),
    ],
)
def test_distributions_sample_their_values(spec: str, expected: set[int]) -> None:
    dist = TokenDistribution.parse(spec)
    rng = random.Random(7)
    assert {dist.sample(rng) for _ in range(500)} == expected
    assert str(dist) == spec


def test_mean() -> None:
    assert TokenDistribution.parse("uniform:32:128").mean == 80
    assert TokenDistribution.parse("choice:10,20,60").mean == 30


@pytest.mark.parametrize(
    "spec",
    ["", "fixed", "fixed:0", "fixed:x", "uniform:5", "uniform:9:3", "choice:", "normal:1:2"],
)
def test_bad_specs_name_the_spec(spec: str) -> None:
    with pytest.raises(ValueError, match="max_tokens spec"):
        TokenDistribution.parse(spec)
