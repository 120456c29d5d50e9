"""Workspaces: create/open, the load cache, a dataset that changed on disk."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import core.io.atomic as atomic_module
import core.store.workspace as workspace_module
from core.data.loading import LoadConfig
from core.errors import WorkspaceError
from core.io.atomic import atomic_write_json
from core.store.workspace import WORKSPACE_FILE, Workspace, default_workspace_path, is_workspace

ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "meta": "a"},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome", "meta": "b"},
]


def write_jsonl(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl")


@pytest.fixture
def load_calls(monkeypatch):
    """Counts how often the workspace reads the dataset itself (not the cache)."""
    calls: list[tuple[str, LoadConfig]] = []
    real = workspace_module.load_dataset

    def counting(source, config=LoadConfig(), *args, **kwargs):
        calls.append((source, config))
        return real(source, config, *args, **kwargs)

    monkeypatch.setattr(workspace_module, "load_dataset", counting)
    return calls


def bump_mtime(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))


def test_create_and_open(tmp_path, data):
    root = tmp_path / "ws"
    created = Workspace.create(root, str(data), LoadConfig(chosen_col="chosen"))
    assert is_workspace(root)
    for folder in ("scores", "exports", "runs"):
        assert (root / folder).is_dir()
    recorded = json.loads((root / WORKSPACE_FILE).read_text())
    assert recorded["dataset"]["source"] == str(data.resolve())
    assert recorded["load_config"]["chosen_col"] == "chosen"
    # the checksum is computed beside the first load, which records it: the file's SHA-256, as before
    assert created.load().report.loaded == 2
    recorded = json.loads((root / WORKSPACE_FILE).read_text())
    assert recorded["dataset"]["checksum"] == hashlib.sha256(data.read_bytes()).hexdigest()
    opened = Workspace.open(root)
    assert opened.dataset == created.dataset
    assert opened.load_config == LoadConfig(chosen_col="chosen")
    assert opened.load().report.loaded == 2


def test_a_workspace_whose_first_load_was_stopped_opens_and_records_the_checksum(tmp_path, data, load_calls):
    """Killed before its first load recorded the checksum: the next open takes the dataset as it is then."""
    root = tmp_path / "ws"
    Workspace.create(root, str(data))  # no load: workspace.json holds no checksum yet
    assert json.loads((root / WORKSPACE_FILE).read_text())["dataset"]["checksum"] == ""
    write_jsonl(data, ROWS + [{"prompt": "1+1?", "chosen": "2", "rejected": "3"}])
    opened = Workspace.open(root)  # no "changed" complaint: nothing was curated yet
    assert json.loads((root / WORKSPACE_FILE).read_text())["dataset"]["checksum"] == hashlib.sha256(
        data.read_bytes()).hexdigest()
    assert opened.load().report.loaded == 3


def test_create_refuses_existing_or_non_empty(tmp_path, data):
    root = tmp_path / "ws"
    Workspace.create(root, str(data))
    with pytest.raises(WorkspaceError, match="already a workspace"):
        Workspace.create(root, str(data))
    other = tmp_path / "busy"
    other.mkdir()
    (other / "file.txt").write_text("x")
    with pytest.raises(WorkspaceError, match="not empty"):
        Workspace.create(other, str(data))


def test_cache_is_reused(tmp_path, data, load_calls):
    ws = Workspace.create(tmp_path / "ws", str(data))
    first = ws.load()
    assert len(load_calls) == 1
    second = Workspace.open(tmp_path / "ws").load()
    assert len(load_calls) == 1  # served from the cache
    assert second.pairs.equals(first.pairs)
    assert second.records.equals(first.records)
    assert second.report.to_json() == first.report.to_json()


def test_cache_keeps_rejections_and_conversations(tmp_path, load_calls):
    rows = [
        {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
         "rejected": [{"role": "assistant", "content": "b"}]},
        {"prompt": [{"role": "user", "content": "q"}], "chosen": None, "rejected": []},
    ]
    ws = Workspace.create(tmp_path / "ws", str(write_jsonl(tmp_path / "c.jsonl", rows)))
    first = ws.load()
    second = ws.load()
    assert len(load_calls) == 1
    assert second.pairs.to_pylist() == first.pairs.to_pylist()
    assert second.report.rejections == first.report.rejections
    assert second.report.format == "conversational"


def test_cache_invalidated_when_load_options_change(tmp_path, data, load_calls):
    ws = Workspace.create(tmp_path / "ws", str(data))
    ws.load()
    ws.load_config = LoadConfig(max_field_chars=3)
    small = ws.load()
    assert len(load_calls) == 2
    assert load_calls[-1][1].max_field_chars == 3
    assert small.report.rejected["field_too_large"] >= 1
    # only the current cache is kept
    assert len([p for p in ws.cache_dir.iterdir() if p.is_dir()]) == 1


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz", "data.json"])
@pytest.mark.parametrize("rows", [ROWS, ROWS + ROWS[:1]], ids=["all loaded", "a duplicate dropped at the end"])
def test_records_written_as_they_load_are_the_loaded_records(tmp_path, rows, name):
    """records.arrow is written while the file loads; a row dropped after that (a duplicate,
    found at the end) makes it written again from the loaded records."""
    import gzip

    from core.data.loading import load_dataset

    data = tmp_path / name
    text = json.dumps(rows) if name == "data.json" else "".join(json.dumps(r) + "\n" for r in rows)
    data.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    workspace = Workspace.create(tmp_path / "ws", str(data))
    loaded = workspace.load()
    expected = load_dataset(str(data))
    assert loaded.records.to_pylist() == expected.records.to_pylist()
    assert loaded.records.num_rows == loaded.pairs.num_rows == len(ROWS)
    assert Workspace.open(tmp_path / "ws").load().records.to_pylist() == expected.records.to_pylist()
    assert [p.name for p in workspace.cache_dir.iterdir() if not p.is_dir()] == []  # no temp left


def test_a_stopped_load_leaves_no_streamed_records(tmp_path, data):
    import threading

    from core.errors import Cancelled

    workspace = Workspace.create(tmp_path / "ws", str(data))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        workspace.load(cancel=cancel)
    assert [p.name for p in workspace.cache_dir.iterdir()] == []


def test_a_stopped_first_load_stops_the_checksum_beside_it(tmp_path, monkeypatch):
    """Stopping the first load stops the dataset's checksum too: nobody waits for it any more."""
    import threading

    from core.errors import Cancelled

    sha256 = hashlib.sha256

    class SlowDigest:  # ~0.3 s a MiB: the whole 8 MiB file takes ~2.4 s
        def __init__(self, data=b""):
            self.digest = sha256(data)

        def update(self, chunk):
            threading.Event().wait(0.3)
            self.digest.update(chunk)

        def hexdigest(self):
            return self.digest.hexdigest()

    monkeypatch.setattr(workspace_module.hashlib, "sha256", SlowDigest)
    data = write_jsonl(tmp_path / "data.jsonl", ROWS * 60_000)  # ~8 MiB
    workspace = Workspace.create(tmp_path / "ws", str(data))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        workspace.load(cancel=cancel)
    checksums = [thread for thread in threading.enumerate() if thread.name == "dmtui-checksum"]
    for thread in checksums:
        thread.join(timeout=1.0)
    assert checksums and not any(thread.is_alive() for thread in checksums)
    with pytest.raises(Cancelled):  # the checksum is not known: never taken for an empty one
        _ = workspace.dataset


