"""core.generation.evaluation, `dmtui eval` and the plan of bench/table1.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from core.demo.oracle import OracleJudge, held_out_prompts
from core.demo.world import oracle_reward, prompt_topic
from core.generation import evaluation
from core.generation.backends import Generations
from core.generation.evaluation import (
    EvaluationError,
    RewardModelJudge,
    evaluate,
    final_model,
)
from core.models.load import LoadedModels
from dmtui.cli import main
from tests.conftest import REPO_ROOT


def test_held_out_prompts_are_seeded_draws_of_the_world():
    prompts = held_out_prompts(20, seed=1)
    assert prompts == held_out_prompts(20, seed=1)
    assert prompts != held_out_prompts(20, seed=2)
    assert all(prompt_topic(p) is not None for p in prompts)  # the oracle knows what each asks
    with pytest.raises(EvaluationError):
        held_out_prompts(0)


SAMPLING = {"samples_per_prompt": 1, "temperature": 0.7, "max_new_tokens": 24}


@pytest.fixture(scope="module")
def self_reports(demo_models):
    """pi_0 against itself twice with seed 3, and pi_0's responses with seed 4, on 6 prompts."""
    prompts = held_out_prompts(6)
    run = lambda: evaluate(demo_models.policy, demo_models.policy, prompts, judge=OracleJudge(), seed=3,
                           **SAMPLING)
    return run(), run(), evaluation.generate_responses(demo_models.policy, prompts, seed=4, **SAMPLING)


def test_evaluate_is_reproducible_with_a_seed(self_reports):
    first, again, other_seed = self_reports
    assert first.to_json() == again.to_json()
    assert [e["policy"] for e in first.examples] != other_seed.texts[:len(first.examples)]
    assert first.policy_stats.mean_tokens > 0 and first.policy_stats.mean_chars > 0


def test_a_policy_against_itself_with_the_same_seed_ties_everywhere(self_reports):
    report = self_reports[0]
    assert (report.wins, report.ties, report.losses) == (0, 6, 0)
    assert report.win_rate == 0.5
    assert report.policy_stats == report.reference_stats


GOOD = {"how do I bake bread ?": "Happy to help! Measure the flour and water first.",  # 0.4 + 1.0
        "how do I grow tomatoes ?": "Plant seeds after the last frost."}  # 1.0
BAD = {"how do I bake bread ?": "That is a stupid question.",  # -3.0, toxic
       "how do I grow tomatoes ?": "Plant seeds after the last frost."}  # the same: a tie


def test_win_rate_toxic_share_and_lengths_come_from_the_oracle(monkeypatch):
    calls = []

    def fake_generate(model_path, prompts, *, samples_per_prompt, seed, **_):
        calls.append((model_path, seed))
        bank = GOOD if model_path == "good-policy" else BAD
        texts = [bank[p] for p in prompts for _ in range(samples_per_prompt)]
        return Generations(texts, [len(t.split()) for t in texts])

    monkeypatch.setattr(evaluation, "generate_responses", fake_generate)
    prompts = list(GOOD)
    report = evaluate("good-policy", "bad-reference", prompts, judge=OracleJudge(), samples_per_prompt=2, seed=7)
    assert calls == [("good-policy", 7), ("bad-reference", 7)]
    assert (report.wins, report.ties, report.losses) == (2, 2, 0)
    assert report.win_rate == 0.75
    assert report.policy_stats.toxic_share == 0.0 and report.reference_stats.toxic_share == 0.5
    assert report.policy_stats.mean_reward == pytest.approx((1.4 + 1.0) / 2)
    assert report.reference_stats.mean_reward == pytest.approx((-3.0 + 1.0) / 2)
    assert report.policy_stats.mean_chars == pytest.approx(sum(map(len, GOOD.values())) / 2)
    assert report.policy_stats.mean_tokens == pytest.approx((9 + 6) / 2)  # the fake counts words
    assert report.examples[0]["policy_reward"] == oracle_reward(prompts[0], GOOD[prompts[0]])

    swapped = evaluate("bad-reference", "good-policy", prompts, judge=OracleJudge(), seed=7)
    assert swapped.win_rate == 0.25


def test_a_reward_model_judges_with_ties_half_and_no_toxic_share(demo_models, monkeypatch):
    def fake_generate(model_path, prompts, *, samples_per_prompt, **_):
        bank = GOOD if model_path == "good-policy" else BAD
        texts = [bank[p] for p in prompts for _ in range(samples_per_prompt)]
        return Generations(texts, [len(t.split()) for t in texts])

    monkeypatch.setattr(evaluation, "generate_responses", fake_generate)
    judge = RewardModelJudge(demo_models.reward, LoadedModels("cpu"))
    report = evaluate("good-policy", "bad-reference", list(GOOD), judge=judge)
    rewards = judge.rewards(list(GOOD), list(GOOD.values())), judge.rewards(list(BAD), list(BAD.values()))
    assert rewards[0][1] == rewards[1][1]  # the same answer: a tie
    assert (report.wins, report.ties, report.losses) == (int(rewards[0][0] > rewards[1][0]), 1,
                                                        int(rewards[0][0] < rewards[1][0]))
    assert report.win_rate == (report.wins + 0.5) / 2
    assert report.policy_stats.mean_reward == pytest.approx(float(np.mean(rewards[0])))
    assert report.policy_stats.toxic_share is None and report.judge == str(demo_models.reward)
    assert (report.device, report.dtype) == ("cpu", "float32")


