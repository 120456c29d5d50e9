"""core.scoring.run against naive per-sequence computations, plus caching, resume and reporting.

Models are the demo world's (fixture `demo_models`); pi_1 is pi_0 with perturbed weights
saved here, so no training is needed except in the oracle test, which trains the seed
policy the way a user run does.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from core.scoring.config import ScoringConfig, ScoringError
from core.scoring.run import ScoringCancelled, score
from core.selection.stats import spearman
from core.store.scores import ScoreStore, latest_score_table
from core.store.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_PAIRS = REPO_ROOT / "sample_data" / "demo" / "pairs.jsonl"
DEMO_ORACLE = REPO_ROOT / "sample_data" / "demo" / "oracle.jsonl"


def demo_rows(n: int, start: int = 0) -> list[dict]:
    """The first good rows of the demo dataset (its broken lines left out)."""
    rows = []
    for line in DEMO_PAIRS.read_text("utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and {"prompt", "chosen", "rejected"} <= row.keys():
            rows.append(row)
    return rows[start : start + n]


def as_standard(row: dict) -> dict:
    """A demo row in the standard (text) format, HH style."""
    return {"prompt": f"User: {row['prompt'][0]['content']}\nAssistant:",
            "chosen": " " + row["chosen"][0]["content"], "rejected": " " + row["rejected"][0]["content"]}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    return path


def open_workspace(tmp_path: Path, rows: list[dict], name: str = "ws"):
    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    workspace = Workspace.create(tmp_path / name, str(data))
    return workspace, workspace.load()


def table_of(workspace: Workspace, source: str, pair_ids: list[str]) -> dict[str, np.ndarray]:
    """Every column of a source's table, aligned with `pair_ids`."""
    table = latest_score_table(workspace.scores_dir, source).read()
    index = {pid: i for i, pid in enumerate(table["pair_id"].to_pylist())}
    order = [index[pid] for pid in pair_ids]
    return {name: table[name].to_numpy(zero_copy_only=False)[order] for name in table.column_names}


@pytest.fixture(scope="module")
def perturbed_policy(demo_models, tmp_path_factory) -> Path:
    """pi_1 for tests: pi_0 with every weight nudged by seeded noise."""
    model = AutoModelForCausalLM.from_pretrained(demo_models.policy)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    out = tmp_path_factory.mktemp("pi1")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(demo_models.policy).save_pretrained(out)
    return out


def config_for(demo_models, **overrides) -> ScoringConfig:
    settings = {"reward_model": str(demo_models.reward), "reference_model": str(demo_models.policy),
                "device": "cpu", **overrides}
    return ScoringConfig(**settings)


# Numbers against naive computations ------------------------------------------------------

