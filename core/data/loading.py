"""Loading a preference dataset into normalised pairs, with a report of every rejected row.

Shapes understood (core.data.shapes; TRL's names where it has them):

- standard: ``{"prompt": "2+2?", "chosen": "4", "rejected": "5"}``
- conversational: the same keys holding lists of ``{"role", "content"}`` messages
- a string prompt beside message-list replies that repeat it (UltraFeedback-binarized)
- a system column beside the prompt (Orca-DPO-pairs: ``system``, ``question``, ...)
- implicit prompt: only ``chosen`` and ``rejected``, each a whole text or conversation;
  role-marked dialogues (HH-RLHF) are cut where the last assistant turn begins, other
  texts at their shared beginning
- any of these under other column names, with ``LoadConfig.prompt_col`` and friends.

Every other column is kept: `LoadedDataset.records` holds each loaded row as the source
had it, aligned with `LoadedDataset.pairs`, so exports carry it through.

Speed: JSON lines, CSV and Arrow-backed sources are read by Arrow's multithreaded
readers, checked and hashed a block at a time (core.data.arrow_rows, core.data.pairs.pair_ids);
only the rows those checks cannot vouch for go through the per-row normaliser, which
is the reference for every rule. A JSON array document is read row by row.

Policy: a bad row is reported (file, line or row, column, reason) and skipped; with
``strict=True`` the first one stops the load. Duplicates keep the first occurrence.
Rows read = loaded + rejected, always.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np
import pyarrow as pa

from core.data.load_report import REASONS, SHAPES, LoadConfig, LoadReport, PromptStyle, Rejection
from core.data.pair_builder import CHUNK_ROWS, PairBuilder
from core.data.pairs import MESSAGE_TYPE, Format, is_conversation
from core.data.shapes import MissingColumnsError
from core.data.sources import (
    ARROW_KINDS,
    LineBlock,
    ParsedLines,
    RawRecord,
    SourceSpec,
    guard_reading,
    iter_arrow_records,
    json_line_records,
    parse_json_block,
    read_arrow_table,
    read_delimited,
    read_delimited_arrow,
    read_json_document,
    read_json_lines,
    read_line_blocks,
    resolve_source,
)
from core.io.tables import take_rows
from core.progress import ProgressFn, Reporter

__all__ = [
    "REASONS",
    "SHAPES",
    "LoadConfig",
    "LoadReport",
    "LoadedDataset",
    "MissingColumnsError",
    "PromptStyle",
    "Rejection",
    "load_dataset",
]

T = TypeVar("T")
COLUMN_SNIFF_RECORDS = 100
FAST_IMPORT = True
"""Read through Arrow's readers where the source allows; the per-row path alone when
False (the tests compare the two)."""
RETRY_BLOCK_BYTES = 1 << 20
"""A JSON lines block Arrow cannot read is retried in pieces of this size, so that one bad
line sends only its neighbourhood down the per-row path."""


@dataclass
class LoadedDataset:
    """Normalised pairs plus the source's own rows, aligned row for row."""

    pairs: pa.Table
    """pair_id, row_index, prompt, chosen, rejected (see core.data.pairs)."""
    records: pa.Table
    """The source's rows for the loaded pairs: the original columns for Arrow-backed and
    CSV sources; one ``_json`` column with each record's JSON text for JSON sources (a
    JSON line as read, its line break included)."""
    report: LoadReport
    numbers: pa.Table | None = None
    """JSON sources: every top-level field that held only numbers (or null), as float64
    columns aligned with `pairs`, so margin columns need no second parse of the JSON text.
    None for other sources, whose `records` are typed already."""

    @property
    def format(self) -> Format:
        assert self.report.format is not None
        return self.report.format


