"""Choosing pairs from their margins, with numpy and pyarrow only: fusing margin sources
(`fusion`: DM-ADD, DM-MUL, auto-M2), the budgeted TOP/MID/BOT/Random selection with its tie
keys (`selector`), rank statistics (`stats`), and what the app draws of a selection: tables,
filters and search (`views`) and plot data (`plotdata`). It never imports torch.
"""

from core.selection.selector import MARGIN_SOURCES, Selection, SelectionParams, select

__all__ = [
    "MARGIN_SOURCES",
    "Selection",
    "SelectionParams",
    "select",
]