def chat_ids(tokenizer, messages, generation_prompt=False) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def naive_reward(model, tokenizer, prompt, response, template: bool = True) -> float:
    """One unpadded sequence: conversations, and standard text as one exchange, through the reward
    model's chat template; standard text without it as TRL's RewardTrainer reads it."""
    if isinstance(prompt, list):
        ids = chat_ids(tokenizer, prompt + response)
    elif template:
        ids = chat_ids(tokenizer, [{"role": "user", "content": prompt.strip()},
                                   {"role": "assistant", "content": response.strip()}])
    else:
        ids = tokenizer(prompt + response + tokenizer.eos_token)["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


@pytest.mark.parametrize("fmt, template", [("conversational", True), ("standard", True), ("standard", False)])
def test_external_margins_equal_a_naive_reward_model(demo_models, tmp_path, fmt, template):
    rows = demo_rows(120)
    rows = rows if fmt == "conversational" else [as_standard(r) for r in rows]
    workspace, dataset = open_workspace(tmp_path, rows)
    report = score(dataset, workspace, config_for(demo_models, sources=("external",), batch_tokens=512,
                                                  reward_template=template))
    assert report.sources["external"].scored == len(rows)
    meta = ScoreStore(workspace.scores_dir, "external", report.sources["external"].fingerprint).read_meta()
    assert meta["settings"]["reward_template"] is template
    ids = dataset.pairs["pair_id"].to_pylist()
    scores = table_of(workspace, "external", ids)
    model = AutoModelForSequenceClassification.from_pretrained(demo_models.reward).eval()
    tokenizer = AutoTokenizer.from_pretrained(demo_models.reward)
    pairs = dataset.pairs.to_pylist()
    expected_chosen = [naive_reward(model, tokenizer, p["prompt"], p["chosen"], template) for p in pairs]
    expected_rejected = [naive_reward(model, tokenizer, p["prompt"], p["rejected"], template) for p in pairs]
    np.testing.assert_allclose(scores["reward_chosen"], expected_chosen, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores["reward_rejected"], expected_rejected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores["margin"], np.subtract(expected_chosen, expected_rejected), atol=2e-4, rtol=0)


def naive_logprob(model, context: list[int], response: list[int]) -> float:
    ids = torch.tensor([context + response])
    with torch.no_grad():
        logps = model(input_ids=ids).logits[0].float().log_softmax(-1)
    return float(sum(logps[len(context) + j - 1, token] for j, token in enumerate(response)))


def test_implicit_and_ifd_equal_naive_logprob_sums(demo_models, perturbed_policy, tmp_path):
    rows = demo_rows(60)
    workspace, dataset = open_workspace(tmp_path, rows)
    config = config_for(demo_models, sources=("implicit", "ifd"), policy_model=str(perturbed_policy))
    score(dataset, workspace, config)
    ids = dataset.pairs["pair_id"].to_pylist()
    implicit, ifd = table_of(workspace, "implicit", ids), table_of(workspace, "ifd", ids)
    tokenizer = AutoTokenizer.from_pretrained(demo_models.policy)
    pi0 = AutoModelForCausalLM.from_pretrained(demo_models.policy).eval()
    pi1 = AutoModelForCausalLM.from_pretrained(perturbed_policy).eval()
    expected_margin, expected_ifd = [], {"chosen": [], "rejected": []}
    for pair in dataset.pairs.to_pylist():
        context = chat_ids(tokenizer, pair["prompt"], generation_prompt=True)
        rewards = {}
        for side in ("chosen", "rejected"):
            full = chat_ids(tokenizer, pair["prompt"] + pair[side])
            assert full[: len(context)] == context
            response = full[len(context):]
            conditional = naive_logprob(pi0, context, response)
            rewards[side] = naive_logprob(pi1, context, response) - conditional
            unconditional = naive_logprob(pi0, [tokenizer.bos_token_id], response)
            n = len(response)
            expected_ifd[side].append(np.exp(-conditional / n) / np.exp(-unconditional / n))
        expected_margin.append(rewards["chosen"] - rewards["rejected"])
    np.testing.assert_allclose(implicit["margin"], expected_margin, atol=1e-4, rtol=0)
    assert np.abs(implicit["margin"]).max() > 0.1  # pi_1 really differs from pi_0
    np.testing.assert_allclose(ifd["ifd_chosen"], expected_ifd["chosen"], rtol=1e-4)
    np.testing.assert_allclose(ifd["ifd_rejected"], expected_ifd["rejected"], rtol=1e-4)
    np.testing.assert_allclose(ifd["margin"], np.subtract(expected_ifd["chosen"], expected_ifd["rejected"]),
                               atol=1e-4)


# Caching and resuming ------------------------------------------------------------------------

def all_parts(workspace: Workspace, source: str) -> pa.Table:
    store = latest_score_table(workspace.scores_dir, source)
    return pa.concat_tables([pq.read_table(part) for part in store.parts()])


def test_a_cancelled_run_resumes_to_the_numbers_of_an_uninterrupted_one(demo_models, perturbed_policy, tmp_path):
    rows = demo_rows(200)
    config = config_for(demo_models, sources=("external", "implicit"), policy_model=str(perturbed_policy),
                        checkpoint_every=40)
    whole_ws, whole = open_workspace(tmp_path, rows, "whole")
    score(whole, whole_ws, config)

    workspace, dataset = open_workspace(tmp_path, rows, "resumed")
    cancel = threading.Event()

    def cancel_midway(progress) -> None:
        if progress.stage == "implicit" and progress.done >= 90:
            cancel.set()

    with pytest.raises(ScoringCancelled) as stopped:
        score(dataset, workspace, config, progress=cancel_midway, cancel=cancel)
    partial = stopped.value.report.sources["implicit"]
    assert 0 < partial.scored < len(rows) and partial.scored % 40 == 0
    report = score(dataset, workspace, config)
    assert report.sources["external"].reused == len(rows) and report.sources["external"].scored == 0
    assert report.sources["implicit"].reused == partial.scored
    assert report.sources["implicit"].scored == len(rows) - partial.scored
    ids = dataset.pairs["pair_id"].to_pylist()
    for source in ("external", "implicit"):
        parts = all_parts(workspace, source)["pair_id"].to_pylist()
        assert sorted(parts) == sorted(ids), f"{source}: a pair was scored twice or not at all"
        resumed, reference = table_of(workspace, source, ids), table_of(whole_ws, source, ids)
        for column in ("margin", "reward_chosen", "logp_policy_chosen", "logp_reference_rejected"):
            if column in reference:
                np.testing.assert_allclose(resumed[column], reference[column], atol=1e-6, rtol=0)


def test_appended_rows_are_the_only_ones_scored(demo_models, perturbed_policy, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", demo_rows(150))
    workspace = Workspace.create(tmp_path / "ws", str(data))
    config = config_for(demo_models, sources=("external", "implicit"), policy_model=str(perturbed_policy))
    first = score(workspace.load(), workspace, config)
    assert {s.scored for s in first.sources.values()} == {150}
    write_jsonl(data, demo_rows(150) + demo_rows(40, start=150))
    workspace = Workspace.open(tmp_path / "ws", accept_changes=True)
    second = score(workspace.load(), workspace, config)
    for source in second.sources.values():
        assert (source.scored, source.reused, source.fingerprint) == (40, 150, first.sources[source.source].fingerprint)


def test_fingerprint_ignores_batch_size_and_follows_numeric_settings(demo_models, tmp_path):
    workspace, dataset = open_workspace(tmp_path, demo_rows(30))
    first = score(dataset, workspace, config_for(demo_models, sources=("ifd",)))
    rebatched = score(dataset, workspace, config_for(demo_models, sources=("ifd",), batch_tokens=256))
    assert rebatched.sources["ifd"].scored == 0 and rebatched.sources["ifd"].reused == 30
    shorter = score(dataset, workspace, config_for(demo_models, sources=("ifd",), max_length=64))
    assert shorter.sources["ifd"].scored == 30
    assert shorter.sources["ifd"].fingerprint != first.sources["ifd"].fingerprint
    meta = ScoreStore(workspace.scores_dir, "ifd", first.sources["ifd"].fingerprint).read_meta()
    assert meta["model_fingerprints"]["reference"].startswith("sha256:")
    # The default token limit is the model's context (the demo pi_0 takes 256 tokens); a larger
    # limit is capped to it, so it reuses the same table.
    assert (meta["settings"]["max_length"], meta["settings"]["min_prompt_tokens"]) == (256, 128)
    assert meta["truncation"] == {"pairs": 30, "truncated": 0, "share": 0.0, "skipped": 0, "token_identical": 0,
                                  "max_length": 256, "min_prompt_tokens": 128}
    capped = score(dataset, workspace, config_for(demo_models, sources=("ifd",), max_length=100_000))
    assert capped.sources["ifd"].reused == 30 and capped.sources["ifd"].max_length == 256
    floor = score(dataset, workspace, config_for(demo_models, sources=("ifd",), min_prompt_tokens=10))
    assert floor.sources["ifd"].scored == 30 and floor.sources["ifd"].fingerprint != first.sources["ifd"].fingerprint


def test_sharded_ranks_split_the_pairs_and_together_cover_them(demo_models, tmp_path):
    workspace, dataset = open_workspace(tmp_path, demo_rows(25))
    config = config_for(demo_models, sources=("external",))
    reports = [score(dataset, workspace, config, rank=rank, world_size=2) for rank in (0, 1)]
    assert [r.sources["external"].scored for r in reports] == [13, 12]
    parts = [p.name for p in latest_score_table(workspace.scores_dir, "external").parts()]
    assert parts == ["part-r0000-000000.parquet", "part-r0001-000000.parquet"]
    assert score(dataset, workspace, config).sources["external"].reused == 25


# Truncation and token-identical pairs -----------------------------------------------------------

def long_pairs() -> list[dict]:
    """6 short pairs; 4 long pairs whose responses differ only at their far end."""
    words = "the cat sat on the mat and then it ran far away over the hill".split()
    short = [{"prompt": f"User: tip {i}?\nAssistant:", "chosen": f" yes {words[i]}", "rejected": f" no {words[i + 1]}"}
             for i in range(6)]
    body = " ".join(words * 4)
    long = [{"prompt": f"User: story {i}?\nAssistant:", "chosen": f" {body} good end {i}",
             "rejected": f" {body} bad end {i}"} for i in range(4)]
    return short + long


def test_pairs_token_identical_after_truncation_are_reported_and_nan(demo_models, tmp_path):
    workspace, dataset = open_workspace(tmp_path, long_pairs())
    report = score(dataset, workspace, config_for(demo_models, sources=("external", "implicit"),
                                                  policy_model=str(demo_models.policy), max_length=40))
    ids = dataset.pairs["pair_id"].to_pylist()
    long_ids = ids[6:]
    for name in ("external", "implicit"):
        source = report.sources[name]
        assert source.truncated == 4 and source.skipped_truncated == 0
        assert sorted(source.token_identical_ids) == sorted(long_ids)
        margins = table_of(workspace, name, ids)["margin"]
        assert np.isnan(margins[6:]).all() and np.isfinite(margins[:6]).all()
    untruncated = score(dataset, workspace, config_for(demo_models, sources=("external",), max_length=None))
    assert untruncated.sources["external"].truncated == 0 and not untruncated.sources["external"].token_identical_ids


def test_truncation_is_counted_per_source_with_its_token_limit_in_report_and_table(demo_models, tmp_path):
    workspace, dataset = open_workspace(tmp_path, long_pairs())
    report = score(dataset, workspace, config_for(demo_models, sources=("external", "ifd"), max_length=40,
                                                  min_prompt_tokens=8))
    for name in ("external", "ifd"):
        source = report.sources[name]
        assert (source.truncated, source.pairs, source.max_length, source.min_prompt_tokens) == (4, 10, 40, 8)
        assert source.truncated_share == 0.4 and source.to_json()["truncated_share"] == 0.4
        assert source.truncation_summary() == "4 of 10 pairs (40.0%) cut to fit 40 tokens (context kept: at least 8)"
        meta = ScoreStore(workspace.scores_dir, name, source.fingerprint).read_meta()
        assert meta["truncation"] == {"pairs": 10, "truncated": 4, "share": 0.4, "skipped": 0, "token_identical": 4,
                                      "max_length": 40, "min_prompt_tokens": 8}
    from core.store.margin_sources import MarginSpec, resolve_margins

    provenance = resolve_margins(dataset, [MarginSpec("external", (), None)], workspace).provenance["external"]
    assert provenance["meta"]["truncation"]["truncated"] == 4, "an export's manifest carries the count"


def test_a_long_pair_is_scored_under_one_context(demo_models, perturbed_policy, tmp_path):
    """Chosen short, rejected long: both keep the same (cut) prompt, sized by the longer response."""
    words = "the cat sat on the mat and then it ran far away over the hill".split()
    rows = [{"prompt": "Tell me a story: " + " ".join(words * 3) + "?", "chosen": " yes",
             "rejected": " " + " ".join(words)}]
    workspace, dataset = open_workspace(tmp_path, rows)
    assert dataset.format == "standard"
    score(dataset, workspace, config_for(demo_models, sources=("implicit",), policy_model=str(perturbed_policy),
                                         max_length=60))
    table = table_of(workspace, "implicit", dataset.pairs["pair_id"].to_pylist())
    tokenizer = AutoTokenizer.from_pretrained(demo_models.policy)
    pi0 = AutoModelForCausalLM.from_pretrained(demo_models.policy).eval()
    prompt_ids = tokenizer(rows[0]["prompt"])["input_ids"]
    chosen, rejected = (tokenizer(rows[0]["prompt"] + rows[0][side])["input_ids"][len(prompt_ids):]
                        + [tokenizer.eos_token_id] for side in ("chosen", "rejected"))
    keep = 60 - len(rejected)  # the longer response decides the context of both (above the floor of 30)
    assert keep > 30 and tokenizer.bos_token_id not in prompt_ids  # the demo tokenizer adds no BOS to text
    context = prompt_ids[len(prompt_ids) - keep:]
    assert table["truncated"][0]
    assert table["logp_reference_chosen"][0] == pytest.approx(naive_logprob(pi0, context, chosen), abs=1e-4)
    assert table["logp_reference_rejected"][0] == pytest.approx(naive_logprob(pi0, context, rejected), abs=1e-4)


def test_skip_truncated_skips_over_long_pairs(demo_models, tmp_path):
    workspace, dataset = open_workspace(tmp_path, long_pairs())
    report = score(dataset, workspace, config_for(demo_models, sources=("external",), max_length=40,
                                                  skip_truncated=True))
    source = report.sources["external"]
    assert (source.skipped_truncated, source.truncated, source.token_identical_ids) == (4, 0, [])
    table = table_of(workspace, "external", dataset.pairs["pair_id"].to_pylist())
    assert table["skipped"].tolist() == [False] * 6 + [True] * 4
    assert np.isnan(table["margin"][6:]).all() and np.isfinite(table["margin"][:6]).all()


# pi_1 and pi_0 ------------------------------------------------------------------------------------

def test_a_pi1_with_another_vocabulary_is_refused(demo_models, tmp_path):
    from tiny_models import save_tiny_llama

    other = save_tiny_llama(tmp_path / "other-vocab")
    workspace, dataset = open_workspace(tmp_path, demo_rows(5))
    from core.scoring.scorers import ScorerError

    with pytest.raises(ScorerError, match="different vocabularies") as error:
        score(dataset, workspace, config_for(demo_models, sources=("implicit",), policy_model=str(other)))
    assert str(other) in error.value.message and str(demo_models.policy) in error.value.message
    assert latest_score_table(workspace.scores_dir, "implicit") is None


def test_a_pi1_with_another_chat_template_is_noted_in_the_report(demo_models, perturbed_policy, tmp_path):
    import shutil

    policy = tmp_path / "pi1-other-template"
    shutil.copytree(perturbed_policy, policy)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(policy)
    workspace, dataset = open_workspace(tmp_path, demo_rows(5))
    report = score(dataset, workspace, config_for(demo_models, sources=("implicit",), policy_model=str(policy)))
    (note,) = report.sources["implicit"].notes
    assert "different chat templates" in note and str(policy) in note


# Configuration errors -------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"sources": ("external", "bogus")}, "unknown margin source 'bogus'"),
    ({"sources": ("external",), "reward_model": None}, "need a reward model"),
    ({"sources": ("ifd",), "reference_model": None}, "reference model"),
    ({"checkpoint_every": 0}, "checkpoint_every"),
])
def test_bad_configurations_are_errors_with_hints(demo_models, tmp_path, overrides, message):
    workspace, dataset = open_workspace(tmp_path, demo_rows(5))
    with pytest.raises(ScoringError, match=message):
        score(dataset, workspace, config_for(demo_models, **overrides))


