"""core.io.tables.take_rows: the same rows as Arrow's take, without concatenating chunks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.io.tables import take_rows


@st.composite
def chunked_and_indices(draw):
    sizes = draw(st.lists(st.integers(0, 6), min_size=1, max_size=6))
    total = sum(sizes)
    values = [f"row {i}" if draw(st.booleans()) else None for i in range(total)]
    chunks, start = [], 0
    for size in sizes:
        chunks.append(pa.array(values[start:start + size], pa.string()))
        start += size
    indices = draw(st.lists(st.integers(0, total - 1), max_size=20)) if total else []
    return pa.chunked_array(chunks, type=pa.string()), indices


@settings(max_examples=200, deadline=None)
@given(chunked_and_indices())
def test_matches_arrow_take_in_any_order_with_repeats(case):
    data, indices = case
    taken = take_rows(data, indices)
    assert taken.type == data.type
    assert taken.to_pylist() == data.take(pa.array(indices, pa.int64())).to_pylist()


def test_tables_keep_schema_and_row_alignment():
    table = pa.Table.from_batches([
        pa.record_batch({"a": [0, 1, 2], "b": ["x", "y", "z"]}),
        pa.record_batch({"a": [3, 4], "b": ["u", "v"]}),
    ])
    taken = take_rows(table, np.array([4, 0, 3, 3]))
    assert taken.schema == table.schema
    assert taken.to_pydict() == {"a": [4, 0, 3, 3], "b": ["v", "x", "u", "u"]}


def test_out_of_range_is_an_error_not_a_wrong_row():
    data = pa.chunked_array([pa.array(["a"]), pa.array(["b"])])
    with pytest.raises(IndexError):
        take_rows(data, [2])
    with pytest.raises(IndexError):
        take_rows(data, [-1])


def test_many_requested_rows_come_back_in_batches_in_order(monkeypatch):
    import core.io.tables

    monkeypatch.setattr(core.io.tables, "BATCH_ROWS", 7)
    data = pa.chunked_array([pa.array(range(start, start + 10)) for start in range(0, 50, 10)])
    indices = np.random.default_rng(0).integers(0, 50, 40)
    taken = take_rows(data, indices)
    assert taken.num_chunks == 6
    assert taken.to_pylist() == indices.tolist()
