"""Writing a selection out: the chosen pairs in the dataset's own format (annotations applied)
with a manifest that records the data, margins, choices and versions, and can rebuild the
export (`exporter`).
"""

from core.export.exporter import export_selection, read_manifest

__all__ = [
    "export_selection",
    "read_manifest",
]
