"""Memory-mapped Arrow data: opening an Arrow IPC file mapped (`read_arrow_mapped`), and row
selection on it without copying what is not selected (`take_rows`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as pa_ipc
from numpy.typing import ArrayLike

BATCH_ROWS = 65_536
"""Requested rows gathered into one output chunk (a chunk of text stays far below 2 GiB)."""


def read_arrow_mapped(path: Path) -> pa.Table:
    """An Arrow IPC file as a table backed by the memory-mapped file: pages load on demand."""
    return pa_ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def take_rows(data: pa.ChunkedArray | pa.Table, indices: ArrayLike) -> pa.ChunkedArray | pa.Table:
    """``data.take(indices)``, chunk by chunk.

    Arrow's take on a chunked array first concatenates every chunk: for a workspace's
    mapped records that is a fresh copy of the whole dataset's text (seconds, and
    gigabytes at a million pairs) to keep a tenth of it. Here each batch of requested
    rows is taken from the chunks that hold them and put back in the requested order;
    the result has one chunk per batch.
    """
    rows = np.asarray(indices, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= len(data)):
        raise IndexError(f"row index out of range for {len(data)} rows")
    if isinstance(data, pa.Table):
        plans: dict[tuple[int, ...], list] = {}  # columns chunked alike share one plan
        columns = {}
        for name in data.column_names:
            column = data[name]
            layout = tuple(len(chunk) for chunk in column.chunks)
            plan = plans.setdefault(layout, _plan(layout, rows))
            columns[name] = _apply(column, plan)
        return pa.table(columns, schema=data.schema)
    return _apply(data, _plan(tuple(len(chunk) for chunk in data.chunks), rows))


def _plan(layout: tuple[int, ...], rows: np.ndarray) -> list[tuple[list[tuple[int, np.ndarray]], np.ndarray]]:
    """Per batch of `rows`: (chunk, positions in it) groups, and the order that restores `rows`."""
    starts = np.cumsum((0, *layout))
    plan = []
    for begin in range(0, len(rows), BATCH_ROWS):
        batch = rows[begin : begin + BATCH_ROWS]
        chunk_of = np.searchsorted(starts, batch, side="right") - 1
        by_chunk = np.argsort(chunk_of, kind="stable")
        grouped = chunk_of[by_chunk]
        edges = np.flatnonzero(np.diff(grouped)) + 1
        groups = [
            (int(chunk_of[part[0]]), batch[part] - starts[chunk_of[part[0]]])
            for part in np.split(by_chunk, edges)
            if part.size
        ]
        back = np.empty_like(by_chunk)
        back[by_chunk] = np.arange(len(by_chunk))
        plan.append((groups, back))
    return plan


def _apply(column: pa.ChunkedArray, plan) -> pa.ChunkedArray:
    pieces = []
    for groups, back in plan:
        taken = pa.concat_arrays([column.chunk(chunk).take(pa.array(positions)) for chunk, positions in groups])
        pieces.append(taken.take(pa.array(back)))
    return pa.chunked_array(pieces, type=column.type)
