"""Sharded `dmtui score`: torchrun ranks, a rank rerun alone, the merge (core.scoring.distributed)."""

from __future__ import annotations

import doctest
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from safetensors.numpy import load_file
from test_score_cli import demo_slice, model_args

import core.scoring.distributed
from core.scoring.distributed import (
    DistributedError,
    Shard,
    detect_shard,
    launcher_hidden,
    shard_device,
)
from core.store.scores import ScoreStore, latest_score_table
from dmtui.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(launcher: list[str], args: list[str], cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "DMTUI_CACHE": str(cache)}
    return subprocess.run([*launcher, "-m", "dmtui", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-port", str(free_port())]


def table_of(workspace: Path, source: str) -> ScoreStore:
    store = latest_score_table(workspace / "scores", source)
    assert store is not None, f"no {source} table in {workspace}"
    return store


def assert_same_margins(store: ScoreStore, reference: ScoreStore) -> None:
    """Equal tables: same pairs, margins equal per pair_id."""
    table, expected = store.read(), reference.read()
    ids = table["pair_id"].to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(expected["pair_id"].to_pylist())
    np.testing.assert_allclose(store.margins_for(ids), reference.margins_for(ids), atol=1e-6, rtol=0)


def score_json(args: list[str], capsys) -> tuple[int, dict | None]:
    code = main(["score", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


# Under a launcher ---------------------------------------------------------------------

def test_torchrun_ranks_score_shards_and_merge_into_the_single_process_table(
        demo_cache_dir, demo_models, tmp_path, capsys):
    data = demo_slice(tmp_path / "pairs.jsonl", 40)
    # No --policy-model: rank 0 trains the seed policy pi_1 while rank 1 waits for it.
    common = [str(data), "--sources", "external,implicit", "--reward-model", str(demo_models.reward),
              "--reference-model", str(demo_models.policy), "--seed-steps", "1", "--seed-lr", "1e-4",
              "--device", "cpu", "--checkpoint-every", "8"]
    sharded = launch(torchrun(2), ["score", *common, "--workspace", str(tmp_path / "sharded"), "--json"],
                     demo_cache_dir)
    assert sharded.returncode == 0, sharded.stderr
    report = json.loads(sharded.stdout)  # rank 1 printed nothing: one JSON object
    assert report["world_size"] == 2 and report["merge"] == {"merged": ["external", "implicit"], "missing": {}}
    assert {name: s["scored"] for name, s in report["sources"].items()} == {"external": 40, "implicit": 40}
    assert report["seed_policy"]["trained_now"]
    assert [p.name for p in (tmp_path / "sharded" / "models").iterdir()] == [Path(report["seed_policy"]["path"]).name]
    assert "Traceback" not in sharded.stderr

    code, single = score_json([*common, "--workspace", str(tmp_path / "single")], capsys)
    assert code == 0 and single["world_size"] == 1
    # pi_1 trained on rank 0 is the single-process pi_1: a data-parallel seed training
    # (the launcher's variables visible) would have split its batch and moved elsewhere.
    seeds = [Path(r["seed_policy"]["path"]) for r in (report, single)]
    assert seeds[0].name == seeds[1].name
    for fold in ("fold-0", "fold-1"):  # the two cross-fit pi_1
        weights = [load_file(seed / fold / "model.safetensors") for seed in seeds]
        for name, value in weights[1].items():
            np.testing.assert_allclose(weights[0][name], value, atol=1e-6, rtol=0, err_msg=f"{fold} {name}")
    for source in ("external", "implicit"):
        store, reference = table_of(tmp_path / "sharded", source), table_of(tmp_path / "single", source)
        assert len(store.parts()) == 1, f"{source}: the ranks' parts were not merged"
        assert_same_margins(store, reference)
    # Rank and world size are not in the fingerprint (pi_1's folder is: its seed.json differs).
    assert table_of(tmp_path / "sharded", "external").fingerprint == table_of(tmp_path / "single", "external").fingerprint


def test_a_failing_rank_fails_the_whole_run(demo_cache_dir, demo_models, tmp_path):
    data = demo_slice(tmp_path / "pairs.jsonl", 20)
    script = tmp_path / "rank1_breaks.py"  # rank 1 gets a reward model that does not exist
    script.write_text("import os, sys\nfrom dmtui.cli import main\n"
                      "args = sys.argv[1:]\n"
                      "if os.environ['RANK'] == '1':\n    args[args.index('--reward-model') + 1] = '/no/such/model'\n"
                      "raise SystemExit(main(args))\n", "utf-8")
    env = {**os.environ, "DMTUI_CACHE": str(demo_cache_dir), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([*torchrun(2), str(script), "score", str(data), "--workspace", str(tmp_path / "ws"),
                             "--sources", "external", *model_args(demo_models)],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "rank 1 of 2: model path not found" in result.stderr


@pytest.mark.slow
def test_accelerate_launch_runs_the_same_sharded_scoring(demo_cache_dir, demo_models, tmp_path):
    data = demo_slice(tmp_path / "pairs.jsonl", 30)
    common = [str(data), "--sources", "external", *model_args(demo_models)]
    accelerate = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", str(free_port())]
    result = launch(accelerate, ["score", *common, "--workspace", str(tmp_path / "sharded"), "--json"],
                    demo_cache_dir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["world_size"] == 2 and report["merge"]["merged"] == ["external"]
    assert main(["score", *common, "--workspace", str(tmp_path / "single")]) == 0
    assert_same_margins(table_of(tmp_path / "sharded", "external"), table_of(tmp_path / "single", "external"))


# One rank alone -------------------------------------------------------------------------

def test_a_dead_rank_rerun_alone_completes_the_table_and_merging_again_changes_nothing(
        demo_models, tmp_path, capsys):
    data = demo_slice(tmp_path / "pairs.jsonl", 30)
    common = [str(data), "--sources", "external,ifd", *model_args(demo_models), "--checkpoint-every", "5"]
    assert score_json([*common, "--workspace", str(tmp_path / "single")], capsys)[0] == 0
    sharded = [*common, "--workspace", str(tmp_path / "sharded"), "--world-size", "2"]

    code, rank0 = score_json([*sharded, "--rank", "0"], capsys)  # rank 1 "died": only rank 0 ran
    assert code == 0 and rank0["rank"] == 0 and rank0["sources"]["external"]["scored"] == 15
    assert rank0["merge"] == {"merged": [], "missing": {"external": {"pairs": 15, "ranks": [1]},
                                                        "ifd": {"pairs": 15, "ranks": [1]}}}
    assert len(table_of(tmp_path / "sharded", "external").parts()) == 3, "an incomplete table was merged"

    code, rank1 = score_json([*sharded, "--rank", "1"], capsys)
    assert code == 0 and rank1["rank"] == 1 and rank1["sources"]["ifd"]["scored"] == 15
    assert rank1["merge"] == {"merged": ["external", "ifd"], "missing": {}}
    stores = {source: table_of(tmp_path / "sharded", source) for source in ("external", "ifd")}
    merged = {}
    for source, store in stores.items():
        assert len(store.parts()) == 1
        merged[source] = (store.parts()[0].name, store.read())
        reference = table_of(tmp_path / "single", source)
        assert store.fingerprint == reference.fingerprint  # rank and world size are not in it
        assert_same_margins(store, reference)

    code, again = score_json([*sharded, "--rank", "1"], capsys)
    assert code == 0 and (again["sources"]["external"]["scored"], again["sources"]["external"]["reused"]) == (0, 15)
    assert again["merge"]["merged"] == ["external", "ifd"]
    for source, store in stores.items():
        name, table = merged[source]
        assert [p.name for p in store.parts()] == [name] and store.read().equals(table)


def test_a_rank_with_no_pairs_succeeds_and_names_the_ranks_still_owed(demo_models, tmp_path, capsys):
    data = demo_slice(tmp_path / "pairs.jsonl", 3)
    code, report = score_json([str(data), "--workspace", str(tmp_path / "ws"), "--sources", "external",
                               *model_args(demo_models), "--rank", "3", "--world-size", "4"], capsys)
    assert code == 0
    assert report["sources"]["external"]["pairs"] == 0 and report["sources"]["external"]["scored"] == 0
    assert report["merge"]["missing"] == {"external": {"pairs": 3, "ranks": [0, 1, 2]}}


def test_only_rank_0_trains_the_seed_policy(demo_models, tmp_path, capsys):
    data = demo_slice(tmp_path / "pairs.jsonl", 10)
    code = main(["score", str(data), "--workspace", str(tmp_path / "ws"), "--sources", "implicit",
                 "--reference-model", str(demo_models.policy), "--device", "cpu", "--rank", "1", "--world-size", "2"])
    err = capsys.readouterr().err
    assert code == 1
    assert "rank 1 of 2: the seed policy pi_1 is not made yet" in err and "run rank 0 first" in err
    assert not (tmp_path / "ws" / "models").exists()


# The merge ------------------------------------------------------------------------------

def shard_parts(scores_dir: Path) -> ScoreStore:
    """A table written by two ranks, two parts each: pairs p0..p7, margin i / 10."""
    store = ScoreStore(scores_dir, "external", "fp")
    for rank in (0, 1):
        for start in (0, 4):
            index = [start + rank, start + rank + 2]
            store.append(pa.table({"pair_id": [f"p{i}" for i in index], "margin": [i / 10 for i in index]}),
                         rank=rank)
    return store


def test_a_crash_mid_merge_leaves_a_readable_table_that_the_next_merge_finishes(tmp_path, monkeypatch):
    store = shard_parts(tmp_path)
    before = store.read()
    removed = []

    def crash_after_one(path: Path, missing_ok: bool = False) -> None:
        if removed:
            raise RuntimeError("killed mid-merge")
        removed.append(path)
        os.remove(path)

    monkeypatch.setattr(Path, "unlink", crash_after_one)
    with pytest.raises(RuntimeError, match="killed mid-merge"):
        store.compact()
    monkeypatch.undo()
    assert len(store.parts()) == 4  # the merged part beside three of the four old ones
    ids = [f"p{i}" for i in range(8)]
    np.testing.assert_array_equal(store.margins_for(ids), np.arange(8) / 10)
    assert store.read().num_rows == 8

    store.compact()
    (part,) = store.parts()
    assert store.read().sort_by("pair_id").equals(before.sort_by("pair_id"))
    store.compact()
    assert store.parts() == [part]


def test_a_reader_lists_again_when_a_merge_removes_parts_under_it(tmp_path, monkeypatch):
    store = shard_parts(tmp_path)
    real_parts = ScoreStore.parts
    merged_away = []

    def parts_then_merged_away(self):
        listed = real_parts(self)
        if not merged_away:  # another process compacts right after this listing
            merged_away.extend(listed)
            ScoreStore(tmp_path, store.source, store.fingerprint).compact()
        return listed

    monkeypatch.setattr(ScoreStore, "parts", parts_then_merged_away)
    table = store.read()
    assert len(merged_away) == 4 and not any(part.exists() for part in merged_away)
    assert sorted(table["pair_id"].to_pylist()) == [f"p{i}" for i in range(8)]


# Launcher detection ---------------------------------------------------------------------

def test_doctests():
    assert doctest.testmod(core.scoring.distributed).failed == 0


TORCHRUN_RANK_1 = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}


@pytest.mark.parametrize("rank, world_size, environ, message", [
    (1, None, {}, "--rank and --world-size go together"),
    (2, 2, {}, "rank 2 of world size 2 does not exist"),
    (0, 0, {}, "rank 0 of world size 0 does not exist"),
    (None, None, {**TORCHRUN_RANK_1, "RANK": "2"}, "RANK/WORLD_SIZE: rank 2 of world size 2 does not exist"),
    (None, None, {**TORCHRUN_RANK_1, "RANK": "one"}, "not a whole number"),
    # Every launched process would take the same shard and write the same parts.
    (1, 2, TORCHRUN_RANK_1, "a launcher started this process as rank 1 of 2"),
])
def test_bad_rank_settings_are_errors(rank, world_size, environ, message):
    with pytest.raises(DistributedError, match=message):
        detect_shard(rank, world_size, environ=environ)


def test_launcher_variables_are_hidden_while_the_seed_policy_trains(monkeypatch):
    launcher = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                "TORCHELASTIC_RUN_ID": "none"}
    for name, value in launcher.items():
        monkeypatch.setenv(name, value)
    with launcher_hidden():
        assert not set(launcher) & set(os.environ)
        assert detect_shard() == detect_shard(environ={})
    assert {name: os.environ[name] for name in launcher} == launcher


@pytest.mark.parametrize("requested, shard, environ, expected, current", [
    ("auto", Shard(5, 8, local_rank=3, launched=True), {}, "cuda:1", [1]),  # 2 GPUs: ranks share them
    ("cuda", Shard(1, 2, local_rank=1, launched=True), {}, "cuda:1", [1]),
    ("cuda:0", Shard(1, 2, local_rank=1, launched=True), {}, "cuda:0", []),  # named: as given
    ("auto", Shard(1, 2), {}, "auto", []),  # a lone rank picks like a single process
    ("auto", Shard(1, 2, local_rank=1, launched=True), {"ACCELERATE_USE_CPU": "True"}, "cpu", []),
])
def test_each_launched_rank_takes_the_gpu_of_its_local_rank(monkeypatch, requested, shard, environ, expected,
                                                           current):
    import torch

    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    assert shard_device(requested, shard, environ) == expected
    assert made_current == current


def test_when_another_rank_stopped_rank_0_reports_it_and_merges_nothing(demo_models, tmp_path, capsys, monkeypatch):
    """Every rank meets in the gather stopped or not; rank 0 learns who stopped and skips the merge."""
    import core.scoring.distributed

    def gathered_with_rank_1_stopped(value, shard):
        report, stopped = value
        return [(report, stopped), (report, True)]

    monkeypatch.setattr(core.scoring.distributed, "gather_on_main", gathered_with_rank_1_stopped)
    merges = []
    monkeypatch.setattr(core.scoring.distributed, "merge_shards", lambda *args: merges.append(args))
    data = demo_slice(tmp_path / "pairs.jsonl", 4)
    code = main(["score", str(data), "--workspace", str(tmp_path / "ws"), "--sources", "external",
                 *model_args(demo_models), "--rank", "0", "--world-size", "2", "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0 and report["cancelled"] is True and "merge" not in report
    assert merges == []
    assert "nothing was merged" in captured.err
