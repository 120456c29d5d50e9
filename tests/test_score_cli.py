"""`dmtui score`: the JSON report, errors without tracebacks, --demo, and resuming after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmtui.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_PAIRS = REPO_ROOT / "sample_data" / "demo" / "pairs.jsonl"


def demo_slice(path: Path, n: int) -> Path:
    """The first `n` good rows of the demo dataset, written to `path`."""
    rows = [line for line in DEMO_PAIRS.read_text("utf-8").splitlines() if line.startswith('{"id"')][:n]
    path.write_text("\n".join(rows) + "\n", "utf-8")
    return path


def model_args(demo_models) -> list[str]:
    return ["--reward-model", str(demo_models.reward), "--reference-model", str(demo_models.policy),
            "--policy-model", str(demo_models.policy), "--device", "cpu"]


def run_cli(args: list[str], env_cache: Path, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "DMTUI_CACHE": str(env_cache)}
    return subprocess.Popen([sys.executable, "-m", "dmtui", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_a_checkpoint(process: subprocess.Popen, workspace: Path) -> None:
    deadline = time.monotonic() + 120
    while not list(workspace.glob("scores/implicit/*/part-*.parquet")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.005)


def test_json_report_on_stdout(demo_models, tmp_path, capsys):
    data = demo_slice(tmp_path / "pairs.jsonl", 40)
    code = main(["score", str(data), "--workspace", str(tmp_path / "ws"), "--sources", "external,ifd",
                 *model_args(demo_models), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert set(report["sources"]) == {"external", "ifd"}
    assert report["sources"]["external"]["scored"] == 40 and report["cancelled"] is False
    assert (tmp_path / "ws" / "scores" / "external").is_dir()
    code = main(["score", str(tmp_path / "ws"), "--sources", "external", *model_args(demo_models), "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["sources"]["external"]["reused"] == 40


def test_the_report_says_how_many_pairs_were_cut_and_to_what(demo_models, tmp_path, capsys):
    data = demo_slice(tmp_path / "pairs.jsonl", 30)
    args = ["score", str(data), "--workspace", str(tmp_path / "ws"), "--sources", "external",
            *model_args(demo_models), "--max-length", "48", "--min-prompt-tokens", "16"]
    assert main([*args, "--json"]) == 0
    source = json.loads(capsys.readouterr().out)["sources"]["external"]
    assert (source["max_length"], source["min_prompt_tokens"], source["pairs"]) == (48, 16, 30)
    assert 0 < source["truncated"] < 30 and source["truncated_share"] == round(source["truncated"] / 30, 4)
    assert main(args) == 0
    out = capsys.readouterr().out
    share = f"{100 * source['truncated'] / 30:.1f}%"
    assert f"external: {source['truncated']} of 30 pairs ({share}) cut to fit 48 tokens" in out


@pytest.mark.parametrize("extra, message", [
    (["--reward-model", "/no/such/reward-model"], "model path not found"),
    (["--sources", "external,bogus"], "unknown margin source 'bogus'"),
    (["--sources", "implicit", "--reference-model", ""], "need the reference model"),
])
def test_errors_are_messages_with_hints_not_tracebacks(demo_models, tmp_path, capsys, extra, message):
    data = demo_slice(tmp_path / "pairs.jsonl", 5)
    code = main(["score", str(data), "--workspace", str(tmp_path / "ws"), *model_args(demo_models), *extra])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and "hint:" in err and "Traceback" not in err


def test_demo_scores_a_small_slice_end_to_end(demo_cache_dir, demo_models, tmp_path):
    data = demo_slice(tmp_path / "pairs.jsonl", 120)
    process = run_cli(["score", str(data), "--demo", "--device", "cpu", "--seed-steps", "2", "--json"],
                      demo_cache_dir)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    report = json.loads(out)
    assert report["seed_policy"]["trained_now"] and report["seed_policy"]["split"] == "cross-fit"
    assert report["seed_policy"]["seed_pairs"] == 120  # cross-fit: each half of the pairs is one pi_1's D0
    assert all(0 <= fold["held_out_accuracy"] <= 1 for fold in report["seed_policy"]["folds"])
    assert -1 <= report["implicit_external_spearman"] <= 1
    assert {name: s["scored"] for name, s in report["sources"].items()} == {"external": 120, "implicit": 120}
    assert report["sources"]["external"]["models"]["reward"] == str(demo_models.reward)
    assert "Traceback" not in err


def final_table(workspace: Path, source: str) -> pa.Table:
    (table_dir,) = (workspace / "scores" / source).iterdir()
    parts = sorted(table_dir.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(part) for part in parts])


def test_a_killed_run_resumes_without_rescoring_and_ends_equal(demo_cache_dir, demo_models, tmp_path):
    data = demo_slice(tmp_path / "pairs.jsonl", 120)
    common = ["score", str(data), "--sources", "external,implicit", *model_args(demo_models),
              "--checkpoint-every", "10", "--json"]
    whole = run_cli([*common, "--workspace", str(tmp_path / "whole")], demo_cache_dir)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    victim_ws = tmp_path / "killed"
    victim = run_cli([*common, "--workspace", str(victim_ws)], demo_cache_dir)
    deadline = time.monotonic() + 120
    while not list(victim_ws.glob("scores/implicit/*/part-*.parquet")):
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL

    resumed = run_cli([*common, "--workspace", str(victim_ws)], demo_cache_dir)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    report = json.loads(out)["sources"]
    assert report["external"]["reused"] == 120 and report["external"]["scored"] == 0
    assert report["implicit"]["reused"] > 0
    assert report["implicit"]["reused"] + report["implicit"]["scored"] == 120
    for source in ("external", "implicit"):
        table, reference = final_table(victim_ws, source), final_table(tmp_path / "whole", source)
        ids = table["pair_id"].to_pylist()
        assert len(ids) == len(set(ids)) == 120, f"{source}: a pair was scored twice"
        order = {pid: i for i, pid in enumerate(reference["pair_id"].to_pylist())}
        aligned = reference.take(pa.array([order[pid] for pid in ids]))
        np.testing.assert_allclose(table["margin"].to_numpy(), aligned["margin"].to_numpy(), atol=1e-6, rtol=0)


def test_ctrl_c_stops_with_130_and_a_rerun_resumes(demo_cache_dir, demo_models, tmp_path):
    data = demo_slice(tmp_path / "pairs.jsonl", 120)
    command = ["score", str(data), "--workspace", str(tmp_path / "ws"), "--sources", "implicit",
               *model_args(demo_models), "--checkpoint-every", "10", "--json"]
    process = run_cli(command, demo_cache_dir)
    wait_for_a_checkpoint(process, tmp_path / "ws")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "resume" in err
    stopped = json.loads(out)
    assert stopped["cancelled"] and 0 < stopped["sources"]["implicit"]["scored"] < 120
    rerun = run_cli(command, demo_cache_dir)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert json.loads(out)["sources"]["implicit"]["reused"] == stopped["sources"]["implicit"]["scored"]


def test_jsonl_streams_progress_and_sigterm_stops_at_a_checkpoint(demo_cache_dir, demo_models, tmp_path):
    """The app's contract: progress events per source, SIGTERM keeps finished chunks, exit 130."""
    data = demo_slice(tmp_path / "pairs.jsonl", 120)
    command = ["score", str(data), "--workspace", str(tmp_path / "ws"), "--sources", "implicit",
               *model_args(demo_models), "--checkpoint-every", "10", "--jsonl"]
    process = run_cli(command, demo_cache_dir)
    first = json.loads(process.stdout.readline())
    assert first["event"] == "progress" and {"stage", "done", "total", "unit", "elapsed_s"} <= set(first)
    wait_for_a_checkpoint(process, tmp_path / "ws")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    events = [json.loads(line) for line in out.splitlines()]
    assert all(e["event"] == "progress" for e in events[:-1])
    last = events[-1]
    assert last["event"] == "cancelled" and 0 < last["sources"]["implicit"]["scored"] < 120, last
    rerun = run_cli(command, demo_cache_dir)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    done = json.loads(out.splitlines()[-1])
    assert done["event"] == "done" and done["sources"]["implicit"]["reused"] == last["sources"]["implicit"]["scored"]
    assert any(json.loads(line)["stage"] == "implicit" for line in out.splitlines()[:-1])


