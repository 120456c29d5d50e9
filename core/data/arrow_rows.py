"""Vectorised checks of the fast import: which rows load unchanged, without Python per row.

For the shapes a million-pair file usually has (prompt, chosen and rejected columns,
all strings or all message lists), `clean_rows` marks the rows that
`core.data.shapes.RowNormaliser` would load exactly as they are. Every other row, and every
row of any other shape, goes to the normaliser itself, so reasons and locations of
rejections stay those of the per-row path. The checks are conservative: a row they
cannot vouch for is only slower, never loaded differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.data.pairs import MESSAGE_TYPE, Format, canonical_json
from core.data.roles import ANY_MARKER

_PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_HAS_TEXT = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_WHITESPACE) + "]"
"""A character `str.strip()` keeps (Python's whitespace spelled out: RE2's \\s differs)."""


@dataclass(frozen=True)
class CleanRows:
    """Rows of a table that load unchanged, and their pair columns."""

    mask: np.ndarray
    format: Format
    prompt: pa.Array
    chosen: pa.Array
    rejected: pa.Array
    """The three columns at the clean rows, in the pair table's types (perhaps chunked)."""


def table_format(table: pa.Table, roles: dict[str, str]) -> Format | None:
    """The format when the prompt, chosen and rejected columns are all strings or all
    message lists (with string role and content); None for any other combination."""
    names = [roles.get("prompt"), roles["chosen"], roles["rejected"]]
    if (
        names[0] is None
        or set(roles) - {"prompt", "chosen", "rejected"}
        or any(name not in table.column_names for name in names)
    ):  # a system or input column: per row
        return None
    types = [table.schema.field(name).type for name in names]
    if all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in types):
        return "standard"
    if all(_is_message_list(t) for t in types):
        return "conversational"
    return None


def _is_message_list(data_type: pa.DataType) -> bool:
    if not (pa.types.is_list(data_type) or pa.types.is_large_list(data_type)):
        return False
    item = data_type.value_type
    if not pa.types.is_struct(item):
        return False
    fields = {item.field(i).name: item.field(i).type for i in range(item.num_fields)}
    return all(
        name in fields and (pa.types.is_string(fields[name]) or pa.types.is_large_string(fields[name]))
        for name in ("role", "content")
    )


def clean_rows(table: pa.Table, roles: dict[str, str], fmt: Format, max_chars: int) -> CleanRows:
    """The rows whose three fields are valid, within `max_chars`, with differing responses
    and (standard) a prompt without role markers (those are parsed per row)."""
    columns = [table[roles["prompt"]], table[roles["chosen"]], table[roles["rejected"]]]
    if fmt == "standard":
        columns = [column.cast(pa.string()) for column in columns]
        checks = [pc.not_equal(columns[1], columns[2]), pc.invert(pc.match_substring_regex(columns[0], ANY_MARKER))]
        for column in columns:  # a null field makes every check on it null, which counts as failed
            checks += [pc.match_substring_regex(column, _HAS_TEXT), _within(column, max_chars)]
        ok = _true(pc.fill_null(_all(checks), False))
        return CleanRows(ok, fmt, *(rows_marked(column, ok) for column in columns))
    columns = [column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column for column in columns]
    ok = np.ones(table.num_rows, dtype=bool)
    for column in columns:
        ok &= _valid_messages(column, max_chars)
    picked = [_messages(rows_marked(column, ok)) for column in columns]
    differ = _true(pc.not_equal(canonical_json(picked[1]), canonical_json(picked[2])))
    if not differ.all():
        ok[np.flatnonzero(ok)[~differ]] = False
        picked = [column.filter(pa.array(differ)) for column in picked]
    return CleanRows(ok, fmt, *picked)


def _within(texts: pa.ChunkedArray, max_chars: int) -> pa.ChunkedArray:
    """Per text: at most `max_chars` characters (null for null). Counted in bytes first
    (never fewer than characters), so the characters are counted only when some text
    has more bytes than that."""
    fits = pc.less_equal(pc.binary_length(texts), max_chars)
    if pc.all(fits).as_py() is not False:
        return fits
    return pc.less_equal(pc.utf8_length(texts), max_chars)


def _valid_messages(column: pa.Array, max_chars: int) -> np.ndarray:
    """Per row: a non-empty list of messages with string role and content, some content
    not blank, the contents within `max_chars` together."""
    rows = len(column)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
    ok = _true(pc.is_valid(column)) & (lengths > 0)
    messages = pc.list_flatten(column)
    parent = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
    role, content = pc.struct_field(messages, "role"), pc.struct_field(messages, "content")
    whole = _true(pc.is_valid(messages)) & _true(pc.is_valid(role)) & _true(pc.is_valid(content))
    ok &= np.bincount(parent, weights=~whole, minlength=rows) == 0
    size = np.bincount(
        parent, weights=pc.fill_null(pc.utf8_length(content), 0).to_numpy(zero_copy_only=False), minlength=rows
    )
    ok &= size <= max_chars
    has_text = _true(pc.match_substring_regex(content, _HAS_TEXT))
    ok &= np.bincount(parent, weights=has_text, minlength=rows) > 0
    return ok


def _messages(column: pa.Array) -> pa.Array:
    """A message-list column (no nulls) in the pair table's type: role and content only."""
    messages = pc.list_flatten(column)
    items = pa.StructArray.from_arrays(
        [pc.struct_field(messages, "role").cast(pa.string()), pc.struct_field(messages, "content").cast(pa.string())],
        names=["role", "content"],
    )
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, items, type=MESSAGE_TYPE)


def rows_marked(data, keep: np.ndarray):
    """`data` (an array, chunked array or table) at the rows `keep` marks; itself when all are."""
    return data if keep.all() else data.filter(pa.array(keep))


def _all(checks: list) -> pa.Array | pa.ChunkedArray:
    combined = checks[0]
    for check in checks[1:]:
        combined = pc.and_(combined, check)
    return combined


def _true(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as numpy, null counted as False."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool)


def numeric_columns(table: pa.Table, loaded: np.ndarray) -> tuple[dict[str, pa.Array], set[str]]:
    """The number-typed columns at the `loaded` rows as float64 (those with a value there;
    perhaps chunked),
    and the columns that hold something else in a loaded row (never margin columns).
    Mirrors what `core.data.loading` gathers from JSON records one by one."""
    numbers: dict[str, pa.Array] = {}
    other: set[str] = set()
    for name in table.column_names:
        column = table[name]
        data_type = column.type
        if pa.types.is_null(data_type):
            continue
        column = rows_marked(column, loaded)
        if column.null_count == len(column):
            continue
        if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
            # unsafe: an integer beyond 2**53 rounds to the nearest double, as float() does
            numbers[name] = column.cast(pa.float64(), safe=False)
        else:
            other.add(name)
    return numbers, other
