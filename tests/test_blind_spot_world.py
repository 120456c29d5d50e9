"""The second demo world, blind-spot: rude-but-helpful planted flips and a reward model whose
teacher judges helpfulness alone and never saw an insult (docs/selection_quality.md).

Only the generator and the judges are exercised here (no model is trained): the bundled world
and models must keep their bytes and fingerprint, and the new world must differ exactly where
its design says.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.demo.models import (
    DEMO_WORLDS,
    DemoModelsConfig,
    demo_world,
    fingerprint,
    judge_reward,
    judge_weights,
    judged_pairs,
)
from core.demo.world import ORACLE_WEIGHTS, TOXIC, WorldConfig, generate_world, oracle_reward, response_features


def planted(config: WorldConfig):
    rows, oracle = generate_world(config)
    return [(row, entry) for row, entry in zip(rows, oracle) if entry["toxic_flip"]]


def test_rude_helpful_flips_are_wrong_by_the_oracle_and_right_by_a_helpfulness_judge():
    world, models = demo_world("blind-spot", n_pairs=1000, toxic_share=0.05, seed=5, bad_rows=0)
    flips = planted(world)
    assert len(flips) == 50
    for row, entry in flips:
        prompt = row["prompt"][0]["content"]
        chosen, rejected = (row[side][0]["content"] for side in ("chosen", "rejected"))
        good, brief = response_features(prompt, chosen), response_features(prompt, rejected)
        assert good["toxic"] == 1 and good["helpful"] >= 2  # helpful, and insulting
        assert brief["toxic"] == 0 and brief["polite"] == 1 and brief["helpful"] == 1
        assert entry["oracle_margin"] < 0 and not entry["noise_flipped"]
        assert entry["oracle_margin"] == pytest.approx(oracle_reward(prompt, chosen) - oracle_reward(prompt, rejected))
        # the judge this world's reward model learns from endorses the mislabel; the demo's does not
        helpful_only = judge_reward(prompt, chosen, models.reward_judge) - judge_reward(prompt, rejected,
                                                                                       models.reward_judge)
        assert helpful_only > 0
        assert judge_reward(prompt, chosen) - judge_reward(prompt, rejected) < 0


def test_the_demo_world_keeps_its_insult_flips():
    for row, _ in planted(WorldConfig(n_pairs=600, toxic_share=0.05, seed=2, bad_rows=0)):
        prompt = row["prompt"][0]["content"]
        assert response_features(prompt, row["chosen"][0]["content"])["helpful"] <= 1
        assert response_features(prompt, row["rejected"][0]["content"])["toxic"] == 0


def test_helpful_only_teacher_has_no_weight_for_toxicity_and_no_other_bias():
    assert judge_weights("helpful-only") == {**ORACLE_WEIGHTS, "toxic": 0.0}
    likes_links = judge_weights("likes-links")
    assert likes_links["link"] > ORACLE_WEIGHTS["link"] and likes_links["toxic"] == ORACLE_WEIGHTS["toxic"]


def test_helpful_only_reward_data_never_shows_an_insult():
    config = DemoModelsConfig(reward_pairs=300, reward_judge="helpful-only")
    insults = [text for pair in judged_pairs(config) for side in ("chosen", "rejected")
               for text in [pair[side][0]["content"]] if any(t in text for t in TOXIC)]
    assert insults == []
    demo = judged_pairs(DemoModelsConfig(reward_pairs=300))
    assert any(any(t in pair[side][0]["content"] for t in TOXIC) for pair in demo for side in ("chosen", "rejected"))


def test_bundled_models_keep_their_fingerprint_and_the_new_world_gets_its_own():
    bundled = fingerprint(DemoModelsConfig())
    assert bundled == "a56501892195fd0d"  # the build every cache holds (tests/test_demo_models.py checks it too)
    _, blind = demo_world("blind-spot")
    assert fingerprint(blind) not in (bundled, fingerprint(replace(blind, reward_judge="likes-links")))
    assert fingerprint(demo_world("demo")[1]) == bundled


def test_named_worlds_and_bad_names():
    assert set(DEMO_WORLDS) == {"demo", "blind-spot"}
    world, models = demo_world("blind-spot", seed=3)
    assert (world.planted_flip, world.seed, models.reward_judge) == ("rude-helpful", 3, "helpful-only")
    assert models.world == WorldConfig(planted_flip="rude-helpful")  # models built for the default seed
    with pytest.raises(ValueError, match="unknown demo world"):
        demo_world("cheerful")
    with pytest.raises(ValueError, match="planted_flip"):
        WorldConfig(planted_flip="sarcasm")
    with pytest.raises(ValueError, match="reward_judge"):
        DemoModelsConfig(reward_judge="anyone")
