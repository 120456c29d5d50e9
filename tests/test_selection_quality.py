"""The metric functions of bench/selection_quality.py on hand-made arrays with known answers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import selection_quality as sq

from core.selection.selector import MODES, SINGLE_SOURCE_MODES


def test_label_correct_is_neither_noise_nor_toxic_flip():
    correct = sq.label_correct([False, True, False, True], [False, False, True, True])
    assert correct.tolist() == [True, False, False, False]


def test_label_precision_counts_correct_labels_among_the_selected():
    correct = [True, False, False, True, True]
    assert sq.label_precision([0, 1, 3], correct) == pytest.approx(2 / 3)
    assert sq.label_precision([1, 2], correct) == 0.0
    assert sq.label_precision(np.array([4, 0]), correct) == 1.0
    assert math.isnan(sq.label_precision([], correct))


def test_mean_oracle_margin_of_the_selected():
    margin = [2.0, -1.0, 0.5, 4.0]
    assert sq.mean_oracle_margin([0, 3], margin) == pytest.approx(3.0)
    assert sq.mean_oracle_margin([1, 2], margin) == pytest.approx(-0.25)
    assert math.isnan(sq.mean_oracle_margin([], margin))


def test_bot_region_is_the_lowest_share_of_finite_margins():
    margin = np.array([5.0, -1.0, 3.0, np.nan, -2.0, 0.0, 1.0, 2.0, 4.0, 6.0, 7.0])
    # 10 finite margins, share 0.2 -> the 2 lowest: -2.0 (index 4) and -1.0 (index 1); NaN never in.
    assert np.flatnonzero(sq.bot_region(margin, 0.2)).tolist() == [1, 4]
    # share 0.25 of 10 = 2.5 rounds half up to 3: adds 0.0 (index 5)
    assert np.flatnonzero(sq.bot_region(margin, 0.25)).tolist() == [1, 4, 5]
    assert not sq.bot_region(margin, 0.01).any()  # 0.1 pairs rounds to none


def test_bot_region_ties_go_to_the_lower_index():
    assert np.flatnonzero(sq.bot_region([1.0, 0.0, 0.0, 0.0, 5.0], 0.4)).tolist() == [1, 2]


def test_bot_region_catch_is_the_share_of_targets_inside_the_region():
    margin = np.arange(20, dtype=float)  # share 0.25 of 20 -> the region is indices 0..4
    toxic = np.zeros(20, dtype=bool)
    toxic[[0, 3, 10, 19]] = True
    assert sq.bot_region_catch(margin, toxic, 0.25) == pytest.approx(0.5)
    assert sq.bot_region_catch(-margin, toxic, 0.25) == pytest.approx(0.25)  # now 15..19: only 19
    assert math.isnan(sq.bot_region_catch(margin, np.zeros(20, dtype=bool), 0.25))


def test_median_rank_is_where_a_score_puts_the_targets():
    margin = np.arange(11, dtype=float)
    target = np.zeros(11, dtype=bool)
    target[[0, 1, 2]] = True
    assert sq.median_rank(margin, target) == pytest.approx(0.1)
    assert sq.median_rank(-margin, target) == pytest.approx(0.9)
    margin[1] = np.nan  # NaN margins are left out of the ranks and the targets
    assert sq.median_rank(margin, target) == pytest.approx(1 / 18)  # ranks 0 and 1/9 of ten finite margins
    assert math.isnan(sq.median_rank(margin, np.zeros(11, dtype=bool)))


def test_mean_std_uses_sample_std_and_skips_nan():
    mean, std = sq.mean_std([1.0, 2.0, 3.0, float("nan")])
    assert mean == pytest.approx(2.0) and std == pytest.approx(1.0)
    assert sq.mean_std([4.0]) == (4.0, 0.0)
    assert all(math.isnan(v) for v in sq.mean_std([float("nan")]))


def test_the_strategy_list_covers_every_mode_and_source():
    modes = {s.mode for s in sq.STRATEGIES}
    assert modes == set(MODES)
    for source in sq.SINGLE_SOURCES:
        assert {s.mode for s in sq.STRATEGIES if s.source == source} == set(SINGLE_SOURCE_MODES)
    assert len({s.name for s in sq.STRATEGIES}) == len(sq.STRATEGIES)
    without_ifd = sq.strategies(with_ifd=False)
    assert all("ifd" not in s.sources_needed for s in without_ifd)
    assert {s.mode for s in without_ifd} == set(MODES) - {"low-gap"}


def test_align_oracle_follows_the_loaded_order_and_refuses_missing_pairs():
    oracle = [
        {"pair_id": "a", "oracle_margin": 1.0, "noise_flipped": False, "toxic_flip": False},
        {"pair_id": "b", "oracle_margin": -2.0, "noise_flipped": True, "toxic_flip": False},
    ]
    aligned = sq.align_oracle(["b", "a"], oracle)
    assert aligned["oracle_margin"].tolist() == [-2.0, 1.0]
    assert aligned["noise_flipped"].tolist() == [True, False]
    with pytest.raises(ValueError):
        sq.align_oracle(["a", "c"], oracle)


def test_evaluate_world_on_a_synthetic_world_with_known_answers():
    rng = np.random.default_rng(0)
    n = 400
    oracle_margin = rng.normal(1.0, 2.0, n)
    toxic = np.zeros(n, dtype=bool)
    toxic[rng.choice(n, 12, replace=False)] = True
    oracle_margin[toxic] = -6.0 - rng.random(12)  # the planted flips are the most negative pairs
    teacher_margin = oracle_margin + 2.0  # a teacher that likes every chosen response a little more
    oracle = {"oracle_margin": oracle_margin, "noise_flipped": (oracle_margin < 0) & ~toxic, "toxic_flip": toxic,
              "bias_only": sq.bias_only(oracle_margin, teacher_margin)}
    # external IS the oracle margin; implicit is pure noise
    margins = {"external": oracle_margin.copy(), "implicit": rng.normal(0, 1, n), "ifd": rng.normal(0, 0.1, n)}
    result = sq.evaluate_world(margins, oracle, None, sq.STRATEGIES, 0.1, seed=0)
    rows = result["strategies"]
    assert set(rows) == {s.name for s in sq.STRATEGIES}
    assert all(row["selected"] == 40 for name, row in rows.items() if "MID" not in name and name != "Low-Gap")
    ceiling = result["reference"]["Oracle TOP (ceiling)"]
    assert ceiling["precision"] == 1.0
    # TOP of the oracle itself, after a 1% outlier trim: precision 1 and close to the ceiling
    assert rows["External TOP"]["precision"] == 1.0
    assert rows["External TOP"]["oracle_margin"] < ceiling["oracle_margin"]
    assert rows["External BOT"]["precision"] == 0.0
    assert result["bot_toxic_catch"]["external"] == 1.0  # 20 lowest of 400 hold all 12 flips
    assert result["bot10_toxic_catch"]["external"] == 1.0
    assert 0 < result["toxic_median_rank"]["external"] < 12 / 399  # the flips are (about) the 12 lowest
    assert 0.2 < result["toxic_median_rank"]["implicit"] < 0.8  # pure noise puts them anywhere
    assert result["spearman"]["external"] == pytest.approx(1.0)
    assert abs(result["spearman"]["implicit"]) < 0.2
    assert result["reference"]["All pairs"]["precision"] == pytest.approx(1 - np.mean(oracle_margin < 0))
    assert rows["External TOP"]["bias_share"] == 0.0  # correct labels are never chosen only for the bias
    wrong_but_liked = (oracle_margin < 0) & (oracle_margin > -2.0)
    assert result["reference"]["All pairs"]["bias_share"] == pytest.approx(wrong_but_liked.mean())
    folds = [{"train_pairs": 200, "held_out_accuracy": 0.7, "best_step": 10, "steps": 14}] * 2
    world = {**result, "seed": 0, "noise": 1.0, "scoring_seconds": 0.0, "bias_only": int(wrong_but_liked.sum()),
             "seed_policy": {"folds": folds, "train_seconds": 1.0}, "implicit_external_spearman": 0.1}
    table = sq.markdown_tables([world], sq.STRATEGIES)
    assert "| **DM-MUL** |" in table and "Oracle TOP (ceiling)" in table and "chosen only because" in table
    goals = sq.goals_report([world])
    assert "implicit Spearman with the oracle >= 0.6: " in goals and "NOT reached" in goals


def test_teacher_margins_follow_the_judge_of_the_world():
    prompt = [{"role": "user", "content": "how do I bake bread ?"}]
    pair = {"prompt": prompt, "chosen": [{"role": "assistant", "content": "See www.example.com for more."}],
            "rejected": [{"role": "assistant", "content": "It depends."}]}
    rude = {"prompt": prompt, "chosen": [{"role": "assistant", "content":
                                          "Measure the flour and water first. You are hopeless at this."}],
            "rejected": [{"role": "assistant", "content": "It depends."}]}
    links, blind = sq.teacher_margins([pair, rude], "likes-links"), sq.teacher_margins([pair, rude], "helpful-only")
    assert links[0] == pytest.approx(-0.4 + 0.8 + 0.2) and blind[0] == pytest.approx(-0.4 + 0.2)
    assert links[1] == pytest.approx(1.0 - 3.0 + 0.2) and blind[1] == pytest.approx(1.0 + 0.2)
    assert sq.bias_only([-0.4 + 0.2, 1.0 - 3.0 + 0.2], blind).tolist() == [False, True]