def test_damaged_cache_is_rebuilt(tmp_path, data, load_calls):
    ws = Workspace.create(tmp_path / "ws", str(data))
    ws.load()
    (cache,) = [p for p in ws.cache_dir.iterdir() if p.is_dir()]
    (cache / "pairs.arrow").write_bytes(b"garbage")
    assert ws.load().report.loaded == 2
    assert len(load_calls) == 2


def test_changed_dataset_is_detected_and_explained(tmp_path, data, load_calls):
    root = tmp_path / "ws"
    Workspace.create(root, str(data)).load()
    write_jsonl(data, ROWS + [{"prompt": "new", "chosen": "x", "rejected": "y"}])
    bump_mtime(data)
    with pytest.raises(WorkspaceError) as error:
        Workspace.open(root)
    assert str(data.resolve()) in error.value.message
    assert "changed" in error.value.message
    assert "--accept-changes" in error.value.hint and "nothing was mixed" in error.value.hint
    # refusing did not touch the recorded reference
    recorded_before = json.loads((root / WORKSPACE_FILE).read_text())["dataset"]
    with pytest.raises(WorkspaceError):
        Workspace.open(root)
    assert json.loads((root / WORKSPACE_FILE).read_text())["dataset"] == recorded_before

    ws = Workspace.open(root, accept_changes=True)
    loaded = ws.load()
    assert loaded.report.loaded == 3
    assert len(load_calls) == 2  # the new version was read, not the old cache
    Workspace.open(root)  # accepted: opens cleanly now


