"""The seed policy pi_1 (core.scoring.seed_policy): D0 never scores itself, training stops at a plateau
of held-out accuracy and keeps the best weights, and a LoRA pi_1 with a bf16 frozen base.

Tiny worlds (the first demo rows, a few optimiser steps) keep every test to seconds.
"""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_scoring import demo_rows, open_workspace, table_of

import core.scoring.seed_policy
import core.scoring.seed_report
from core.models.load import load_causal_lm, load_tokenizer
from core.models.logprobs import encode_pairs, pair_logprobs
from core.scoring.config import ScoringConfig, ScoringError
from core.scoring.run import score
from core.scoring.seed_policy import Plateau, SeedPolicy, _folds, fold_of, plateau_reached
from core.training.trainer import TrainConfig, train


def tiny_seed_config(demo_models, **overrides) -> ScoringConfig:
    settings = {"reward_model": str(demo_models.reward), "reference_model": str(demo_models.policy),
                "device": "cpu", "sources": ("implicit",), "seed_lr": 1e-3, "seed_batch_size": 8,
                "seed_per_device_batch_size": 8, "seed_steps": 6, "seed_patience": 2, "seed_eval_pairs": 16,
                **overrides}
    return ScoringConfig(**settings)


def implicit_margins(policy, reference, tokenizer, pairs) -> np.ndarray:
    """(log pi_1 - log pi_0) of chosen minus that of rejected, computed here from scratch."""
    chosen, rejected = encode_pairs(tokenizer, *([p[side] for p in pairs] for side in ("prompt", "chosen", "rejected")),
                                    conversational=True, max_length=1024)
    (pc, pr), (rc, rr) = (pair_logprobs(model, chosen, rejected) for model in (policy, reference))
    return (pc.logprob_sum - rc.logprob_sum) - (pr.logprob_sum - rr.logprob_sum)


def test_doctests():
    assert doctest.testmod(core.scoring.seed_policy).failed == 0
    assert doctest.testmod(core.scoring.seed_report).failed == 0


def test_exclude_refuses_a_d0_that_leaves_no_pair_to_score():
    ids = [f"{i * 2654435761 % 2**64:016x}" for i in range(50)]
    with pytest.raises(ScoringError, match="excluding D0 leaves no pair"):
        _folds(ids, ScoringConfig(seed_split="exclude"))  # at least 64 pairs in D0: all 50
    folds, halves = _folds(ids, ScoringConfig()), fold_of(ids, 0)
    for k, fold in enumerate(folds):  # cross-fit: all of fold k trains, the other fold is held out
        assert (halves[fold.train] == k).all() and len(fold.train) == (halves == k).sum()
        assert (halves[fold.held_out] == 1 - k).all()


def test_folds_come_from_the_pair_id_so_appended_rows_keep_theirs():
    ids = [f"{i * 2654435761 % 2**64:016x}" for i in range(2000)]
    folds = fold_of(ids, seed=0)
    assert set(folds.tolist()) == {0, 1} and 0.45 < folds.mean() < 0.55
    assert (fold_of(ids[:700], seed=0) == folds[:700]).all()
    assert (fold_of(ids, seed=5) != folds).any()


def test_plateau_rule_waits_for_patience_after_the_best():
    assert not plateau_reached([0.5, 0.6], patience=2)
    assert not plateau_reached([0.5, 0.6, 0.6], patience=2)  # an equal score is no new best, yet only one
    assert plateau_reached([0.5, 0.6, 0.6, 0.55], patience=2)
    assert not plateau_reached([0.5, 0.6, 0.6, 0.61], patience=2)


def test_plateau_callback_stops_and_puts_the_best_weights_back():
    """Scripted accuracies 0.6, 0.8, 0.7, 0.7: stop at the 4th evaluation, weights of the 2nd."""
    model = torch.nn.Linear(2, 1)
    accuracies = iter([0.6, 0.8, 0.7, 0.7])
    plateau = Plateau((None, None), every=1, patience=2, batch_tokens=1)
    plateau._log_ratio_margins = lambda m: np.zeros(10)
    plateau._evaluate = lambda m: next(accuracies)
    callback = plateau()
    state, control = SimpleNamespace(global_step=0, max_steps=100), SimpleNamespace(should_training_stop=False)
    callback.on_train_begin(None, state, control, model=model)
    weights = []
    for step in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(float(step))
        weights.append(model.weight.detach().clone())
        state.global_step = step
        callback.on_step_end(None, state, control, model=model)
        assert control.should_training_stop == (step == 4)
    callback.on_train_end(None, state, control, model=model)
    assert plateau.best == (2, 0.8) and plateau.start_accuracy == 0.5
    assert torch.equal(model.weight, weights[1])


def test_cross_fit_scores_every_pair_with_the_pi_1_that_did_not_train_on_it(demo_models, tmp_path):
    rows = demo_rows(48)
    workspace, dataset = open_workspace(tmp_path, rows)
    config = tiny_seed_config(demo_models)
    report = score(dataset, workspace, config)
    seed = report.seed_policy
    assert seed["trained_now"] and seed["split"] == "cross-fit" and len(seed["folds"]) == 2
    for fold in seed["folds"]:
        assert 0 <= fold["held_out_accuracy"] <= 1 and 1 <= fold["best_step"] <= fold["steps"] <= 6
    policy = SeedPolicy.read(Path(seed["path"]))
    ids = dataset.pairs["pair_id"].to_pylist()
    folds = fold_of(ids, config.seed)
    for k, fold in enumerate(policy.record["folds"]):
        assert all(folds[ids.index(pid)] == k for pid in fold["train_pair_ids"])  # D0_k lies in fold k
    stored = table_of(workspace, "implicit", ids)["margin"]
    assert np.isfinite(stored).all()
    pi_0 = load_causal_lm(demo_models.policy, device="cpu", dtype=torch.float32)
    tokenizer = load_tokenizer(str(demo_models.policy))
    pairs = dataset.pairs.to_pylist()
    for k, path in enumerate(policy.models):
        scored_by_k = np.flatnonzero(folds == 1 - k)
        expected = implicit_margins(load_causal_lm(path, device="cpu", dtype=torch.float32), pi_0, tokenizer,
                                    [pairs[i] for i in scored_by_k])
        np.testing.assert_allclose(stored[scored_by_k], expected, atol=1e-4)
    assert report.implicit_external_spearman is None  # external was not scored
    again = score(dataset, workspace, config)
    assert not again.seed_policy["trained_now"] and again.sources["implicit"].reused == len(ids)


