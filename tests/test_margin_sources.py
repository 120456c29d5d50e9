"""Margins from dataset columns; for JSON sources, the numeric fields gathered while loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

import core.data.pair_builder
import core.data.sources
from core.data.loading import LoadConfig, load_dataset
from core.errors import DmtuiError
from core.store.margin_sources import MarginSpec, resolve_margins
from core.store.workspace import Workspace

SPECS = [MarginSpec.parse("external=sc,sr"), MarginSpec.parse("implicit=im")]


def write_rows(path, count, extra=lambda i: {}):
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            row = {"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}",
                   "sc": i * 0.5, "sr": 1, "im": None if i % 7 == 3 else -i, **extra(i)}
            out.write(json.dumps(row) + "\n")
    return path


def expected(count):
    index = np.arange(count, dtype=float)
    implicit = np.where(index % 7 == 3, np.nan, -index)
    return index * 0.5 - 1.0, implicit


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(core.data.pair_builder, "CHUNK_ROWS", 16)  # 100 rows load as 7 chunks
    monkeypatch.setattr(core.data.sources, "JSON_BLOCK_BYTES", 2048)  # and as blocks of about 16 lines


def test_margins_from_json_columns_across_chunks_and_a_reopened_cache(tmp_path, small_chunks):
    workspace = Workspace.create(tmp_path / "ws", str(write_rows(tmp_path / "d.jsonl", 100)))
    for opened in (workspace, Workspace.open(tmp_path / "ws")):  # first load, then the mapped cache
        resolved = resolve_margins(opened.load(), SPECS, opened)
        external, implicit = expected(100)
        np.testing.assert_array_equal(resolved.margins["external"], external)
        np.testing.assert_array_equal(resolved.margins["implicit"], implicit)


def test_numeric_fields_are_typed_while_loading(tmp_path, small_chunks):
    def extra(i):
        return {
            "late": 2.5 if i >= 40 else None,                   # first seen in the third chunk
            "flag": i % 2 == 0,                                 # booleans are not numbers
            "mixed": "n/a" if i == 70 else i,                   # text in a later chunk drops it
            "huge": 10**400 if i == 5 else 1,                   # beyond float64
            "big_int": 2**62 + i,                               # ints beyond 2^53 still load, rounded
            "nested": {"score": i},
            "": 7,                                              # an empty name is a name too
        }

    dataset = load_dataset(str(write_rows(tmp_path / "d.jsonl", 100, extra)))
    numbers = dataset.numbers
    assert set(numbers.column_names) == {"sc", "sr", "im", "late", "big_int", ""}
    assert numbers.num_rows == dataset.pairs.num_rows == 100
    late = numbers["late"].to_pylist()
    assert late[:40] == [None] * 40 and late[40:] == [2.5] * 60
    assert numbers["big_int"][3].as_py() == float(2**62 + 3)


@pytest.mark.parametrize(("column", "message"), [
    ("nope", "no column 'nope'"),
    ("label", "'label' holds no numbers"),
    ("flag", "'flag' holds no numbers"),
    ("empty", "'empty' holds no numbers"),
])
def test_columns_that_are_not_margins_are_named(tmp_path, column, message):
    data = write_rows(tmp_path / "d.jsonl", 5, extra=lambda i: {"label": "good", "flag": True, "empty": None})
    workspace = Workspace.create(tmp_path / "ws", str(data))
    with pytest.raises(DmtuiError, match=message):
        resolve_margins(workspace.load(), [MarginSpec.parse(f"external={column}")], workspace)


def test_a_changed_dataset_gets_its_own_numbers(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", 30)
    workspace = Workspace.create(tmp_path / "ws", str(data))
    resolve_margins(workspace.load(), SPECS[:1], workspace)
    write_rows(data, 30, extra=lambda i: {"sc": 100.0})
    changed = Workspace.open(tmp_path / "ws", accept_changes=True)
    resolved = resolve_margins(changed.load(), SPECS[:1], changed)
    np.testing.assert_array_equal(resolved.margins["external"], np.full(30, 99.0))


def test_a_cache_without_its_numbers_is_rebuilt(tmp_path):
    workspace = Workspace.create(tmp_path / "ws", str(write_rows(tmp_path / "d.jsonl", 30)))
    workspace.load()
    (numbers,) = workspace.cache_dir.glob("*/numbers.arrow")
    numbers.unlink()
    resolved = resolve_margins(workspace.load(), SPECS[1:], workspace)
    np.testing.assert_array_equal(resolved.margins["implicit"], expected(30)[1])


def test_columns_of_typed_sources_are_read_from_the_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "chosen": ["x", "y"], "rejected": ["u", "v"],
                             "sc": [3, 4], "sr": [1.5, None], "im": [0.25, -1.0]}), path)
    dataset = load_dataset(str(path), LoadConfig())
    assert dataset.numbers is None
    resolved = resolve_margins(dataset, SPECS)
    np.testing.assert_array_equal(resolved.margins["external"], [1.5, np.nan])
    np.testing.assert_array_equal(resolved.margins["implicit"], [0.25, -1.0])


def test_float64_columns_reach_numpy_from_their_buffers_with_nulls_as_nan():
    """Margin columns are read from the Arrow buffers (pyarrow's to_numpy imports pandas, a
    start-up cost): sliced chunks, nulls, all-null and empty chunks give what to_numpy gives."""
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow as pa

    from core.store.margin_sources import float64_numpy

    rng = np.random.default_rng(4)
    values = rng.normal(size=300)
    nulls = rng.random(300) < 0.3
    whole = pa.array(values, mask=nulls)
    chunks = [whole.slice(3, 50), whole.slice(61, 0), pa.array([None, None], pa.float64()), whole.slice(100, 200),
              pa.array(values[:9]).slice(1)]
    column = pa.chunked_array(chunks, pa.float64())
    expected = column.to_numpy(zero_copy_only=False)
    got = float64_numpy(column)
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # NaN where null, at the same places
    assert float64_numpy(pa.chunked_array([], pa.float64())).size == 0
    code = ("import sys, numpy as np, pyarrow as pa\n"
            "from core.store.margin_sources import float64_numpy\n"
            "table = pa.ipc.open_file(pa.BufferReader(sys.stdin.buffer.read())).read_all()\n"
            "float64_numpy(table['m'])\n"
            "print('pandas' in sys.modules)")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, pa.schema([("m", pa.float64())])) as writer:
        writer.write_table(pa.table({"m": column}))
    found = subprocess.run([sys.executable, "-c", code], input=sink.getvalue().to_pybytes(), capture_output=True,
                           timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert found.stdout.decode().strip() == "False", found.stderr.decode()
