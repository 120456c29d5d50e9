"""Loading preference datasets: every format, every prompt style, every bad input."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.data.loading import REASONS, LoadConfig, LoadReport, load_dataset
from core.data.pairs import pair_id
from core.errors import LoadError

ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "source": "math", "score": 1},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome", "source": "geo", "score": 2},
    {"prompt": "Say hi", "chosen": "Hi!", "rejected": "No.", "source": "chat", "score": 3},
]


def u(content: str) -> dict:
    return {"role": "user", "content": content}


def a(content: str) -> dict:
    return {"role": "assistant", "content": content}


CONV_ROWS = [
    {"prompt": [u("2+2?")], "chosen": [a("4")], "rejected": [a("5")], "tag": "x"},
    {"prompt": [u("hi")], "chosen": [a("hello")], "rejected": [a("go away")], "tag": "y"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


def write_csv(path: Path, rows, delimiter=",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load(path, **config) -> "object":
    loaded = load_dataset(str(path), LoadConfig(**config))
    check_counts(loaded.report)
    assert loaded.pairs.num_rows == loaded.report.loaded == loaded.records.num_rows or (
        loaded.report.loaded == 0
    )
    return loaded


def check_counts(report: LoadReport) -> None:
    assert report.read == report.loaded + sum(report.rejected.values())
    assert len(report.rejections) == sum(report.rejected.values())


def only_rejection(report: LoadReport):
    assert len(report.rejections) == 1, report.rejections
    return report.rejections[0]


def expected_ids(rows) -> list[str]:
    return [pair_id(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


# ---------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------

def _jsonl(tmp_path):
    return write_jsonl(tmp_path / "d.jsonl", ROWS)


def _gz(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode()))
    return path


def _json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS, indent=2))
    return path


def _json_object(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": ROWS}))
    return path


def _json_object_pretty(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"version": 2, "rows": ROWS}, indent=1))
    return path


def _parquet(tmp_path):
    return write_parquet(tmp_path / "d.parquet", ROWS)


FORMAT_WRITERS = {
    "jsonl": (_jsonl, "jsonl"),
    "jsonl.gz": (_gz, "jsonl"),
    "json-array": (_json_array, "json"),
    "json-object": (_json_object, "json"),
    "json-object-pretty": (_json_object_pretty, "json"),
    "parquet": (_parquet, "parquet"),
}


@pytest.mark.parametrize("name", list(FORMAT_WRITERS))
def test_every_file_format_loads_the_same_pairs(tmp_path, name):
    writer, kind = FORMAT_WRITERS[name]
    loaded = load(writer(tmp_path))
    report = loaded.report
    assert report.source_kind == kind
    assert (report.read, report.loaded, dict(report.rejected)) == (3, 3, {})
    assert report.format == "standard" and report.prompt_style == "explicit"
    assert loaded.pairs.column("pair_id").to_pylist() == expected_ids(ROWS)
    assert loaded.pairs.column("row_index").to_pylist() == [0, 1, 2]
    assert loaded.pairs.column("chosen").to_pylist() == ["4", "Paris", "Hi!"]
    assert report.extra_columns == ["source", "score"]
    assert report.warnings == []


@pytest.mark.parametrize("delimiter,name", [(",", "d.csv"), ("\t", "d.tsv")])
def test_csv_and_tsv(tmp_path, delimiter, name):
    loaded = load(write_csv(tmp_path / name, ROWS, delimiter))
    assert loaded.report.source_kind == name[2:]
    assert loaded.pairs.column("pair_id").to_pylist() == expected_ids(ROWS)
    # CSV cells are strings; extra columns come through as the file had them
    assert loaded.records.column("source").to_pylist() == ["math", "geo", "chat"]
    assert loaded.records.column("score").to_pylist() == ["1", "2", "3"]


def test_csv_quoted_multiline_cell_and_locations(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected\n"two\nlines",b,c\nx,,z\n', encoding="utf-8")
    loaded = load(path)
    assert loaded.pairs.column("prompt").to_pylist() == ["two\nlines"]
    rejection = only_rejection(loaded.report)
    # the bad row starts on physical line 4 (header 1, quoted cell lines 2-3)
    assert (rejection.reason, rejection.location, rejection.column, rejection.row_index) == (
        "empty_field", "line 4", "chosen", 1
    )


def test_csv_short_first_row_does_not_drop_a_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected,extra\na,b,c\nd,e,f,g\n", encoding="utf-8")
    loaded = load(path)
    assert loaded.records.column_names == ["prompt", "chosen", "rejected", "extra"]
    assert loaded.records.column("extra").to_pylist() == [None, "g"]
    assert loaded.report.extra_columns == ["extra"]


def test_csv_row_with_too_many_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\nd,e,f,g\n", encoding="utf-8")
    rejection = only_rejection(load(path).report)
    assert (rejection.reason, rejection.location) == ("malformed_csv", "line 3")


def test_csv_row_with_too_few_cells_is_missing_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\nd,e\n", encoding="utf-8")
    rejection = only_rejection(load(path).report)
    assert (rejection.reason, rejection.location, rejection.column) == ("missing_column", "line 3", "rejected")


def test_save_to_disk_dataset(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    loaded = load(folder)
    assert loaded.report.source_kind == "save_to_disk"
    assert loaded.pairs.column("pair_id").to_pylist() == expected_ids(ROWS)
    assert loaded.records.column("source").to_pylist() == ["math", "geo", "chat"]
    with pytest.raises(LoadError, match="no splits"):
        load_dataset(str(folder), LoadConfig(split="test"))


def test_save_to_disk_dataset_dict_with_split(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:2]), "test": datasets.Dataset.from_list(ROWS[2:])}
    ).save_to_disk(str(folder))
    assert load(folder).report.loaded == 2  # train by default
    test = load(folder, split="test")
    assert test.pairs.column("pair_id").to_pylist() == expected_ids(ROWS[2:])
    assert test.pairs.column("row_index").to_pylist() == [0]
    with pytest.raises(LoadError, match="no split named 'dev'") as error:
        load_dataset(str(folder), LoadConfig(split="dev"))
    assert "train" in error.value.hint and "test" in error.value.hint


def test_local_folder_through_datasets_load_dataset(tmp_path):
    folder = tmp_path / "hubdir"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS)
    loaded = load(folder)
    assert loaded.report.source_kind == "hub"
    assert loaded.pairs.column("pair_id").to_pylist() == expected_ids(ROWS)
    assert loaded.records.column("source").to_pylist() == ["math", "geo", "chat"]


def test_unloadable_hub_id_is_a_load_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(LoadError, match="cannot be loaded with datasets"):
        load_dataset(str(empty))


# ---------------------------------------------------------------------------------
# Prompt styles and column mappings
# ---------------------------------------------------------------------------------

@pytest.mark.parametrize("writer", ["jsonl", "json", "parquet"])
def test_conversational(tmp_path, writer):
    if writer == "jsonl":
        path = write_jsonl(tmp_path / "c.jsonl", CONV_ROWS)
    elif writer == "json":
        path = tmp_path / "c.json"
        path.write_text(json.dumps(CONV_ROWS))
    else:
        path = write_parquet(tmp_path / "c.parquet", CONV_ROWS)
    loaded = load(path)
    assert loaded.report.format == "conversational"
    assert loaded.pairs.column("chosen").to_pylist() == [[a("4")], [a("hello")]]
    assert loaded.pairs.column("pair_id").to_pylist() == expected_ids(CONV_ROWS)
    assert loaded.report.extra_columns == ["tag"]


def test_implicit_prompt_text(tmp_path):
    rows = [
        {"chosen": "Human: hi\n\nAssistant: good day", "rejected": "Human: hi\n\nAssistant: go away", "id": 7},
    ]
    # Role-marked text becomes a conversation by default (issue 13); kept, it is the same
    # split as text, the prompt ending at the last assistant marker.
    loaded = load(write_jsonl(tmp_path / "i.jsonl", rows), keep_role_text=True)
    assert loaded.report.prompt_style == "implicit"
    assert loaded.report.columns == {"chosen": "chosen", "rejected": "rejected"}
    pair = loaded.pairs.to_pylist()[0]
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == (
        "Human: hi\n\nAssistant:", " good day", " go away"
    )
    assert pair["prompt"] + pair["chosen"] == rows[0]["chosen"]
    assert pair["prompt"] + pair["rejected"] == rows[0]["rejected"]
    assert loaded.report.extra_columns == ["id"]
    conversation = load(write_jsonl(tmp_path / "i.jsonl", rows)).pairs.to_pylist()[0]
    assert (conversation["prompt"], conversation["chosen"], conversation["rejected"]) == (
        [u("hi")], [a("good day")], [a("go away")])


def test_implicit_prompt_conversation(tmp_path):
    rows = [{"chosen": [u("hi"), a("hello")], "rejected": [u("hi"), a("go away")]}]
    loaded = load(write_parquet(tmp_path / "i.parquet", rows))
    pair = loaded.pairs.to_pylist()[0]
    assert (pair["prompt"], pair["chosen"], pair["rejected"]) == ([u("hi")], [a("hello")], [a("go away")])


@pytest.mark.parametrize(
    "chosen,rejected,reason",
    [
        ("totally different", "nothing shared", "no_shared_prompt"),
        ("Human: hi Assistant: ok sure", "Human: hi Assistant: ok", "empty_field"),
        # chosen a prefix of rejected: used to raise IndexError in shared_text_prefix
        ("Human: hi Assistant: ok", "Human: hi Assistant: ok sure", "empty_field"),
    ],
)
def test_implicit_prompt_text_rejections(tmp_path, chosen, rejected, reason):
    loaded = load(write_jsonl(tmp_path / "i.jsonl", [{"chosen": chosen, "rejected": rejected}]))
    rejection = only_rejection(loaded.report)
    assert (rejection.reason, rejection.location) == (reason, "line 1")
    assert rejection.column in ("chosen", "rejected")


def test_implicit_prompt_conversation_containing_the_other(tmp_path):
    rows = [{"chosen": [u("hi"), a("hello")], "rejected": [u("hi"), a("hello"), u("more")]}]
    rejection = only_rejection(load(write_jsonl(tmp_path / "i.jsonl", rows)).report)
    # the replies are not identical: chosen has none after the shared messages (review1 21c)
    assert (rejection.reason, rejection.location, rejection.column) == ("empty_field", "line 1", "chosen")
    assert "no reply after the messages both conversations share" in rejection.detail


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_column_mapping(tmp_path, ext):
    rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"], "source": r["source"]} for r in ROWS]
    path = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[ext](tmp_path / f"m.{ext}", rows)
    loaded = load(path, prompt_col="question", chosen_col="good", rejected_col="bad")
    assert loaded.report.columns == {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert loaded.report.extra_columns == ["source"]
    assert loaded.pairs.column("pair_id").to_pylist() == expected_ids(ROWS)


def test_wrong_mapping_on_a_uniform_source_names_the_columns(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", ROWS)
    with pytest.raises(LoadError, match="'question' not found") as error:
        load_dataset(str(path), LoadConfig(prompt_col="question"))
    assert "prompt, chosen, rejected" in error.value.message
    assert "--prompt-col" in error.value.hint


def test_wrong_mapping_on_jsonl_rejects_every_row_with_a_hint(tmp_path):
    loaded = load(write_jsonl(tmp_path / "d.jsonl", ROWS), chosen_col="good")
    report = loaded.report
    assert (report.loaded, dict(report.rejected)) == (0, {"missing_column": 3})
    assert {r.column for r in report.rejections} == {"good"}
    assert "--chosen-col" in report.nothing_usable_hint()


# ---------------------------------------------------------------------------------
# Extra columns, pair ids, row indexes
# ---------------------------------------------------------------------------------

def test_records_aligned_with_pairs_after_rejections(tmp_path):
    rows = [ROWS[0], {"prompt": "p", "chosen": "", "rejected": "r", "source": "bad"}, ROWS[1], ROWS[2]]
    for path in (write_jsonl(tmp_path / "d.jsonl", rows), write_parquet(tmp_path / "d.parquet", rows),
                 write_csv(tmp_path / "d.csv", rows)):
        loaded = load(path)
        assert loaded.pairs.column("row_index").to_pylist() == [0, 2, 3]
        if "_json" in loaded.records.column_names:
            sources = [json.loads(t)["source"] for t in loaded.records.column("_json").to_pylist()]
        else:
            sources = loaded.records.column("source").to_pylist()
        assert sources == ["math", "geo", "chat"], path


def test_jsonl_records_keep_the_source_text(tmp_path):
    rows = [dict(ROWS[0], nested={"k": [1, 2]})]
    loaded = load(write_jsonl(tmp_path / "d.jsonl", rows))
    assert json.loads(loaded.records.column("_json")[0].as_py()) == rows[0]


def test_pair_id_independent_of_position_and_format(tmp_path):
    forward = load(write_jsonl(tmp_path / "f.jsonl", ROWS))
    backward = load(write_parquet(tmp_path / "b.parquet", ROWS[::-1]))
    ids_f = dict(zip(forward.pairs.column("pair_id").to_pylist(), forward.pairs.column("row_index").to_pylist()))
    ids_b = dict(zip(backward.pairs.column("pair_id").to_pylist(), backward.pairs.column("row_index").to_pylist()))
    assert set(ids_f) == set(ids_b) and len(ids_f) == 3
    for identifier, row in ids_f.items():
        assert ids_b[identifier] == 2 - row
    # extra columns do not change the id; content does
    other = load(write_jsonl(tmp_path / "o.jsonl", [dict(ROWS[0], source="elsewhere")]))
    assert other.pairs.column("pair_id")[0].as_py() == expected_ids(ROWS)[0]
    swapped = load(write_jsonl(tmp_path / "s.jsonl", [dict(ROWS[0], chosen="5", rejected="4")]))
    assert swapped.pairs.column("pair_id")[0].as_py() != expected_ids(ROWS)[0]


def test_pair_id_is_a_known_value():
    # Guards against an accidental change of the hash (scores and annotations are keyed by it).
    assert pair_id("2+2?", "4", "5") == "70bca6d91a505f7f"


# ---------------------------------------------------------------------------------
# Bad input: each reason, location and column
# ---------------------------------------------------------------------------------

GOOD = json.dumps(ROWS[0])


@pytest.mark.parametrize(
    "bad_line,reason,column",
    [
        ('{"prompt": "p", "chosen": "c"', "malformed_json", None),
        ('{"prompt": "p", "chosen": "c"}', "missing_column", "rejected"),
        ('{"prompt": "p", "chosen": null, "rejected": "r"}', "null_field", "chosen"),
        ('{"prompt": "p", "chosen": "c", "rejected": ""}', "empty_field", "rejected"),
        ('{"prompt": " \\n\\t ", "chosen": "c", "rejected": "r"}', "empty_field", "prompt"),
        ('{"prompt": "p", "chosen": 3, "rejected": "r"}', "wrong_type", "chosen"),
        ('{"prompt": "p", "chosen": true, "rejected": "r"}', "wrong_type", "chosen"),
        ('{"prompt": "p", "chosen": {"text": "c"}, "rejected": "r"}', "wrong_type", "chosen"),
        ('{"prompt": "p", "chosen": "same", "rejected": "same"}', "identical_responses", "chosen"),
        ('["p", "c", "r"]', "not_an_object", None),
        ('"just a string"', "not_an_object", None),
    ],
)
def test_bad_jsonl_line(tmp_path, bad_line, reason, column):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, bad_line, json.dumps(ROWS[1])])
    loaded = load(path)
    assert loaded.report.loaded == 2
    rejection = only_rejection(loaded.report)
    assert (rejection.reason, rejection.location, rejection.row_index, rejection.column) == (
        reason, "line 2", 1, column
    )
    assert reason in REASONS
    assert dict(loaded.report.rejected) == {reason: 1}
    assert "d.jsonl:line 2" in rejection.describe(loaded.report.source)


@pytest.mark.parametrize(
    "chosen,rejected,reason",
    [
        ([], [a("x")], "empty_field"),
        (["hello"], [a("x")], "bad_message"),
        ([{"role": "assistant"}], [a("x")], "bad_message"),
        ([{"role": "assistant", "content": None}], [a("x")], "bad_message"),
        ([{"role": 1, "content": "c"}], [a("x")], "bad_message"),
        ([a("  ")], [a("x")], "empty_field"),
        ([a("x")], [a("x")], "identical_responses"),
        ("a string", [a("x")], "wrong_type"),
    ],
)
def test_bad_conversational_row(tmp_path, chosen, rejected, reason):
    rows = [CONV_ROWS[0], {"prompt": [u("q")], "chosen": chosen, "rejected": rejected}]
    loaded = load(write_jsonl(tmp_path / "c.jsonl", rows))
    rejection = only_rejection(loaded.report)
    assert (rejection.reason, rejection.location, rejection.column) == (reason, "line 2", "chosen")
    assert loaded.report.format == "conversational"


def test_bad_rows_in_json_array_are_items(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([ROWS[0], {"prompt": "p", "chosen": None, "rejected": "r"}, 42]))
    report = load(path).report
    assert [(r.reason, r.location, r.column) for r in report.rejections] == [
        ("null_field", "item 1", "chosen"), ("not_an_object", "item 2", None)
    ]


def test_bad_rows_in_parquet_are_rows(tmp_path):
    rows = [ROWS[0], {"prompt": "p", "chosen": None, "rejected": "r", "source": "s", "score": 0},
            {"prompt": "p", "chosen": "", "rejected": "r", "source": "s", "score": 0}]
    report = load(write_parquet(tmp_path / "d.parquet", rows)).report
    assert [(r.reason, r.location, r.row_index, r.column) for r in report.rejections] == [
        ("null_field", "row 1", 1, "chosen"), ("empty_field", "row 2", 2, "chosen")
    ]


def test_non_string_parquet_column(tmp_path):
    rows = [{"prompt": "p", "chosen": 1, "rejected": 2}]
    rejection = only_rejection(load(write_parquet(tmp_path / "d.parquet", rows)).report)
    assert (rejection.reason, rejection.location, rejection.column) == ("wrong_type", "row 0", "chosen")


def test_duplicates_keep_the_first(tmp_path):
    rows = [ROWS[0], ROWS[1], dict(ROWS[0], source="again"), ROWS[0]]
    loaded = load(write_jsonl(tmp_path / "d.jsonl", rows))
    assert loaded.pairs.column("row_index").to_pylist() == [0, 1]
    assert json.loads(loaded.records.column("_json")[0].as_py())["source"] == "math"
    assert dict(loaded.report.rejected) == {"duplicate_pair": 2}
    assert [r.location for r in loaded.report.rejections] == ["line 3", "line 4"]
    assert all("line 1" in r.detail for r in loaded.report.rejections)


def test_invalid_utf8_jsonl_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [GOOD, b'{"prompt": "\xff\xfe", "chosen": "c", "rejected": "r"}'])
    rejection = only_rejection(load(path).report)
    assert (rejection.reason, rejection.location) == ("invalid_utf8", "line 2")


def test_invalid_utf8_csv_cell(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"prompt,chosen,rejected\na,b,c\nd,\xff\xfe,f\ng,h,i\n")
    loaded = load(path)
    assert loaded.report.loaded == 2
    rejection = only_rejection(loaded.report)
    assert (rejection.reason, rejection.location) == ("invalid_utf8", "line 3")


def test_invalid_utf8_json_document_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"prompt": "a", "chosen": "b", "rejected": "c"},\n{"prompt": "\xff"}\n]\n')
    with pytest.raises(LoadError, match="invalid UTF-8 at line 3"):
        load_dataset(str(path))


def test_malformed_json_document_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"prompt": "a"},\n{"prompt": \n]\n')
    with pytest.raises(LoadError, match="malformed JSON at line 4"):
        load_dataset(str(path))


@pytest.mark.parametrize("document", ['{"a": [], "b": []}', '{"a": 1}', '"text"'])
def test_json_document_not_holding_records(tmp_path, document):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(json.loads(document), indent=2))
    with pytest.raises(LoadError):
        load_dataset(str(path))


FIVE_MB = "x" * (5 * 1024 * 1024)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_five_megabyte_field(tmp_path, ext):
    rows = [ROWS[0], dict(ROWS[1], chosen=FIVE_MB)]
    path = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[ext](tmp_path / f"d.{ext}", rows)
    rejection = only_rejection(load(path).report)
    assert (rejection.reason, rejection.column) == ("field_too_large", "chosen")
    assert rejection.location == {"jsonl": "line 2", "csv": "line 3", "parquet": "row 1"}[ext]
    assert "--max-field-chars" in rejection.detail
    raised = load(path, max_field_chars=10_000_000)
    assert raised.report.loaded == 2
    assert len(raised.pairs.column("chosen")[1].as_py()) == len(FIVE_MB)  # not truncated


def test_five_megabyte_conversation(tmp_path):
    rows = [{"prompt": [u("q")], "chosen": [a(FIVE_MB[:3_000_000]), a(FIVE_MB[:3_000_000])], "rejected": [a("x")]}]
    rejection = only_rejection(load(write_jsonl(tmp_path / "d.jsonl", rows)).report)
    assert (rejection.reason, rejection.column) == ("field_too_large", "chosen")


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "d.parquet"])
def test_empty_file_is_a_load_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(LoadError, match="empty"):
        load_dataset(str(path))


def test_header_only_csv_loads_nothing(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,chosen,rejected\n")
    report = load(path).report
    assert (report.read, report.loaded) == (0, 0)
    assert "no records" in report.nothing_usable_hint()


def test_jsonl_content_named_parquet_loads_with_warning(tmp_path):
    path = write_jsonl(tmp_path / "d.parquet", ROWS)
    loaded = load(path)
    assert loaded.report.loaded == 3
    assert loaded.report.source_kind == "jsonl"
    assert any("extension says parquet" in w for w in loaded.report.warnings)


def test_parquet_bytes_named_jsonl_loads_with_warning(tmp_path):
    path = write_parquet(tmp_path / "d.jsonl", ROWS)
    loaded = load(path)
    assert loaded.report.loaded == 3
    assert loaded.report.source_kind == "parquet"
    assert any("extension says jsonl" in w for w in loaded.report.warnings)


def test_random_binary_named_jsonl_is_a_load_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(LoadError, match="not a jsonl file"):
        load_dataset(str(path))


def test_damaged_parquet_is_a_load_error(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1" + b"\x01" * 100)
    with pytest.raises(LoadError, match="not a readable Parquet file"):
        load_dataset(str(path))


@pytest.mark.parametrize(
    "lines,where",
    [
        ([GOOD, "{oops", json.dumps(ROWS[1])], "line 2"),
        ([GOOD, json.dumps(dict(ROWS[1], chosen=None)), '{"bad'], "line 2"),
        ([GOOD, GOOD], "line 2"),
    ],
)
def test_strict_stops_at_the_first_with_its_location(tmp_path, lines, where):
    path = write_lines(tmp_path / "d.jsonl", lines)
    with pytest.raises(LoadError) as error:
        load_dataset(str(path), LoadConfig(strict=True))
    assert f"d.jsonl:{where}" in error.value.message
    assert "--strict" in error.value.hint
    # without strict, the same file loads what it can
    assert load(path).report.loaded >= 1


def test_strict_on_a_clean_file_loads(tmp_path):
    assert load(write_jsonl(tmp_path / "d.jsonl", ROWS), strict=True).report.loaded == 3


def test_every_reason_counted_in_one_file(tmp_path):
    lines = [
        GOOD,
        "{bad",
        '{"prompt": "p", "chosen": "c"}',
        '{"prompt": "p", "chosen": null, "rejected": "r"}',
        '{"prompt": "p", "chosen": "", "rejected": "r"}',
        '{"prompt": "p", "chosen": 1, "rejected": "r"}',
        '{"prompt": "p", "chosen": "s", "rejected": "s"}',
        GOOD,
        b'{"prompt": "\xff"}',
        "[1]",
    ]
    report = load(write_lines(tmp_path / "d.jsonl", lines)).report
    assert report.read == 10 and report.loaded == 1
    assert dict(report.rejected) == {
        "malformed_json": 1, "missing_column": 1, "null_field": 1, "empty_field": 1, "wrong_type": 1,
        "identical_responses": 1, "duplicate_pair": 1, "invalid_utf8": 1, "not_an_object": 1,
    }
    data = report.to_json()
    assert data["read"] == data["loaded"] + sum(data["rejected"].values())
    assert data["first_locations"]["malformed_json"] == ["line 2"]
    json.dumps(data)  # plain JSON types only
    again = LoadReport.from_json(report.to_json(include_all=True))
    assert again.rejections == report.rejections and again.rejected == report.rejected
    assert list(again.rejected) == list(report.rejected)  # the order too: a reopened workspace lists them alike


# ---------------------------------------------------------------------------------
# Property: arbitrary JSON lines never raise anything but LoadError; counts add up
# ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)
field_values = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.integers(),
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=4)}),
             max_size=3),
    st.lists(json_values, max_size=2),
    json_values,
)
records = st.one_of(
    st.fixed_dictionaries({}, optional={"prompt": field_values, "chosen": field_values, "rejected": field_values,
                                        "extra": json_values}),
    json_values,
)
lines = st.one_of(
    records.map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.text(max_size=20).map(lambda t: t.replace("\n", " ").replace("\r", " ").encode("utf-8", "surrogatepass")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(lines, min_size=1, max_size=8), strict=st.booleans())
def test_random_json_lines_never_crash(tmp_path, body, strict):
    path = tmp_path / "random.jsonl"
    path.write_bytes(b"\n".join(body) + b"\n")
    try:
        loaded = load_dataset(str(path), LoadConfig(strict=strict))
    except LoadError:
        return
    report = loaded.report
    assert report.read == report.loaded + sum(report.rejected.values())
    assert loaded.pairs.num_rows == report.loaded
    assert loaded.records.num_rows == report.loaded
    assert set(report.rejected) <= set(REASONS)
    assert len(set(loaded.pairs.column("pair_id").to_pylist())) == report.loaded


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.text(min_size=1, max_size=12), rejected=st.text(min_size=1, max_size=12),
       prefix=st.text(max_size=8), nested=st.sampled_from([None, "chosen", "rejected"]))
def test_implicit_text_split_never_crashes(tmp_path, chosen, rejected, prefix, nested):
    # one response may continue the other (a frequent shape of real implicit-prompt data)
    if nested == "chosen":
        chosen = rejected + chosen
    elif nested == "rejected":
        rejected = chosen + rejected
    path = tmp_path / "implicit.jsonl"
    write_jsonl(path, [{"chosen": prefix + chosen, "rejected": prefix + rejected}])
    loaded = load_dataset(str(path))
    check_counts(loaded.report)
    for pair in loaded.pairs.to_pylist():
        assert pair["prompt"] + pair["chosen"] == prefix + chosen
        assert pair["prompt"] + pair["rejected"] == prefix + rejected
