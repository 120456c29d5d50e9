"""The fast import (Arrow's readers, vectorised checks and hashing) loads exactly what the
per-row path loads: the same pairs and pair_ids, records, numbers and report, rejections
with the same reasons and locations, whatever the file holds."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import core.data.loading
import core.data.pair_builder
import core.data.shapes
import core.data.sources
from core.data.loading import LoadConfig, load_dataset
from core.data.pairs import pair_id
from core.errors import LoadError

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "sample_data" / "demo" / "pairs.jsonl"
DEMO_IDS_SHA256 = "24da6bdf6ad7764a050a51701f83162ab4a96d92680141dce929c91021d194bb"
"""SHA-256 of the demo dataset's pair_ids, one a line, as the loader before the fast
import produced them (main 3c092de): scores and annotations of existing workspaces stay."""
# A longer hunt: DMTUI_FUZZ_EXAMPLES=2000 pytest tests/test_fast_import.py
FUZZ = settings(max_examples=int(os.environ.get("DMTUI_FUZZ_EXAMPLES", "120")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def both_paths(path: Path, monkeypatch, **config):
    """(per-row result, fast result), each a LoadedDataset or the LoadError message."""
    results = []
    for fast in (False, True):
        monkeypatch.setattr(core.data.loading, "FAST_IMPORT", fast)
        try:
            results.append(load_dataset(str(path), LoadConfig(**config)))
        except LoadError as error:
            results.append(str(error))
    return results


def comparable(loaded) -> object:
    if isinstance(loaded, str):
        return loaded
    numbers = None
    if loaded.numbers is not None:
        numbers = {name: [None if v is None else ("nan" if math.isnan(v) else v)
                          for v in loaded.numbers[name].to_pylist()] for name in loaded.numbers.column_names}
    return {"pairs": loaded.pairs.to_pylist(), "records": loaded.records.to_pylist(),
            "record_columns": loaded.records.column_names, "numbers": numbers,
            "report": loaded.report.to_json(include_all=True)}


def assert_same(path: Path, monkeypatch, **config) -> None:
    slow, fast = both_paths(path, monkeypatch, **config)
    assert comparable(fast) == comparable(slow)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few lines and chunks of a few rows, so that a small file spans many."""
    monkeypatch.setattr(core.data.sources, "JSON_BLOCK_BYTES", 512)
    monkeypatch.setattr(core.data.loading, "RETRY_BLOCK_BYTES", 128)
    monkeypatch.setattr(core.data.pair_builder, "CHUNK_ROWS", 4)


def test_the_demo_data_keeps_its_pair_ids(monkeypatch):
    slow, fast = both_paths(DEMO, monkeypatch)
    assert comparable(fast) == comparable(slow)
    ids = fast.pairs["pair_id"].to_pylist()
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == DEMO_IDS_SHA256
    assert ids[:50] == [pair_id(p["prompt"], p["chosen"], p["rejected"]) for p in fast.pairs.slice(0, 50).to_pylist()]


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


texts = st.text(max_size=6) | st.sampled_from(["", " ", "\u3000", "\x1c", "a\nb", 'q"uote\\', "\x01", "日本",
                                                "2020-01-01", "Human: hi", "### Response:"])
numbers = st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()
fields = (texts | st.none() | st.lists(st.builds(lambda r, c: {"role": r, "content": c}, texts, texts), max_size=2)
          | numbers)
records = st.fixed_dictionaries({}, optional={"prompt": fields, "chosen": fields, "rejected": fields,
                                              "score": numbers | st.none() | texts, "id": st.integers(0, 5)})
good = st.builds(lambda p, c, r, s: {"prompt": p, "chosen": c, "rejected": r, "score": s},
                 st.sampled_from(["2+2?", "hi", "Say hi"]), st.sampled_from(["4", "hello", "x y"]),
                 st.sampled_from(["5", "go", "z"]), st.integers(-3, 3) | st.floats(-2, 2))