def test_same_size_change_is_detected(tmp_path, data):
    root = tmp_path / "ws"
    Workspace.create(root, str(data)).load()
    text = data.read_text()
    data.write_text(text.replace('"4"', '"7"'))  # same length
    bump_mtime(data)
    with pytest.raises(WorkspaceError, match="changed"):
        Workspace.open(root)


def test_touched_but_identical_is_not_changed(tmp_path, data, load_calls):
    root = tmp_path / "ws"
    Workspace.create(root, str(data)).load()
    bump_mtime(data)
    ws = Workspace.open(root)
    assert ws.dataset.mtime_ns == data.stat().st_mtime_ns  # remembered
    ws.load()
    assert len(load_calls) == 1  # same checksum, same cache


def test_missing_dataset(tmp_path, data):
    root = tmp_path / "ws"
    Workspace.create(root, str(data))
    data.unlink()
    with pytest.raises(WorkspaceError, match="missing") as error:
        Workspace.open(root)
    assert error.value.hint


def test_not_a_workspace(tmp_path):
    with pytest.raises(WorkspaceError, match="not a dmtui workspace"):
        Workspace.open(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],
        lambda text: "[]",
        lambda text: "\udcff",  # written with surrogateescape below: not UTF-8
        lambda text: json.dumps(dict(json.loads(text), dataset=["x"])),
        lambda text: json.dumps({"version": 1}),
        lambda text: json.dumps(dict(json.loads(text), load_config={"bogus": 1})),
        lambda text: json.dumps(dict(json.loads(text), version=99)),
    ],
)
def test_damaged_workspace_json(tmp_path, data, damage):
    root = tmp_path / "ws"
    Workspace.create(root, str(data))
    path = root / WORKSPACE_FILE
    path.write_text(damage(path.read_text()), encoding="utf-8", errors="surrogateescape")
    with pytest.raises(WorkspaceError) as error:
        Workspace.open(root)
    assert str(path) in error.value.message
    assert error.value.hint


def test_default_workspace_path(tmp_path, data, monkeypatch):
    assert default_workspace_path(str(data)) == tmp_path / "data.dmtui"
    gz = tmp_path / "more.jsonl.gz"
    gz.write_bytes(b"")
    assert default_workspace_path(str(gz)) == tmp_path / "more.dmtui"
    folder = tmp_path / "folder"
    folder.mkdir()
    assert default_workspace_path(str(folder)) == tmp_path / "folder.dmtui"
    monkeypatch.chdir(tmp_path)
    assert default_workspace_path("org/name") == tmp_path / "org__name.dmtui"


def test_open_or_create(tmp_path, data):
    created = Workspace.open_or_create(str(data))
    assert created.root == tmp_path / "data.dmtui"
    again = Workspace.open_or_create(str(data))
    assert again.dataset == created.dataset


def test_open_or_create_refuses_another_dataset(tmp_path, data):
    # Same size as `data` and written just after it: a cheap size+mtime check cannot tell.
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text().replace('"4"', '"7"'))
    os.utime(other, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns))
    root = tmp_path / "ws"
    Workspace.open_or_create(str(data), root)
    with pytest.raises(WorkspaceError, match="curates") as error:
        Workspace.open_or_create(str(other), root)
    assert "--workspace" in error.value.hint


def test_open_or_create_refuses_other_load_options(tmp_path, data):
    root = tmp_path / "ws"
    Workspace.open_or_create(str(data), root, LoadConfig(prompt_col="prompt"))
    with pytest.raises(WorkspaceError, match="other load options"):
        Workspace.open_or_create(str(data), root, LoadConfig(prompt_col="question"))
    # leaving options out uses the workspace's own
    assert Workspace.open_or_create(str(data), root).load_config == LoadConfig(prompt_col="prompt")


