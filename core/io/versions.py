"""Versions of Python and of the libraries a result depends on, for manifests and runs."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """{"python": "3.11.7", name: version or "not installed", ...}."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
