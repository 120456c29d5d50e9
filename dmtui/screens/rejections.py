"""Every rejected row, with where it is and why, optionally for one reason.

The rows sit in the virtual (Line-API) table, which draws only the lines on screen, so a
file with tens of thousands of bad rows opens at once. Enter shows one rejection whole:
its full message and the raw line from the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Static

from core.data.loading import REASONS, LoadReport, Rejection
from dmtui.widgets.examples_table import ExamplesTable, TableColumn


class RejectionsScreen(Screen):
    CSS_PATH = Path(__file__).with_name("rejections.tcss")
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, report: LoadReport, reason: str | None) -> None:
        super().__init__()
        self.report = report
        self.reason = reason
        self.rejections = [r for r in report.rejections if reason is None or r.reason == reason]

    def compose(self) -> ComposeResult:
        yield Header()
        what = f"{self.reason}: {REASONS.get(self.reason, '')}" if self.reason else "all reasons"
        yield Static(Text.assemble("Rejected rows of ", (self.report.source, "bold"), f" — {what} — "
                                   f"{len(self.rejections):,} rows; Enter shows one whole"), id="title")
        yield ExamplesTable(id="rows")
        yield Footer()

    def on_mount(self) -> None:
        rows = self.rejections
        columns = [
            TableColumn("where", 12, lambda i: rows[i].location),
            TableColumn("column", 12, lambda i: rows[i].column or ""),
            TableColumn("reason", 18, lambda i: rows[i].reason),
            TableColumn("detail", 200, lambda i: rows[i].detail),
        ]
        table = self.query_one(ExamplesTable)
        table.show(columns, np.arange(len(rows), dtype=np.int64))
        table.focus()

    @on(ExamplesTable.PairOpened)
    def _row_opened(self, event: ExamplesTable.PairOpened) -> None:
        event.stop()
        self.app.push_screen(RejectedRowScreen(self.report.source, self.rejections[event.index]))


class RejectedRowScreen(ModalScreen):
    """One rejection: the whole message and the raw line it came from."""

    BINDINGS = [Binding("escape,q,enter", "app.pop_screen", "Close")]

    def __init__(self, source: str, rejection: Rejection) -> None:
        super().__init__()
        self.source = source
        self.rejection = rejection

    def compose(self) -> ComposeResult:
        from core.data.raw_rows import raw_line

        rejection = self.rejection
        raw = raw_line(self.source, rejection.location)
        body = Text.assemble(
            ("Rejected: ", "bold"), rejection.describe(self.source), "\n",
            ("Reason: ", "bold"), f"{rejection.reason}: {REASONS.get(rejection.reason, '')}", "\n\n",
            ("Raw line:\n", "bold"),
            raw if raw is not None else Text(f"(no line to show: {rejection.location} is not a line of a text file)",
                                              style="italic"),
            "\n\n", ("Esc, q or Enter closes", "dim"))
        with VerticalScroll(id="rejected-row"):
            yield Static(body)