def test_folder_dataset_change_detected(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    root = tmp_path / "ws"
    Workspace.create(root, str(folder)).load()
    (folder / "extra.arrow").write_bytes(b"new file")
    with pytest.raises(WorkspaceError, match="changed"):
        Workspace.open(root)


def test_atomic_writes_leave_no_temp_files(tmp_path, data, monkeypatch):
    ws = Workspace.create(tmp_path / "ws", str(data))
    ws.load()
    ws.write_settings({"theme": "dark"})
    assert ws.read_settings() == {"theme": "dark"}
    leftovers = [p for p in ws.root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []

    # A write that fails half-way leaves the old file and no temp file.
    target = ws.root / "settings.json"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_module.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(target, {"theme": "light"})
    assert json.loads(target.read_text()) == {"theme": "dark"}
    assert [p for p in ws.root.rglob("*") if p.name.endswith(".tmp")] == []


def test_settings_missing_or_damaged_are_empty(tmp_path, data):
    ws = Workspace.create(tmp_path / "ws", str(data))
    assert ws.read_settings() == {}
    ws.settings_path.write_text("{broken")
    assert ws.read_settings() == {}


def test_loaded_text_is_memory_mapped_from_the_cache_not_held_in_memory(tmp_path):
    """At a million pairs the text must not live in process memory: the tables a workspace
    hands out, after the first load and after a reopen, are backed by the cache files."""
    import pyarrow as pa

    long_rows = [{"prompt": f"question {i} " + "x" * 400, "chosen": f"yes {i}", "rejected": f"no {i}"}
                 for i in range(2_000)]
    data = write_jsonl(tmp_path / "big.jsonl", long_rows)
    for workspace in (Workspace.create(tmp_path / "ws", str(data)), Workspace.open(tmp_path / "ws")):
        before = pa.total_allocated_bytes()
        dataset = workspace.load()
        text_bytes = dataset.pairs["prompt"].nbytes + dataset.records.nbytes
        assert text_bytes > 1_500_000
        assert pa.total_allocated_bytes() - before < text_bytes / 10
        assert dataset.pairs.num_rows == 2_000
        assert dataset.pairs["prompt"][1999].as_py().startswith("question 1999 ")


def test_a_cache_whose_tables_do_not_line_up_is_rebuilt(tmp_path, data, load_calls):
    """A mapped cache is trusted only when every table has the report's row count."""
    from core.io.atomic import atomic_write_arrow
    from core.io.tables import read_arrow_mapped

    ws = Workspace.create(tmp_path / "ws", str(data))
    ws.load()
    (pairs,) = ws.cache_dir.glob("*/pairs.arrow")
    atomic_write_arrow(pairs, read_arrow_mapped(pairs).slice(0, 1))
    assert ws.load().pairs.num_rows == 2
    assert len(load_calls) == 2


def test_one_writer_a_second_window_is_told_who_holds_it_and_a_take_over_turns_the_first_read_only(tmp_path, data):
    import os
    import subprocess
    import sys

    from core.store.workspace import WorkspaceLocked

    first = Workspace.create(tmp_path / "ws", str(data))
    first.acquire_lock()
    first.update_settings("curation", {"budget": "5"})
    assert first.lock_holder().pid == os.getpid()

    # Another window takes it over: a real child process that claims the lock and waits.
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom core.store.workspace import Workspace\n"
        f"w = Workspace.open({str(tmp_path / 'ws')!r})\nw.acquire_lock(take_over=True)\n"
        "print('held', flush=True)\ntime.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert first.write_refusal() and "took this workspace over" in first.write_refusal()
        with pytest.raises(WorkspaceError, match="settings not saved"):
            first.update_settings("curation", {"budget": "9"})  # never reverts the new holder's settings
        third = Workspace.open(tmp_path / "ws")
        with pytest.raises(WorkspaceLocked, match=f"pid {child.pid}") as locked:
            third.acquire_lock()
        assert "--read-only" in locked.value.hint and "--take-over" in locked.value.hint
        third.set_read_only("held elsewhere")
        with pytest.raises(WorkspaceError, match="held elsewhere"):
            third.update_settings("view", {})
        third.acquire_lock(take_over=True)
        assert third.write_refusal() is None
    finally:
        child.kill()
        child.wait()
    assert third.read_settings()["curation"] == {"budget": "5"}
    third.release_lock()
    assert not third.lock_path.exists()


def test_a_lock_whose_process_ended_is_stale(tmp_path, data):
    import json
    import socket

    workspace = Workspace.create(tmp_path / "ws", str(data))
    workspace.lock_path.write_text(json.dumps({"owner": "x@y", "host": socket.gethostname(), "pid": 2**22 + 7,
                                               "since": "2020-01-01T00:00:00Z", "token": "dead"}))
    assert workspace.lock_holder() is None
    workspace.acquire_lock()
    assert workspace.lock_holder().token != "dead"
