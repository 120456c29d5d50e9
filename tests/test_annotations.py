"""Annotations in SQLite: update, undo, durability, masks, values stored as data."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from core.errors import WorkspaceError
from core.store.annotations import FLAGS, SCHEMA_VERSION, Annotation, AnnotationStore


@pytest.fixture
def db(tmp_path):
    return tmp_path / "annotations.sqlite"


def test_get_blank_then_update(db):
    with AnnotationStore(db) as store:
        assert store.get("p1") == Annotation("p1")
        assert store.get("p1").is_blank
        after = store.update("p1", flags=["toxic"], note="slur in chosen")
        assert after == Annotation("p1", flags=("toxic",), note="slur in chosen")
        assert store.get("p1") == after
        store.update("p1", excluded=True)
        assert store.get("p1") == Annotation("p1", ("toxic",), "slur in chosen", True, False)
        store.update("p2", swapped=True)
        assert set(store.all()) == {"p1", "p2"}


def test_blank_annotation_is_removed(db):
    with AnnotationStore(db) as store:
        store.update("p1", excluded=True)
        store.update("p1", excluded=False)
        assert store.all() == {}


def test_undo_restores_in_reverse_order(db):
    with AnnotationStore(db) as store:
        store.update("p1", flags=("mislabeled",))
        store.update("p2", excluded=True)
        store.update("p1", flags=("other",), note="n")
        assert store.undo() == Annotation("p1", flags=("mislabeled",))
        assert store.get("p1") == Annotation("p1", flags=("mislabeled",))
        assert store.undo() == Annotation("p2")
        assert store.get("p2") == Annotation("p2")
        assert store.undo() == Annotation("p1")
        assert store.all() == {}
        assert store.undo() is None


def test_no_op_update_is_not_logged(db):
    with AnnotationStore(db) as store:
        store.update("p1", flags=("toxic",))
        store.update("p1", flags=("toxic",))
        store.undo()
        assert store.get("p1").is_blank
        assert store.undo() is None


def test_durable_across_a_new_connection(db):
    store = AnnotationStore(db)
    store.update("p1", flags=("toxic",), note="x")
    store.update("p2", swapped=True)
    # no close(): a new process must see every change (as after a crash or kill)
    script = textwrap.dedent(
        f"""
        from core.store.annotations import AnnotationStore
        s = AnnotationStore({str(db)!r})
        a = s.all()
        assert a["p1"].flags == ("toxic",) and a["p1"].note == "x", a
        assert a["p2"].swapped, a
        assert s.undo().pair_id == "p2"
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    store.close()
    with AnnotationStore(db) as reopened:
        assert reopened.get("p1") == Annotation("p1", ("toxic",), "x")
        assert reopened.get("p2") == Annotation("p2")  # the other process's undo is durable too
        assert reopened.undo() == Annotation("p1")  # history survives restarts
        assert reopened.all() == {}


def test_masks_aligned_to_pair_ids(db):
    with AnnotationStore(db) as store:
        store.update("b", excluded=True)
        store.update("c", swapped=True, flags=("mislabeled",))
        store.update("d", flags=("toxic", "other"))
        store.update("not-loaded", excluded=True, flags=("toxic",))
        masks = store.masks(["a", "b", "c", "d"])
    np.testing.assert_array_equal(masks.excluded, [False, True, False, False])
    np.testing.assert_array_equal(masks.swapped, [False, False, True, False])
    np.testing.assert_array_equal(masks.flagged, [False, False, True, True])
    np.testing.assert_array_equal(masks.flags["toxic"], [False, False, False, True])
    np.testing.assert_array_equal(masks.flags["mislabeled"], [False, False, True, False])
    np.testing.assert_array_equal(masks.dropped(["toxic", "other"]), [False, False, False, True])
    masks.set(0, Annotation("a", flags=("other",), excluded=True))
    assert masks.flagged[0] and masks.flags["other"][0] and masks.excluded[0] and not masks.flags["toxic"][0]
    assert masks.excluded.dtype == bool
    empty = AnnotationStore(db).masks([])
    assert empty.excluded.shape == (0,)


def test_a_swap_answers_the_mislabeled_flag_but_not_toxic(db):
    """An export that drops mislabeled pairs keeps one the curator swapped (the swap fixed
    it); toxic stays dropped, swapped or not."""
    with AnnotationStore(db) as store:
        store.update("a", flags=("mislabeled",))
        store.update("b", swapped=True, flags=("mislabeled",))
        store.update("c", swapped=True, flags=("toxic", "mislabeled"))
        store.update("d", swapped=True)
        masks = store.masks(["a", "b", "c", "d"])
    np.testing.assert_array_equal(masks.dropped(["mislabeled"]), [True, False, False, False])
    np.testing.assert_array_equal(masks.dropped(["toxic", "mislabeled"]), [True, False, True, False])
    np.testing.assert_array_equal(masks.spared(["toxic", "mislabeled"]), [False, True, False, False])
    np.testing.assert_array_equal(masks.spared(["toxic"]), [False, False, False, False])


