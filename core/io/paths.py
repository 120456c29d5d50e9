"""Checks that a path read from a file stays in the folder it belongs to.

Manifests, run records and workspace files are JSON that people edit, copy and receive
from others. A path in one ("../../etc/x", "/abs/path", or a name that is a symlink
leading out) must not make dmtui read or write outside the folder the file describes.
"""

from __future__ import annotations

import os
from pathlib import Path


def inside(root: str | os.PathLike, candidate: str | os.PathLike) -> bool:
    """True if `candidate` is `root` or lies under it, once both are resolved
    (symlinks followed, ".." collapsed; parts that do not exist yet are taken as written).

    >>> inside("/data/export", "/data/export/data.jsonl")
    True
    >>> inside("/data/export", "/data/export/../secrets.txt")
    False
    >>> inside("/data/export", "/etc/passwd")
    False
    """
    root, candidate = Path(root).resolve(), Path(candidate).resolve()
    return candidate == root or candidate.is_relative_to(root)


def is_plain_name(name: object) -> bool:
    """True for one file or folder name: no separator, not "." or "..", not empty.

    >>> [is_plain_name(n) for n in ("data.jsonl", "../x", "/etc/x", "..", "", "a\\\\b")]
    [True, False, False, False, False, False]
    """
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )
