"""Which processes a test started are still there, read from /proc."""

from __future__ import annotations

from pathlib import Path


def _parent_and_state(pid_dir: Path) -> tuple[int, str] | None:
    try:
        fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0]


def descendants(root: int) -> set[int]:
    """Every live process below `root` (children, their children, ...)."""
    parents = {int(entry.name): info for entry in Path("/proc").iterdir()
               if entry.name.isdigit() and (info := _parent_and_state(entry)) is not None and info[1] != "Z"}
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (parent, _) in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    info = _parent_and_state(Path(f"/proc/{pid}"))
    return info is not None and info[1] != "Z"
