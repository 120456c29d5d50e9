"""Iterative DPO-DM (core.online.iteration, `dmtui iterate`): one tiny round, resume after a kill, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from unittest.mock import patch

import pytest

from core.demo.oracle import OracleJudge, online_prompts
from core.generation.backends import resolve_backend
from core.online import iteration
from core.online.iteration import IterateConfig, IterationError, iterate

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO = {"prompts": online_prompts, "judge": OracleJudge()}
"""What `dmtui iterate` gives a run without a prompts file: the demo world's prompts and oracle."""


def tiny(demo_models, **overrides) -> IterateConfig:
    settings = {"policy": str(demo_models.policy), "reward_model": str(demo_models.reward), "rounds": 1,
                "prompts_per_round": 8, "responses_per_prompt": 3, "max_new_tokens": 24, "keep_fraction": 0.25,
                "lr": 1e-3, "batch_size": 2, "per_device_batch_size": 2, "max_steps": 3,
                "gradient_checkpointing": False, "generation_backend": "transformers"}
    return IterateConfig(**{**settings, **overrides})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def round_loads() -> Counter:
    """The models `one_round` loaded through core.models.load, counted by (stage, kind, path)."""
    return Counter()


@pytest.fixture(scope="module")
def one_round(demo_models, tmp_path_factory, round_loads):
    from core.models import load as models

    out = tmp_path_factory.mktemp("iterate") / "run"
    stages, running = [], [""]

    def counting(kind, load):
        def counted(path, **kwargs):
            round_loads.update([(running[0], kind, str(path))])
            return load(path, **kwargs)
        return counted

    def named(stage, run):
        def stage_run(*args):
            running[0] = stage
            return run(*args)
        return stage_run

    stage_functions = {stage: named(stage, run) for stage, run in iteration._STAGE_FUNCTIONS.items()}
    with patch.object(models, "load_causal_lm", counting("causal", models.load_causal_lm)), \
            patch.object(models, "load_reward_model", counting("reward", models.load_reward_model)), \
            patch.dict(iteration._STAGE_FUNCTIONS, stage_functions):
        report = iterate(tiny(demo_models), out, **DEMO, progress=lambda p: stages.append(p.stage))
    return out, report, stages


def test_a_round_writes_every_file(one_round):
    out, report, stages = one_round
    round_dir = out / "round-0"
    for name in ("generation.json", "generations.jsonl", "rewards.jsonl", "pairs.jsonl", "manifest.json",
                 "metrics.jsonl", "run.json"):
        assert (round_dir / name).is_file(), name
    assert (round_dir / "final" / "model.safetensors").is_file()
    assert len(read_jsonl(round_dir / "generations.jsonl")) == 8 * 3
    state = json.loads((out / "state.json").read_text())
    assert state["rounds"][0]["done"] == ["generate", "score", "select", "train"]
    assert report.final_policy == str(round_dir / "final") and state["rounds"][0]["policy_out"] == "round-0/final"
    manifest = json.loads((round_dir / "manifest.json").read_text())
    assert manifest["generation"]["backend"] == report.rounds[0].generation_backend == "transformers"
    assert manifest["training"]["final"] == "round-0/final"
    assert {"r0 generate", "r0 reward", "r0 train"} <= set(stages)


def test_the_prompts_and_the_oracle_are_the_ones_the_caller_gave(one_round):
    """Without a prompts file the round samples the given source's prompts, and the judge's reward is recorded."""
    from core.demo.world import oracle_reward

    out, report, _ = one_round
    generations = read_jsonl(out / "round-0" / "generations.jsonl")
    rewards = read_jsonl(out / "round-0" / "rewards.jsonl")
    assert [g["prompt"] for g in generations[::3]] == online_prompts(8, 0, 0)
    assert [r["oracle_reward"] for r in rewards] == [oracle_reward(g["prompt"], g["response"]) for g in generations]
    assert report.rounds[0].mean_oracle_reward == pytest.approx(sum(r["oracle_reward"] for r in rewards) / 24)


def test_without_a_prompts_file_or_source_nothing_is_written(demo_models, tmp_path):
    with pytest.raises(IterationError, match="no prompts to sample from"):
        iterate(tiny(demo_models), tmp_path / "run", judge=OracleJudge())
    assert not (tmp_path / "run").exists()


def test_each_model_is_loaded_once_in_a_round(one_round, round_loads, demo_models):
    """Round 0's policy is pi_0: one load serves generation and both sides of the implicit margin;
    training then loads its own trainable copy and frozen reference."""
    policy, reward = str(demo_models.policy), str(demo_models.reward)
    before_training = Counter({key[1:]: n for key, n in round_loads.items() if key[0] != "train"})
    assert before_training == {("causal", policy): 1, ("reward", reward): 1}
    assert round_loads[("train", "causal", policy)] == 2


