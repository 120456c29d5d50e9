"""The raw text of a rejected row, read back from the dataset file for a person to see.

Rows of line-based files (JSON lines, CSV/TSV) are located as "line N"; the line is read
again from the file (gzip-aware). Other shapes (a JSON array's "item N", a Parquet or
saved dataset's "row N") have no line to show: `raw_line` returns None for them.
"""

from __future__ import annotations

import gzip
import re

from core.data.sources import resolve_source

LINE = re.compile(r"^line (\d+)$")
MAX_CHARS = 20_000
"""A raw line is cut here: a pathological 1 GB line must not fill the screen's memory."""


def raw_line(source: str, location: str, max_chars: int = MAX_CHARS) -> str | None:
    """Line N of `source` for location "line N" (cut at `max_chars`, bytes that are not UTF-8
    shown as �), or None when the location is not a line or the file is gone."""
    match = LINE.match(location)
    if match is None:
        return None
    wanted = int(match.group(1))
    try:
        spec = resolve_source(source)
        if spec.path is None or not spec.path.is_file():
            return None
        with gzip.open(spec.path, "rb") if spec.compressed else spec.path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if number == wanted:
                    text = line[: max_chars * 4].decode("utf-8", errors="replace").rstrip("\r\n")
                    return text if len(text) <= max_chars else text[:max_chars] + f"… (cut at {max_chars:,} characters)"
    except (OSError, EOFError, ValueError):
        return None
    return None