def load_dataset(
    source: str,
    config: LoadConfig = LoadConfig(),  # noqa: B008 (frozen: one shared default is safe)
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    records_sink: Callable[[pa.Array], None] | None = None,
) -> LoadedDataset:
    """Read, validate and normalise a preference dataset.

    `records_sink(texts)`, for JSON sources: the loaded rows' record texts (the column of
    `LoadedDataset.records`) in source order, a chunk at a time as they load, before the
    decisions on the whole file (duplicates, role-marked text) drop any. What it was given
    is the records column exactly when that column has as many rows (rows are only ever
    dropped): a caller can write the records while the rest still loads.

    Raises `LoadError` when the source cannot be read at all (`MissingColumnsError` when
    a uniform source lacks a named column), or at the first bad row with
    ``config.strict``. Otherwise returns, even when nothing loaded: callers decide what
    an empty result means (the CLI exits non-zero).
    """
    _import_pandas_beside()
    spec = resolve_source(source)
    report = LoadReport(source=str(source), source_kind=spec.kind)
    if spec.warning:
        report.warnings.append(spec.warning)
    if spec.kind in ARROW_KINDS:
        return _load_arrow(spec, config, report, progress, cancel)
    if spec.kind in ("csv", "tsv") and FAST_IMPORT:
        table = read_delimited_arrow(spec)
        if table is not None:
            return _load_csv_table(spec, table, config, report, progress, cancel)
    reporter = Reporter("load", None, progress, cancel, unit="rows")
    builder = PairBuilder(spec.kind, config, report, reporter, records_sink=records_sink)
    records = _read_text_source(spec)
    # Decide the columns from the keys of the first records, not just the first one,
    # so that one odd first row does not change how the whole file is read.
    head = list(itertools.islice(records, COLUMN_SNIFF_RECORDS))
    values = [r.value for r in head if isinstance(r.value, dict)]
    keys = dict.fromkeys(key for value in values for key in value)
    if keys:
        builder.choose_columns(list(keys), values, uniform=False)
    if spec.kind == "jsonl" and FAST_IMPORT and builder.columns:
        _read_json_blocks(spec, builder, _role_schema(builder.columns, values))
    else:
        for record in itertools.chain(head, records):
            builder.add_record(record)
    reporter.done = report.read
    reporter.finish()
    pairs, records_table, numbers = builder.finish()
    return LoadedDataset(pairs, records_table, report, numbers)


def _import_pandas_beside() -> None:
    """Start importing pandas in a thread, unless it is imported already. pyarrow imports it
    the first time it turns a Python value into Arrow (a scalar argument, a list,
    `to_numpy`): 0.3-0.4 s that would stall the first block's checks while the reader
    waits, and that `pyarrow.json.read_json` alone never pays. Begun here, it runs while
    Arrow reads the first blocks; whoever needs it first waits for it (Python's import lock)."""
    if "pandas" in sys.modules:
        return

    def load() -> None:
        with contextlib.suppress(ImportError):
            import pandas  # noqa: F401

    threading.Thread(target=load, name="dmtui-import-pandas", daemon=True).start()


def _load_arrow(spec: SourceSpec, config: LoadConfig, report: LoadReport, progress, cancel) -> LoadedDataset:
    table = read_arrow_table(spec, config.split)
    reporter = Reporter("load", table.num_rows, progress, cancel, unit="rows")
    builder = PairBuilder(spec.kind, config, report, reporter)
    builder.choose_columns(table.column_names, _head(table), uniform=True)
    for start in range(0, table.num_rows, CHUNK_ROWS):
        block = table.slice(start, CHUNK_ROWS)
        if FAST_IMPORT and _valid_utf8(block):
            builder.add_table(
                block, start, np.arange(start, start + block.num_rows), None, partial(iter_arrow_records, block, start)
            )
        else:
            for record in iter_arrow_records(block, start):
                builder.add_record(record)
    reporter.done = report.read
    reporter.finish()
    pairs, records, numbers = builder.finish(records_of_arrow=lambda rows: take_rows(table, rows))
    return LoadedDataset(pairs, records, report, numbers)


