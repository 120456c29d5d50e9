"""Where the demo world's dataset is, in a source checkout or in an installed wheel.

A checkout has ``sample_data/`` at its top. The wheel carries the same files inside the
package (``core/_sample_data``, a link to ``sample_data/`` in the source tree), so that
``--demo`` works from ``pip install dmtui``. Installed, the dataset is copied once to
the cache (``$DMTUI_CACHE`` or ``~/.cache/dmtui``, where the demo models live too):
its workspace is made beside the dataset, and site-packages is no place for one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import core
from core.errors import DmtuiError

CORE = Path(core.__file__).resolve().parent
"""The engine's folder: found from the package, so this module may live at any depth in it."""
CHECKOUT = CORE.parent / "sample_data"
PACKAGED = CORE / "_sample_data"
DEMO_FILES = ("pairs.jsonl", "oracle.jsonl", "world.json")


def demo_dataset() -> Path:
    """The demo world's pairs.jsonl (its oracle.jsonl and world.json beside it)."""
    if (CHECKOUT / "demo" / "pairs.jsonl").is_file():
        return CHECKOUT / "demo" / "pairs.jsonl"
    if not (PACKAGED / "demo" / "pairs.jsonl").is_file():
        raise DmtuiError(
            "the demo dataset is not installed with this copy of dmtui",
            "pass DATA, or write the demo world with `dmtui demo generate --out DIR`",
        )
    from core.demo.models import DemoModelsConfig, cache_root

    folder = cache_root(DemoModelsConfig()) / "sample_data" / "demo"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in DEMO_FILES:
            source, copy = PACKAGED / "demo" / name, folder / name
            if not copy.is_file() or copy.stat().st_size != source.stat().st_size:
                temp = folder / f".{name}.copying"
                shutil.copyfile(source, temp)
                temp.replace(copy)
    except OSError as error:
        raise DmtuiError(
            f"cannot copy the demo dataset to {folder}: {error.strerror}", "point $DMTUI_CACHE at a writable folder"
        ) from error
    return folder / "pairs.jsonl"
