"""A workspace: one folder holding everything about one curation.

Layout::

    WORKSPACE/
      workspace.json        dataset reference (source, kind, checksum, size), load options
      cache/<key>/          the normalised load: pairs.arrow, records.arrow and, for JSON
                            sources, numbers.arrow (Arrow IPC files that are memory-mapped,
                            not read), report.json; reused while the dataset's checksum and
                            the load options match
      scores/               score tables per source and model (Parquet, keyed by pair_id)
      annotations.sqlite    flags, label swaps, exclusions, notes (core.store.annotations)
      exports/              exported subsets with their manifests
      runs/                 training runs
      settings.json         UI settings remembered for this workspace
      lock.json             which app window writes here (owner, host, pid, since)

The dataset is referenced, never copied or modified. Opening a workspace compares the
dataset with the recorded checksum: if it changed, `WorkspaceError` explains how, and
nothing is mixed until the caller accepts the change (`accept_changes=True`). Scores
and annotations are keyed by pair_id, a hash of each pair's content, so accepting a
change keeps them for every pair that is still there.

All files are written atomically (temp file, then rename: core.io.atomic).

One writer per workspace. An app window claims the workspace (`acquire_lock`): lock.json
names its owner, host and pid. A second window is told who holds it and either opens it
read-only (`set_read_only`: annotations and settings are refused, with the reason) or
takes it over (`acquire_lock(take_over=True)`); the window that lost it learns so at its
next write (`write_refusal`), which is then refused. A lock whose process has ended (same
host) is stale and taken silently. Command-line runs do not claim the workspace: scores,
exports and runs are new files, and annotations are SQLite transactions.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as pa_ipc

from core.data.loading import LoadConfig, LoadedDataset, LoadReport, load_dataset
from core.data.sources import resolve_source
from core.errors import Cancelled, WorkspaceError
from core.io.atomic import (
    abandoned_temps,
    atomic_write_arrow,
    atomic_write_json,
    disk_failure,
    new_temp,
    process_running,
    replace_with_temp,
    writing,
)
from core.io.tables import read_arrow_mapped
from core.progress import ProgressFn

WORKSPACE_FILE = "workspace.json"
WORKSPACE_VERSION = 1
# Bump when loading would produce different pairs from the same bytes: invalidates caches.
LOADER_VERSION = 5
WORKSPACE_SUFFIX = ".dmtui"
LOCK_FILE = "lock.json"


@dataclass(frozen=True)
class DatasetRef:
    """Which dataset a workspace curates, and what it looked like when last accepted."""

    source: str
    kind: str
    checksum: str
    size: int
    mtime_ns: int

    def describe_change(self, other: DatasetRef) -> str:
        return (
            f"{self.source} changed since this workspace last loaded it "
            f"(sha256 {self.checksum[:12]} -> {other.checksum[:12]}, {self.size:,} -> {other.size:,} bytes)"
        )


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def dataset_ref(source: str, known: DatasetRef | None = None) -> DatasetRef:
    """Checksum a local dataset (file or folder). Reuses `known` when size and mtime match.

    Hub ids without a local path get the id itself as their checksum: `datasets` keeps
    its own fingerprint of a downloaded revision, and we cannot read the files offline.
    """
    ref, checksum = _dataset_ref_unchecked(source, known)
    return ref if checksum is None else replace(ref, checksum=checksum(None))


PENDING_CHECKSUM = ""
"""A new workspace's recorded checksum until its first load has computed it (see
`Workspace.create`); a workspace.json holding it takes the dataset as it is at the next open."""


def _dataset_ref_unchecked(
    source: str, known: DatasetRef | None
) -> tuple[DatasetRef, Callable[[threading.Event | None], str] | None]:
    """The dataset's reference, and the function that computes its checksum when the
    reference lacks it (None: `known` still holds, or a hub id); that function raises
    `Cancelled` once the event it is given is set."""
    spec = resolve_source(source)
    if spec.path is None:
        return DatasetRef(source, spec.kind, f"hub:{source}", 0, 0), None
    path = spec.path
    files = _files_of(path)
    size = sum(f.stat().st_size for f in files)
    mtime_ns = max((f.stat().st_mtime_ns for f in files), default=0)
    if (
        known is not None
        and known.source == str(path.resolve())
        and known.size == size
        and known.mtime_ns == mtime_ns
        and known.checksum != PENDING_CHECKSUM
    ):
        return known, None

    def checksum(stop: threading.Event | None = None) -> str:
        digest = hashlib.sha256()
        for file in files:
            if path.is_dir():
                digest.update(str(file.relative_to(path)).encode() + b"\0")
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    if stop is not None and stop.is_set():
                        raise Cancelled("the dataset's checksum: stopped with its first load")
                    digest.update(chunk)
        return digest.hexdigest()

    return DatasetRef(str(path.resolve()), spec.kind, PENDING_CHECKSUM, size, mtime_ns), checksum


def _in_background(work: Callable[[], str]) -> Future[str]:
    """`work()` run in a daemon thread. (hashlib and file reads release the GIL on 1 MiB
    chunks, so a checksum runs beside the load on another core.)"""
    future: Future[str] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as error:  # handed to whoever waits for the result
            future.set_exception(error)

    threading.Thread(target=run, name="dmtui-checksum", daemon=True).start()
    return future


@dataclass(frozen=True)
class LockHolder:
    """The app window that writes a workspace."""

    owner: str
    """user@host"""
    host: str
    pid: int
    since: str
    token: str

    def describe(self) -> str:
        return f"{self.owner} (pid {self.pid}, since {self.since})"


class WorkspaceLocked(WorkspaceError):
    """Another live dmtui window holds the workspace."""

    def __init__(self, holder: LockHolder, root: Path) -> None:
        super().__init__(
            f"{root} is open in another dmtui: {holder.describe()}",
            "open it read-only (--read-only: annotations and settings are not written), or take "
            "it over (--take-over: the other window turns read-only at its next write)",
        )
        self.holder = holder


def default_workspace_path(source: str) -> Path:
    """Next to a local dataset (``data.jsonl`` -> ``data.dmtui``) where that folder is
    writable, else in the current folder; hub ids go to ``./org__name.dmtui``."""
    path = Path(source).expanduser()
    if path.exists():
        resolved = path.resolve()  # "." or "data/.." name the folder they resolve to
        name = (resolved.name.split(".")[0] if path.is_file() else "") or resolved.name
        parent = resolved.parent
        if os.access(parent, os.W_OK):
            return parent / f"{name}{WORKSPACE_SUFFIX}"
        return Path.cwd() / f"{name}{WORKSPACE_SUFFIX}"
    return Path.cwd() / f"{source.replace('/', '__')}{WORKSPACE_SUFFIX}"


def is_workspace(path: str | Path) -> bool:
    return (Path(path) / WORKSPACE_FILE).is_file()


RECORDS_SCHEMA = pa.schema([("_json", pa.string())])
"""records.arrow of a JSON source (see `LoadedDataset.records`)."""


class _StreamedRecords:
    """A JSON source's records written to an Arrow IPC file by a thread as the load hands
    them over (`add`), into a hidden temp file in the cache folder, as the folder of this
    cache is named after the checksum and the load's decisions, known only at its end.
    `commit` syncs it and renames it into place; `discard` removes it. The records are
    the largest cache file: written while the dataset is still read, the load's end waits
    only for the others."""

    PREFIX = ".records.arrow."

    def __init__(self, folder: Path) -> None:
        with writing(folder):
            self.path = new_temp(folder, self.PREFIX)
        self.rows = 0
        self._chunks: queue.SimpleQueue[pa.Array | None] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._write, name="dmtui-records", daemon=True)
        self._thread.start()

    def add(self, texts: pa.Array) -> None:
        self.rows += len(texts)
        self._chunks.put(texts)

    def _write(self) -> None:
        try:
            with pa.OSFile(str(self.path), "wb") as sink, pa_ipc.new_file(sink, RECORDS_SCHEMA) as writer:
                while (texts := self._chunks.get()) is not None:  # Arrow writes without the GIL
                    writer.write_table(pa.Table.from_arrays([texts], schema=RECORDS_SCHEMA), max_chunksize=65_536)
        except BaseException as error:  # raised by commit
            self._failure = error

    def _close(self) -> None:
        self._chunks.put(None)
        self._thread.join()

    def commit(self, path: Path) -> None:
        """The records, synced, at `path` (a write that failed raises here)."""
        self._close()
        with writing(path):
            try:
                if self._failure is not None:
                    raise self._failure
                path.parent.mkdir(parents=True, exist_ok=True)
            except BaseException:
                self.path.unlink(missing_ok=True)
                raise
            replace_with_temp(self.path, path)

    def discard(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)


class Workspace:
    """An open workspace. Create with `Workspace.create`, reopen with `Workspace.open`."""

    def __init__(
        self, root: Path, dataset: DatasetRef, load_config: LoadConfig, checksum: Future[str] | None = None
    ) -> None:
        """`checksum`: the dataset's checksum still being computed (`create`)."""
        self.root = root
        self._dataset = dataset
        self._checksum = checksum
        self._checksum_stop = threading.Event()
        self.load_config = load_config
        self.created_now = False
        """True for a workspace this process made (`create`); see `load_or_discard`."""
        self._made_root = False
        self._lock_token: str | None = None
        self.read_only: str | None = None
        """Why this window must not write annotations or settings (None: it may)."""

    @property
    def dataset(self) -> DatasetRef:
        """The dataset as this workspace accepted it (for a workspace `create` just made, once
        its checksum is known: this waits for it; raises `Cancelled` after its first load was
        stopped, which stops the checksum too)."""
        if self._checksum is not None:
            self._dataset = replace(self._dataset, checksum=self._checksum.result())
            self._checksum = None
        return self._dataset

    @dataset.setter
    def dataset(self, dataset: DatasetRef) -> None:
        self._dataset, self._checksum = dataset, None

    # Paths -----------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def annotations_path(self) -> Path:
        return self.root / "annotations.sqlite"

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    # Life cycle ------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, source: str, load_config: LoadConfig = LoadConfig()) -> Workspace:  # noqa: B008 (frozen: one shared default is safe)
        root = Path(root)
        if is_workspace(root):
            raise WorkspaceError(f"{root} is already a workspace", "open it instead, or choose another folder")
        left_by_a_killed_create = abandoned_temps(root, f".{WORKSPACE_FILE}.")
        if root.exists() and any(p not in left_by_a_killed_create for p in root.iterdir()):
            raise WorkspaceError(f"{root} exists and is not empty", "choose a new folder for the workspace")
        dataset, checksum = _dataset_ref_unchecked(source, None)
        # A workspace keeps every rejected row in its report, so it never loads strictly.
        workspace = cls(root, dataset, replace(load_config, strict=False))
        made_root = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise (
                disk_failure(root, error) or WorkspaceError(f"cannot create workspace {root}: {error.strerror}")
            ) from error
        # workspace.json first: a run killed after it leaves a workspace that opens, not a
        # non-empty folder that `create` refuses.
        workspace._save()
        with writing(root):
            for folder in (workspace.scores_dir, workspace.exports_dir, workspace.runs_dir):
                folder.mkdir(exist_ok=True)
        workspace.created_now = True
        workspace._made_root = made_root
        if checksum is not None:  # computed beside the first load, which records it (`load`)
            workspace._checksum = _in_background(lambda: checksum(workspace._checksum_stop))
        return workspace

    @classmethod
    def read(cls, root: str | Path) -> Workspace:
        """The workspace as its workspace.json records it, the dataset neither looked at nor
        checked and nothing written (`open` does both): for commands that only read what
        the workspace holds, such as `dmtui annotations`."""
        root = Path(root)
        path = root / WORKSPACE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            if data.get("version") != WORKSPACE_VERSION:
                raise WorkspaceError(
                    f"{path}: workspace version {data.get('version')} is not {WORKSPACE_VERSION}",
                    "use the dmtui release that made it, or start a new workspace",
                )
            recorded = DatasetRef(**data["dataset"])
            load_config = LoadConfig.from_recorded(data["load_config"])
        except FileNotFoundError as error:
            raise WorkspaceError(f"{root} is not a dmtui workspace (no {WORKSPACE_FILE})") from error
        except (ValueError, KeyError, TypeError) as error:  # ValueError: bad JSON or bad UTF-8
            raise WorkspaceError(
                f"{path} is damaged ({error})", "restore it from a backup or start a new workspace"
            ) from error
        return cls(root, recorded, load_config)

    def current_dataset(self) -> DatasetRef:
        """The dataset as it is now (checksummed again only when its size or mtime moved);
        raises when it is missing."""
        recorded = self.dataset
        if recorded.kind != "hub" and not Path(recorded.source).exists():
            raise WorkspaceError(
                f"the workspace's dataset {recorded.source} is missing",
                "put the file back where it was, or start a new workspace for the new location",
            )
        return dataset_ref(recorded.source, known=recorded)

    @classmethod
    def open(cls, root: str | Path, *, accept_changes: bool = False) -> Workspace:
        """Open and check the dataset. A changed dataset raises unless `accept_changes`."""
        workspace = cls.read(root)
        recorded = workspace.dataset
        current = workspace.current_dataset()
        if current.checksum != recorded.checksum:
            if not accept_changes and recorded.checksum != PENDING_CHECKSUM:  # pending: its first load was stopped
                raise WorkspaceError(
                    recorded.describe_change(current),
                    "nothing was mixed. Re-open with --accept-changes to load the new version: scores and "
                    "annotations are kept for every pair whose content is unchanged",
                )
            workspace.dataset = current
            workspace._save()
        elif current != recorded:  # touched, same bytes: remember the new mtime
            workspace.dataset = current
            workspace._save()
        return workspace

    @classmethod
    def open_or_create(
        cls,
        source: str,
        root: str | Path | None = None,
        load_config: LoadConfig = LoadConfig(),  # noqa: B008 (frozen: one shared default is safe)
        *,
        accept_changes: bool = False,
    ) -> Workspace:
        """The workspace for `source`: `root` (or the default next to it), made if needed.

        An existing workspace for another dataset, or with other load options, is an
        error rather than a silent switch.
        """
        root = Path(root) if root is not None else default_workspace_path(source)
        if not is_workspace(root):
            return cls.create(root, source, load_config)
        workspace = cls.open(root, accept_changes=accept_changes)
        wanted = dataset_ref(source, known=workspace.dataset)
        if wanted.source != workspace.dataset.source and wanted.checksum != workspace.dataset.checksum:
            raise WorkspaceError(
                f"{root} curates {workspace.dataset.source}, not {source}",
                "pass --workspace with another folder for this dataset",
            )
        # what the workspace recorded of role-marked text at its first load is not an option the user gives
        load_config = replace(load_config, strict=False, role_text_decision=workspace.load_config.role_text_decision)
        if load_config != workspace.load_config and replace(load_config, role_text_decision=None) != LoadConfig():
            raise WorkspaceError(
                f"{root} was made with other load options ({workspace.load_config.mapping() or 'defaults'})",
                "leave the options out to use the workspace's own, or pass --workspace with a new folder",
            )
        return workspace

    def _save(self) -> None:
        atomic_write_json(
            self.root / WORKSPACE_FILE,
            {
                "version": WORKSPACE_VERSION,
                "dataset": asdict(self.dataset),
                "load_config": asdict(self.load_config),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )

    # Loading ---------------------------------------------------------------------
    def _cache_key(self) -> str:
        payload = json.dumps([LOADER_VERSION, self.dataset.checksum, asdict(self.load_config)], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @staticmethod
    def _mapped(cache: Path, report: LoadReport) -> LoadedDataset:
        numbers = cache / "numbers.arrow"
        dataset = LoadedDataset(
            read_arrow_mapped(cache / "pairs.arrow"),
            read_arrow_mapped(cache / "records.arrow"),
            report,
            read_arrow_mapped(numbers) if report.source_kind in ("jsonl", "json") else None,
        )
        tables = [dataset.pairs, dataset.records] + ([dataset.numbers] if dataset.numbers is not None else [])
        # A records table with no columns (CSV without rows) has no rows to count.
        if any(t.num_rows != report.loaded and t.num_columns for t in tables):
            raise ValueError("the cached tables do not line up with the report")  # rebuilt by load()
        return dataset

    def load(
        self,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> LoadedDataset:
        """The dataset's pairs: from the cache when it matches, else loaded and cached.

        The first load of a workspace `create` just made runs beside the dataset's checksum
        and records it in workspace.json; there is no cache to look for yet."""
        checksum_pending = self._checksum is not None
        if not checksum_pending:
            cache = self.cache_dir / self._cache_key()
            if (cache / "report.json").is_file():
                try:
                    report = LoadReport.from_json(json.loads((cache / "report.json").read_text("utf-8")))
                    return self._mapped(cache, report)
                except (OSError, ValueError, KeyError, pa.ArrowException):
                    pass  # a damaged cache is rebuilt from the dataset below
        stream = _StreamedRecords(self.cache_dir) if self._dataset.kind in ("jsonl", "json") else None
        try:
            loaded = load_dataset(  # not waiting for the checksum
                self._dataset.source, self.load_config, progress, cancel, stream.add if stream else None
            )
            decided = self.load_config.with_role_decision(loaded.report)
            if checksum_pending or decided != self.load_config:
                # the checksum (waited for here), and what was made of role-marked text, so
                # that later versions of the file keep its pair_ids
                self.load_config = decided
                self._save()
            key = self._cache_key()
            cache = self.cache_dir / key
            tables = {"pairs.arrow": loaded.pairs, "records.arrow": loaded.records}
            if loaded.numbers is not None:
                tables["numbers.arrow"] = loaded.numbers
            if stream is not None and stream.rows == loaded.records.num_rows:
                del tables["records.arrow"]  # streamed as it loaded, and no row of it was dropped since
            elif stream is not None:
                stream.discard()
                stream = None
            # side by side: Arrow writes (and the disk syncs) without holding the GIL
            with ThreadPoolExecutor(len(tables), thread_name_prefix="dmtui-cache") as pool:
                writes = [pool.submit(atomic_write_arrow, cache / name, table) for name, table in tables.items()]
                if stream is not None:
                    stream.commit(cache / "records.arrow")
                for written in writes:
                    written.result()
        except BaseException as error:
            if stream is not None:
                stream.discard()
            if checksum_pending and isinstance(error, Cancelled):
                self._checksum_stop.set()  # nobody waits for it any more: it would read the whole dataset
            raise
        # report.json last: it marks the cache complete
        atomic_write_json(cache / "report.json", loaded.report.to_json(include_all=True))
        # The mapped copy, so the loaded text is paged from the cache rather than held twice.
        loaded = self._mapped(cache, loaded.report)
        for stale in self.cache_dir.iterdir():
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)
        return loaded

    def load_or_discard(
        self,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> LoadedDataset:
        """`load`; but a workspace made by this process for this dataset is removed again when
        the dataset loads no pair or cannot be loaded (a file that loads nothing makes no
        workspace), and the load report still comes back."""
        try:
            dataset = self.load(progress, cancel)
        except BaseException:
            self._discard_new()
            raise
        if dataset.report.loaded == 0:
            self._discard_new()
        return dataset

    def _discard_new(self) -> None:
        if not self.created_now:
            return
        self.created_now = False
        if self._made_root:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for entry in self.root.iterdir():  # an empty folder the user gave stays, empty
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    # Settings --------------------------------------------------------------------
    def read_settings(self) -> dict[str, Any]:
        """The app's remembered settings; a missing, damaged or hand-broken file means none."""
        try:
            settings = json.loads(self.settings_path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):  # ValueError: bad JSON or bad UTF-8
            return {}
        return settings if isinstance(settings, dict) else {}

    def write_settings(self, settings: dict[str, Any]) -> None:
        with self._settings_locked():
            atomic_write_json(self.settings_path, settings)

    # One writer ------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    def lock_holder(self) -> LockHolder | None:
        """Who holds the workspace now: None when nobody does, or the holder's process has ended."""
        try:
            data = json.loads(self.lock_path.read_text("utf-8"))
            holder = LockHolder(**{name: data[name] for name in ("owner", "host", "pid", "since", "token")})
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if holder.host == socket.gethostname() and not process_running(int(holder.pid)):
            return None
        return holder

    def acquire_lock(self, *, take_over: bool = False) -> None:
        """Claim the workspace for this process; `WorkspaceLocked` names the holder when another
        live process has it, unless `take_over`."""
        if self._lock_token is not None and self.write_refusal() is None:
            return
        holder = self.lock_holder()
        if holder is not None and holder.pid != os.getpid() and not take_over:
            raise WorkspaceLocked(holder, self.root)
        import getpass
        import secrets

        mine = LockHolder(
            owner=f"{getpass.getuser()}@{socket.gethostname()}",
            host=socket.gethostname(),
            pid=os.getpid(),
            since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            token=secrets.token_hex(8),
        )
        atomic_write_json(self.lock_path, asdict(mine))
        self._lock_token, self.read_only = mine.token, None

    def release_lock(self) -> None:
        """Give the workspace up (only if this process still holds it)."""
        if self._lock_token is None:
            return
        holder = self.lock_holder()
        if holder is not None and holder.token == self._lock_token:
            self.lock_path.unlink(missing_ok=True)
        self._lock_token = None

    def set_read_only(self, reason: str) -> None:
        self.read_only = reason

    def write_refusal(self) -> str | None:
        """Why this window must not write annotations or settings now; None when it may.

        A window that claimed the workspace and lost it to a take-over turns read-only here."""
        if self.read_only is None and self._lock_token is not None:
            holder = self.lock_holder()
            if holder is not None and holder.token != self._lock_token:
                self.read_only = f"{holder.describe()} took this workspace over"
                self._lock_token = None
        return self.read_only

    def update_settings(self, key: str, value: Any) -> None:
        """Set one key of settings.json and keep every other key as the file holds it now:
        read, change and write under an exclusive lock, so writers of different keys (two
        windows, the app and `dmtui open --margin`) never undo each other's changes."""
        refusal = self.write_refusal()
        if refusal:
            raise WorkspaceError(f"settings not saved: {refusal}", "this window is read-only")
        with self._settings_locked():
            settings = self.read_settings()
            settings[key] = value
            atomic_write_json(self.settings_path, settings)

    @contextmanager
    def _settings_locked(self) -> Iterator[None]:
        import fcntl

        with writing(self.root), open(self.root / ".settings.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
