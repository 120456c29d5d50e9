"""Finding out what a dataset source is, and reading its records.

A source is a file (JSON lines, JSON, Parquet, CSV/TSV, optionally gzip-compressed), a
`datasets.save_to_disk` folder, or anything `datasets.load_dataset` accepts (a hub id or a
local dataset folder). The kind is decided from the content, not trusted from the
extension: a mismatch is loaded by content and reported as a warning.

Readers yield `RawRecord`s in source order. A record the reader could not decode carries
an `error` (reason, detail) instead of a value; validation of the fields happens later in
`core.data.loading`. Locations are for people: ``line N`` (1-based) for JSON lines and CSV,
``item N`` for a JSON array, ``row N`` (0-based, as `datasets` and pandas count) for
Arrow-backed sources.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import LoadError

SourceKind = Literal["jsonl", "json", "parquet", "csv", "tsv", "save_to_disk", "hub"]

EXTENSION_KINDS: dict[str, SourceKind] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
}
ARROW_KINDS = ("parquet", "save_to_disk", "hub")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SNIFF_BYTES = 64 * 1024
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A JSON escape of a UTF-16 surrogate; only when one occurs can a decoded value hold a lone one."""
LONE_SURROGATE = ("invalid_utf8", "a \\u escape that is half of a UTF-16 pair (a lone surrogate), not a character")


@dataclass(frozen=True)
class SourceSpec:
    """What a source turned out to be."""

    source: str
    kind: SourceKind
    path: Path | None
    compressed: bool = False
    warning: str | None = None


@dataclass
class RawRecord:
    """One record as read, before any validation."""

    row_index: int
    location: str
    value: Any = None
    raw_json: str | None = None
    """A JSON line as read (its line break included), or an item of a JSON document as JSON."""
    error: tuple[str, str] | None = None


def resolve_source(source: str | Path) -> SourceSpec:
    """Decide what `source` is, reading at most its first 64 KiB."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return SourceSpec(text, "save_to_disk", path)
        return SourceSpec(text, "hub", path)
    if not path.exists():
        if HUB_ID.match(text) and Path(text).suffix not in EXTENSION_KINDS:
            return SourceSpec(text, "hub", None)
        raise LoadError(
            f"{text}: no such file or folder",
            "pass a .jsonl/.json/.parquet/.csv file, a datasets.save_to_disk folder or a hub id",
        )
    if not path.is_file():
        raise LoadError(f"{text}: not a regular file")
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as error:
        raise LoadError(f"{text}: cannot be read ({error.strerror})") from error

    compressed = head[:2] == b"\x1f\x8b"
    if compressed:
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(SNIFF_BYTES)
        except (OSError, EOFError, zlib.error) as error:
            raise LoadError(f"{text}: looks gzip-compressed but cannot be decompressed ({error})") from error

    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    expected = EXTENSION_KINDS.get(suffixes[-1]) if suffixes else None
    sniffed = _sniff(head, expected)
    if sniffed is None:
        if not head.strip():
            raise LoadError(f"{text}: the file is empty; there are no rows to load")
        described = f"a {expected} file" if expected else "a dataset file"
        raise LoadError(
            f"{text}: not {described}: its content is not JSON, JSON lines, CSV or Parquet",
            "check that this is the file you meant; convert it to JSON lines or Parquet",
        )
    warning = None
    if expected is not None and sniffed != expected and {sniffed, expected} != {"csv", "tsv"}:
        warning = f"{text}: the extension says {expected} but the content is {sniffed}; loaded as {sniffed}"
    if sniffed == "parquet" and compressed:
        raise LoadError(f"{text}: a gzip-compressed Parquet file is not supported", "decompress it first")
    return SourceSpec(text, sniffed, path, compressed, warning)


def _sniff(head: bytes, expected: SourceKind | None) -> SourceKind | None:
    """The kind of a file from its first bytes, or None if it is none we read."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if b"\x00" in head:
        return None
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if not text:
        return None
    if text[0] == "[":
        return "json"
    if text[0] == "{":
        first_line, _, rest = text.partition("\n")
        try:
            first = json.loads(first_line.strip())
        except (ValueError, RecursionError):
            # A pretty-printed document, or a broken (or unreadable) first line of JSON lines.
            return "jsonl" if expected == "jsonl" or "\n{" in text else "json"
        if (
            expected == "json"
            and not rest.strip()
            and isinstance(first, dict)
            and (sum(isinstance(value, list) for value in first.values()) == 1)
        ):
            return "json"  # a compact {"data": [...]} document on one line
        return "jsonl"
    if expected in ("csv", "tsv"):
        return expected
    if expected is None and ("," in text.split("\n", 1)[0]):
        return "csv"
    if "\ufffd" in text[:1000] and expected != "jsonl":
        return None
    return "jsonl" if expected == "jsonl" else None