lines = st.one_of(good.map(json.dumps), good.map(json.dumps), records.map(json.dumps),
                  st.sampled_from(["", "   ", "{bad", "[1, 2]", '"text"', "null", " null", '{"prompt": "p", "chosen": NaN}',
                                   '{"prompt":"p","chosen":"a","rejected":"b","prompt":"q"}',
                                   '{"prompt": "p", "chosen": "a", "rejected": "b"} {"x": 1}',
                                   '{"prompt": "p", "chosen": "a\\ud800", "rejected": "b"}',
                                   '{"prompt": "p", "chosen": "a", "rejected": "b", "big": 123456789012345678901}',
                                   '{"prompt": "2020-01-02", "chosen": "a", "rejected": "b"}']),
                  st.binary(max_size=8).map(lambda b: b.replace(b"\n", b"").decode("latin-1")))


@FUZZ
@given(body=st.lists(lines, min_size=1, max_size=14), crlf=st.booleans(), bom=st.booleans(), strict=st.booleans())
def test_json_lines_load_alike_on_both_paths(tmp_path, monkeypatch, small_blocks, body, crlf, bom, strict):
    text = ("\r\n" if crlf else "\n").join(body) + "\n"
    path = tmp_path / "d.jsonl"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass"))
    assert_same(path, monkeypatch, strict=strict)


conversation_rows = st.lists(
    st.builds(lambda p, c, r: {"prompt": [u(p)], "chosen": [a(c)], "rejected": [a(r)]},
              st.sampled_from(["hi", "2+2?", " "]), texts, texts)
    | st.builds(lambda p, c, r: {"prompt": p, "chosen": [u(p), a(c)], "rejected": [u(p), a(r)]},
                st.sampled_from(["hi", "2+2?"]), texts, texts)
    | records, min_size=1, max_size=10)


@FUZZ
@given(rows=conversation_rows)
@example(rows=[{"prompt": "0", "score": 2**53 + 1, "chosen": [{"role": "", "content": "00"}],
                "rejected": [{"role": "", "content": "0"}]}])  # an integer a double cannot hold
def test_conversations_load_alike_on_both_paths(tmp_path, monkeypatch, small_blocks, rows):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert_same(path, monkeypatch)


csv_cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=5) \
    | st.sampled_from(["", " ", "a,b", 'say "hi"', "two\nlines", "2+2?"])


@FUZZ
@given(rows=st.lists(st.tuples(csv_cells, csv_cells, csv_cells, csv_cells), min_size=1, max_size=10),
       tsv=st.booleans())
def test_csv_loads_alike_on_both_paths(tmp_path, monkeypatch, small_blocks, rows, tsv):
    path = tmp_path / ("d.tsv" if tsv else "d.csv")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t" if tsv else ",")
        writer.writerow(["prompt", "chosen", "rejected", "note"])
        writer.writerows(rows)
    assert_same(path, monkeypatch)


@FUZZ
@given(rows=st.lists(st.tuples(texts | st.none(), texts | st.none(), texts | st.none()), min_size=1, max_size=10))
def test_parquet_loads_alike_on_both_paths(tmp_path, monkeypatch, small_blocks, rows):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": [r[0] for r in rows], "chosen": [r[1] for r in rows],
                             "rejected": [r[2] for r in rows], "n": list(range(len(rows)))}), path)
    assert_same(path, monkeypatch)


def test_a_bad_line_sends_only_its_neighbourhood_down_the_per_row_path(tmp_path, monkeypatch):
    monkeypatch.setattr(core.data.sources, "JSON_BLOCK_BYTES", 4096)
    monkeypatch.setattr(core.data.loading, "RETRY_BLOCK_BYTES", 256)
    rows = [json.dumps({"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"}) for i in range(300)]
    rows[150] = "{broken"
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows) + "\n")
    per_row = []
    original = core.data.pair_builder.PairBuilder.add_record
    monkeypatch.setattr(core.data.pair_builder.PairBuilder, "add_record",
                        lambda self, record: (per_row.append(record.row_index), original(self, record))[1])
    loaded = load_dataset(str(path))
    assert (loaded.report.loaded, dict(loaded.report.rejected)) == (299, {"malformed_json": 1})
    assert loaded.report.rejections[0].location == "line 151"
    assert 150 in per_row and len(per_row) < 20  # the rest went through Arrow