# Against the oracle -------------------------------------------------------------------------------

def test_margins_rank_pairs_like_the_oracle(demo_models, tmp_path):
    """External margins and implicit margins from cross-fit seed-DPO pi_1 both track the true margins."""
    rows = demo_rows(600)
    workspace, dataset = open_workspace(tmp_path, rows)
    config = config_for(demo_models, sources=("external", "implicit"), seed_lr=1e-4, seed_pairs=100, seed_steps=8,
                        seed_eval_pairs=64, seed_per_device_batch_size=32)
    report = score(dataset, workspace, config)
    assert report.seed_policy["trained_now"] and report.seed_policy["seed_pairs"] == 200
    assert all(fold["held_out_accuracy"] > 0.5 for fold in report.seed_policy["folds"])
    assert report.implicit_external_spearman > 0.2
    oracle = {r["pair_id"]: r["oracle_margin"] for r in map(json.loads, DEMO_ORACLE.read_text().splitlines())}
    ids = dataset.pairs["pair_id"].to_pylist()
    truth = np.array([oracle[pid] for pid in ids])
    rho = {name: spearman(table_of(workspace, name, ids)["margin"], truth)
           for name in ("external", "implicit")}
    print(f"Spearman with the oracle margin over {len(ids)} pairs: {rho}")
    assert rho["external"] > 0.5 and rho["implicit"] > 0.25
    again = score(dataset, workspace, config)
    assert not again.seed_policy["trained_now"] and again.sources["implicit"].reused == len(ids)


def test_a_seed_training_killed_earlier_is_cleared_away_and_a_running_one_is_left(demo_models, tmp_path):
    import subprocess
    import sys

    from core.io.atomic import owner_tag
    from core.models.load import model_fingerprint
    from core.scoring.seed_policy import ensure_seed_policy, seed_policy_dir

    workspace, dataset = open_workspace(tmp_path, demo_rows(64))
    config = config_for(demo_models, sources=("implicit",), seed_steps=1, seed_batch_size=8)
    fingerprint = model_fingerprint(config.reference_model)
    target = seed_policy_dir(workspace, config, fingerprint)
    target.parent.mkdir(parents=True)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = owner_tag().rsplit("-", 1)[0]
    killed = target.parent / f".{target.name}.building-{host}-{finished.stdout.strip()}-x1y2z3"
    running = target.parent / f".{target.name}.building-{owner_tag()}-a1b2c3"  # this process: still at work
    for folder in (killed, running):
        (folder / "run").mkdir(parents=True)
    policy, info = ensure_seed_policy(dataset, workspace, config, fingerprint)
    assert info["trained_now"] and (policy.root / "seed.json").is_file()
    assert not killed.exists() and running.exists()