def _open_binary(spec: SourceSpec) -> gzip.GzipFile | io.BufferedReader:
    assert spec.path is not None
    return gzip.open(spec.path, "rb") if spec.compressed else spec.path.open("rb")


def read_json_lines(spec: SourceSpec) -> Iterator[RawRecord]:
    """One record per non-blank line; decoding problems become record errors."""
    with _open_binary(spec) as handle:
        yield from json_line_records(handle, first_line=1, first_row=0)


def json_line_records(lines: Iterable[bytes], first_line: int, first_row: int) -> Iterator[RawRecord]:
    """The records of `lines` (each with its newline), numbered from the given line and row."""
    row_index = first_row
    for line_number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        location = f"line {line_number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            yield RawRecord(row_index, location, error=("invalid_utf8", f"byte {error.start}: not UTF-8"))
            row_index += 1
            continue
        if row_index == 0:
            text = text.lstrip("\ufeff")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            yield RawRecord(row_index, location, error=("malformed_json", f"column {error.colno}: {error.msg}"))
        except (ValueError, RecursionError) as error:  # valid JSON that Python will not hold
            yield RawRecord(row_index, location, error=("malformed_json", _unparsable(error)))
        else:
            if SURROGATE_ESCAPE.search(text) and _holds_lone_surrogate(value):
                yield RawRecord(row_index, location, error=LONE_SURROGATE)
            else:
                yield RawRecord(row_index, location, value=value, raw_json=text)
        row_index += 1


@dataclass(frozen=True)
class LineBlock:
    """Whole lines of a JSON lines file, read in one piece."""

    data: bytes | bytearray
    """Never changed once made (Arrow arrays view it)."""
    first_line: int
    """Physical line number (1-based) of the block's first line."""
    newlines: np.ndarray | None = None
    """Where `data` holds a newline, when the reader found them already (else None)."""


@dataclass(frozen=True)
class ParsedLines:
    """A block of JSON lines as Arrow read it, checked to be what the per-row reader reads."""

    table: pa.Table
    lines: np.ndarray
    """Physical line number of each row."""
    texts: pa.Array
    """Each row's line, as `RawRecord.raw_json` holds it (its line break included): a
    view of the block's bytes, not a copy."""
    plain: bool
    """No line holds a backslash, so no text holds a character that JSON escapes."""


JSON_BLOCK_BYTES = 16 << 20
READ_BYTES = 1 << 20
MAX_ARROW_DEPTH = 64
"""Python's JSON reader refuses deeper nesting than about a thousand levels; Arrow does not:
blocks with deeply nested columns are left to the per-row reader, which reports them."""
_NOT_BLANK = "[^ \t\n\r\x0b\x0c]"
"""A byte that `bytes.strip()` keeps: a line without one is skipped by both readers."""
_OBJECT_START = "^[ \t\r]*\\{"
"""A line whose record is an object. Arrow's JSON reader (pyarrow 26) crashes the process on
a record that is not one, a bare ``null``, at the start of one of its internal blocks
(reading ``null\\n{"a": 1}`` is enough): such blocks never reach it."""
MAX_OPENERS = 1000
"""Arrow's JSON reader recurses per level of nesting and overflows the stack (a crash, not
an error) somewhere past 10,000 levels: a block with a line holding more brackets than
this is left to the per-row reader, which reports it (Python refuses ~1,000 levels)."""


