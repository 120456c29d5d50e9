"""Exports: every format round-trips, manifests rebuild byte for byte, refusals say why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.data.loading import LoadConfig, load_dataset
from core.export.exporter import (
    Annotated,
    ExportError,
    annotated_from_workspace,
    export_selection,
    read_manifest,
    rebuild_from_manifest,
    run_selection,
)
from core.selection.selector import SelectionParams
from core.store.annotations import AnnotationStore
from core.store.margin_sources import MarginSpec, resolve_margins
from core.store.workspace import Workspace, dataset_ref

N = 60


def rows(n: int = N) -> list[dict]:
    rng = np.random.default_rng(7)
    return [
        {
            "prompt": f"question {i}",
            "chosen": f"good answer {i}",
            "rejected": f"bad answer {i}",
            "score_chosen": int(rng.integers(1, 10)),
            "score_rejected": int(rng.integers(1, 10)),
            "implicit_m": float(rng.normal(0, 3)),
            "topic": f"t{i % 3}",
        }
        for i in range(n)
    ]


def write_source(tmp_path: Path, kind: str) -> str:
    table = pa.Table.from_pylist(rows())
    if kind == "jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    elif kind == "parquet":
        path = tmp_path / "data.parquet"
        pq.write_table(table, path)
    elif kind == "csv":
        import pyarrow.csv as pa_csv

        path = tmp_path / "data.csv"
        pa_csv.write_csv(table, path)
    else:
        import datasets

        path = tmp_path / "data_disk"
        datasets.Dataset(table).save_to_disk(str(path))
    return str(path)


SPECS = [MarginSpec.parse("external=score_chosen,score_rejected"), MarginSpec.parse("implicit=implicit_m")]


def do_export(source: str, out: Path, annotated: Annotated = Annotated(), **kwargs):
    dataset = load_dataset(source)
    resolved = resolve_margins(dataset, SPECS)
    selection = run_selection(dataset, resolved, SelectionParams(budget=12), annotated)
    manifest = export_selection(dataset, dataset_ref(source), LoadConfig(), resolved, selection, annotated, out,
                                **kwargs)
    return dataset, selection, manifest


def read_back(out: Path, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    if fmt == "parquet":
        return pq.read_table(out / "data.parquet").to_pylist()
    if fmt == "csv":
        import pyarrow.csv as pa_csv

        return pa_csv.read_csv(out / "data.csv").to_pylist()
    import datasets

    return datasets.load_from_disk(str(out / "data")).to_list()


@pytest.mark.parametrize(("kind", "fmt"), [("jsonl", "jsonl"), ("parquet", "parquet"), ("csv", "csv"),
                                           ("save_to_disk", "save_to_disk")])
def test_export_round_trips_in_the_input_format(tmp_path, kind, fmt):
    source = write_source(tmp_path, kind)
    dataset, selection, manifest = do_export(source, tmp_path / "out")
    assert manifest["output"]["format"] == fmt
    exported = read_back(tmp_path / "out", fmt)
    assert len(exported) == 12 == selection.selected
    original = {r["prompt"]: r for r in rows()}
    for row in exported:
        source_row = original[row["prompt"]]
        for column in ("chosen", "rejected", "topic"):
            assert row[column] == source_row[column]
        assert row["margin_external"] == pytest.approx(source_row["score_chosen"] - source_row["score_rejected"])
        assert 0.0 <= row["selection_score"] <= 1.0
    assert [row["pair_id"] for row in exported] == manifest["selected_pair_ids"]
    # The subset is the top 12 by fused score.
    chosen_scores = np.sort(selection.score[selection.indices])
    others = np.delete(selection.score, selection.indices)
    assert chosen_scores.min() >= np.nanmax(others)


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "save_to_disk"])
def test_manifest_rebuilds_byte_for_byte(tmp_path, kind):
    source = write_source(tmp_path, kind)
    _, _, manifest = do_export(source, tmp_path / "first")
    rebuilt = rebuild_from_manifest(tmp_path / "first" / "manifest.json", tmp_path / "second")
    assert rebuilt["output"]["sha256"] == manifest["output"]["sha256"]
    data = manifest["output"]["data"]
    first, second = tmp_path / "first" / data, tmp_path / "second" / data
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file()) if first.is_dir() else [Path()]
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_rebuild_refuses_when_the_input_changed(tmp_path):
    source = write_source(tmp_path, "jsonl")
    do_export(source, tmp_path / "first")
    with open(source, "a") as handle:
        handle.write(json.dumps({"prompt": "new", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ExportError, match="input changed"):
        rebuild_from_manifest(tmp_path / "first" / "manifest.json", tmp_path / "second")
    assert not (tmp_path / "second").exists()


def test_corrupt_or_incomplete_manifest_is_refused(tmp_path):
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    with pytest.raises(ExportError, match="not valid JSON"):
        read_manifest(bad)
    bad.write_text(json.dumps({"manifest_version": 1, "input": {}}))
    with pytest.raises(ExportError, match="missing input.checksum"):
        read_manifest(bad)


def test_existing_export_needs_force_and_nothing_half_written(tmp_path):
    source = write_source(tmp_path, "jsonl")
    do_export(source, tmp_path / "out")
    before = (tmp_path / "out" / "data.jsonl").read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        do_export(source, tmp_path / "out")
    assert (tmp_path / "out" / "data.jsonl").read_bytes() == before
    do_export(source, tmp_path / "out", force=True)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_annotations_are_honoured_and_recorded(tmp_path):
    source = write_source(tmp_path, "jsonl")
    dataset = load_dataset(source)
    resolved = resolve_margins(dataset, SPECS)
    plain = run_selection(dataset, resolved, SelectionParams(budget=12), Annotated())
    ids = dataset.pairs["pair_id"].to_pylist()
    best = ids[int(plain.indices[np.argmax(plain.score[plain.indices])])]
    worst = ids[int(np.nanargmin(plain.score))]
    annotated = Annotated(excluded=(best,), swapped=(worst,))
    _, selection, manifest = do_export(source, tmp_path / "out", annotated)
    exported = {row["pair_id"]: row for row in read_back(tmp_path / "out", "jsonl")}
    assert best not in exported
    assert manifest["annotations"] == {"excluded": [best], "swapped": [worst], "flags": {}, "notes": {}}
    # The lowest-scored pair, swapped, has the highest margins, so it is selected.
    original = rows()[ids.index(worst)]
    assert exported[worst]["chosen"] == original["rejected"]
    assert exported[worst]["margin_external"] == -(original["score_chosen"] - original["score_rejected"])
    rebuilt = rebuild_from_manifest(tmp_path / "out" / "manifest.json", tmp_path / "again")
    assert rebuilt["selected_pair_ids"] == manifest["selected_pair_ids"]


def test_swap_exchanges_chosen_and_rejected_in_the_output(tmp_path):
    source = write_source(tmp_path, "parquet")
    dataset = load_dataset(source)
    ids = dataset.pairs["pair_id"].to_pylist()
    annotated = Annotated(swapped=tuple(ids))  # swap everything: the selection is the old bottom
    _, _, manifest = do_export(source, tmp_path / "out", annotated)
    for row in read_back(tmp_path / "out", "parquet"):
        assert row["chosen"].startswith("bad") and row["rejected"].startswith("good")
    assert manifest["counts"]["swapped_selected"] == 12


def test_workspace_annotations_feed_exports(tmp_path):
    source = write_source(tmp_path, "jsonl")
    workspace = Workspace.create(tmp_path / "ws", source)
    pair_id = workspace.load().pairs["pair_id"][0].as_py()
    with AnnotationStore(workspace.annotations_path) as store:
        store.update(pair_id, excluded=True, note="'; DROP TABLE annotation; --")
    assert annotated_from_workspace(workspace) == Annotated(excluded=(pair_id,),
                                                            notes={pair_id: "'; DROP TABLE annotation; --"})


def test_column_clash_is_refused(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({**r, "margin_external": 1}) + "\n" for r in rows()))
    with pytest.raises(ExportError, match="margin_external"):
        do_export(str(path), tmp_path / "out")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmtui", *args], capture_output=True, text=True, timeout=120)


def test_cli_select_json_and_export_then_rebuild(tmp_path):
    source = write_source(tmp_path, "jsonl")
    margins = ["--margin", "external=score_chosen,score_rejected", "--margin", "implicit=implicit_m"]
    result = run_cli("select", source, *margins, "--budget", "0.25", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"]["selected"] == 15 and summary["counts"]["total"] == N
    assert set(summary["bounds"]) == {"external", "implicit"}
    assert "random" in summary["overlap"]

    out = tmp_path / "cli_out"
    result = run_cli("export", source, *margins, "--mode", "top", "--source", "implicit", "--budget", "10",
                     "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["selected"] == 10
    again = run_cli("export", "--manifest", str(out / "manifest.json"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert (out / "data.jsonl").read_bytes() == (tmp_path / "again" / "data.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--margin", "external=nope"], "no column 'nope'"),
        (["--margin", "external=score_chosen", "--budget", "abc"], "cannot read the budget"),
        (["--margin", "x=score_chosen", "--mode", "sideways"], "unknown mode"),
        ([], "no margin sources"),
    ],
)
def test_cli_errors_are_messages_not_tracebacks(tmp_path, args, message):
    source = write_source(tmp_path, "jsonl")
    result = run_cli("select", source, *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_rebuild_with_bad_manifest_path(tmp_path):
    result = run_cli("export", "--manifest", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o"))
    assert result.returncode == 1 and "no such manifest" in result.stderr
    assert "Traceback" not in result.stderr
