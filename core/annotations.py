"""A curator's manual annotations, stored in the workspace's SQLite file.

Per pair: a flag (``toxic``, ``mislabeled`` or ``other``), a free-text note, whether the
pair is excluded from every selection, and whether its labels are swapped (chosen and
rejected exchanged, margins negated). Every change is committed at once (WAL, full
sync), so quitting, a crash or a killed terminal loses nothing; every change is also
logged with the state before it, which is what `undo` restores.

Values are bound as query parameters and stored as data; nothing read back is evaluated.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import WorkspaceError
from core.workspace import disk_failure

FLAGS = ("toxic", "mislabeled", "other")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotation (
    pair_id    TEXT PRIMARY KEY,
    flag       TEXT CHECK (flag IS NULL OR flag IN ('toxic', 'mislabeled', 'other')),
    note       TEXT NOT NULL DEFAULT '',
    excluded   INTEGER NOT NULL DEFAULT 0,
    swapped    INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id TEXT NOT NULL,
    before  TEXT NOT NULL,
    at      REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Annotation:
    pair_id: str
    flag: str | None = None
    note: str = ""
    excluded: bool = False
    swapped: bool = False

    @property
    def is_blank(self) -> bool:
        return self.flag is None and not self.note and not self.excluded and not self.swapped


@dataclass(frozen=True)
class AnnotationMasks:
    """Annotations as boolean arrays aligned with a list of pair ids, for selection."""

    excluded: np.ndarray
    swapped: np.ndarray
    flagged: np.ndarray


class AnnotationStore:
    """Read and write annotations; one connection per store, used from one thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.connection: sqlite3.Connection | None = None
        with self._writing():
            self.connection = sqlite3.connect(self.path, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
            self.connection.executescript(_SCHEMA)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, pair_id: str) -> Annotation:
        row = self.connection.execute(
            "SELECT pair_id, flag, note, excluded, swapped FROM annotation WHERE pair_id = ?", (pair_id,)
        ).fetchone()
        return _from_row(row) if row else Annotation(pair_id)

    def all(self) -> dict[str, Annotation]:
        rows = self.connection.execute("SELECT pair_id, flag, note, excluded, swapped FROM annotation")
        return {row[0]: _from_row(row) for row in rows}

    def update(self, pair_id: str, **changes: object) -> Annotation:
        """Change some fields of one pair's annotation; logged for undo; durable on return."""
        if "flag" in changes and changes["flag"] not in (None, *FLAGS):
            raise ValueError(f"flag must be one of {', '.join(FLAGS)} or None, not {changes['flag']!r}")
        before = self.get(pair_id)
        after = replace(before, **changes)
        if after == before:
            return before
        with self._writing(), self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute(
                "INSERT INTO history (pair_id, before, at) VALUES (?, ?, ?)",
                (pair_id, json.dumps(asdict(before)), time.time()),
            )
            self._write(after)
        return after

    def undo(self) -> Annotation | None:
        """Restore the state before the latest change; None when there is nothing to undo."""
        row = self.connection.execute("SELECT id, before FROM history ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        restored = Annotation(**json.loads(row[1]))
        with self._writing(), self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute("DELETE FROM history WHERE id = ?", (row[0],))
            self._write(restored)
        return restored

    def masks(self, pair_ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> AnnotationMasks:
        """Boolean arrays aligned with `pair_ids`; an Arrow array is matched without Python strings."""
        ids = pair_ids if isinstance(pair_ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(pair_ids), pa.string())
        excluded = np.zeros(len(ids), dtype=bool)
        swapped = np.zeros(len(ids), dtype=bool)
        flagged = np.zeros(len(ids), dtype=bool)
        annotations = list(self.all().values())
        if annotations and len(ids):
            annotated_ids = pa.array([annotation.pair_id for annotation in annotations], pa.string())
            positions = pc.index_in(ids, value_set=annotated_ids).to_numpy(zero_copy_only=False)
            found = ~np.isnan(positions) if positions.dtype.kind == "f" else np.ones(len(ids), bool)
            which = positions[found].astype(np.int64)
            excluded[found] = np.array([a.excluded for a in annotations], bool)[which]
            swapped[found] = np.array([a.swapped for a in annotations], bool)[which]
            flagged[found] = np.array([a.flag is not None for a in annotations], bool)[which]
        return AnnotationMasks(excluded, swapped, flagged)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write SQLite refuses (disk full, read-only workspace) as a WorkspaceError; nothing of
        it is kept (SQLite rolls the transaction back)."""
        try:
            yield
        except (sqlite3.Error, OSError) as error:
            if self.connection is not None and self.connection.in_transaction:
                self.connection.rollback()
            locked = isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
            raise disk_failure(self.path, error) or WorkspaceError(
                f"cannot write {self.path}: {error}",
                "another dmtui is writing this workspace's annotations; try again in a moment"
                if locked else "the change was not saved; check the workspace folder and the disk",
            ) from error

    def _write(self, annotation: Annotation) -> None:
        if annotation.is_blank:
            self.connection.execute("DELETE FROM annotation WHERE pair_id = ?", (annotation.pair_id,))
            return
        self.connection.execute(
            "INSERT OR REPLACE INTO annotation (pair_id, flag, note, excluded, swapped, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (annotation.pair_id, annotation.flag, annotation.note, int(annotation.excluded),
             int(annotation.swapped), time.time()),
        )


def _from_row(row: tuple) -> Annotation:
    return Annotation(row[0], row[1], row[2], bool(row[3]), bool(row[4]))