def read_line_blocks(spec: SourceSpec) -> Iterator[LineBlock]:
    """The file in blocks of whole lines (the last one may lack its newline).

    Each block is read straight into a buffer of its own, which the loaded rows' texts
    then view: the bytes are copied once, from the file, whatever the block size.
    A read that fails part-way (a truncated or corrupt gzip stream, a disk error) first
    yields the whole lines read before it, then raises `LoadError` naming the last one,
    as `guard_reading` does for the per-row reader.
    """
    line, carry = 1, b""
    with _open_binary(spec) as handle:
        left = None if spec.compressed else os.fstat(handle.fileno()).st_size
        while True:
            # one byte past what the file holds, so that its end shows as a short read
            room = JSON_BLOCK_BYTES if left is None or left < 0 else min(JSON_BLOCK_BYTES, left + 1)
            block = bytearray(len(carry) + max(room, len(carry)))  # doubles for a line longer than a block
            block[: len(carry)] = carry
            filled, failure = len(carry), None
            with memoryview(block) as view:
                try:
                    while filled < len(block) and (count := handle.readinto1(view[filled:])):
                        filled += count
                except (OSError, EOFError, zlib.error) as error:
                    failure = error
            if left is not None:
                left -= filled - len(carry)
            ended = filled < len(block)
            del block[filled:]
            cut = len(block) if ended and failure is None else block.rfind(b"\n") + 1
            carry = bytes(block[cut:])
            del block[cut:]
            if block:
                newlines = _positions(np.frombuffer(block, dtype=np.uint8), ord("\n"))
                yield LineBlock(block, line, newlines)
                line += len(newlines)
            if failure is not None:
                last = f"line {line - 1}" if line > 1 else "the start"
                raise LoadError(
                    f"{spec.source}: cannot be read after {last} ({failure})",
                    "the file is truncated or damaged; fetch or decompress it again",
                ) from None
            if ended:
                return


