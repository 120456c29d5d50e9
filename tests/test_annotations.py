"""Annotations in SQLite: update, undo, durability, masks, values stored as data."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from core.annotations import FLAGS, Annotation, AnnotationStore


@pytest.fixture
def db(tmp_path):
    return tmp_path / "annotations.sqlite"


def test_get_blank_then_update(db):
    with AnnotationStore(db) as store:
        assert store.get("p1") == Annotation("p1")
        assert store.get("p1").is_blank
        after = store.update("p1", flag="toxic", note="slur in chosen")
        assert after == Annotation("p1", flag="toxic", note="slur in chosen")
        assert store.get("p1") == after
        store.update("p1", excluded=True)
        assert store.get("p1") == Annotation("p1", "toxic", "slur in chosen", True, False)
        store.update("p2", swapped=True)
        assert set(store.all()) == {"p1", "p2"}


def test_blank_annotation_is_removed(db):
    with AnnotationStore(db) as store:
        store.update("p1", excluded=True)
        store.update("p1", excluded=False)
        assert store.all() == {}


def test_undo_restores_in_reverse_order(db):
    with AnnotationStore(db) as store:
        store.update("p1", flag="mislabeled")
        store.update("p2", excluded=True)
        store.update("p1", flag="other", note="n")
        assert store.undo() == Annotation("p1", flag="mislabeled")
        assert store.get("p1") == Annotation("p1", flag="mislabeled")
        assert store.undo() == Annotation("p2")
        assert store.get("p2") == Annotation("p2")
        assert store.undo() == Annotation("p1")
        assert store.all() == {}
        assert store.undo() is None


def test_no_op_update_is_not_logged(db):
    with AnnotationStore(db) as store:
        store.update("p1", flag="toxic")
        store.update("p1", flag="toxic")
        store.undo()
        assert store.get("p1").is_blank
        assert store.undo() is None


def test_durable_across_a_new_connection(db):
    store = AnnotationStore(db)
    store.update("p1", flag="toxic", note="x")
    store.update("p2", swapped=True)
    # no close(): a new process must see every change (as after a crash or kill)
    script = textwrap.dedent(
        f"""
        from core.annotations import AnnotationStore
        s = AnnotationStore({str(db)!r})
        a = s.all()
        assert a["p1"].flag == "toxic" and a["p1"].note == "x", a
        assert a["p2"].swapped, a
        assert s.undo().pair_id == "p2"
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    store.close()
    with AnnotationStore(db) as reopened:
        assert reopened.get("p1") == Annotation("p1", "toxic", "x")
        assert reopened.get("p2") == Annotation("p2")  # the other process's undo is durable too
        assert reopened.undo() == Annotation("p1")  # history survives restarts
        assert reopened.all() == {}


def test_masks_aligned_to_pair_ids(db):
    with AnnotationStore(db) as store:
        store.update("b", excluded=True)
        store.update("c", swapped=True, flag="mislabeled")
        store.update("not-loaded", excluded=True, flag="toxic")
        masks = store.masks(["a", "b", "c", "d"])
    np.testing.assert_array_equal(masks.excluded, [False, True, False, False])
    np.testing.assert_array_equal(masks.swapped, [False, False, True, False])
    np.testing.assert_array_equal(masks.flagged, [False, False, True, False])
    assert masks.excluded.dtype == bool
    empty = AnnotationStore(db).masks([])
    assert empty.excluded.shape == (0,)


@pytest.mark.parametrize("flag", ["bad", "", "TOXIC", 1])
def test_invalid_flag_refused(db, flag):
    with AnnotationStore(db) as store:
        with pytest.raises(ValueError, match="flag must be one of"):
            store.update("p1", flag=flag)
        assert store.all() == {}
        assert store.undo() is None


def test_every_flag_accepted_and_cleared(db):
    with AnnotationStore(db) as store:
        for flag in FLAGS:
            assert store.update("p", flag=flag).flag == flag
        store.update("p", flag=None)
        assert store.get("p").is_blank


def test_database_refuses_invalid_flag_written_directly(db):
    AnnotationStore(db).close()
    connection = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError):
        connection.execute("INSERT INTO annotation (pair_id, flag, updated_at) VALUES ('x', 'evil', 0)")
    connection.close()


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
