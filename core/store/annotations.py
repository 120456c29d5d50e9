"""A curator's manual annotations, stored in the workspace's SQLite file.

Per pair: any of the flags ``toxic``, ``mislabeled`` and ``other``, a free-text note,
whether the pair is excluded from every selection, and whether its labels are swapped
(chosen and rejected exchanged, margins negated). Every change is committed at once
(WAL, full sync), so quitting, a crash or a killed terminal loses nothing; every change
is also logged with the state before it, which is what `undo` restores.

Schema versions (``PRAGMA user_version``): 0 held one ``flag`` per pair; 2 holds a set
of ``flags``. Opening a version-0 file migrates it in one transaction (a crash leaves
the old file as it was), and the history's old entries are read in either shape.

Values are bound as query parameters and stored as data; nothing read back is evaluated.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import WorkspaceError
from core.io.atomic import disk_failure

FLAGS = ("toxic", "mislabeled", "other")
SCHEMA_VERSION = 2
SWAP_ANSWERS = ("mislabeled",)
"""Flags a swap answers: a pair marked mislabeled whose labels the curator swapped has been
fixed, so an export that drops mislabeled pairs keeps it. A toxic pair stays dropped,
swapped or not."""


def dropped_by_flags(
    flags: Mapping[str, np.ndarray], swapped: np.ndarray, drop: Iterable[str], answered: Iterable[str] = SWAP_ANSWERS
) -> np.ndarray:
    """Pairs an export leaves out: those carrying any flag in `drop`, where a flag in
    `answered` does not count on a swapped pair."""
    answered = set(answered)
    found = np.zeros(swapped.size, bool)
    for flag in drop:
        found |= flags[flag] & ~swapped if flag in answered else flags[flag]
    return found


def _flag_sets() -> list[str]:
    """Every set of flags as stored: comma-joined in FLAGS order ('' for none)."""
    return [",".join(f for bit, f in enumerate(FLAGS) if mask >> bit & 1) for mask in range(1 << len(FLAGS))]


_ANNOTATION_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    pair_id    TEXT PRIMARY KEY,
    flags      TEXT NOT NULL DEFAULT '' CHECK (flags IN ({allowed})),
    note       TEXT NOT NULL DEFAULT '',
    excluded   INTEGER NOT NULL DEFAULT 0,
    swapped    INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
"""
_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id TEXT NOT NULL,
    before  TEXT NOT NULL,
    at      REAL NOT NULL
);
"""


def _annotation_table(name: str) -> str:
    return _ANNOTATION_TABLE.format(name=name, allowed=", ".join(f"'{flags}'" for flags in _flag_sets()))


def normalise_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """A set of flag names in FLAGS order; an unknown name is a ValueError."""
    given = [flags] if isinstance(flags, str) else list(flags)
    if isinstance(flags, str) or any(f not in FLAGS for f in given):
        raise ValueError(f"flags must be a collection of {', '.join(FLAGS)}, not {flags!r}")
    return tuple(f for f in FLAGS if f in given)


@dataclass(frozen=True)
class Annotation:
    pair_id: str
    flags: tuple[str, ...] = ()
    """Any of FLAGS, in FLAGS order."""
    note: str = ""
    excluded: bool = False
    swapped: bool = False

    @property
    def is_blank(self) -> bool:
        return not self.flags and not self.note and not self.excluded and not self.swapped

    def with_flag_toggled(self, flag: str) -> Annotation:
        present = set(self.flags) ^ {flag}
        return replace(self, flags=normalise_flags(present))

    def to_json(self) -> dict[str, object]:
        return {
            "pair_id": self.pair_id,
            "flags": list(self.flags),
            "note": self.note,
            "excluded": self.excluded,
            "swapped": self.swapped,
        }

    @classmethod
    def from_json(cls, data: dict) -> Annotation:
        """Either shape: `flags` (a list), or a single `flag` as schema version 0 logged it."""
        flags = data.get("flags")
        if flags is None:
            flags = [data["flag"]] if data.get("flag") else []
        return cls(
            data["pair_id"],
            normalise_flags(flags),
            data.get("note", ""),
            bool(data.get("excluded")),
            bool(data.get("swapped")),
        )


@dataclass
class AnnotationMasks:
    """Annotations as boolean arrays aligned with a list of pair ids, for selection.

    The arrays are the app's working copy: `set` keeps them in step with each change
    written to the store."""

    excluded: np.ndarray
    swapped: np.ndarray
    flagged: np.ndarray
    """Any flag."""
    flags: dict[str, np.ndarray]
    """One mask per name in FLAGS."""
    notes: dict[int, str]
    """Pair index -> its note, for the pairs that have one."""
    version: int = 0
    """Counts the changes `set` made, so readers can cache what they derive from the masks."""

    @classmethod
    def empty(cls, n: int) -> AnnotationMasks:
        return cls(np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), {f: np.zeros(n, bool) for f in FLAGS}, {})

    def set(self, index: int, annotation: Annotation) -> None:
        """Pair `index` now carries `annotation`."""
        self.excluded[index] = annotation.excluded
        self.swapped[index] = annotation.swapped
        self.flagged[index] = bool(annotation.flags)
        for flag, mask in self.flags.items():
            mask[index] = flag in annotation.flags
        if annotation.note:
            self.notes[index] = annotation.note
        else:
            self.notes.pop(index, None)
        # Last: a reader (a selection worker) that took the version before reading the masks
        # and saw the old masks keeps what it derived under the old version, never the new one.
        self.version += 1

    def dropped(self, drop: Iterable[str]) -> np.ndarray:
        """Pairs an export that drops the flags `drop` leaves out (`dropped_by_flags`)."""
        return dropped_by_flags(self.flags, self.swapped, drop)

    def spared(self, drop: Iterable[str]) -> np.ndarray:
        """Pairs an export keeps only because their swap answered a dropped flag."""
        return self.dropped(drop) != dropped_by_flags(self.flags, self.swapped, drop, answered=())


class AnnotationStore:
    """Read and write annotations; one connection per store, used from one thread."""

    def __init__(self, path: str | Path, *, refusal: Callable[[], str | None] | None = None) -> None:
        """`refusal` says, before each change, why it must not be written (another dmtui window
        holds the workspace: core.store.workspace.Workspace.write_refusal), or None; a change is then
        refused with that reason."""
        self.path = Path(path)
        self.refusal = refusal
        self._connection: sqlite3.Connection | None = None
        with self._writing():
            self._connection = sqlite3.connect(self.path, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=FULL")
            self._migrate()

    def _migrate(self) -> None:
        """Create the tables, or bring a version-0 file (one flag per pair) to this version.

        All of it is one transaction: a crash leaves the old file as it was."""
        connection = self.connection
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise WorkspaceError(
                f"{self.path} was written by a newer dmtui (annotation schema {version})",
                "open the workspace with that dmtui release",
            )
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return  # another process migrated it meanwhile
            columns = {row[1] for row in connection.execute("PRAGMA table_info(annotation)")}
            if "flag" in columns:
                connection.execute(_annotation_table("annotation_v2"))
                connection.execute(
                    "INSERT INTO annotation_v2 (pair_id, flags, note, excluded, swapped, updated_at)"
                    " SELECT pair_id, COALESCE(flag, ''), note, excluded, swapped, updated_at FROM annotation"
                )
                connection.execute("DROP TABLE annotation")
                connection.execute("ALTER TABLE annotation_v2 RENAME TO annotation")
            else:
                connection.execute(_annotation_table("annotation"))
            connection.execute(_HISTORY_TABLE)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's connection (None only while `__init__` opens it)."""
        assert self._connection is not None, "AnnotationStore.__init__ opens the connection"
        return self._connection

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, pair_id: str) -> Annotation:
        row = self.connection.execute(
            "SELECT pair_id, flags, note, excluded, swapped FROM annotation WHERE pair_id = ?", (pair_id,)
        ).fetchone()
        return _from_row(row) if row else Annotation(pair_id)

    def all(self) -> dict[str, Annotation]:
        rows = self.connection.execute("SELECT pair_id, flags, note, excluded, swapped FROM annotation")
        return {row[0]: _from_row(row) for row in rows}

    def update(self, pair_id: str, **changes: Any) -> Annotation:
        """Change some fields of one pair's annotation; logged for undo; durable on return."""
        if "flags" in changes:
            changes["flags"] = normalise_flags(changes["flags"])
        before = self.get(pair_id)
        after = replace(before, **changes)
        if after == before:
            return before
        self._check_writable()
        with self._writing(), self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute(
                "INSERT INTO history (pair_id, before, at) VALUES (?, ?, ?)",
                (pair_id, json.dumps(before.to_json()), time.time()),
            )
            self._write(after)
        return after

    def toggle_flag(self, pair_id: str, flag: str) -> Annotation:
        """Add `flag` to the pair's flags, or remove it if it is there; the others stay."""
        return self.update(pair_id, flags=self.get(pair_id).with_flag_toggled(flag).flags)

    def undo(self) -> Annotation | None:
        """Restore the state before the latest change; None when there is nothing to undo."""
        row = self.connection.execute("SELECT id, before FROM history ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        self._check_writable()
        restored = Annotation.from_json(json.loads(row[1]))
        with self._writing(), self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            self.connection.execute("DELETE FROM history WHERE id = ?", (row[0],))
            self._write(restored)
        return restored

    def masks(self, pair_ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> AnnotationMasks:
        """Boolean arrays aligned with `pair_ids`; an Arrow array is matched without Python strings."""
        ids = pair_ids if isinstance(pair_ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(pair_ids), pa.string())
        masks = AnnotationMasks.empty(len(ids))
        annotations = list(self.all().values())
        if annotations and len(ids):
            annotated_ids = pa.array([annotation.pair_id for annotation in annotations], pa.string())
            positions = pc.index_in(ids, value_set=annotated_ids).to_numpy(zero_copy_only=False)
            found = ~np.isnan(positions) if positions.dtype.kind == "f" else np.ones(len(ids), bool)
            which = positions[found].astype(np.int64)
            masks.excluded[found] = np.array([a.excluded for a in annotations], bool)[which]
            masks.swapped[found] = np.array([a.swapped for a in annotations], bool)[which]
            masks.flagged[found] = np.array([bool(a.flags) for a in annotations], bool)[which]
            for flag, mask in masks.flags.items():
                mask[found] = np.array([flag in a.flags for a in annotations], bool)[which]
            for index, position in zip(np.flatnonzero(found).tolist(), which.tolist()):
                if annotations[position].note:
                    masks.notes[index] = annotations[position].note
        return masks

    def _check_writable(self) -> None:
        reason = self.refusal() if self.refusal is not None else None
        if reason:
            raise WorkspaceError(
                f"the change was not saved: {reason}",
                "this window is read-only; take the workspace over to annotate here",
            )

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write SQLite refuses (disk full, read-only workspace) as a WorkspaceError; nothing of
        it is kept (SQLite rolls the transaction back)."""
        try:
            yield
        except (sqlite3.Error, OSError) as error:
            if self._connection is not None and self._connection.in_transaction:
                self._connection.rollback()
            locked = isinstance(error, sqlite3.OperationalError) and "locked" in str(error)
            raise disk_failure(self.path, error) or WorkspaceError(
                f"cannot write {self.path}: {error}",
                "another dmtui is writing this workspace's annotations; try again in a moment"
                if locked
                else "the change was not saved; check the workspace folder and the disk",
            ) from error

    def _write(self, annotation: Annotation) -> None:
        if annotation.is_blank:
            self.connection.execute("DELETE FROM annotation WHERE pair_id = ?", (annotation.pair_id,))
            return
        self.connection.execute(
            "INSERT OR REPLACE INTO annotation (pair_id, flags, note, excluded, swapped, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                annotation.pair_id,
                ",".join(annotation.flags),
                annotation.note,
                int(annotation.excluded),
                int(annotation.swapped),
                time.time(),
            ),
        )


def _from_row(row: tuple) -> Annotation:
    return Annotation(row[0], tuple(row[1].split(",")) if row[1] else (), row[2], bool(row[3]), bool(row[4]))