def _load_csv_table(
    spec: SourceSpec, table: pa.Table, config: LoadConfig, report: LoadReport, progress, cancel
) -> LoadedDataset:
    """A CSV file Arrow read: the checks run on its columns; locations (lines, which
    Arrow does not keep) come from one pass of the per-row reader, only when a row
    needs one."""
    reporter = Reporter("load", table.num_rows, progress, cancel, unit="rows")
    lines: list[np.ndarray] = []

    def locations() -> np.ndarray:
        if not lines:
            lines.append(np.array([int(r.location.rsplit(" ", 1)[1]) for r in read_delimited(spec)], dtype=np.int64))
        return lines[0]

    builder = PairBuilder(spec.kind, config, report, reporter, locations)
    builder.choose_columns(table.column_names, _head(table), uniform=False)
    for start in range(0, table.num_rows, CHUNK_ROWS):
        block = table.slice(start, CHUNK_ROWS)

        def values(rows: np.ndarray, block=block, start=start) -> Iterator[RawRecord]:
            for record in iter_arrow_records(block, start, rows):
                yield RawRecord(record.row_index, f"line {locations()[record.row_index]}", record.value)

        builder.add_table(block, start, None, block, values)
    reporter.done = report.read
    reporter.finish()
    pairs, records, numbers = builder.finish()
    return LoadedDataset(pairs, records, report, numbers)


def _read_json_blocks(spec: SourceSpec, builder: PairBuilder, schema: pa.Schema | None) -> None:
    """JSON lines through Arrow a block at a time; a block it cannot read is retried in
    smaller pieces, and the pieces that still fail are read row by row."""
    row = 0
    pieces = (item for block in read_line_blocks(spec) for item in _parsed_pieces(block, schema))
    for piece, parsed in _read_ahead(pieces):
        if parsed is None:
            for record in json_line_records(io.BytesIO(piece.data), piece.first_line, row):
                builder.add_record(record)
                row = record.row_index + 1
            continue

        def values(rows: np.ndarray, parsed=parsed, first=row) -> Iterator[RawRecord]:
            texts = parsed.texts.take(pa.array(rows)).to_pylist()
            for position, text in zip(rows.tolist(), texts):
                yield from json_line_records([text.encode("utf-8")], int(parsed.lines[position]), first + position)

        builder.add_table(parsed.table, row, parsed.lines, parsed.texts, values, parsed.plain)
        row += parsed.table.num_rows


def _read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, the next one made in a worker thread while the caller works on this one:
    reading and parsing (Arrow, the GIL released) overlap the checks and hashing."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dmtui-read") as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _parsed_pieces(block: LineBlock, schema: pa.Schema | None) -> Iterator[tuple[LineBlock, ParsedLines | None]]:
    parsed = parse_json_block(block, schema)
    if parsed is not None or len(block.data) <= RETRY_BLOCK_BYTES:
        yield block, parsed
        return
    data, start, line = block.data, 0, block.first_line
    while start < len(data):
        end = data.rfind(b"\n", start, start + RETRY_BLOCK_BYTES) + 1
        if end <= start:
            end = data.find(b"\n", start + RETRY_BLOCK_BYTES) + 1 or len(data)
        piece = LineBlock(data[start:end], line)
        yield piece, parse_json_block(piece, schema)
        line += piece.data.count(b"\n")
        start = end


def _role_schema(columns: dict[str, str], head: list[dict]) -> pa.Schema | None:
    """Arrow types for the role columns, from the first records: a string column that
    looks like dates must stay text, and a message list must keep string contents."""
    fields = []
    for column in dict.fromkeys(columns.values()):
        values = [value[column] for value in head if value.get(column) is not None]
        if values and all(isinstance(value, str) for value in values):
            fields.append((column, pa.string()))
        elif values and all(is_conversation(value) for value in values):
            fields.append((column, MESSAGE_TYPE))
    return pa.schema(fields) if fields else None


def _head(table: pa.Table) -> list[dict]:
    try:
        return table.slice(0, COLUMN_SNIFF_RECORDS).to_pylist()
    except UnicodeDecodeError:
        return []


def _valid_utf8(table: pa.Table) -> bool:
    """Arrow does not check string cells on read; a block with a bad one goes row by row."""
    try:
        table.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _read_text_source(spec: SourceSpec) -> Iterator[RawRecord]:
    if spec.kind == "jsonl":
        return guard_reading(spec, read_json_lines(spec))
    if spec.kind == "json":
        return guard_reading(spec, read_json_document(spec))
    return guard_reading(spec, read_delimited(spec))