def _line_array(data: bytes | bytearray, newlines: np.ndarray | None) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Every line of `data` (its newline included) as one binary array, without a copy,
    the first byte of each line, and where each line ends. `newlines`: where `data` holds
    one, if known."""
    content = np.frombuffer(data, dtype=np.uint8)
    ends = (_positions(content, ord("\n")) if newlines is None else newlines) + 1
    if not ends.size or ends[-1] != len(data):
        ends = np.append(ends, len(data))
    offsets = np.concatenate([[0], ends]).astype(np.int32)
    lines = pa.Array.from_buffers(pa.binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return lines, content[offsets[:-1]] if len(data) else np.zeros(0, np.uint8), ends


def _positions(content: np.ndarray, byte: int, fold: int = 0) -> np.ndarray:
    """Where `content` holds `byte` once `fold` is OR-ed into each byte, found in pieces of
    READ_BYTES into the same two small buffers: a fresh mask the size of a 16 MiB block
    costs more in page faults (the kernel zeroing new pages) than the comparison itself."""
    step = max(min(len(content), READ_BYTES), 1)
    folded, found = np.empty(step, np.uint8), np.empty(step, bool)
    parts = []
    for start in range(0, len(content), step):
        piece = content[start : start + step]
        size = len(piece)
        if fold:
            piece = np.bitwise_or(piece, fold, out=folded[:size])
        np.equal(piece, byte, out=found[:size])
        parts.append(np.flatnonzero(found[:size]) + start)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def parse_json_block(block: LineBlock, schema: pa.Schema | None) -> ParsedLines | None:
    """`block` read by Arrow's multithreaded JSON reader, or None when that would not read
    it as the per-row reader does (bad JSON or UTF-8, a line holding two objects, huge
    integers, deep nesting, a role column of another type than `schema` says ...)."""
    data, newlines = block.data, block.newlines
    if block.first_line == 1 and data.startswith(b"\xef\xbb\xbf"):
        data, newlines = data[3:], None  # the per-row reader strips the first record's byte-order mark too
        if not data.split(b"\n", 1)[0].strip():
            return None  # ... but reads a line holding only the mark as a (malformed) record
    import pyarrow.json as pa_json

    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    try:
        lines, starts, ends = _line_array(data, newlines)
        lines = lines.cast(pa.string())  # the cast checks that every byte is UTF-8
    except (pa.ArrowException, ValueError):
        return None
    if (starts == ord("{")).all():  # no line is blank: each is one record (Arrow's count checks "one")
        rows = np.arange(len(lines))
    else:
        keep = pc.match_substring_regex(lines, _NOT_BLANK)
        if not pc.all(pc.or_(pc.invert(keep), pc.match_substring_regex(lines, _OBJECT_START))).as_py():
            return None
        rows = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
        lines = lines.filter(keep)
    if _too_many_openers(data, ends):
        return None
    try:
        table = pa_json.read_json(pa.BufferReader(data), parse_options=options)
    except (pa.ArrowException, ValueError, OverflowError):
        return None
    if any(_deeper_than(column.type, MAX_ARROW_DEPTH) or _beyond_int64(table[column.name]) for column in table.schema):
        return None
    if rows.size != table.num_rows:
        return None
    return ParsedLines(table, rows + block.first_line, lines, data.find(b"\\") < 0)


def _too_many_openers(data: bytes | bytearray, line_ends: np.ndarray) -> bool:
    """Whether some line of `data` holds more than MAX_OPENERS ``[`` and ``{`` (a bound on
    its nesting that needs no parsing). `line_ends`: where each line ends, ascending."""
    if not (np.diff(line_ends, prepend=0) > MAX_OPENERS).any():
        return False  # no line is long enough to hold that many
    positions = _positions(np.frombuffer(data, dtype=np.uint8), ord("{"), 0x20)  # "[" (0x5b) | 0x20 == "{"
    if positions.size <= MAX_OPENERS:
        return False
    return int(np.bincount(np.searchsorted(line_ends, positions, side="right")).max()) > MAX_OPENERS


def _beyond_int64(column: pa.ChunkedArray) -> bool:
    """A float column holding a value past int64: perhaps an integer token that Arrow
    rounded differently from Python (which reads it exactly, then rounds once)."""
    if not pa.types.is_floating(column.type) or column.null_count == len(column):
        return False
    return (pc.max(pc.abs(column)).as_py() or 0) >= 2.0**63


def _deeper_than(data_type: pa.DataType, levels: int) -> bool:
    """Whether `data_type` nests lists and structs more than `levels` deep (it looks no deeper)."""
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return levels <= 0 or _deeper_than(data_type.value_type, levels - 1)
    if pa.types.is_struct(data_type):
        return levels <= 0 or any(
            _deeper_than(data_type.field(i).type, levels - 1) for i in range(data_type.num_fields)
        )
    return False


def _unparsable(error: ValueError | RecursionError) -> str:
    """Why json.loads refused text that is valid JSON: a huge integer, or deep nesting."""
    if isinstance(error, RecursionError):
        return "nested too deeply to read"
    return f"a number too long to read ({str(error).split(':')[0]})"


def _holds_lone_surrogate(value: Any) -> bool:
    """True if any string (key or value) in a decoded JSON value is not valid Unicode.
    (A walk, not a recursion: json.loads holds nesting deeper than Python's recursion limit
    leaves room for, in a worker thread's deep stack.)"""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _has_surrogates(item):
                return True
        elif isinstance(item, dict):
            if any(_has_surrogates(key) for key in item):
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def read_json_document(spec: SourceSpec) -> Iterator[RawRecord]:
    """A JSON array of records, or an object holding exactly one such array."""
    with _open_binary(spec) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise LoadError(
            f"{spec.source}: invalid UTF-8 at line {line} (byte {error.start})",
            "re-encode the file as UTF-8",
        ) from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise LoadError(
            f"{spec.source}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}",
            "fix the file, or save it as JSON lines so one bad record does not spoil the rest",
        ) from error
    except (ValueError, RecursionError) as error:
        raise LoadError(
            f"{spec.source}: JSON that cannot be read: {_unparsable(error)}",
            "save it as JSON lines so one bad record does not spoil the rest",
        ) from None
    if isinstance(document, dict):
        lists = [key for key, value in document.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise LoadError(
                f"{spec.source}: a JSON object, but not one holding a single list of records",
                "give a JSON array of records, or JSON lines",
            )
        document = document[lists[0]]
    if not isinstance(document, list):
        raise LoadError(f"{spec.source}: JSON but not an array of records", "give a JSON array or JSON lines")
    check_surrogates = SURROGATE_ESCAPE.search(text) is not None
    for index, value in enumerate(document):
        if check_surrogates and _holds_lone_surrogate(value):
            yield RawRecord(index, f"item {index}", error=LONE_SURROGATE)
            continue
        raw = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None
        yield RawRecord(index, f"item {index}", value=value, raw_json=raw)


def read_delimited(spec: SourceSpec) -> Iterator[RawRecord]:
    """CSV/TSV with a header row; every cell is a string (empty cell -> empty string)."""
    # The csv module refuses fields over 128 KiB by default; the loader has its own limit.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with _open_binary(spec) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter="\t" if spec.kind == "tsv" else ",")
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise LoadError(f"{spec.source}: unreadable CSV header ({error})") from error
        if any(_has_surrogates(name) for name in header):
            raise LoadError(f"{spec.source}: the header row is not valid UTF-8", "re-encode the file as UTF-8")
        width = len(header)
        row_index = 0
        while True:
            start_line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield RawRecord(row_index, f"line {start_line}", error=("malformed_csv", str(error)))
                row_index += 1
                continue
            if not cells:
                continue
            location = f"line {start_line}"
            if any(_has_surrogates(cell) for cell in cells):
                yield RawRecord(row_index, location, error=("invalid_utf8", "a cell is not valid UTF-8"))
            elif len(cells) > width:
                yield RawRecord(
                    row_index, location, error=("malformed_csv", f"{len(cells)} cells but the header has {width}")
                )
            else:
                yield RawRecord(row_index, location, value=dict(zip(header, cells)))
            row_index += 1


def _has_surrogates(cell: str) -> bool:
    try:
        cell.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_arrow_table(spec: SourceSpec, split: str | None) -> pa.Table:
    """The whole source as one Arrow table (memory-mapped where the format allows)."""
    if spec.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(spec.path, memory_map=True)
        except (pa.ArrowException, OSError) as error:
            raise LoadError(f"{spec.source}: not a readable Parquet file ({error})") from error
    import datasets

    try:
        if spec.kind == "save_to_disk":
            loaded = datasets.load_from_disk(str(spec.path))
        else:
            loaded = datasets.load_dataset(spec.source, split=split)
    except Exception as error:  # datasets raises many unrelated types for one cause
        hint = (
            "for a hub id, check the name and your network or HF_HUB_OFFLINE settings; "
            "for a folder, check that it holds data files"
        )
        raise LoadError(f"{spec.source}: cannot be loaded with datasets ({error})", hint) from error
    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) == 1:
            split = next(iter(loaded))
        split = split or "train"
        if split not in loaded:
            raise LoadError(
                f"{spec.source}: no split named {split!r}",
                f"pass --split with one of: {', '.join(loaded)}",
            )
        loaded = loaded[split]
    elif spec.kind == "save_to_disk" and split is not None:
        raise LoadError(f"{spec.source}: a single dataset, it has no splits", "leave out --split")
    return loaded.with_format("arrow")[:]


def iter_arrow_records(
    table: pa.Table, first_row: int = 0, rows: np.ndarray | None = None, chunk_rows: int = 8192
) -> Iterator[RawRecord]:
    """Records of an Arrow table (or of its `rows`), converted to Python a chunk at a time;
    row k of `table` is source row ``first_row + k``.

    Arrow does not check that string cells are UTF-8 when it reads them; a chunk that
    will not convert is redone row by row, and each row that fails is an error record.
    """
    positions = np.arange(table.num_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    for start in range(0, len(positions), chunk_rows):
        batch = positions[start : start + chunk_rows]
        chunk = table.take(pa.array(batch)) if rows is not None else table.slice(start, chunk_rows)
        try:
            values = chunk.to_pylist()
        except UnicodeDecodeError:
            values = None
        for offset, position in enumerate(batch.tolist()):
            index = first_row + position
            if values is not None:
                yield RawRecord(index, f"row {index}", value=values[offset])
                continue
            try:
                value = chunk.slice(offset, 1).to_pylist()[0]
            except UnicodeDecodeError as error:
                yield RawRecord(index, f"row {index}", error=("invalid_utf8", f"a string cell: {error.reason}"))
            else:
                yield RawRecord(index, f"row {index}", value=value)


def read_delimited_arrow(spec: SourceSpec) -> pa.Table | None:
    """A CSV/TSV file as one table of strings, read by Arrow's multithreaded reader, or
    None when Arrow would not read it as `read_delimited` does (a row of another width,
    bytes that are not UTF-8, a header that names a column twice ...)."""
    import pyarrow.csv as pa_csv

    with _open_binary(spec) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
        try:
            header = next(csv.reader(text, delimiter="\t" if spec.kind == "tsv" else ","), None)
        except csv.Error:
            return None
    if not header or len(set(header)) != len(header) or any(_has_surrogates(name) for name in header):
        return None
    try:
        table = pa_csv.read_csv(
            pa.input_stream(str(spec.path), compression="gzip" if spec.compressed else None),
            parse_options=pa_csv.ParseOptions(delimiter="\t" if spec.kind == "tsv" else ",", newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, OSError, EOFError, zlib.error, ValueError):
        return None
    return table if table.column_names == header else None


def guard_reading(spec: SourceSpec, records: Iterator[RawRecord]) -> Iterator[RawRecord]:
    """`records`, with a failure to read further (a truncated or corrupt gzip stream, a
    disk error) turned into a `LoadError` that names the file and the last row read."""
    last = "the start"
    try:
        for record in records:
            last = record.location
            yield record
    except (OSError, EOFError, zlib.error) as error:
        raise LoadError(
            f"{spec.source}: cannot be read after {last} ({error})",
            "the file is truncated or damaged; fetch or decompress it again",
        ) from None
