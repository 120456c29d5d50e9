"""Atomic writes (temp file, sync, rename) and failed writes in words.

`atomic_write_bytes`, `atomic_write_json`, `atomic_write_parquet` and `atomic_write_arrow` write
a file so that readers see the old one or the new one, never half. A write that fails for want
of space or permission becomes a `WorkspaceError` naming the file and what to do (`writing`,
`disk_failure`). Temporary names carry their writer (`owner_tag`), so that one a killed writer
left is found (`abandoned_temps`) and cleared by the next write.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from core.errors import DmtuiError, WorkspaceError

# A write that fails for want of space or permission, in words: (what happened, what to do).
_NOT_YOURS = "make the folder writable for you, or point --workspace / --out elsewhere"
_DISK_PROBLEMS = {
    errno.ENOSPC: ("the disk is full", "free some space, then run the same command again"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or raise the quota, then run the command again"),
    errno.EFBIG: ("the file size limit was reached", "raise the limit (ulimit -f) or free space, then run it again"),
    errno.EROFS: (
        "the file system is read-only",
        "copy the workspace somewhere writable, or point --workspace / --out at a writable folder",
    ),
    errno.EACCES: ("permission denied", _NOT_YOURS),
    errno.EPERM: ("operation not permitted", _NOT_YOURS),
}
_NEARLY_FULL_BYTES = 1 << 20


def disk_failure(path: Path, error: BaseException) -> WorkspaceError | None:
    """`error` as a WorkspaceError naming the file and what to do, when a write under `path`
    failed for want of space or permission; None for any other failure."""
    if isinstance(error, DmtuiError):
        return None
    code, failed = _disk_errno(error, path)
    if code is None:
        return None
    what, todo = _DISK_PROBLEMS[code]
    return WorkspaceError(f"cannot write {failed}: {what}", todo)


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writes under `path` that fail for want of space or permission raise `WorkspaceError`."""
    try:
        yield
    except Exception as error:
        translated = disk_failure(path, error)
        if translated is None:
            raise
        raise translated from error


def _disk_errno(error: BaseException, path: Path) -> tuple[int | None, Path]:
    """(errno, the file it concerns) of a failed write, looked up in this order: an OSError's
    errno in the exception chain (one about a file outside `path` and its temps is no failed
    write); an errno quoted in a library's message; the file system under `path` (read-only,
    or under 1 MiB free) for I/O failures that carry neither."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno in _DISK_PROBLEMS:
            if not isinstance(link.filename, str):
                return link.errno, path
            file, target = Path(os.path.abspath(link.filename)), Path(os.path.abspath(path))
            if file.is_relative_to(target):
                return link.errno, file
            its_temp = file.parent == target.parent and file.name.startswith(f".{target.name}")
            if its_temp or target.is_relative_to(file):  # its temp, or a folder on its way
                return link.errno, path
            return None, path  # another file (a model that cannot be read): not a failed write
        code = _errno_in_message(str(link))
        if code in _DISK_PROBLEMS:
            return code, path
        link = link.__cause__ or link.__context__
    # Without an errno, a full or read-only file system is the likely cause only of I/O-ish
    # failures; an out-of-memory error on a nearly full disk keeps its own message.
    if not isinstance(error, (OSError, RuntimeError, sqlite3.Error)) or "out of memory" in str(error).lower():
        return None, path
    folder = next((p for p in (path, *path.parents) if p.exists()), None)
    if folder is None:
        return None, path
    state = os.statvfs(folder)
    if state.f_flag & os.ST_RDONLY:
        return errno.EROFS, path
    if state.f_bavail * state.f_frsize < _NEARLY_FULL_BYTES:
        return errno.ENOSPC, path
    return None, path


def _errno_in_message(text: str) -> int | None:
    """The errno that Rust's I/O errors (safetensors: "... (os error 28)") and torch's file
    writer ("... strerror: Read-only file system") quote."""
    if match := re.search(r"\(os error (\d+)\)", text):
        return int(match.group(1))
    if match := re.search(r"strerror: ([^\n]+)", text):
        return next((code for code in _DISK_PROBLEMS if os.strerror(code) == match.group(1).strip()), None)
    return None


# Temporary names carry their writer, `<host>-<pid>`, so that one left by a killed writer is
# known as abandoned (see `abandoned_temps`) while a live writer's is left alone.
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_OWNER = re.compile(r"([0-9a-f]{8})-(\d+)(?:-|$)")


def owner_tag() -> str:
    return f"{_HOST_TAG}-{os.getpid()}"


def abandoned_temps(folder: Path, prefix: str) -> list[Path]:
    """Entries of `folder` named ``prefix + owner_tag() + ...`` whose writer, a process on this
    host, has ended without cleaning up (killed mid-write)."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        owner = _OWNER.match(entry.name, len(prefix)) if entry.name.startswith(prefix) else None
        if owner and owner.group(1) == _HOST_TAG and not process_running(int(owner.group(2))):
            found.append(entry)
    return found


def process_running(pid: int) -> bool:
    """Whether the process `pid` of this host still runs (the writer of a temp, the holder of a lock)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _umask() -> int:
    """The process's umask, read once at import: reading it means setting it for a moment."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()
FILE_MODE, FOLDER_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK
"""What `open` and `mkdir` give: mkstemp's and mkdtemp's private 0600 / 0700 is not what data wants."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half."""
    _atomic_write_with(path, lambda temp: Path(temp).write_bytes(data))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _atomic_write_with(path: Path, write: Callable[[str], object]) -> None:
    """Let `write` fill a temp file beside `path`, sync it, then rename it over `path`.

    The temp, ``.NAME.<owner>-XXXX.tmp``, is hidden and matches no reader's pattern; a failed
    write removes it, and one a killed writer left is removed by the next write of `path`.
    Lack of space or permission raises `WorkspaceError`; the old `path` is then untouched.
    """
    with writing(path):
        temp = new_temp(path.parent, f".{path.name}.")
        try:
            write(str(temp))
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        replace_with_temp(temp, path)


def new_temp(folder: Path, prefix: str) -> Path:
    """A new, empty, hidden ``PREFIX<owner>-XXXX.tmp`` in `folder` (made if missing), with the
    mode `open` gives; the temps of `prefix` that killed writers left there are removed first.
    Call it inside `writing`, and end with `replace_with_temp` or by removing the temp."""
    folder.mkdir(parents=True, exist_ok=True)
    for abandoned in abandoned_temps(folder, prefix):
        abandoned.unlink(missing_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f"{prefix}{owner_tag()}-", suffix=".tmp")
    os.close(handle)
    try:
        os.chmod(temp_name, FILE_MODE)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return Path(temp_name)


def replace_with_temp(temp: Path, path: Path) -> None:
    """Sync the written `temp` and rename it over `path`, then sync the folder; `temp` is
    removed when that fails. Call it inside `writing(path)`."""
    try:
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make renames in `folder` durable; best effort (Windows cannot open a folder, and some
    file systems refuse to sync one)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    _atomic_write_with(path, lambda temp: pq.write_table(table, temp))


def atomic_write_arrow(path: Path, table: pa.Table) -> None:
    """An uncompressed Arrow IPC file: core.io.tables.read_arrow_mapped opens it without copying."""

    def write(temp: str) -> None:
        with pa.OSFile(temp, "wb") as sink, pa_ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=65_536)

    _atomic_write_with(path, write)
