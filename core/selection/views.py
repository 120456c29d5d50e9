"""Which pairs a table shows, in which order: filters, regions, text search, sorting.

Pure numpy and Arrow compute over per-pair arrays, so the examples table can refilter
and resort 1M rows off the UI thread. Every function returns row indices (or a mask)
into the dataset's pairs.

Search runs Arrow's substring kernel (case-insensitive) on each text column as it is
stored: no lower-cased copy of the text is built, and conversations are searched
message by message through the list's flattened contents, never as a Python string
per pair. The dataset's own columns (an `id`, a `topic`, ...) are searched too; for JSON
sources they are read out of the kept record texts once, with Arrow's JSON reader.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from core.data.loading import LoadedDataset
from core.data.roles import parse_dialogue
from core.errors import DmtuiError
from core.selection.plotdata import same_values
from core.selection.selector import Selection, SelectionParams, checked_mode, used_sources
from core.store.annotations import AnnotationMasks

ROW_FILTERS: tuple[str, ...] = ("all", "selected", "unselected", "flagged", "excluded", "swapped", "unscored")

TEXT_FIELDS = ("prompt", "chosen", "rejected")
KEPT_CHUNK_ROWS = 65_536
"""JSON records are parsed for their kept columns this many at a time (bounded memory)."""


def filter_mask(row_filter: str, selection: Selection | None, annotations: AnnotationMasks, n: int) -> np.ndarray:
    """The rows one named filter keeps."""
    if row_filter == "all":
        return np.ones(n, bool)
    if row_filter in ("selected", "unselected"):
        selected = selection.mask if selection is not None else np.zeros(n, bool)
        return selected if row_filter == "selected" else ~selected
    if row_filter == "unscored":
        if selection is None or selection.score is None:
            return np.zeros(n, bool)
        return ~np.isfinite(selection.score) & ~annotations.excluded
    if row_filter in ("flagged", "excluded", "swapped"):
        return getattr(annotations, row_filter)
    raise ValueError(f"unknown filter {row_filter!r}; one of {', '.join(ROW_FILTERS)}")


# Search ---------------------------------------------------------------------------


def search_mask(pairs: pa.Table, query: str, kept: pa.Table | None = None) -> np.ndarray:
    """Rows whose prompt, chosen or rejected (each message's content, for conversations)
    or one of the `kept` text columns contains `query`, ignoring case; or whose pair_id
    starts with it. An empty query keeps every row."""
    query = query.strip()
    found = np.zeros(pairs.num_rows, bool)
    if not query:
        found[:] = True
        return found
    for name in TEXT_FIELDS:
        found |= column_contains(pairs[name], query)
    if kept is not None:
        for column in kept.columns:
            found |= column_contains(column, query)
    found |= _true_where(pc.starts_with(pairs["pair_id"], query.lower()))
    return found


def column_contains(column: pa.ChunkedArray | pa.Array, query: str) -> np.ndarray:
    """Where a text column (or a list of {role, content} messages) contains `query`,
    ignoring case; False for nulls and for columns of any other type."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    found = np.zeros(len(column), bool)
    start = 0
    for chunk in chunks:
        kind = chunk.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            found[start : start + len(chunk)] = _true_where(pc.match_substring(chunk, query, ignore_case=True))
        elif _is_message_list(kind):
            contents = pc.struct_field(pc.list_flatten(chunk), "content")
            hits = _true_where(pc.match_substring(contents, query, ignore_case=True))
            parents = pc.list_parent_indices(chunk).to_numpy()
            found[start + parents[hits]] = True
        start += len(chunk)
    return found


def _is_message_list(kind: pa.DataType) -> bool:
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return False
    item = kind.value_type
    return (
        pa.types.is_struct(item)
        and item.get_field_index("content") >= 0
        and pa.types.is_string(item.field("content").type)
    )


def _true_where(matches: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(matches, False).to_numpy(zero_copy_only=False)


# The dataset's own columns ----------------------------------------------------------


def kept_column_names(dataset: LoadedDataset) -> list[str]:
    """The source's columns that are not prompt/chosen/rejected (an id, a topic, scores)."""
    return list(dataset.report.extra_columns)


def kept_values(dataset: LoadedDataset, index: int) -> dict[str, Any]:
    """One pair's kept columns (values as the source holds them; absent ones left out)."""
    names = kept_column_names(dataset)
    if not names:
        return {}
    if "_json" in dataset.records.column_names:
        record = json.loads(dataset.records["_json"][index].as_py())
    else:
        record = dataset.records.slice(index, 1).to_pylist()[0]
    return {name: record[name] for name in names if name in record}


def format_kept_value(value: Any, width: int) -> str:
    """A kept value on one line of at most `width` characters (floats to 4 digits)."""
    text = value if isinstance(value, str) else f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def kept_text_columns(
    dataset: LoadedDataset,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> pa.Table:
    """The kept columns that hold text, one Arrow string column each, aligned with the pairs.

    Arrow-backed and CSV sources have them typed already. JSON sources keep each record's
    text: the kept fields are read out of it with Arrow's JSON reader, a chunk of records
    at a time. A field that is not text in every record (a number, a list, an object)
    is left out; numeric fields are in `dataset.numbers`. `progress(done, total)` gets the
    records read so far.
    """
    names = [
        name
        for name in kept_column_names(dataset)
        if dataset.numbers is None or name not in dataset.numbers.column_names
    ]
    records = dataset.records
    if "_json" not in records.column_names:
        return pa.table(
            {
                name: records[name]
                for name in names
                if name in records.column_names and pa.types.is_string(records.schema.field(name).type)
            }
        )
    texts = records["_json"]
    for name in list(names):
        if not _json_field_is_text(texts.slice(0, KEPT_CHUNK_ROWS), name):
            names.remove(name)
    if not names:
        return pa.table({})
    schema = pa.schema([(name, pa.string()) for name in names])
    parts: list[pa.Table] = []
    for start in range(0, len(texts), KEPT_CHUNK_ROWS):
        if cancel is not None and cancel.is_set():
            raise DmtuiError("reading the kept columns was cancelled")
        chunk = texts.slice(start, KEPT_CHUNK_ROWS)
        try:
            parts.append(_read_json_fields(chunk, schema))
        except pa.ArrowInvalid:  # some field is not text in this chunk: keep the ones that are
            names = [name for name in names if _json_field_is_text(chunk, name)]
            if not names:
                return pa.table({})
            schema = pa.schema([(name, pa.string()) for name in names])
            parts = [part.select(names) for part in parts]
            parts.append(_read_json_fields(chunk, schema))
        if progress is not None:
            progress(min(start + KEPT_CHUNK_ROWS, len(texts)), len(texts))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _read_json_fields(texts: pa.ChunkedArray, schema: pa.Schema) -> pa.Table:
    """The `schema` fields of each JSON text, one row per text (missing fields null)."""
    lines = pc.binary_join_element_wise(texts, "", "\n")  # each text plus a newline
    data = b"".join(_text_bytes(chunk) for chunk in lines.chunks if len(chunk))
    if not data:
        return schema.empty_table()
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pa_json.read_json(
        io.BytesIO(data), parse_options=options, read_options=pa_json.ReadOptions(use_threads=True, block_size=1 << 24)
    )
    if table.num_rows != len(texts):  # a text with a raw newline would split a record
        raise pa.ArrowInvalid("the record texts do not map one to one onto JSON lines")
    return table


def _text_bytes(chunk: pa.Array) -> bytes:
    """The UTF-8 bytes of a string array's values, back to back."""
    offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=len(chunk) + 1, offset=chunk.offset * 4)
    return chunk.buffers()[2][int(offsets[0]) : int(offsets[-1])].to_pybytes()


def _json_field_is_text(texts: pa.ChunkedArray, name: str) -> bool:
    try:
        _read_json_fields(texts, pa.schema([(name, pa.string())]))
    except pa.ArrowInvalid:
        return False
    return True


# Order -------------------------------------------------------------------------------


def ordered_rows(mask: np.ndarray, sort_key: np.ndarray | None, descending: bool) -> np.ndarray:
    """Indices of `mask`'s rows sorted by `sort_key` (None: source order); NaN last, stable."""
    rows = np.flatnonzero(mask)
    if sort_key is None:
        return rows[::-1] if descending else rows
    return rows[sorted_order(np.asarray(sort_key, dtype=np.float64)[rows], descending)]


def sorted_order(keys: np.ndarray, descending: bool) -> np.ndarray:
    """The stable argsort of float keys, NaN and +-inf last in either direction.

    Sorts the keys' IEEE bits as order-preserving integers, which numpy's stable sort
    handles about a third faster than floats.
    """
    bits = (np.asarray(keys, dtype=np.float64) + 0.0).view(np.int64)  # + 0.0: -0.0 equals 0.0
    ordered = np.where(bits < 0, bits ^ np.int64(0x7FFF_FFFF_FFFF_FFFF), bits)
    if descending:
        np.invert(ordered, out=ordered)  # reverses the order exactly, no overflow
    ordered[~np.isfinite(keys)] = np.iinfo(np.int64).max
    return np.argsort(ordered, kind="stable")


class RowOrder:
    """The table's row order, with the full sort of each key kept for reuse.

    A selection change that leaves the sort key as it was (a budget edit re-ranks nothing)
    costs a gather of the cached order instead of a new sort of every row. Keys are
    compared by content; the caller must not modify an array after passing it.
    """

    def __init__(self, keep: int = 2) -> None:
        self._keep = keep
        self._sorted: list[tuple[np.ndarray, bool, np.ndarray]] = []
        self._lock = threading.Lock()

    def rows(self, mask: np.ndarray, sort_key: np.ndarray | None, descending: bool) -> np.ndarray:
        """`ordered_rows(mask, sort_key, descending)`, from the cached sort when there is one."""
        if sort_key is None:
            return ordered_rows(mask, None, descending)
        order = self._full_order(np.asarray(sort_key, dtype=np.float64), descending)
        return order if mask.all() else order[mask[order]]

    def _full_order(self, key: np.ndarray, descending: bool) -> np.ndarray:
        with self._lock:
            for cached_key, cached_descending, order in self._sorted:
                if cached_descending == descending and same_values(cached_key, key):
                    return order
        order = sorted_order(key, descending)
        with self._lock:
            self._sorted = [(key, descending, order), *self._sorted][: self._keep]
        return order


# The examples table's rows -------------------------------------------------------------

VIEW_SETTINGS_KEY = "view"
"""settings.json key of the table's remembered filter and sort (the search is not kept)."""


@dataclass(frozen=True)
class ViewChoice:
    """What the examples table shows: a filter, a search, and a sort (key, direction)."""

    row_filter: str = "all"
    query: str = ""
    sort: str = "score"
    """'score', a margin source, or 'row' (source order)."""
    descending: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"filter": self.row_filter, "sort": self.sort, "descending": self.descending}

    @classmethod
    def from_stored(cls, stored: Any, filters: list[str], sorts: list[str]) -> ViewChoice:
        """The remembered view, each value that no longer applies (a hand edit, a source
        not scored any more) back at its default."""
        if not isinstance(stored, dict):
            return cls()
        default = cls()
        return cls(
            row_filter=stored["filter"] if stored.get("filter") in filters else default.row_filter,
            sort=stored["sort"] if stored.get("sort") in sorts else default.sort,
            descending=stored["descending"] if isinstance(stored.get("descending"), bool) else default.descending,
        )


def sort_steps(sources: list[str]) -> list[tuple[str, bool]]:
    """The sorts `o` steps through, each with its useful direction: the best scores first,
    then each source's lowest margins first (spot-checking BOT), then source order."""
    return [("score", True), *((source, False) for source in sources), ("row", False)]


def displayed_score(selection: Selection | None) -> np.ndarray | None:
    """The score the table shows and sorts by: DM-MUL's fused log-odds (its probability
    rounds to 1.0 for every nearly certain pair), otherwise the selection's score."""
    if selection is None:
        return None
    return selection.log_odds if selection.log_odds is not None else selection.score


class ExamplesView:
    """The examples table's rows for a selection and a `ViewChoice`, with the costly parts
    kept between calls: the full sort of each key, the last search's matches and the
    kept text columns. Safe to call from one worker thread at a time."""

    def __init__(self, dataset: LoadedDataset, select_pairs: Callable[[SelectionParams], Selection]) -> None:
        """`select_pairs` is the selection itself (the session's `select`: exclusions, swaps,
        pair_id tie-break), so a region filter shows exactly the pairs that baseline picks."""
        self.dataset = dataset
        self.select_pairs = select_pairs
        self.order = RowOrder()
        self._search: tuple[str, np.ndarray] | None = None
        self._kept: pa.Table | None = None

    def rows(
        self,
        view: ViewChoice,
        selection: Selection | None,
        params: SelectionParams | None,
        annotations: AnnotationMasks,
        effective: dict[str, np.ndarray],
    ) -> np.ndarray:
        """Row indices, in table order. A region filter (`bot:implicit`) shows the pairs its
        baseline selects with `params`' budget, trim and tau (the defaults while no choice
        is valid): the current selection's own pairs when it is that baseline.
        `effective` margins (swaps negated) are what a source sort orders by."""
        n = self.dataset.pairs.num_rows
        if ":" in view.row_filter:
            region, source = view.row_filter.split(":", 1)
            if source not in effective or n == 0:
                mask = np.zeros(n, bool)
            else:
                regional = replace(params or SelectionParams(source=source), mode=checked_mode(region), source=source)
                if selection is not None and selection.params == regional:
                    mask = selection.mask
                else:
                    mask = self.select_pairs(regional).mask
        else:
            mask = filter_mask(view.row_filter, selection, annotations, n)
        if view.query.strip():
            mask = mask & self.search(view.query)
        if view.sort == "row":
            key = None
        elif view.sort == "score":
            key = displayed_score(selection)
        else:
            key = effective.get(view.sort)
        return self.order.rows(mask, key, view.descending)

    def search(self, query: str) -> np.ndarray:
        """`search_mask` over the pairs and their kept text columns; the last answer is kept."""
        if self._search is not None and self._search[0] == query:
            return self._search[1]
        if self._kept is None:
            self._kept = kept_text_columns(self.dataset)
        found = search_mask(self.dataset.pairs, query, self._kept)
        self._search = (query, found)
        return found


# Why a pair is (not) selected ------------------------------------------------------------


def why_not_selected(
    selection: Selection,
    index: int,
    margins: dict[str, np.ndarray],
    excluded: np.ndarray,
) -> str | None:
    """In a few words, why pair `index` is not in `selection` (None when it is).

    `margins` are the margins the selection used (swapped pairs negated). The reasons
    are checked in the order `select` applies them: exclusion, a missing score, the
    M1 floor of DM-MUL, the outlier trim and MID window, then the budget.
    """
    if selection.mask[index]:
        return None
    params = selection.params
    if excluded[index]:
        return "excluded by you"
    used = [source for source in used_sources(params) if source in margins]
    missing = [source for source in used if not np.isfinite(margins[source][index])]
    if missing:
        return f"no {', '.join(missing)} score"
    floored = [
        source
        for source, bounds in selection.bounds.items()
        if source in margins and margins[source][index] <= bounds.m1
    ]
    if floored:
        return " and ".join(f"{source} below M1" for source in floored) + " (P = 0)"
    mode = params.mode
    if mode in ("top", "mid", "bot", "low-gap") and selection.trim_range is not None:
        source = used[0]
        low, high = selection.trim_range
        value = margins[source][index]
        if value < low or value > high:
            return f"{source} {value:.3g} cut by the {params.trim:.0%} outlier trim"
        if mode in ("mid", "low-gap") and abs(value) > params.tau_for(source):
            return f"{source} outside the MID window |m| <= {params.tau_for(source):g}"
    if mode in ("random", "mid", "low-gap"):
        return f"not drawn in the {'random' if mode == 'random' else 'MID'} sample of {selection.selected:,}"
    assert selection.score is not None
    chosen = selection.score[selection.indices]
    if chosen.size == 0:
        return "the selection is empty"
    cut = chosen.max() if mode == "bot" else chosen.min()
    side = "above" if mode == "bot" else "below"
    value = selection.score[index]
    if value == cut:
        return f"tied with the last selected pair at {value:.4g}; the smaller pair_id won"
    return f"score {value:.4g} {side} the budget's cut-off {cut:.4g}"


# Reading a pair ---------------------------------------------------------------------------


def prompt_turns(prompt: str | list[dict[str, str]]) -> list[tuple[str, str]]:
    """The prompt's turns as (role, display text): one per message of a conversation, or
    one per turn of role-marked text (HH's "Human: ... Assistant: ...", core.data.roles);
    other text is one user turn. Leading blank lines of each turn are dropped."""
    if isinstance(prompt, list):
        return [(m["role"], trim_leading_blank_lines(f"{m['role']}: {m['content']}")) for m in prompt]
    dialogue = parse_dialogue(prompt)
    if dialogue is None:
        return [("user", trim_leading_blank_lines(prompt))]
    return [
        (turn.role, trim_leading_blank_lines(prompt[turn.marker_start : turn.end].rstrip())) for turn in dialogue.turns
    ]


def last_turn(prompt: str | list[dict[str, str]]) -> tuple[str, int]:
    """The prompt's last user turn onward (what the responses answer), and how many turns
    come before it."""
    turns = prompt_turns(prompt)
    start = len(turns) - 1
    while start > 0 and turns[start][0] == "assistant":  # HH's prompt ends on an empty "Assistant:"
        start -= 1
    return "\n\n".join(text for _, text in turns[start:]), start


def trim_leading_blank_lines(text: str) -> str:
    """`text` without its leading blank (empty or whitespace-only) lines."""
    return re.sub(r"\A(?:[ \t]*\r?\n)+", "", text)
