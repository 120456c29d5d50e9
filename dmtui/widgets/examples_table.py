"""A virtual table of pairs: renders only the visible lines, so 1M rows cost nothing.

The table never builds a widget, or even a Python object, per row: it holds an index
array (the rows in view order, from core.selection.views) and per-pair numpy columns, and
`render_line` formats the few rows on screen. Enter posts `PairOpened`. The columns and
the rows change apart: a new selection replaces the columns (its flags and scores) and
keeps the order; a new order replaces the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass(frozen=True)
class TableColumn:
    """One column: a title, a width, and how to format the value of pair `index`."""

    title: str
    width: int
    cell: Callable[[int], str]
    align_right: bool = False


def format_number(value: float) -> str:
    return "—" if not np.isfinite(value) else f"{value:.3f}"


class ExamplesTable(ScrollView, can_focus=True):
    """Rows of pairs in a given order; a cursor; Enter opens the pair under it."""

    DEFAULT_CSS = """
    ExamplesTable {
        height: 1fr;
    }
    """

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "jump(0)", "First", show=False),
        Binding("end,G", "jump(-1)", "Last", show=False),
        Binding("enter", "open", "Open pair"),
    ]

    cursor: reactive[int] = reactive(0)

    @dataclass
    class PairOpened(Message):
        """The user asked to inspect pair `index` (a row of the dataset's pairs); `position`
        is its place in the table's current order."""

        index: int
        position: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns: list[TableColumn] = []
        self.rows: np.ndarray = np.zeros(0, dtype=np.int64)

    def set_columns(self, columns: list[TableColumn]) -> None:
        """New columns (or new values behind them) for the same rows."""
        self.columns = columns
        self._size_to_content()
        self.refresh()

    def show(self, columns: list[TableColumn], rows: np.ndarray, keep_index: int | None = None) -> None:
        """Display `rows` (pair indices, in order) under `columns`. The cursor stays on
        `keep_index` if it is shown, else goes to the top."""
        self.columns = columns
        self.rows = np.asarray(rows, dtype=np.int64)
        self._size_to_content()
        position = 0
        if keep_index is not None and len(self.rows):
            found = np.flatnonzero(self.rows == keep_index)
            position = int(found[0]) if found.size else 0
        self.cursor = min(position, max(len(self.rows) - 1, 0))
        if position == 0 and self.scroll_offset.y:
            self.scroll_to(y=0, animate=False)
        self._scroll_cursor_into_view()
        self.refresh()

    def _size_to_content(self) -> None:
        # Only on a change: a new virtual size (like any scroll) lays the whole screen out again.
        size = Size(sum(c.width + 1 for c in self.columns), len(self.rows) + 1)
        if size != self.virtual_size:
            self.virtual_size = size

    @property
    def current_index(self) -> int | None:
        return int(self.rows[self.cursor]) if len(self.rows) else None

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if y == 0:
            header = " ".join(self._fit(c.title, c.width, c.align_right) for c in self.columns)
            strip = Strip([Segment(header, Style(bold=True, underline=True))])
            return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width)
        position = scroll_y + y - 1
        if position >= len(self.rows):
            return Strip.blank(width)
        index = int(self.rows[position])
        text = " ".join(self._fit(c.cell(index), c.width, c.align_right) for c in self.columns)
        style = Style(reverse=True) if position == self.cursor and self.has_focus else (
            Style(bold=True) if position == self.cursor else Style())
        return Strip([Segment(text, style)]).crop(scroll_x, scroll_x + width).extend_cell_length(width, style)

    @staticmethod
    def _fit(text: str, width: int, align_right: bool) -> str:
        text = " ".join(text.split())
        if len(text) > width:
            text = text[: max(width - 1, 0)] + "…"
        return text.rjust(width) if align_right else text.ljust(width)

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()

    def _scroll_cursor_into_view(self) -> None:
        visible = max(self.scrollable_content_region.height - 1, 1)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)

    def _move_to(self, position: int) -> None:
        if not len(self.rows):
            return
        self.cursor = int(np.clip(position, 0, len(self.rows) - 1))
        self._scroll_cursor_into_view()

    def action_cursor(self, step: int) -> None:
        self._move_to(self.cursor + step)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(self.scrollable_content_region.height - 2, 1))

    def action_jump(self, position: int) -> None:
        self._move_to(position if position >= 0 else len(self.rows) - 1)

    def action_open(self) -> None:
        if len(self.rows):
            self.post_message(self.PairOpened(int(self.rows[self.cursor]), self.cursor))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