@pytest.mark.parametrize("flags", [["bad"], [""], ["TOXIC"], [1], "toxic"])
def test_invalid_flag_refused(db, flags):
    with AnnotationStore(db) as store:
        with pytest.raises(ValueError, match="flags must be a collection of"):
            store.update("p1", flags=flags)
        assert store.all() == {}
        assert store.undo() is None


def test_a_pair_carries_several_flags_and_toggling_one_keeps_the_others(db):
    with AnnotationStore(db) as store:
        store.toggle_flag("p", "toxic")
        assert store.toggle_flag("p", "mislabeled").flags == ("toxic", "mislabeled")
        assert store.toggle_flag("p", "other").flags == FLAGS
        assert store.toggle_flag("p", "toxic").flags == ("mislabeled", "other")
        assert store.update("p", flags=["other", "mislabeled", "other"]).flags == ("mislabeled", "other")
        store.update("p", flags=())
        assert store.get("p").is_blank
        assert store.undo().flags == ("mislabeled", "other")


def test_database_refuses_invalid_flags_written_directly(db):
    AnnotationStore(db).close()
    connection = sqlite3.connect(db)
    for flags in ("evil", "other,toxic", "toxic,toxic"):  # unknown, out of order, repeated
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute("INSERT INTO annotation (pair_id, flags, updated_at) VALUES ('x', ?, 0)", (flags,))
    connection.close()


OLD_SCHEMA = """
CREATE TABLE annotation (
    pair_id TEXT PRIMARY KEY,
    flag TEXT CHECK (flag IS NULL OR flag IN ('toxic', 'mislabeled', 'other')),
    note TEXT NOT NULL DEFAULT '', excluded INTEGER NOT NULL DEFAULT 0,
    swapped INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL);
CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, pair_id TEXT NOT NULL, before TEXT NOT NULL,
                      at REAL NOT NULL);
INSERT INTO annotation VALUES ('p1', 'toxic', 'slur', 0, 0, 1.0), ('p2', NULL, 'n', 1, 1, 2.0);
INSERT INTO history (pair_id, before, at) VALUES
    ('p1', '{"pair_id": "p1", "flag": "mislabeled", "note": "", "excluded": false, "swapped": false}', 1.0);
"""


def old_database(db):
    """An annotations file as dmtui wrote it before pairs could carry several flags."""
    connection = sqlite3.connect(db)
    connection.executescript(OLD_SCHEMA)
    connection.close()


def test_a_database_of_the_one_flag_schema_is_migrated_with_its_history(db):
    old_database(db)
    with AnnotationStore(db) as store:
        assert store.all() == {"p1": Annotation("p1", ("toxic",), "slur"), "p2": Annotation("p2", (), "n", True, True)}
        assert store.toggle_flag("p1", "other").flags == ("toxic", "other")
        assert store.undo() == Annotation("p1", ("toxic",), "slur")
        assert store.undo() == Annotation("p1", ("mislabeled",))  # an entry the old schema logged
        assert store.connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with AnnotationStore(db) as reopened:  # migrating is done once
        assert reopened.get("p2") == Annotation("p2", (), "n", True, True)


def test_a_migration_that_fails_leaves_the_old_database_as_it_was(db, monkeypatch):
    old_database(db)
    before = sqlite3.connect(db).execute("SELECT * FROM annotation ORDER BY pair_id").fetchall()
    monkeypatch.setattr("core.store.annotations._HISTORY_TABLE", "CREATE TABLE broken (")  # fails mid-transaction
    with pytest.raises(Exception):
        AnnotationStore(db)
    connection = sqlite3.connect(db)
    assert connection.execute("SELECT * FROM annotation ORDER BY pair_id").fetchall() == before
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 0
    connection.close()


def test_a_newer_schema_is_refused(db):
    connection = sqlite3.connect(db)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(WorkspaceError, match="newer dmtui"):
        AnnotationStore(db)


def test_a_read_only_store_refuses_changes_and_says_why(db):
    with AnnotationStore(db) as store:
        store.update("p", note="kept")
    with AnnotationStore(db, refusal=lambda: "another dmtui holds the workspace") as store:
        with pytest.raises(WorkspaceError, match="another dmtui holds"):
            store.toggle_flag("p", "toxic")
        with pytest.raises(WorkspaceError):
            store.undo()
        assert store.get("p") == Annotation("p", note="kept")


@pytest.mark.parametrize(
    "note",
    [
        "'); DROP TABLE annotation; --",
        "\" OR 1=1 --",
        "Robert'); DELETE FROM history;--\n\ttabs and ünïcødé 🎉",
        "%s ? :name $1",
    ],
)
def test_sql_looking_notes_are_data(db, note):
    with AnnotationStore(db) as store:
        store.update("p1", note=note)
        store.update("p'2", note="second")
        assert store.get("p1").note == note
        assert store.get("p'2").note == "second"
        assert len(store.all()) == 2
        assert store.undo() == Annotation("p'2")
        assert store.get("p1").note == note
    with AnnotationStore(db) as reopened:
        assert reopened.get("p1").note == note