def test_gzip_json_lines_use_the_fast_path_and_agree(tmp_path, monkeypatch, small_blocks):
    rows = [{"prompt": f"q{i % 7}", "chosen": f"a{i % 5}", "rejected": f"b{i}", "s": i / 3} for i in range(60)]
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert_same(path, monkeypatch)


def test_strict_stops_at_the_same_row_on_both_paths(tmp_path, monkeypatch, small_blocks):
    rows = [json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) for i in range(20)]
    rows[12] = rows[3]  # a duplicate before the bad row
    rows[15] = '{"prompt": "q", "chosen": null, "rejected": "b"}'
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows) + "\n")
    slow, fast = both_paths(path, monkeypatch, strict=True)
    assert fast == slow and "line 13" in fast and "duplicate_pair" in fast


def test_the_field_limit_counts_characters_not_bytes(tmp_path, monkeypatch):
    """Five characters of two, three and four bytes fit a limit of five; six do not."""
    rows = [{"prompt": "p", "chosen": text, "rejected": "b"} for text in ("ééééé", "€€€€€", "😀😀😀😀😀", "éééééé", "abcde")]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    slow, fast = both_paths(path, monkeypatch, max_field_chars=5)
    assert comparable(fast) == comparable(slow)
    assert fast.report.loaded == 4 and [r.location for r in fast.report.rejections] == ["line 4"]


def test_big_and_tied_numbers_are_read_as_python_reads_them(tmp_path, monkeypatch):
    rows = ['{"prompt": "p%d", "chosen": "a", "rejected": "b", "m": %s}' % (i, value)
            for i, value in enumerate(["123456789012345678901", "0.1", "1e300", "-0.0", "9007199254740993"])]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(rows) + "\n")
    slow, fast = both_paths(path, monkeypatch)
    assert fast.numbers["m"].to_pylist() == slow.numbers["m"].to_pylist() == [
        float(123456789012345678901), 0.1, 1e300, -0.0, float(9007199254740993)]


