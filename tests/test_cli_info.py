"""`dmtui info`: the load report on the command line, in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "meta": 1},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome", "meta": 2},
]


def dmtui(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    result = subprocess.run(
        [sys.executable, "-m", "dmtui", *map(str, args)],
        capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


def write_lines(path: Path, lines) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


@pytest.fixture
def mixed(tmp_path) -> Path:
    """Two good rows, then one of each of several bad kinds."""
    return write_lines(
        tmp_path / "mixed.jsonl",
        [json.dumps(ROWS[0]), json.dumps(ROWS[1]), "{broken", json.dumps(dict(ROWS[0], meta=9)),
         '{"prompt": "p", "chosen": null, "rejected": "r"}', "{also broken"],
    )


def test_human_report_names_reasons_and_locations(mixed):
    result = dmtui("info", mixed)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "mixed.jsonl" in out and "jsonl" in out and "standard" in out
    assert "read 6" in out and "loaded 2" in out and "rejected 4" in out
    for reason, where in [("malformed_json", "line 3, line 6"), ("duplicate_pair", "line 4"),
                          ("null_field", "line 5")]:
        line = next(l for l in out.splitlines() if reason in l)
        assert where in line, line
    assert "kept: meta" in out


def test_all_lists_every_rejection_with_column(mixed):
    result = dmtui("info", mixed, "--all")
    assert result.returncode == 0
    assert "mixed.jsonl:line 5, column 'chosen': null_field" in result.stdout


def test_json_report(mixed):
    result = dmtui("info", mixed, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # exactly one JSON document
    assert isinstance(data, dict)
    assert (data["read"], data["loaded"]) == (6, 2)
    assert data["rejected"] == {"malformed_json": 2, "duplicate_pair": 1, "null_field": 1}
    assert data["read"] == data["loaded"] + sum(data["rejected"].values())
    assert data["first_locations"]["malformed_json"] == ["line 3", "line 6"]
    assert data["format"] == "standard"


def test_empty_file_exits_1(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    result = dmtui("info", path)
    assert result.returncode == 1
    assert "empty" in result.stderr
    as_json = dmtui("info", path, "--json")
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert (data["read"], data["loaded"], data["rejected"]) == (0, 0, {})
    assert "empty" in data["error"]


def test_wrong_column_mapping_exits_1_with_hint(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in ROWS])
    result = dmtui("info", path, "--chosen-col", "good")
    assert result.returncode == 1
    assert "missing_column" in result.stdout
    assert "no usable pairs" in result.stderr and "--chosen-col" in result.stderr
    as_json = dmtui("info", path, "--chosen-col", "good", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["rejected"] == {"missing_column": 2}


def test_wrong_column_mapping_on_parquet_exits_1_with_hint(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    result = dmtui("info", path, "--prompt-col", "question")
    assert result.returncode == 1
    assert "'question' not found" in result.stderr and "--prompt-col" in result.stderr


def test_column_mapping_options(tmp_path):
    rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in ROWS]
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(r) for r in rows])
    result = dmtui("info", path, "--prompt-col", "question", "--chosen-col", "good", "--rejected-col", "bad",
                   "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["loaded"] == 2
    assert data["columns"] == {"prompt": "question", "chosen": "good", "rejected": "bad"}


def test_max_field_chars_option(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in ROWS])
    data = json.loads(dmtui("info", path, "--max-field-chars", "3", "--json").stdout)
    assert data["rejected"] == {"field_too_large": 2}


def test_nothing_usable_exits_1(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ["{x", '{"prompt": "p", "chosen": "s", "rejected": "s"}'])
    result = dmtui("info", path)
    assert result.returncode == 1
    assert "no usable pairs" in result.stderr


def test_strict_exits_1_with_location(mixed):
    result = dmtui("info", mixed, "--strict")
    assert result.returncode == 1
    assert "mixed.jsonl:line 3" in result.stderr and "malformed_json" in result.stderr


@pytest.mark.parametrize("content", [bytes(range(256)) * 16, b"PAR1garbage"])
def test_unreadable_files_exit_1_without_traceback(tmp_path, content):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    result = dmtui("info", path)
    assert result.returncode == 1
    assert "error:" in result.stderr


def test_missing_file(tmp_path):
    result = dmtui("info", tmp_path / "nope.jsonl")
    assert result.returncode == 1
    assert "no such file" in result.stderr


def test_info_workspace(tmp_path, mixed):
    from core.store.workspace import Workspace

    root = tmp_path / "ws"
    Workspace.create(root, str(mixed))
    result = dmtui("info", root, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["read"], data["loaded"]) == (6, 2)
    # the second time it comes from the cache and says the same
    assert json.loads(dmtui("info", root, "--json").stdout) == data
    human = dmtui("info", root)
    assert human.returncode == 0 and "malformed_json" in human.stdout


def test_info_workspace_with_changed_dataset(tmp_path, mixed):
    from core.store.workspace import Workspace

    root = tmp_path / "ws"
    Workspace.create(root, str(mixed)).load()  # the first load records the checksum
    mixed.write_text(json.dumps(ROWS[0]) + "\n")
    result = dmtui("info", root)
    assert result.returncode == 1
    assert "changed" in result.stderr and "--accept-changes" in result.stderr
    as_json = dmtui("info", root, "--json")
    assert as_json.returncode == 1
    assert "changed" in json.loads(as_json.stdout)["error"]  # still one JSON object on stdout


def test_save_to_disk_split_option(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    ).save_to_disk(str(folder))
    data = json.loads(dmtui("info", folder, "--split", "test", "--json").stdout)
    assert (data["source_kind"], data["loaded"]) == ("save_to_disk", 1)
    missing = dmtui("info", folder, "--split", "dev")
    assert missing.returncode == 1 and "no split named 'dev'" in missing.stderr


def test_wrong_column_names_are_named_with_what_the_file_has(tmp_path):
    rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in ROWS]
    path = write_lines(tmp_path / "qa.jsonl", [json.dumps(r) for r in rows])
    result = dmtui("info", path)
    assert result.returncode == 1
    assert ("needs prompt/chosen/rejected; the file has: question, good, bad; "
            "pass --prompt-col question --chosen-col good --rejected-col bad") in result.stderr
    # nothing loaded: no shape is claimed, and the columns the file lacks are marked
    assert "shape:" not in result.stdout
    assert "chosen=chosen (not in the file) rejected=rejected (not in the file)" in result.stdout
    assert "prompt=question (by its name) chosen" in result.stdout
    data = json.loads(dmtui("info", path, "--json").stdout)
    assert data["shape"] is None and data["file_columns"] == ["question", "good", "bad"]
    assert data["suggested_mapping"] == {"prompt": "question", "chosen": "good", "rejected": "bad"}


def test_the_report_then_the_error_each_on_its_own_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ['{"a": 1}', '{"b": 2}', "{broken"])
    env = dict(os.environ, COLUMNS="80", NO_COLOR="1", TERM="dumb")
    result = subprocess.run([sys.executable, "-m", "dmtui", "info", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120, env=env)
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert lines[-2].startswith("malformed_json") and lines[-1].startswith("error: no usable pairs")


def test_piped_reports_are_not_hard_wrapped_at_80_columns(tmp_path):
    long_name = "a_rather_long_column_name_" * 4
    rows = [dict(r, **{long_name: 1}) for r in ROWS] + [{"prompt": "p" * 200, "chosen": None, "rejected": "r"}]
    path = write_lines(tmp_path / ("d" * 60 + ".jsonl"), [json.dumps(r) for r in rows])
    env = dict(os.environ, NO_COLOR="1", TERM="dumb")
    env.pop("COLUMNS", None)
    result = subprocess.run([sys.executable, "-m", "dmtui", "info", str(path), "--all"], capture_output=True,
                            text=True, timeout=120, env=env)
    out = result.stdout
    assert any(line.startswith("columns:") and line.endswith(f"kept: meta, {long_name}")
               for line in out.splitlines())  # on one line, though far past 80 columns
    assert any(line.endswith("column 'chosen': null_field: null") and len(line) > 80 for line in out.splitlines())


def test_all_lists_every_rejected_row(tmp_path):
    lines = [json.dumps(ROWS[0])] + [f'{{"prompt": "p{i}", "chosen": null, "rejected": "r"}}' for i in range(40)]
    path = write_lines(tmp_path / "many.jsonl", lines)
    listed = [line for line in dmtui("info", path, "--all").stdout.splitlines() if ": null_field: " in line]
    assert len(listed) == 40 and listed[-1].startswith(f"{path}:line 41")
    assert len(json.loads(dmtui("info", path, "--all", "--json").stdout)["rejections"]) == 40


def test_info_on_a_workspace_summarises_scores_annotations_exports_and_runs(tmp_path):
    import pyarrow as pa

    from core.store.annotations import AnnotationStore
    from core.store.scores import ScoreStore
    from core.store.workspace import Workspace

    rows = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}", "m": i} for i in range(6)]
    data = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in rows])
    root = tmp_path / "d.dmtui"
    workspace = Workspace.create(root, str(data))
    ids = workspace.load().pairs["pair_id"].to_pylist()
    store = ScoreStore(workspace.scores_dir, "external", "fp0001")
    store.write_meta({"models": {"reward": "/models/rm"}, "updated_at": 1.0})
    store.append(pa.table({"pair_id": ids[:4], "margin": [1.0, 2.0, 3.0, 4.0]}))
    with AnnotationStore(workspace.annotations_path) as notes:
        notes.update(ids[0], flags=("toxic",), note="rude")
        notes.update(ids[1], excluded=True)
        notes.update("0123456789abcdef", swapped=True)
    exported = dmtui("export", data, "--margin", "ext=m", "--budget", "2", "--out", root / "exports" / "first")
    assert exported.returncode == 0, exported.stderr
    (root / "runs" / "r1").mkdir(parents=True)
    (root / "runs" / "r1" / "run.json").write_text(json.dumps({"outcome": {"status": "done", "step": 12,
                                                                         "summary": {"train_loss": 0.5}}}))
    (root / "runs" / "broken").mkdir()

    summary = json.loads(dmtui("info", root, "--json").stdout)["workspace"]
    assert [(t["source"], t["scored"], t["pairs"], t["models"]) for t in summary["scores"]] == [
        ("external", 4, 6, {"reward": "/models/rm"})]
    assert summary["annotations"] == {"annotated": 3, "flags": {"toxic": 1}, "excluded": 1, "swapped": 1, "notes": 1,
                                      "not_in_data": 1}
    assert [(e["name"], e["mode"], e["selected"], e["of"]) for e in summary["exports"]] == [("first", "dm-mul", 2, 6)]
    assert summary["runs"][0] == {"name": "broken", "unreadable": summary["runs"][0]["unreadable"]}
    assert summary["runs"][1] == {"name": "r1", "status": "done", "step": 12, "train_loss": 0.5}
    human = dmtui("info", root).stdout
    assert "scores external (fp0001): 4 of 6 pairs; reward /models/rm" in human
    assert "annotations: 3 pairs (1 toxic; 1 excluded, 1 swapped, 1 with a note; 1 for pairs no longer in the data)" \
        in human
    assert "export first: created" in human and "mode dm-mul" in human and "run r1: status done, step 12" in human


def test_select_output_is_not_hard_wrapped_either(tmp_path):
    """`select` prints through the same report console as `info`."""
    column = "margin_from_a_reward_model_with_a_long_descriptive_name_" * 2
    rows = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}", column: i} for i in range(10)]
    data = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in rows])
    env = dict(os.environ, NO_COLOR="1", TERM="dumb")
    env.pop("COLUMNS", None)
    result = subprocess.run([sys.executable, "-m", "dmtui", "select", str(data), "--margin", f"ext={column}",
                             "--budget", "3"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert any(column in line and len(line) > 80 for line in result.stdout.splitlines()), result.stdout