def test_exclude_leaves_d0_without_an_implicit_margin(demo_models, tmp_path):
    from core.selection.selector import SelectionParams, select

    workspace, dataset = open_workspace(tmp_path, demo_rows(80))
    config = tiny_seed_config(demo_models, seed_split="exclude", sources=("external", "implicit"))
    report = score(dataset, workspace, config)
    assert report.seed_policy["split"] == "exclude" and report.seed_policy["excluded_pairs"] == 64
    ids = dataset.pairs["pair_id"].to_pylist()
    implicit = table_of(workspace, "implicit", ids)
    excluded = implicit["seed_set"] == 1
    assert excluded.sum() == 64 and np.isnan(implicit["margin"][excluded]).all()
    assert np.isfinite(implicit["margin"][~excluded]).all()
    assert report.implicit_external_spearman is not None and -1 <= report.implicit_external_spearman <= 1
    margins = {"implicit": implicit["margin"], "external": table_of(workspace, "external", ids)["margin"]}
    selection = select(margins, SelectionParams(mode="dm-mul", budget=10, sources=("external", "implicit")))
    assert not excluded[selection.indices].any()


def test_seed_lora_is_scored_unmerged_and_equals_the_merged_model_in_fp32(demo_models, tmp_path):
    workspace, dataset = open_workspace(tmp_path, demo_rows(40))
    config = tiny_seed_config(demo_models, seed_lora=True, seed_lora_r=4, seed_steps=3, seed_lr=5e-3)
    report = score(dataset, workspace, config)
    assert report.seed_policy["lora"]
    policy = SeedPolicy.read(Path(report.seed_policy["path"]))
    assert all((path / "adapter_config.json").is_file() for path in policy.models)
    ids = dataset.pairs["pair_id"].to_pylist()
    stored = table_of(workspace, "implicit", ids)["margin"]
    assert np.abs(stored).max() > 1e-3  # the adapters moved pi_1 away from pi_0
    pi_0 = load_causal_lm(demo_models.policy, device="cpu", dtype=torch.float32)
    tokenizer = load_tokenizer(str(demo_models.policy))
    folds, pairs = fold_of(ids, config.seed), dataset.pairs.to_pylist()
    for k, path in enumerate(policy.models):
        merged = load_causal_lm(path, device="cpu", dtype=torch.float32)  # core.models.load merges an adapter
        rows = np.flatnonzero(folds == 1 - k)
        np.testing.assert_allclose(stored[rows], implicit_margins(merged, pi_0, tokenizer, [pairs[i] for i in rows]),
                                   atol=1e-4)


@pytest.mark.parametrize("lora", [True, False])
def test_frozen_weights_train_against_a_bf16_copy(demo_models, tmp_path, lora):
    """frozen_dtype=bfloat16 on CPU: the LoRA base (or the reference) is bf16, the trained weights fp32."""
    import core.training.trainer as training

    seen = {}
    build = training._build_trainer

    def spy(config, pairs, checkpoints):
        trainer = build(config, pairs, checkpoints)
        seen["trained"] = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
        frozen = trainer.ref_model.parameters() if trainer.ref_model is not None else \
            (p for p in trainer.model.parameters() if not p.requires_grad)
        seen["frozen"] = {p.dtype for p in frozen}
        return trainer

    training._build_trainer = spy
    try:
        config = TrainConfig(model=str(demo_models.policy), lora=lora, lora_r=4, lora_alpha=8, max_steps=2,
                             batch_size=4, per_device_batch_size=4, frozen_dtype="bfloat16", save_steps=10**9,
                             gradient_checkpointing=False, lr=1e-3)
        pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in demo_rows(8)]
        result = train(config, pairs, tmp_path / "run", metrics_sink=lambda record: None)
    finally:
        training._build_trainer = build
    assert seen["trained"] == {torch.float32} and seen["frozen"] == {torch.bfloat16}
    assert result.steps == 2 and all(np.isfinite(r["loss"]) for r in result.metrics)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["config"]["frozen_dtype"] == "bfloat16"


def test_score_command_prints_pi_1_quality(demo_models, tmp_path, capsys):
    from test_scoring import write_jsonl

    from dmtui.cli import main

    data = write_jsonl(tmp_path / "pairs.jsonl", demo_rows(40))
    code = main(["score", str(data), "--workspace", str(tmp_path / "ws"), "--sources", "external,implicit",
                 "--reward-model", str(demo_models.reward), "--reference-model", str(demo_models.policy),
                 "--device", "cpu", "--seed-steps", "2", "--seed-lr", "1e-3", "--seed-device-batch", "32"])
    out = capsys.readouterr().out
    assert code == 0
    assert "pi_1: cross-fit seed DPO, trained now on" in out and "held-out accuracy" in out
    assert "implicit vs external Spearman" in out