def test_selection_keeps_the_fraction_and_chosen_beats_rejected(one_round):
    out, report, _ = one_round
    pairs = read_jsonl(out / "round-0" / "pairs.jsonl")
    manifest = json.loads((out / "round-0" / "manifest.json").read_text())
    assert pairs and manifest["counts"]["pairs"] == len(pairs)
    assert manifest["counts"]["pairs"] + manifest["counts"]["tied_prompts"] == 8
    kept = [p for p in pairs if p["selected"]]
    assert len(kept) == int(0.25 * len(pairs) + 0.5) == report.rounds[0].selected
    assert manifest["selected_pair_ids"] == [p["pair_id"] for p in kept]
    assert all(p["reward_chosen"] > p["reward_rejected"] for p in pairs)
    assert all(p["reward_margin"] == pytest.approx(p["reward_chosen"] - p["reward_rejected"]) for p in pairs)
    # round 0's policy is pi_0: implicit margins are 0 and DM-MUL ranks by the reward margin alone
    assert all(p["implicit_margin"] == 0 for p in pairs) and manifest["selection"]["sources"] == ["external"]
    assert min(p["reward_margin"] for p in kept) >= max(p["reward_margin"] for p in pairs if not p["selected"])
    assert manifest["selection"]["m2"]["external"] > manifest["selection"]["m1"]
    assert manifest["training"]["pairs"] == len(kept) and manifest["training"]["steps"] == 3


def test_the_policy_weights_changed(one_round, demo_models):
    out, _, _ = one_round
    before, after = weights(demo_models.policy), weights(out / "round-0" / "final")
    assert any(not (before[name] == after[name]).all() for name in before)


def test_a_finished_folder_is_refused_without_resume(one_round, demo_models):
    out, _, _ = one_round
    with pytest.raises(IterationError, match="already holds"):
        iterate(tiny(demo_models), out, **DEMO)
    with pytest.raises(IterationError, match="other settings: keep_fraction"):
        iterate(tiny(demo_models, keep_fraction=0.5), out, **DEMO, resume=True)


def test_resume_after_a_kill_does_not_generate_again(demo_models, tmp_path, monkeypatch):
    out = tmp_path / "run"

    kill_at(monkeypatch, "score")
    with pytest.raises(KeyboardInterrupt):
        iterate(tiny(demo_models, max_steps=1), out, **DEMO)
    generations = out / "round-0" / "generations.jsonl"
    content, mtime = generations.read_bytes(), generations.stat().st_mtime_ns
    assert json.loads((out / "state.json").read_text())["rounds"][0]["done"] == ["generate"]
    assert not (out / "round-0" / "rewards.jsonl").exists()

    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(iteration, "generate_responses", lambda *a, **k: calls.append(a))
    report = iterate(tiny(demo_models, max_steps=1), out, **DEMO, resume=True)
    assert calls == []
    assert generations.read_bytes() == content and generations.stat().st_mtime_ns == mtime
    assert report.rounds[0].resumed_stages == ["generate"] and report.rounds[0].train_steps == 1
    assert json.loads((out / "state.json").read_text())["rounds"][0]["done"] == ["generate", "score", "select",
                                                                                 "train"]


def kill_at(monkeypatch, stage: str) -> None:
    def killed(*args, **kwargs):
        raise KeyboardInterrupt(f"killed before {stage}")

    monkeypatch.setitem(iteration._STAGE_FUNCTIONS, stage, killed)


def test_a_run_moved_between_stages_resumes_in_its_new_folder(one_round, demo_models, tmp_path, monkeypatch):
    """Round 1 stops before select, the folder moves, and the resumed run matches one never stopped or moved.

    Round 1's select and train read round 0's policy, which only the new folder holds.
    """
    reference = tmp_path / "reference"
    shutil.copytree(one_round[0], reference)
    iterate(tiny(demo_models, rounds=2), reference, **DEMO, resume=True)

    before = tmp_path / "before"
    shutil.copytree(one_round[0], before)
    kill_at(monkeypatch, "select")
    with pytest.raises(KeyboardInterrupt):
        iterate(tiny(demo_models, rounds=2), before, **DEMO, resume=True)
    monkeypatch.undo()
    assert json.loads((before / "state.json").read_text())["rounds"][1]["done"] == ["generate", "score"]
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(before, moved)
    assert not before.exists()

    report = iterate(tiny(demo_models, rounds=2), moved, **DEMO, resume=True)
    assert [r.resumed_stages for r in report.rounds] == [["generate", "score", "select", "train"],
                                                         ["generate", "score"]]
    assert report.rounds[1].policy_in == str(moved / "round-0" / "final")
    assert report.final_policy == str(moved / "round-1" / "final")
    state = json.loads((moved / "state.json").read_text())
    assert [(r["policy_in"], r["policy_out"]) for r in state["rounds"]] == [
        (str(demo_models.policy), "round-0/final"), ("round-0/final", "round-1/final")]
    for name in ("generations.jsonl", "rewards.jsonl", "pairs.jsonl"):
        assert (moved / "round-1" / name).read_bytes() == (reference / "round-1" / name).read_bytes(), name
    assert any(p["implicit_margin"] != 0 for p in read_jsonl(moved / "round-1" / "pairs.jsonl"))
    manifest, expected = (json.loads((run / "round-1" / "manifest.json").read_text()) for run in (moved, reference))
    assert manifest["selected_pair_ids"] == expected["selected_pair_ids"] and manifest["policy_in"] == "round-0/final"
    trained, expected_weights = weights(moved / "round-1" / "final"), weights(reference / "round-1" / "final")
    assert all((trained[name] == expected_weights[name]).all() for name in expected_weights)


