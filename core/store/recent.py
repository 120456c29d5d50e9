"""The workspaces this user opened lately, for the launcher: where, when, and what each
holds (dataset, pairs, which margins are scored), read without loading any dataset.

The list lives in ``$DMTUI_STATE_DIR/recent.json`` (default
``$XDG_STATE_HOME/dmtui`` or ``~/.local/state/dmtui``). It is a convenience: when it
cannot be read or written (a read-only home), the app works on without it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import WorkspaceError
from core.io.atomic import atomic_write_json
from core.store.scores import list_score_tables
from core.store.workspace import WORKSPACE_FILE, is_workspace

MAX_RECENT = 20


def state_dir() -> Path:
    if os.environ.get("DMTUI_STATE_DIR"):
        return Path(os.environ["DMTUI_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "dmtui"


def _recent_path() -> Path:
    return state_dir() / "recent.json"


def _read_entries() -> list[dict]:
    try:
        entries = json.loads(_recent_path().read_text("utf-8"))
    except (OSError, ValueError):
        return []
    return (
        [
            e
            for e in entries
            if isinstance(e, dict) and isinstance(e.get("root"), str) and isinstance(e.get("opened"), (int, float))
        ]
        if isinstance(entries, list)
        else []
    )


def remember_workspace(root: Path, now: float | None = None) -> None:
    """Put `root` first in the recent list, stamped `now`."""
    resolved = str(Path(root).resolve())
    entries = [e for e in _read_entries() if e["root"] != resolved]
    entries.insert(0, {"root": resolved, "opened": time.time() if now is None else now})
    try:
        _recent_path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_recent_path(), entries[:MAX_RECENT])
    except (OSError, WorkspaceError):
        pass  # see the module docstring


@dataclass(frozen=True)
class RecentWorkspace:
    root: Path
    opened: float
    """Seconds since the epoch, when the app last opened it."""
    dataset: str
    """The dataset's source (a path or a hub id); "" when the workspace is gone or damaged."""
    pairs: int | None
    """Pairs loaded the last time it was loaded (None: never loaded, or unknown)."""
    scores: tuple[str, ...]
    """Margin sources with a score table."""
    problem: str = ""
    """Why it cannot be opened as it is (moved, deleted, damaged), else ""."""


def describe_workspace(root: Path, opened: float) -> RecentWorkspace:
    """What a workspace holds, from its small files only."""
    if not is_workspace(root):
        return RecentWorkspace(root, opened, "", None, (), "no longer a workspace (moved or deleted)")
    try:
        record = json.loads((root / WORKSPACE_FILE).read_text("utf-8"))
        dataset = str(record["dataset"]["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return RecentWorkspace(root, opened, "", None, (), f"{WORKSPACE_FILE} is damaged")
    return RecentWorkspace(
        root,
        opened,
        dataset,
        _cached_pair_count(root / "cache"),
        tuple(dict.fromkeys(info.source for info in list_score_tables(root / "scores"))),
    )


def _cached_pair_count(cache: Path) -> int | None:
    reports = (
        sorted(cache.glob("*/report.json"), key=lambda p: p.stat().st_mtime, reverse=True) if cache.is_dir() else []
    )
    for report in reports:
        try:
            return int(json.loads(report.read_text("utf-8"))["loaded"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def recent_workspaces() -> list[RecentWorkspace]:
    """The recent list, newest first, each described as it is now."""
    return [describe_workspace(Path(e["root"]), float(e["opened"])) for e in _read_entries()]
