"""Score tables in a workspace: per margin source and scoring fingerprint, keyed by pair_id.

Layout::

    WORKSPACE/scores/<source>/<fingerprint>/
        meta.json                    what produced the scores (models, settings)
        part-r0000-000000.parquet    checkpoints, each written atomically
        part-r0000-000001.parquet
        ...

Every table has a ``pair_id`` column and a float64 ``margin`` column, plus whatever
per-response columns the source keeps (rewards, log-probs, token counts). A scoring run
appends one part per checkpoint, so a crash loses at most one checkpoint interval, and a
rerun scores only the pair_ids not already stored: rows appended to the dataset get
scored, the rest are reused. Parts carry the writing rank in their name so that sharded
runs never collide. Reading concatenates parts; a pair_id stored twice keeps its latest
value. `compact` folds the parts into one (how a sharded run merges: core.scoring.distributed).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.io.atomic import atomic_write_json, atomic_write_parquet

PART_PATTERN = re.compile(r"^part-r(\d{4})-(\d{6})\.parquet$")
SOURCE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
READ_ATTEMPTS = 5
"""Listings of the parts a reader tries while other processes compact them away."""


@dataclass(frozen=True)
class ScoreTableInfo:
    source: str
    fingerprint: str
    path: Path
    meta: dict[str, Any]

    @property
    def updated_at(self) -> float:
        return float(self.meta.get("updated_at", 0.0))


class ScoreStore:
    """The score table of one (source, fingerprint) in a workspace."""

    def __init__(self, scores_dir: Path, source: str, fingerprint: str) -> None:
        if not SOURCE_NAME.match(source) or not SOURCE_NAME.match(fingerprint):
            raise ValueError(f"invalid score table name {source!r}/{fingerprint!r}")
        self.source = source
        self.fingerprint = fingerprint
        self.path = scores_dir / source / fingerprint

    def parts(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if PART_PATTERN.match(p.name))

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_json(
            self.path / "meta.json",
            {**meta, "source": self.source, "fingerprint": self.fingerprint, "updated_at": time.time()},
        )

    def read_meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "meta.json").read_text("utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def append(self, table: pa.Table, rank: int = 0) -> Path:
        """Store one checkpoint of scores atomically; returns the part written."""
        if "pair_id" not in table.column_names or "margin" not in table.column_names:
            raise ValueError("a score table needs pair_id and margin columns")
        matches = [PART_PATTERN.match(p.name) for p in self.parts()]  # parts() lists only names that match
        numbers = [int(m.group(2)) for m in matches if m is not None and int(m.group(1)) == rank]
        part = self.path / f"part-r{rank:04d}-{(max(numbers) + 1 if numbers else 0):06d}.parquet"
        atomic_write_parquet(part, table)
        meta = self.read_meta()
        if meta:
            self.write_meta(meta)
        return part

    def read(self) -> pa.Table | None:
        """All stored scores, one row per pair_id (latest wins), or None if there are none."""
        for attempt in range(READ_ATTEMPTS):
            parts = self.parts()
            if not parts:
                return None
            try:
                tables = [pq.read_table(part) for part in parts]
                break
            except FileNotFoundError:  # another process compacted meanwhile: list the parts again
                if attempt == READ_ATTEMPTS - 1:
                    raise
        table = pa.concat_tables(tables, promote_options="default")
        if len(parts) == 1:
            return table
        # Keep the last occurrence of each pair_id (later parts are newer).
        order = np.arange(table.num_rows)
        reversed_ids = pc.take(table["pair_id"], pa.array(order[::-1]))
        _, first_in_reverse = np.unique(reversed_ids.to_numpy(zero_copy_only=False), return_index=True)
        keep = np.sort(table.num_rows - 1 - first_in_reverse)
        return table.take(pa.array(keep))

    def scored_ids(self) -> set[str]:
        table = self.read()
        return set() if table is None else set(table["pair_id"].to_pylist())

    def compact(self) -> None:
        """Fold every part into one (atomic: the new part lands before the old ones go)."""
        parts = self.parts()
        if len(parts) <= 1:
            return
        table = self.read()
        assert table is not None
        # The merged part is written first under a new, later name: a crash at any point
        # leaves a readable store (duplicates resolve to the same values).
        merged = self.append(table, rank=0)
        for part in parts:
            if part != merged:
                part.unlink(missing_ok=True)  # a rank compacting at the same time may have removed it

    def margins_for(self, pair_ids: pa.Array | list[str]) -> np.ndarray:
        """Margins aligned with `pair_ids`; NaN where a pair has no score."""
        return values_for(self.read(), pair_ids, "margin")


def values_for(table: pa.Table | None, pair_ids: pa.Array | list[str], column: str) -> np.ndarray:
    """`column` of `table` aligned with `pair_ids` (float64), NaN where absent."""
    ids = pa.array(pair_ids, pa.string()) if not isinstance(pair_ids, pa.Array) else pair_ids
    out = np.full(len(ids), np.nan)
    if table is None or table.num_rows == 0:
        return out
    positions = pc.index_in(ids, value_set=table["pair_id"])
    found = positions.is_valid().to_numpy(zero_copy_only=False)
    index = pc.fill_null(positions, -1).to_numpy()[found]
    values = table[column].to_numpy(zero_copy_only=False).astype(np.float64)
    out[found] = values[index]
    return out


def list_score_tables(scores_dir: Path) -> list[ScoreTableInfo]:
    """Every score table in a workspace, newest first within each source."""
    found: list[ScoreTableInfo] = []
    if not scores_dir.is_dir():
        return found
    for source_dir in sorted(p for p in scores_dir.iterdir() if p.is_dir()):
        for table_dir in sorted(p for p in source_dir.iterdir() if p.is_dir()):
            store = ScoreStore(scores_dir, source_dir.name, table_dir.name)
            if store.parts():
                found.append(ScoreTableInfo(source_dir.name, table_dir.name, table_dir, store.read_meta()))
    found.sort(key=lambda info: (info.source, -info.updated_at))
    return found


def latest_score_table(scores_dir: Path, source: str) -> ScoreStore | None:
    for info in list_score_tables(scores_dir):
        if info.source == source:
            return ScoreStore(scores_dir, info.source, info.fingerprint)
    return None