def test_a_version_1_state_with_absolute_paths_resumes_where_the_folder_is_now(one_round, demo_models, tmp_path):
    out = tmp_path / "copied"
    shutil.copytree(one_round[0], out)
    state = json.loads((out / "state.json").read_text())
    state["version"] = 1
    state["config"].pop("generation_backend")  # version 1 had no backend setting
    gone = "/machine/that/is/gone/run/round-0/final"
    state["rounds"][0]["policy_out"] = gone
    (out / "state.json").write_text(json.dumps(state))

    report = iterate(tiny(demo_models, generation_backend="auto"), out, **DEMO, resume=True)  # the backend may change
    assert report.final_policy == str(out / "round-0" / "final")
    assert report.rounds[0].resumed_stages == ["generate", "score", "select", "train"]
    state = json.loads((out / "state.json").read_text())
    assert state["version"] == 2 and state["rounds"][0]["policy_out"] == "round-0/final"
    assert state["config"]["generation_backend"] == "auto"


def test_keep_fraction_one_is_plain_iterative_dpo_and_bad_settings_are_refused(demo_models):
    assert IterateConfig(keep_fraction=1.0).keep_fraction == 1.0
    for bad, message in (({"keep_fraction": 0.0}, "keep fraction"), ({"responses_per_prompt": 1}, "N >= 2"),
                         ({"reward_model": None}, "no reward model"),
                         ({"generation_backend": "tgi"}, "unknown generation backend")):
        with pytest.raises(IterationError, match=message):
            tiny(demo_models, **bad).validate()


def run_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DMTUI_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "dmtui", "iterate", *args], capture_output=True, text=True,
                          check=False, env=env, cwd=REPO_ROOT, timeout=120)


def test_cli_json_on_the_demo_models(demo_models, demo_cache_dir, tmp_path):
    process = run_cli(["--demo", "--rounds", "1", "--prompts", "4", "--responses", "2", "--keep", "1.0",
                       "--max-new-tokens", "16", "--batch-size", "2", "--per-device-batch-size", "2",
                       "--max-steps", "1", "--out", str(tmp_path / "run"), "--json"], demo_cache_dir)
    assert process.returncode == 0, process.stderr
    report = json.loads(process.stdout)
    (round_0,) = report["rounds"]
    assert round_0["selected"] == round_0["pairs"] and round_0["train_steps"] == 1
    assert round_0["mean_oracle_reward"] is not None  # no prompts file: the demo oracle judged too
    assert round_0["generation_backend"] == resolve_backend("auto")
    assert Path(report["final_policy"]).is_dir()


@pytest.mark.slow
def test_cli_resume_continues_a_run_folder_that_was_moved(demo_models, demo_cache_dir, tmp_path):
    settings = ["--demo", "--prompts", "4", "--responses", "2", "--keep", "1.0", "--max-new-tokens", "16",
                "--batch-size", "2", "--per-device-batch-size", "2", "--max-steps", "1", "--json"]
    first = run_cli([*settings, "--rounds", "1", "--out", str(tmp_path / "run")], demo_cache_dir)
    assert first.returncode == 0, first.stderr
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "run", moved)
    process = run_cli([*settings, "--rounds", "2", "--out", str(moved), "--resume"], demo_cache_dir)
    assert process.returncode == 0, process.stderr
    report = json.loads(process.stdout)
    assert [r["resumed_stages"] for r in report["rounds"]] == [["generate", "score", "select", "train"], []]
    assert report["rounds"][1]["policy_in"] == str(moved / "round-0" / "final")
    assert report["final_policy"] == str(moved / "round-1" / "final") and Path(report["final_policy"]).is_dir()


def test_cli_errors_are_one_clear_message(demo_cache_dir, tmp_path):
    process = run_cli(["--out", str(tmp_path / "run")], demo_cache_dir)
    assert process.returncode == 1 and "Traceback" not in process.stderr
    assert "needs a policy" in process.stderr and "--demo" in process.stderr
    process = run_cli(["--demo", "--keep", "2", "--out", str(tmp_path / "run")], demo_cache_dir)
    assert process.returncode == 1 and "Traceback" not in process.stderr and "keep fraction" in process.stderr