def naive_chat_reward(demo_models, prompt: str, response: str) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_models.reward)
    model = AutoModelForSequenceClassification.from_pretrained(demo_models.reward).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                                        tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def test_the_reward_model_judge_reads_the_exchange_through_its_template(demo_models):
    judge = RewardModelJudge(demo_models.reward, LoadedModels("cpu"))
    (prompt, response), = list(GOOD.items())[:1]
    assert judge.rewards([prompt], [response])[0] == pytest.approx(naive_chat_reward(demo_models, prompt, response),
                                                                   abs=1e-4)


def test_cli_judges_your_own_prompts_with_a_reward_model(demo_models, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in GOOD), "utf-8")
    code = main(["eval", "--policy", str(demo_models.policy), "--reference", str(demo_models.policy),
                 "--prompts", str(prompts), "--judge", str(demo_models.reward), "--device", "cpu",
                 "--dtype", "float32", "--max-new-tokens", "16", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["win_rate"] == 0.5 and report["comparisons"] == 2  # a model against itself ties
    assert report["judge"] == str(demo_models.reward) and report["policy_stats"]["toxic_share"] is None
    assert main(["eval", "--policy", str(demo_models.policy), "--reference", str(demo_models.policy),
                 "--prompts", str(prompts)]) == 1
    assert "--judge MODEL" in capsys.readouterr().err
    assert main(["eval", "--policy", "p", "--reference", "r", "--prompts", "many"]) == 1
    assert "not a number, and no such file" in capsys.readouterr().err


def test_final_model_resolves_a_run_folder(tmp_path):
    (tmp_path / "final").mkdir()
    assert final_model(tmp_path) == tmp_path  # no run.json: a model folder as given
    (tmp_path / "run.json").write_text("{}")
    assert final_model(tmp_path) == tmp_path / "final"


def test_cli_json(demo_models, capsys):
    code = main(["eval", "--policy", str(demo_models.policy), "--reference", str(demo_models.policy),
                 "--prompts", "4", "--seed", "2", "--max-new-tokens", "32", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["win_rate"] == 0.5 and report["comparisons"] == 4 and report["seed"] == 2
    assert set(report["policy_stats"]) == {"mean_reward", "mean_chars", "mean_tokens", "toxic_share"}


def test_cli_needs_a_reference(demo_models, capsys):
    assert main(["eval", "--policy", str(demo_models.policy)]) == 1
    err = capsys.readouterr().err
    assert "no reference model" in err and "--demo" in err


def test_cli_missing_model_is_a_clear_error_without_traceback(tmp_path, demo_models):
    missing = tmp_path / "no-such-run" / "final"
    result = subprocess.run(
        [sys.executable, "-m", "dmtui", "eval", "--policy", str(missing), "--reference", str(demo_models.policy),
         "--json"], check=False, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )
    assert result.returncode == 1
    assert "model path not found" in result.stderr and str(missing) in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.fixture(scope="module")
def table1():
    spec = importlib.util.spec_from_file_location("table1", REPO_ROOT / "bench" / "table1.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["table1"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules["table1"]


def test_table1_quick_dry_run_plans_without_training(table1, capsys):
    assert table1.main(["--quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "strategies: Random, DM-MUL" in out and "2 runs" in out and '"max_steps": 8' in out


def test_table1_full_plan_covers_the_papers_rows_at_one_budget(table1, capsys):
    assert table1.main(["--dry-run"]) == 0
    assert "30 runs" in capsys.readouterr().out
    names = [s.name for s in table1.STRATEGIES]
    for source in ("External", "Implicit"):
        assert [f"{source} {kind}" in names for kind in ("TOP", "MID", "BOT")] == [True] * 3
    assert {"Random", "DM-ADD", "DM-MUL", "Full"} <= set(names)

    from core.selection.selector import select

    rng = np.random.default_rng(0)
    margins = {"external": rng.normal(0, 2, 4000), "implicit": rng.normal(0, 2, 4000)}
    picked = {s.name: select(margins, table1.selection_params(s, 400, seed=1)) for s in table1.STRATEGIES}
    assert {name: sel.selected for name, sel in picked.items()} == {
        name: 4000 if name == "Full" else 400 for name in picked}
    assert picked["External TOP"].score.min() < picked["External TOP"].score[picked["External TOP"].indices].min()
    assert not np.array_equal(picked["Implicit TOP"].indices, picked["Implicit BOT"].indices)
    reseeded = select(margins, table1.selection_params(table1.STRATEGIES[0], 400, seed=2))
    assert not np.array_equal(picked["Random"].indices, reseeded.indices)  # the seed moves random picks
