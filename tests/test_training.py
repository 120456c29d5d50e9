"""Training: a tiny DPO run learns, reports stable metrics, stops on cancel, resumes;
the other losses run; `dmtui train` speaks JSON lines, refuses to overwrite, fails clearly.

Runs use the demo pi_0 (a 2-layer Llama) with a learning rate for tiny models (1e-3)
and a few steps; the paper's 5e-7 is for 8B models.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.data.loading import LoadConfig, load_dataset
from core.export.exporter import Annotated, export_selection, run_selection
from core.selection.selector import SelectionParams
from core.store.margin_sources import MarginSpec, resolve_margins
from core.store.workspace import dataset_ref
from core.training.callbacks import STABLE_KEYS, collapse_warning
from core.training.trainer import (
    TrainConfig,
    TrainError,
    TrainingCancelled,
    split_batch,
    train,
    train_seed_policy,
)
from dmtui.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_PAIRS = REPO_ROOT / "sample_data" / "demo" / "pairs.jsonl"
EXPORT_PAIRS = 16


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """A real export of 16 conversational demo pairs (top by a margin column)."""
    root = tmp_path_factory.mktemp("export")
    rows = [json.loads(line) for line in DEMO_PAIRS.read_text().splitlines()[:40]]
    source = root / "pairs.jsonl"
    source.write_text("".join(json.dumps({**row, "m": float(i % 7)}) + "\n" for i, row in enumerate(rows)))
    dataset = load_dataset(str(source))
    resolved = resolve_margins(dataset, [MarginSpec.parse("external=m")])
    selection = run_selection(dataset, resolved, SelectionParams(budget=EXPORT_PAIRS, mode="top", source="external"),
                              Annotated())
    export_selection(dataset, dataset_ref(str(source)), LoadConfig(), resolved, selection, Annotated(),
                     root / "export")
    return root / "export"


def tiny_config(demo_models, **overrides) -> TrainConfig:
    """Tiny-model settings: lr 1e-3, one 8-pair batch a step, a record every step."""
    settings = dict(model=str(demo_models.policy), lr=1e-3, batch_size=8, per_device_batch_size=8,
                    max_steps=8, logging_steps=1, save_steps=100, gradient_checkpointing=False)
    return TrainConfig(**{**settings, **overrides})


def text_pairs(n: int = 8) -> list[dict]:
    """Standard-format (plain text) pairs, handed to `train` directly."""
    return [{"prompt": f"Question {i}: how do I start?", "chosen": f" Begin with step {i}, then check it.",
             "rejected": " no."} for i in range(n)]


@pytest.fixture(scope="module")
def dpo_run(demo_models, export_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dpo"
    records: list[dict] = []
    result = train(tiny_config(demo_models), export_dir, out, metrics_sink=records.append)
    return out, result, records


# --- pure pieces -------------------------------------------------------------------------


@pytest.mark.parametrize(("global_batch", "per_device_max", "world", "expected"), [
    (32, 4, 1, (4, 8)), (32, 32, 1, (32, 1)), (32, 6, 2, (4, 4)), (12, 5, 1, (4, 3)), (7, 4, 1, (1, 7)),
])
def test_split_batch_makes_the_global_batch_exactly(global_batch, per_device_max, world, expected):
    per_device, accumulation = split_batch(global_batch, per_device_max, world)
    assert (per_device, accumulation) == expected
    assert per_device * accumulation * world == global_batch and per_device <= per_device_max


def test_split_batch_refuses_a_batch_that_does_not_divide_over_processes():
    with pytest.raises(TrainError, match="cannot be split evenly"):
        split_batch(30, 4, world_size=4)


def logs(chosen: list[float], rejected: list[float]) -> list[dict]:
    return [{"logp_chosen": c, "logp_rejected": r} for c, r in zip(chosen, rejected)]


def test_collapse_warning_fires_when_both_log_probs_fall_far():
    history = logs([-100, -120, -160, -200, -240], [-110, -140, -190, -250, -300])
    warning = collapse_warning(history, ratio=0.5, window=3)
    assert warning is not None and "chosen -100.0 -> -200.0" in warning


@pytest.mark.parametrize("history", [
    logs([-100, -95, -98, -102, -99], [-110, -160, -200, -250, -300]),   # healthy DPO: only rejected falls
    logs([-100, -100, -100, -100, -400], [-110, -110, -110, -110, -500]),  # one odd batch, outvoted by the median
    logs([-100, -300, -300], [-110, -400, -400]),                          # too few records to judge
])
def test_collapse_warning_stays_quiet_otherwise(history):
    assert collapse_warning(history, ratio=0.5, window=3) is None


# --- training runs -----------------------------------------------------------------------


def test_dpo_run_raises_the_reward_margin(dpo_run):
    _, result, records = dpo_run
    assert result.steps == 8 and [r["step"] for r in records] == list(range(1, 9))
    first, last_two = records[0], records[-2:]
    # step 1 scores the untouched policy against itself: no margin yet
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert min(r["reward_margin"] for r in last_two) > 0.1
    assert min(r["reward_accuracy"] for r in last_two) >= 0.75


def test_metrics_have_stable_names_in_the_sink_and_the_file(dpo_run):
    out, _, records = dpo_run
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == records
    for record in lines:
        assert set(STABLE_KEYS) <= set(record)
        assert record["trl"]["rewards/margins"] == record["reward_margin"]
        assert all(record[k] is not None for k in ("loss", "logp_chosen", "logp_rejected", "learning_rate"))
    assert "warning" not in lines[-1]


def test_run_folder_holds_a_safetensors_model_and_the_config(dpo_run, demo_models):
    out, result, _ = dpo_run
    assert result.final == out / "final"
    names = {p.name for p in result.final.iterdir()}
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["model"] == str(demo_models.policy) and run["config"]["lr"] == 1e-3
    assert run["data"]["pairs"] == EXPORT_PAIRS and run["data"]["format"] == "conversational"
    assert run["library_versions"]["trl"] != "not installed"
    assert run["outcome"]["status"] == "done" and run["outcome"]["step"] == 8


def test_a_finished_run_folder_is_not_overwritten(dpo_run, demo_models, export_dir):
    out, _, _ = dpo_run
    before = (out / "run.json").read_text()
    with pytest.raises(TrainError, match="already holds a training run"):
        train(tiny_config(demo_models), export_dir, out, metrics_sink=lambda r: None)
    assert (out / "run.json").read_text() == before


def test_cancel_stops_with_a_checkpoint_and_resume_continues_the_step_count(demo_models, export_dir, tmp_path):
    cancel = threading.Event()
    seen: list[dict] = []

    def sink(record):
        seen.append(record)
        if record["step"] >= 2:
            cancel.set()

    config = tiny_config(demo_models, max_steps=50)
    with pytest.raises(TrainingCancelled) as stopped:
        train(config, export_dir, tmp_path / "run", metrics_sink=sink, cancel=cancel)
    assert stopped.value.step == 2 and stopped.value.exit_code == 130
    assert stopped.value.checkpoint == tmp_path / "run" / "checkpoints" / "checkpoint-2"
    assert (stopped.value.checkpoint / "model.safetensors").is_file()
    assert not (tmp_path / "run" / "final").exists()

    resumed: list[dict] = []
    result = train(tiny_config(demo_models, max_steps=4, resume_from="latest"), export_dir, tmp_path / "run",
                   metrics_sink=resumed.append)
    assert [r["step"] for r in resumed] == [3, 4] and result.steps == 4
    steps_in_file = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps_in_file == [1, 2, 3, 4]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resumed_from"].endswith("checkpoint-2")


# Step 1 scores the untouched policy (== reference), so each loss takes its value at zero
# margin: this checks that the asked-for loss is the one run. Step 1's learning rate is 0
# (warm-up), so step 3 is the first to see an update.
@pytest.mark.parametrize(("loss", "loss_at_zero_margin"), [
    ("ipo", (1 / (2 * 0.1)) ** 2),  # (margin - 1/(2 beta))^2
    ("hinge", 1.0),                  # relu(1 - beta * margin)
    ("kto", 0.5),                    # 1 - sigmoid(beta * (reward - KL)), averaged over both labels
])
def test_other_losses_run(loss, loss_at_zero_margin, demo_models, tmp_path):
    records: list[dict] = []
    result = train(tiny_config(demo_models, loss=loss, max_steps=3), text_pairs(), tmp_path / loss,
                   metrics_sink=records.append)
    assert result.steps == 3
    assert records[0]["loss"] == pytest.approx(loss_at_zero_margin, rel=1e-3)
    assert math.isfinite(records[-1]["loss"]) and records[-1]["loss"] != records[0]["loss"]
    if loss == "kto":
        assert "kl" in records[0]["trl"] and records[0]["reward_accuracy"] is None


def test_seed_policy_with_lora_gives_a_loadable_pi_1(demo_models, tmp_path):
    from core.models.load import load_causal_lm

    config = tiny_config(demo_models, max_steps=2, lora=True, lora_r=4, lora_alpha=8)
    pi_1 = train_seed_policy(demo_models.policy, text_pairs(), tmp_path / "seed", config)
    assert (pi_1 / "adapter_config.json").is_file() and (pi_1 / "adapter_model.safetensors").is_file()
    model = load_causal_lm(pi_1, device="cpu", dtype=__import__("torch").float32)
    assert model.config.num_hidden_layers == 2


# --- the command line --------------------------------------------------------------------


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "dmtui", "train", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tiny_options(demo_models) -> list[str]:
    return ["--model", str(demo_models.policy), "--lr", "1e-3", "--batch-size", "8", "--per-device-batch-size", "8",
            "--logging-steps", "1", "--no-gradient-checkpointing"]


def test_cli_jsonl_reports_every_event(demo_models, export_dir, tmp_path):
    process = cli(str(export_dir), "--out", str(tmp_path / "run"), *tiny_options(demo_models),
                  "--max-steps", "3", "--save-steps", "2", "--jsonl")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]  # every line is JSON
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "log", "log", "checkpoint", "log", "checkpoint", "done"]
    assert events[0]["config"]["lr"] == 1e-3 and events[0]["config"]["max_steps"] == 3
    assert [e["step"] for e in events if e["event"] == "log"] == [1, 2, 3]
    assert Path(events[3]["path"]).name == "checkpoint-2" and Path(events[3]["path"]).is_dir()
    assert events[-1]["final"] == str(tmp_path / "run" / "final") and events[-1]["steps"] == 3
    assert "Traceback" not in stderr


def test_cli_sigterm_stops_cleanly_with_a_checkpoint(demo_models, export_dir, tmp_path):
    process = cli(str(export_dir), "--out", str(tmp_path / "run"), *tiny_options(demo_models),
                  "--max-steps", "100000", "--jsonl")
    for line in process.stdout:
        if json.loads(line)["event"] == "log":
            process.send_signal(signal.SIGTERM)
            break
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[-1]["event"] == "cancelled"
    checkpoint = Path(events[-1]["checkpoint"])
    assert checkpoint.is_dir() and events[-2] == {"event": "checkpoint", "path": str(checkpoint),
                                                  "step": events[-1]["step"]}
    assert "Traceback" not in stderr


def test_cli_refuses_an_existing_run_without_resume_or_force(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    assert main(["train", "anything", "--out", str(run), "--model", "m"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (run / "run.json").read_text() == "{}"


def test_cli_force_never_deletes_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    assert main(["train", "anything", "--out", str(folder), "--model", "m", "--force"]) == 1
    assert "not a dmtui run folder" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "keep me"


def corrupt_export(export_dir: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "data.jsonl").write_text((export_dir / "data.jsonl").read_text())
    (broken / "manifest.json").write_text('{"manifest_version": 1, "input": ')
    return broken


@pytest.mark.parametrize(("case", "message"), [
    ("missing export", "export not found"),
    ("corrupt manifest", "not valid JSON"),
    ("missing model", "model path not found"),
])
def test_cli_errors_are_one_clear_message(case, message, demo_models, export_dir, tmp_path, capsys):
    export, model = str(export_dir), str(demo_models.policy)
    if case == "missing export":
        export = str(tmp_path / "no-such-export")
    elif case == "corrupt manifest":
        export = str(corrupt_export(export_dir, tmp_path))
    else:
        model = str(tmp_path / "no-such-model")
    code = main(["train", export, "--out", str(tmp_path / "run"), "--model", model, "--jsonl"])
    captured = capsys.readouterr()
    assert code == 1
    assert message in captured.err and "hint:" in captured.err and "Traceback" not in captured.err
    error = json.loads(captured.out.splitlines()[-1])
    assert error["event"] == "error" and message in error["message"] and error["hint"]
    assert not (tmp_path / "run").exists()  # a failed start leaves no run behind
