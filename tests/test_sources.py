"""What a source is: kinds decided from content, extension mismatches, unreadable files."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.data.sources import read_json_lines, resolve_source
from core.errors import LoadError

ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome"},
]


def jsonl_bytes(rows=ROWS) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet_bytes(tmp_path, rows=ROWS) -> bytes:
    path = tmp_path / "_p.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("d.jsonl", jsonl_bytes(), "jsonl"),
        ("d.ndjson", jsonl_bytes(), "jsonl"),
        ("d.json", json.dumps(ROWS).encode(), "json"),
        ("d.json", json.dumps(ROWS, indent=2).encode(), "json"),
        ("d.json", json.dumps({"data": ROWS}).encode(), "json"),  # compact, one line
        ("d.json", json.dumps({"data": ROWS}, indent=2).encode(), "json"),
        ("d.csv", b"prompt,chosen,rejected\na,b,c\n", "csv"),
        ("d.tsv", b"prompt\tchosen\trejected\na\tb\tc\n", "tsv"),
        ("noext", jsonl_bytes(), "jsonl"),
        ("noext", b"prompt,chosen,rejected\na,b,c\n", "csv"),
    ],
)
def test_kind_from_content(tmp_path, name, content, kind):
    path = tmp_path / name
    path.write_bytes(content)
    spec = resolve_source(str(path))
    assert spec.kind == kind
    assert spec.warning is None
    assert not spec.compressed


def test_parquet_detected_by_magic(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(parquet_bytes(tmp_path))
    assert resolve_source(path).kind == "parquet"


def test_gzip_jsonl(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes()))
    spec = resolve_source(path)
    assert (spec.kind, spec.compressed, spec.warning) == ("jsonl", True, None)


def test_jsonl_content_named_parquet_warns(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(jsonl_bytes())
    spec = resolve_source(path)
    assert spec.kind == "jsonl"
    assert "parquet" in spec.warning and "jsonl" in spec.warning


def test_parquet_content_named_jsonl_warns(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(parquet_bytes(tmp_path))
    spec = resolve_source(path)
    assert spec.kind == "parquet"
    assert "extension says jsonl" in spec.warning


def test_random_binary_named_jsonl_is_a_load_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(LoadError, match="not a jsonl file"):
        resolve_source(path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "d.parquet"])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError, match="empty"):
        resolve_source(path)


def test_missing_file_with_extension(tmp_path):
    with pytest.raises(LoadError, match="no such file"):
        resolve_source(str(tmp_path / "nope.jsonl"))


def test_hub_id_and_folders(tmp_path):
    assert resolve_source("org/name").kind == "hub"
    assert resolve_source("org/name").path is None
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "train.jsonl").write_bytes(jsonl_bytes())
    assert resolve_source(plain).kind == "hub"
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "state.json").write_text("{}")
    assert resolve_source(saved).kind == "save_to_disk"


def test_gzip_parquet_refused(tmp_path):
    path = tmp_path / "d.parquet.gz"
    path.write_bytes(gzip.compress(parquet_bytes(tmp_path)))
    with pytest.raises(LoadError, match="gzip-compressed Parquet"):
        resolve_source(path)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes())[:12])
    with pytest.raises(LoadError):
        resolve_source(path)


def test_json_lines_reader_locations_skip_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"a": 2}\r\n{bad\n')
    records = list(read_json_lines(resolve_source(path)))
    assert [r.location for r in records] == ["line 1", "line 3", "line 4"]
    assert [r.row_index for r in records] == [0, 1, 2]
    assert records[0].value == {"a": 1}  # BOM stripped
    assert records[1].value == {"a": 2}  # CRLF
    assert records[2].error[0] == "malformed_json"