def test_reading_a_json_line_block_in_pieces_keeps_line_numbers(tmp_path):
    spec = core.data.sources.resolve_source(str(_write(tmp_path / "d.jsonl", "\n\n".join(['{"a": 1}'] * 5) + "\n")))
    blocks = list(core.data.sources.read_line_blocks(spec))
    parsed = core.data.sources.parse_json_block(blocks[0], None)
    assert parsed.lines.tolist() == [1, 3, 5, 7, 9]
    assert parsed.texts.to_pylist() == ['{"a": 1}\n'] * 5


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1000])
@pytest.mark.parametrize("compressed", [False, True])
def test_line_blocks_hold_the_whole_file_in_whole_lines(tmp_path, monkeypatch, block_bytes, compressed):
    """Lines shorter and longer than a block, with and without a last newline, plain and gzip."""
    monkeypatch.setattr(core.data.sources, "JSON_BLOCK_BYTES", block_bytes)
    lines = [b"x" * length for length in (0, 3, 300, 1, 2500, 64, 63, 65, 0, 7)]
    for data in (b"\n".join(lines), b"\n".join(lines) + b"\n", b"", b"\n"):
        path = tmp_path / "d.jsonl"
        path.write_bytes(gzip.compress(data) if compressed else data)
        spec = core.data.sources.SourceSpec(str(path), "jsonl", path, compressed=compressed)
        blocks = list(core.data.sources.read_line_blocks(spec))
        assert b"".join(blocks_data := [bytes(block.data) for block in blocks]) == data
        assert all(blocks_data) and all(text.endswith(b"\n") for text in blocks_data[:-1])
        assert [block.first_line for block in blocks] == [
            1 + sum(text.count(b"\n") for text in blocks_data[:i]) for i in range(len(blocks))]
        assert [block.newlines.tolist() for block in blocks] == [
            [i for i, byte in enumerate(text) if byte == 10] for text in blocks_data]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_fast_import_needs_no_python_object_per_clean_row(tmp_path, monkeypatch):
    """Clean rows never reach the per-row normaliser."""
    rows = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(2000)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []
    original = core.data.shapes.RowNormaliser.normalise
    monkeypatch.setattr(core.data.shapes.RowNormaliser, "normalise",
                        lambda self, value, location: (calls.append(location), original(self, value, location))[1])
    loaded = load_dataset(str(path))
    assert loaded.report.loaded == 2000 and calls == []
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    (tmp_path / "d.parquet").write_bytes(buffer.getvalue())
    assert load_dataset(str(tmp_path / "d.parquet")).report.loaded == 2000 and calls == []


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv", "d.parquet"])
def test_progress_ends_at_the_rows_read_and_cancel_stops_the_load(tmp_path, monkeypatch, small_blocks, name):
    import threading

    from core.errors import Cancelled

    rows = [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(50)]
    path = tmp_path / name
    if name.endswith("jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif name.endswith("csv"):
        path.write_text("prompt,chosen,rejected\n" + "".join(f"{r['prompt']},{r['chosen']},{r['rejected']}\n"
                                                              for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    seen = []
    loaded = load_dataset(str(path), progress=seen.append)
    assert loaded.report.loaded == 50 and seen[-1].done == 50
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        load_dataset(str(path), cancel=cancel)


def test_reasons_are_counted_in_the_order_they_first_occur(monkeypatch):
    """Duplicates are found after the other checks; the report still lists reasons in file order."""
    slow, fast = both_paths(DEMO, monkeypatch)
    assert list(fast.report.rejected) == list(slow.report.rejected) == [
        "malformed_json", "duplicate_pair", "identical_responses", "empty_field", "missing_column", "null_field"]


def _good_line(i: int, length: int) -> bytes:
    head = b'{"prompt": "q%d", "chosen": "a", "rejected": "b", "pad": "' % i
    return head + b"x" * (length - len(head) - 3) + b'"}\n'


# Inputs that crashed the process inside pyarrow.json.read_json (pyarrow 26): a bare `null`
# record where one of Arrow's 1 MiB internal blocks starts (the first line of a file is
# one: found by test_random_json_lines_never_crash), and nesting past ~10,000 levels.
CRASHING_JSON_LINES = {
    "null_first": b'null\n{"prompt": "p", "chosen": "a", "rejected": "b"}\n',
    "null_at_an_arrow_block": b"".join(_good_line(i, 1024) for i in range(1024)) + b"null\n" + _good_line(9999, 64),
    "deep_list": _good_line(0, 64) + b'{"prompt": "p", "chosen": "a", "rejected": "b", "x": ' + b"[" * 100_000
                 + b"]" * 100_000 + b"}\n",
    # 900 levels: no crash in Arrow, but measuring its type's depth overflowed Python's stack
    "deep_object": _good_line(0, 64) + b'{"prompt": "p", "chosen": "a", "rejected": "b", "x": ' + b'{"y":' * 900
                   + b"1" + b"}" * 900 + b"}\n",
}


@pytest.mark.parametrize("name", sorted(CRASHING_JSON_LINES))
def test_json_lines_that_crash_arrows_reader_load_row_by_row(tmp_path, name):
    """A subprocess, so that a regression fails this test instead of killing the suite."""
    import subprocess
    import sys

    data = CRASHING_JSON_LINES[name]
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    script = ("import json, sys; from core.data.loading import load_dataset; r = load_dataset(sys.argv[1]).report; "
              "print(json.dumps([r.read, r.loaded, dict(r.rejected)]))")
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    read, loaded, rejected = json.loads(done.stdout)
    expected = {"null_first": [2, 1, {"not_an_object": 1}],
                "null_at_an_arrow_block": [1026, 1025, {"not_an_object": 1}],
                "deep_list": [2, 1, {"malformed_json": 1}], "deep_object": [2, 2, {}]}[name]
    assert [read, loaded, rejected] == expected
