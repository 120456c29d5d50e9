"""Every rejected row, with where it is and why, optionally for one reason."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from core.loading import REASONS, LoadReport


class RejectionsScreen(Screen):
    CSS_PATH = Path(__file__).with_name("rejections.tcss")
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]

    def __init__(self, report: LoadReport, reason: str | None) -> None:
        super().__init__()
        self.report = report
        self.reason = reason

    def compose(self) -> ComposeResult:
        yield Header()
        what = f"{self.reason}: {REASONS.get(self.reason, '')}" if self.reason else "all reasons"
        yield Static(Text.assemble("Rejected rows of ", (self.report.source, "bold"), f" — {what}"), id="title")
        yield DataTable(id="rows", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("where", "column", "reason", "detail")
        for rejection in self.report.rejections:
            if self.reason is None or rejection.reason == self.reason:
                # Column names and details come from the data: Text, so "[...]" is shown, not read as markup.
                table.add_row(rejection.location, Text(rejection.column or ""), rejection.reason,
                              Text(rejection.detail))
        table.focus()