def test_pairs_whose_boundary_moved_are_counted_per_run_and_reported(tmp_path, capsys):
    """Llama-3's pre-tokenizer merges "?" + "\\n\\n" across the prompt/response boundary."""
    from tiny_models import build_llama
    from tokenizer_families import build

    tokenizer = build("llama3")
    model = tmp_path / "llama3-sft"
    build_llama(len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    rows = [{"prompt": f"How do I bake {thing}?", "chosen": "\n\nSure, like this.", "rejected": "\n\nNo."}
            for thing in ("bread", "cake", "pie")]
    rows += [{"prompt": f"Name a {thing}:", "chosen": " Sure, a red one.", "rejected": " No."}
             for thing in ("colour", "fruit")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), "utf-8")
    args = ["score", str(data), "--sources", "ifd", "--reference-model", str(model), "--device", "cpu"]
    assert main([*args, "--workspace", str(tmp_path / "ws1"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"]["ifd"]["boundary_moved"] == 3
    assert main([*args, "--workspace", str(tmp_path / "ws2")]) == 0
    assert "ifd: 3 pairs had a token merging across the prompt/response boundary" in capsys.readouterr().out


def test_options_reach_the_scoring_config():
    from dmtui.cli import build_parser
    from dmtui.headless.score import config_from_args

    parse = build_parser().parse_args
    default = config_from_args(parse(["score", "data.jsonl"]))
    assert (default.reward_template, default.max_length, default.min_prompt_tokens) == (True, None, None)
    given = config_from_args(parse(["score", "data.jsonl", "--no-reward-template", "--max-length", "2048",
                                    "--min-prompt-tokens", "512", "--device", "cuda:1", "--dtype", "bfloat16"]))
    assert (given.reward_template, given.max_length, given.min_prompt_tokens) == (False, 2048, 512)
    assert (given.device, given.dtype) == ("cuda:1", "bfloat16")


def test_demo_fills_its_seed_settings_where_no_option_is_given(demo_cache_dir, demo_models, monkeypatch):
    from core.demo.models import DEMO_SCORING
    from dmtui.cli import build_parser
    from dmtui.headless.score import config_from_args, fill_demo_models

    monkeypatch.setenv("DMTUI_CACHE", str(demo_cache_dir))
    parse = build_parser().parse_args
    demo = parse(["score", "data.jsonl", "--demo"])
    fill_demo_models(demo, progress=None)
    config = config_from_args(demo)
    assert {name: getattr(config, name) for name in DEMO_SCORING} == DEMO_SCORING
    assert config.seed_epochs < 10 and config.seed_pairs < 2000  # cheaper than the default seed policy
    assert (config.reward_model, config.reference_model) == (str(demo_models.reward), str(demo_models.policy))
    given = parse(["score", "data.jsonl", "--demo", "--seed-pairs", "50", "--seed-lr", "1e-3", "--seed-eval-pairs", "9"])
    fill_demo_models(given, progress=None)
    config = config_from_args(given)
    assert (config.seed_pairs, config.seed_lr, config.seed_eval_pairs, config.seed_epochs) == (50, 1e-3, 9, 2.0)
