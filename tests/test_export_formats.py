"""Every export format against every data shape and input kind, flagged pairs dropped and
listed, annotations beside the data, and version-1 manifests that still rebuild.

Shapes are built locally to public schemas: TRL's standard strings (TL;DR-style),
conversational message lists (Orca-style system + user turns), implicit prompts
(Anthropic HH-RLHF whole-dialogue text), and extra columns of records and lists
(UltraFeedback-style `messages` and metadata).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_export import read_back

from core.curation.session import CurationSession
from core.data.loading import LoadConfig, load_dataset
from core.export.exporter import (
    ANNOTATIONS_NAME,
    LEGACY_SWAP,
    Annotated,
    ExportError,
    export_selection,
    rebuild_from_manifest,
    run_selection,
)
from core.selection.selector import SelectionParams
from core.store.margin_sources import MarginSpec, resolve_margins
from core.store.workspace import dataset_ref

N = 24
FIXTURES = Path(__file__).parent / "fixtures"


def shaped_rows(shape: str) -> list[dict]:
    rows = []
    for i in range(N):
        extra = {"score_chosen": float(i % 7), "score_rejected": float((i * 3) % 5), "id": f"row-{i}"}
        if shape == "standard":
            row = {"prompt": f"SUBREDDIT: r/tifu\nPOST: story {i}\nTL;DR:", "chosen": f" kept it short {i}",
                   "rejected": f" rambled {i}"}
        elif shape == "conversational":
            prompt = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"Sum {i}+1?"}]
            row = {"prompt": prompt, "chosen": [{"role": "assistant", "content": f"{i + 1}"}],
                   "rejected": [{"role": "assistant", "content": f"Maybe {i}"}],
                   "messages": prompt + [{"role": "assistant", "content": f"{i + 1}"}]}
        elif shape == "implicit":
            dialogue = f"\n\nHuman: How do I fold shirt {i}?\n\nAssistant:"
            row = {"chosen": dialogue + f" Lay it flat, fold thirds ({i}).", "rejected": dialogue + " No idea."}
        else:
            raise ValueError(shape)
        if shape != "standard":
            extra["meta"] = {"source": "synthetic", "turns": [i, i + 1]}
        rows.append({**row, **extra})
    return rows


def write_input(tmp_path: Path, shape: str, kind: str, rows: list[dict] | None = None) -> str:
    rows = shaped_rows(shape) if rows is None else rows
    if kind == "jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "parquet":
        path = tmp_path / "data.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "csv":
        import pyarrow.csv as pa_csv

        path = tmp_path / "data.csv"
        flat = [{k: v for k, v in row.items() if k != "meta"} for row in rows]  # CSV holds no records
        pa_csv.write_csv(pa.Table.from_pylist(flat), path)
    else:
        import datasets

        path = tmp_path / "data_disk"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


SPECS = [MarginSpec.parse("external=score_chosen,score_rejected")]
CASES = [(shape, kind) for shape in ("standard", "conversational", "implicit")
         for kind in ("jsonl", "parquet", "csv", "save_to_disk")
         if not (kind == "csv" and shape == "conversational")]  # CSV cells cannot hold a conversation


@pytest.mark.parametrize(("shape", "kind"), CASES)
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "save_to_disk"])
def test_every_format_writes_every_shape_and_rebuilds(tmp_path, shape, kind, fmt):
    source = write_input(tmp_path, shape, kind)
    dataset = load_dataset(source)
    assert dataset.report.loaded == N
    resolved = resolve_margins(dataset, SPECS)
    selection = run_selection(dataset, resolved, SelectionParams(mode="top", source="external", budget=6, trim=0.0),
                              Annotated())
    out = tmp_path / "out"
    manifest = export_selection(dataset, dataset_ref(source), LoadConfig(), resolved, selection, Annotated(), out,
                                fmt=fmt)
    written = read_back(out, fmt)
    assert [row["pair_id"] for row in written] == manifest["selected_pair_ids"]
    by_id = {row["id"]: row for row in shaped_rows(shape)}
    for row in written:
        original = by_id[row["id"]]
        for column in ("chosen", "rejected", "meta", "messages"):
            if column not in original or (kind == "csv" and column == "meta"):  # CSV input: no records
                continue
            value = row[column]
            if column in manifest["output"]["json_columns"]:
                value = json.loads(value)  # CSV: lists and records as JSON text
            assert value == original[column], (column, value)
    if fmt == "csv" and shape == "conversational":
        assert {"chosen", "rejected", "prompt", "messages", "meta"} <= set(manifest["output"]["json_columns"])
    rebuilt = rebuild_from_manifest(out / "manifest.json", tmp_path / "again")
    assert rebuilt["output"]["sha256"] == manifest["output"]["sha256"]


def flagged_session(tmp_path):
    source = write_input(tmp_path, "standard", "jsonl")
    dataset = load_dataset(source)
    resolved = resolve_margins(dataset, SPECS)
    session = CurationSession(dataset, resolved, dataset_ref=dataset_ref(source))
    return session


def test_flagged_pairs_are_dropped_listed_and_annotations_written_beside_the_data(tmp_path):
    from core.store.annotations import Annotation

    session = flagged_session(tmp_path)
    params = SelectionParams(mode="top", source="external", budget=8, trim=0.0)
    selection = session.select(params)
    picked = selection.indices.tolist()
    ids = session.pair_ids.to_pylist()
    session.annotations.set(picked[0], Annotation(ids[picked[0]], flags=("toxic",)))
    session.annotations.set(picked[1], Annotation(ids[picked[1]], flags=("other",), note="odd wording"))
    session.annotations.set(picked[2], Annotation(ids[picked[2]], flags=("mislabeled", "other")))
    plan = session.plan_export(selection, ("toxic", "mislabeled"))
    assert (plan.selected, plan.dropped, plan.written) == (8, 2, 6)
    assert plan.flagged_written["other"] == 1 and any("keeps flagged pairs" in line for line in plan.lines())

    manifest = session.export(selection, tmp_path / "out", drop_flagged=("toxic", "mislabeled"))
    written = [json.loads(line)["pair_id"] for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()]
    assert ids[picked[0]] not in written and ids[picked[2]] not in written and len(written) == 6
    assert manifest["export"]["dropped_pair_ids"] == [ids[i] for i in sorted(picked[:3]) if i != picked[1]]
    assert manifest["annotations"]["flags"][ids[picked[0]]] == ["toxic"]
    assert manifest["counts"]["selected"] == 6 and manifest["counts"]["dropped_flagged"] == 2
    beside = [json.loads(line) for line in (tmp_path / "out" / ANNOTATIONS_NAME).read_text().splitlines()]
    assert beside == [{"pair_id": ids[picked[1]], "flags": ["other"], "note": "odd wording"}]

    # The rebuild drops the same pairs from the manifest's own record, not from live annotations.
    session.annotations.set(picked[0], Annotation(ids[picked[0]]))
    rebuilt = rebuild_from_manifest(tmp_path / "out" / "manifest.json", tmp_path / "again")
    assert rebuilt["selected_pair_ids"] == manifest["selected_pair_ids"]
    for name in ("data.jsonl", ANNOTATIONS_NAME):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_no_drop_keeps_flagged_pairs_and_says_so(tmp_path):
    from core.store.annotations import Annotation

    session = flagged_session(tmp_path)
    selection = session.select(SelectionParams(mode="top", source="external", budget=5, trim=0.0))
    first = int(selection.indices[0])
    session.annotations.set(first, Annotation(session.pair_ids[first].as_py(), flags=("toxic",)))
    manifest = session.export(selection, tmp_path / "out", drop_flagged=())
    assert manifest["counts"]["selected"] == 5 and manifest["counts"]["flagged_selected"]["toxic"] == 1


def test_a_version_1_manifest_still_rebuilds_byte_for_byte(tmp_path):
    """The fixture was written by dmtui before manifest version 2 (one flag per pair, no
    annotations.jsonl); only its input path is moved to where the test put the data."""
    folder = tmp_path / "v1"
    shutil.copytree(FIXTURES / "manifest_v1", folder)
    manifest_path = folder / "export" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["manifest_version"] == 1
    manifest["input"]["source"] = str(folder / "data.jsonl")
    manifest_path.write_text(json.dumps(manifest))
    rebuilt = rebuild_from_manifest(manifest_path, tmp_path / "again")
    assert rebuilt["manifest_version"] == 3 and rebuilt["export"]["dropped_pair_ids"] == []
    assert rebuilt["export"]["swap"] == LEGACY_SWAP.to_json()  # it was written swapping chosen/rejected only
    assert (folder / "export" / "data.jsonl").read_bytes() == (tmp_path / "again" / "data.jsonl").read_bytes()
    assert rebuilt["selected_pair_ids"] == manifest["selected_pair_ids"]


def test_jsonl_from_arrow_input_writes_dates_and_bytes_as_text(tmp_path):
    import datetime

    rows = [{"prompt": f"p{i}", "chosen": f"a{i}", "rejected": f"b{i}", "m": float(i),
             "when": datetime.date(2024, 1, i + 1), "blob": bytes([i])} for i in range(4)]
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    dataset = load_dataset(str(path))
    resolved = resolve_margins(dataset, [MarginSpec.parse("external=m")])
    selection = run_selection(dataset, resolved, SelectionParams(mode="top", source="external", budget=2, trim=0.0),
                              Annotated())
    export_selection(dataset, dataset_ref(str(path)), LoadConfig(), resolved, selection, Annotated(),
                     tmp_path / "out", fmt="jsonl")
    written = [json.loads(line) for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()]
    assert [row["when"] for row in written] == ["2024-01-03", "2024-01-04"]
    assert np.isclose(written[0]["margin_external"], 2.0)


def test_training_refuses_a_csv_export_of_conversations(tmp_path):
    from core.errors import DmtuiError
    from core.training.trainer import _export_pairs

    source = write_input(tmp_path, "conversational", "jsonl")
    dataset = load_dataset(source)
    resolved = resolve_margins(dataset, SPECS)
    selection = run_selection(dataset, resolved, SelectionParams(mode="top", source="external", budget=6, trim=0.0),
                              Annotated())
    export_selection(dataset, dataset_ref(source), LoadConfig(), resolved, selection, Annotated(), tmp_path / "csv",
                     fmt="csv")
    with pytest.raises(DmtuiError, match="conversations of chosen, prompt, rejected as JSON text"):
        _export_pairs(tmp_path / "csv")
    export_selection(dataset, dataset_ref(source), LoadConfig(), resolved, selection, Annotated(), tmp_path / "jsonl")
    pairs, _ = _export_pairs(tmp_path / "jsonl")
    assert len(pairs) == 6 and isinstance(pairs[0]["chosen"], list)


def ultrafeedback_rows() -> list[dict]:
    """UltraFeedback-binarized: a string prompt, chosen/rejected as [user, assistant], and
    `messages` a copy of chosen."""
    rows = []
    for i in range(N):
        user = {"role": "user", "content": f"Name a prime above {i}."}
        chosen = [user, {"role": "assistant", "content": f"{i} is near a prime"}]
        rows.append({"prompt": user["content"], "prompt_id": f"p{i}", "chosen": chosen,
                     "rejected": [user, {"role": "assistant", "content": "bananas"}], "messages": chosen,
                     "score_chosen": float(i % 7), "score_rejected": float((i * 3) % 5), "id": f"row-{i}"})
    return rows


@pytest.mark.parametrize("shape", ["ultrafeedback", "conversational", "standard"])
@pytest.mark.parametrize("kind", ["jsonl", "parquet", "save_to_disk"])
def test_a_swapped_record_is_written_the_way_round_the_curator_set_it(tmp_path, shape, kind):
    """Swapped pairs exchange their score columns with chosen and rejected, a margin column
    is negated, `messages` follows the new chosen (UltraFeedback: a copy of chosen; Orca-
    style: the prompt's turns then chosen); unswapped records are untouched; rebuilt byte
    for byte."""
    rows = ultrafeedback_rows() if shape == "ultrafeedback" else shaped_rows(shape)
    for row in rows:
        row["gap"] = row["score_chosen"] - row["score_rejected"]
        row["chosen_model"], row["rejected_model"] = "big", "small"
    source = write_input(tmp_path, shape, kind, rows)
    dataset = load_dataset(source)
    assert dataset.report.loaded == N
    resolved = resolve_margins(dataset, [*SPECS, MarginSpec.parse("implicit=gap")])
    ids = dataset.pairs["pair_id"].to_pylist()
    annotated = Annotated(swapped=tuple(ids[::2]))
    selection = run_selection(dataset, resolved, SelectionParams(mode="random", budget=N), annotated)
    out = tmp_path / "out"
    manifest = export_selection(dataset, dataset_ref(source), LoadConfig(), resolved, selection, annotated, out)
    swap = manifest["export"]["swap"]
    assert swap["paired_columns"] == [["score_chosen", "score_rejected"], ["chosen_model", "rejected_model"]]
    assert swap["negated_columns"] == ["gap"] and swap["answers_flags"] == ["mislabeled"]
    assert swap["follows_chosen"] == (["messages"] if shape != "standard" else [])
    fmt = manifest["output"]["format"]
    by_id = {row["id"]: row for row in rows}
    written = read_back(out, fmt)
    assert len(written) == N
    for record in written:
        original = by_id[record["id"]]
        if record["pair_id"] not in annotated.swapped:
            assert {k: record[k] for k in original} == original
            continue
        assert (record["chosen"], record["rejected"]) == (original["rejected"], original["chosen"])
        assert (record["score_chosen"], record["score_rejected"]) == (original["score_rejected"],
                                                                       original["score_chosen"])
        assert (record["chosen_model"], record["rejected_model"]) == ("small", "big")
        assert record["gap"] == -original["gap"] and record["margin_implicit"] == record["gap"]
        if shape == "ultrafeedback":
            assert record["messages"] == original["rejected"]
        elif shape == "conversational":
            assert record["messages"] == original["prompt"] + original["rejected"]
        assert record["id"] == original["id"] and record["prompt"] == original["prompt"]
    rebuilt = rebuild_from_manifest(out / "manifest.json", tmp_path / "again")
    assert rebuilt["output"]["sha256"] == manifest["output"]["sha256"]


def test_messages_that_do_not_copy_chosen_are_left_as_they_were(tmp_path):
    rows = ultrafeedback_rows()
    for row in rows:
        row["messages"] = [{"role": "user", "content": "something else"}]
    source = write_input(tmp_path, "ultrafeedback", "jsonl", rows)
    dataset = load_dataset(source)
    resolved = resolve_margins(dataset, SPECS)
    annotated = Annotated(swapped=tuple(dataset.pairs["pair_id"].to_pylist()))
    selection = run_selection(dataset, resolved, SelectionParams(mode="random", budget=N), annotated)
    export_selection(dataset, dataset_ref(source), LoadConfig(), resolved, selection, annotated, tmp_path / "out")
    for record in read_back(tmp_path / "out", "jsonl"):
        assert record["messages"] == [{"role": "user", "content": "something else"}]
        assert record["chosen"][1]["content"] == "bananas"


def test_a_mislabeled_pair_fixed_by_a_swap_is_exported_and_a_toxic_one_is_not(tmp_path):
    """The review's case: the pair with the lowest margin, flagged mislabeled and swapped,
    ranks among the best and is written (the swap fixed it); a swapped toxic pair is
    dropped; the plan, the manifest and a rebuild agree."""
    from core.store.annotations import Annotation

    session = flagged_session(tmp_path)
    ids = session.pair_ids.to_pylist()
    margin = session.margins["external"]
    worst, second = (int(i) for i in np.argsort(margin, kind="stable")[:2])
    session.annotations.set(worst, Annotation(ids[worst], flags=("mislabeled",), swapped=True))
    session.annotations.set(second, Annotation(ids[second], flags=("toxic",), swapped=True))
    selection = session.select(SelectionParams(mode="top", source="external", budget=8, trim=0.0))
    assert {worst, second} <= set(selection.indices.tolist())  # margin -3 swapped: 3, among the best 8
    plan = session.plan_export(selection, ("toxic", "mislabeled"))
    assert (plan.selected, plan.dropped, plan.spared, plan.written) == (8, 1, 1, 7)
    assert "keeps mislabeled pairs the curator swapped (the swap fixed them): 1" in plan.lines()
    assert not any("keeps flagged pairs" in line for line in plan.lines())

    manifest = session.export(selection, tmp_path / "out", drop_flagged=("toxic", "mislabeled"))
    written = {json.loads(line)["pair_id"]: json.loads(line)
               for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()}
    assert ids[worst] in written and ids[second] not in written and len(written) == plan.written
    assert written[ids[worst]]["chosen"].startswith(" rambled")
    assert manifest["export"]["dropped_pair_ids"] == [ids[second]]
    assert manifest["export"]["spared_pair_ids"] == [ids[worst]]
    assert manifest["counts"]["spared_by_swap"] == 1
    rebuilt = rebuild_from_manifest(tmp_path / "out" / "manifest.json", tmp_path / "again")
    assert rebuilt["selected_pair_ids"] == manifest["selected_pair_ids"]
    assert rebuilt["output"]["sha256"] == manifest["output"]["sha256"]


def test_a_version_2_manifest_rebuilds_by_its_own_rule(tmp_path):
    """Before version 3 a swap exchanged chosen and rejected only and a swapped mislabeled
    pair was dropped: a manifest that says nothing of the swap rule rebuilds that way."""
    from core.store.annotations import Annotation

    session = flagged_session(tmp_path)
    ids = session.pair_ids.to_pylist()
    worst = int(np.argmin(session.margins["external"]))
    session.annotations.set(worst, Annotation(ids[worst], flags=("mislabeled",), swapped=True))
    selection = session.select(SelectionParams(mode="top", source="external", budget=8, trim=0.0))
    assert worst in selection.indices
    manifest = export_selection(session.dataset, session.dataset_ref, LoadConfig(), session.resolved, selection,
                                session.annotated(), tmp_path / "old", drop_flagged=("mislabeled",),
                                swap_rule=LEGACY_SWAP)
    assert manifest["export"]["dropped_pair_ids"] == [ids[worst]]
    path = tmp_path / "old" / "manifest.json"
    old = json.loads(path.read_text())
    old["manifest_version"] = 2
    del old["export"]["swap"], old["export"]["spared_pair_ids"], old["counts"]["spared_by_swap"]
    path.write_text(json.dumps(old))
    rebuilt = rebuild_from_manifest(path, tmp_path / "again")
    assert rebuilt["output"]["sha256"] == manifest["output"]["sha256"]
    assert rebuilt["export"]["dropped_pair_ids"] == [ids[worst]]
    old["manifest_version"] = 3
    path.write_text(json.dumps(old))
    with pytest.raises(ExportError, match="export.swap is missing"):
        rebuild_from_manifest(path, tmp_path / "third")
