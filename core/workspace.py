"""A workspace: one folder holding everything about one curation.

Layout::

    WORKSPACE/
      workspace.json        dataset reference (source, kind, checksum, size), load options
      cache/                the normalised load (pairs.parquet, records.parquet, report.json),
                            reused while the dataset's checksum and the load options match
      scores/               score tables per source and model (Parquet, keyed by pair_id)
      annotations.sqlite    flags, label swaps, exclusions, notes (core.annotations)
      exports/              exported subsets with their manifests
      runs/                 training runs
      settings.json         UI settings remembered for this workspace

The dataset is referenced, never copied or modified. Opening a workspace compares the
dataset with the recorded checksum: if it changed, `WorkspaceError` explains how, and
nothing is mixed until the caller accepts the change (`accept_changes=True`). Scores
and annotations are keyed by pair_id, a hash of each pair's content, so accepting a
change keeps them for every pair that is still there.

All files are written atomically (temp file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import WorkspaceError
from core.loading import LoadConfig, LoadedDataset, LoadReport, load_dataset
from core.progress import ProgressFn
from core.sources import resolve_source

WORKSPACE_FILE = "workspace.json"
WORKSPACE_VERSION = 1
# Bump when loading would produce different pairs from the same bytes: invalidates caches.
LOADER_VERSION = 1
WORKSPACE_SUFFIX = ".dmtui"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        pq.write_table(table, temp_name)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class DatasetRef:
    """Which dataset a workspace curates, and what it looked like when last accepted."""

    source: str
    kind: str
    checksum: str
    size: int
    mtime_ns: int

    def describe_change(self, other: "DatasetRef") -> str:
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
    spec = resolve_source(source)
    if spec.path is None:
        return DatasetRef(source, spec.kind, f"hub:{source}", 0, 0)
    files = _files_of(spec.path)
    size = sum(f.stat().st_size for f in files)
    mtime_ns = max((f.stat().st_mtime_ns for f in files), default=0)
    if (
        known is not None
        and known.source == str(spec.path.resolve())
        and known.size == size
        and known.mtime_ns == mtime_ns
    ):
        return known
    digest = hashlib.sha256()
    for file in files:
        if spec.path.is_dir():
            digest.update(str(file.relative_to(spec.path)).encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return DatasetRef(str(spec.path.resolve()), spec.kind, digest.hexdigest(), size, mtime_ns)


def default_workspace_path(source: str) -> Path:
    """Next to a local dataset (``data.jsonl`` -> ``data.dmtui``) where that folder is
    writable, else in the current folder; hub ids go to ``./org__name.dmtui``."""
    path = Path(source).expanduser()
    if path.exists():
        name = path.name.split(".")[0] if path.is_file() else path.name
        parent = path.resolve().parent
        if os.access(parent, os.W_OK):
            return parent / f"{name}{WORKSPACE_SUFFIX}"
        return Path.cwd() / f"{name}{WORKSPACE_SUFFIX}"
    return Path.cwd() / f"{source.replace('/', '__')}{WORKSPACE_SUFFIX}"


def is_workspace(path: str | Path) -> bool:
    return (Path(path) / WORKSPACE_FILE).is_file()


class Workspace:
    """An open workspace. Create with `Workspace.create`, reopen with `Workspace.open`."""

    def __init__(self, root: Path, dataset: DatasetRef, load_config: LoadConfig) -> None:
        self.root = root
        self.dataset = dataset
        self.load_config = load_config

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
    def create(cls, root: str | Path, source: str, load_config: LoadConfig = LoadConfig()) -> "Workspace":
        root = Path(root)
        if is_workspace(root):
            raise WorkspaceError(f"{root} is already a workspace", "open it instead, or choose another folder")
        if root.exists() and any(root.iterdir()):
            raise WorkspaceError(f"{root} exists and is not empty", "choose a new folder for the workspace")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WorkspaceError(f"cannot create workspace {root}: {error.strerror}") from error
        # A workspace keeps every rejected row in its report, so it never loads strictly.
        workspace = cls(root, dataset_ref(source), replace(load_config, strict=False))
        for folder in (workspace.scores_dir, workspace.exports_dir, workspace.runs_dir):
            folder.mkdir(exist_ok=True)
        workspace._save()
        return workspace

    @classmethod
    def open(cls, root: str | Path, *, accept_changes: bool = False) -> "Workspace":
        """Open and check the dataset. A changed dataset raises unless `accept_changes`."""
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
            load_config = LoadConfig(**data["load_config"])
        except FileNotFoundError as error:
            raise WorkspaceError(f"{root} is not a dmtui workspace (no {WORKSPACE_FILE})") from error
        except (ValueError, KeyError, TypeError) as error:  # ValueError: bad JSON or bad UTF-8
            raise WorkspaceError(
                f"{path} is damaged ({error})", "restore it from a backup or start a new workspace"
            ) from error
        source = recorded.source
        if recorded.kind != "hub" and not Path(source).exists():
            raise WorkspaceError(
                f"the workspace's dataset {source} is missing",
                "put the file back where it was, or start a new workspace for the new location",
            )
        current = dataset_ref(source, known=recorded)
        workspace = cls(root, recorded, load_config)
        if current.checksum != recorded.checksum:
            if not accept_changes:
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
        load_config: LoadConfig = LoadConfig(),
        *,
        accept_changes: bool = False,
    ) -> "Workspace":
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
        load_config = replace(load_config, strict=False)
        if load_config != workspace.load_config and load_config != LoadConfig():
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
        payload = json.dumps(
            [LOADER_VERSION, self.dataset.checksum, asdict(self.load_config)], sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def load(
        self,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> LoadedDataset:
        """The dataset's pairs: from the cache when it matches, else loaded and cached."""
        key = self._cache_key()
        cache = self.cache_dir / key
        if (cache / "report.json").is_file():
            try:
                report = LoadReport.from_json(json.loads((cache / "report.json").read_text("utf-8")))
                pairs = pq.read_table(cache / "pairs.parquet", memory_map=True)
                records = pq.read_table(cache / "records.parquet", memory_map=True)
                return LoadedDataset(pairs, records, report)
            except (OSError, ValueError, KeyError, pa.ArrowException):
                pass  # a damaged cache is rebuilt from the dataset below
        loaded = load_dataset(self.dataset.source, self.load_config, progress, cancel)
        atomic_write_parquet(cache / "pairs.parquet", loaded.pairs)
        atomic_write_parquet(cache / "records.parquet", loaded.records)
        atomic_write_json(cache / "report.json", loaded.report.to_json(include_all=True))
        for stale in self.cache_dir.iterdir():
            if stale.is_dir() and stale.name != key:
                for file in stale.iterdir():
                    file.unlink()
                stale.rmdir()
        return loaded

    # Settings --------------------------------------------------------------------
    def read_settings(self) -> dict[str, Any]:
        try:
            return json.loads(self.settings_path.read_text("utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_settings(self, settings: dict[str, Any]) -> None:
        atomic_write_json(self.settings_path, settings)
