"""Which pairs a table shows, in which order: filters, regions, text search, sorting.

Pure numpy over per-pair arrays, so the examples table can refilter and resort 1M rows
on a keypress. Every function returns row indices into the dataset's pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.pairs import as_text
from core.selection import Selection, SelectionParams, select

Region = Literal["top", "mid", "bot"]
RowFilter = Literal["all", "selected", "unselected", "flagged", "excluded", "swapped", "unscored"]
ROW_FILTERS: tuple[str, ...] = ("all", "selected", "unselected", "flagged", "excluded", "swapped", "unscored")


@dataclass(frozen=True)
class AnnotationArrays:
    """Per-pair annotation masks, aligned with the pairs."""

    flagged: np.ndarray
    excluded: np.ndarray
    swapped: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "AnnotationArrays":
        return cls(np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool))


def region_mask(
    margins: dict[str, np.ndarray],
    source: str,
    region: Region,
    params: SelectionParams,
    annotations: AnnotationArrays,
) -> np.ndarray:
    """Pairs in the TOP / MID / BOT region of one source, as those baselines would pick
    them with the current budget, trim and tau."""
    regional = replace(params, mode=region, source=source)
    return select(margins, regional, excluded=annotations.excluded, swapped=annotations.swapped).mask


def filter_mask(
    row_filter: str, selection: Selection | None, annotations: AnnotationArrays, n: int
) -> np.ndarray:
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


def search_texts(pairs: pa.Table) -> pa.Array:
    """One lower-cased text per pair (prompt, chosen, rejected), for substring search."""
    if pa.types.is_string(pairs.schema.field("prompt").type):
        joined = pc.binary_join_element_wise(pairs["prompt"], pairs["chosen"], pairs["rejected"], "\n")
        return pc.utf8_lower(joined).combine_chunks()
    texts = [
        "\n".join(as_text(pair[name]) for name in ("prompt", "chosen", "rejected"))
        for pair in pairs.select(["prompt", "chosen", "rejected"]).to_pylist()
    ]
    return pc.utf8_lower(pa.array(texts, pa.string()))


def search_mask(texts: pa.Array, query: str, pair_ids: pa.Array | None = None) -> np.ndarray:
    """Rows whose text contains `query` (case-insensitive), or whose pair_id starts with it."""
    query = query.strip().lower()
    if not query:
        return np.ones(len(texts), bool)
    found = pc.match_substring(texts, query).to_numpy(zero_copy_only=False)
    if pair_ids is not None:
        found |= pc.starts_with(pair_ids, query).to_numpy(zero_copy_only=False)
    return found


def ordered_rows(mask: np.ndarray, sort_key: np.ndarray | None, descending: bool) -> np.ndarray:
    """Indices of `mask`'s rows sorted by `sort_key` (None: source order); NaN last, stable."""
    rows = np.flatnonzero(mask)
    if sort_key is None:
        return rows[::-1] if descending else rows
    keys = np.asarray(sort_key, dtype=np.float64)[rows]
    # NaN and infinities sort last; a stable sort keeps equal keys in row order.
    keys = np.where(np.isfinite(keys), -keys if descending else keys, np.inf)
    return rows[np.argsort(keys, kind="stable")]
