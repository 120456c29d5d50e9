"""Rejected rows counted by reason; Enter opens the rows of one reason."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.message import Message
from textual.widgets import DataTable

from core.data.loading import REASONS, LoadReport


class RejectionSummary(DataTable):
    """One line per rejection reason: count and first locations."""

    @dataclass
    class ReasonChosen(Message):
        """The user asked to see every row rejected for `reason` (None: all reasons)."""

        reason: str | None

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("reason", "rows", "first at")

    def show(self, report: LoadReport) -> None:
        self.clear()
        firsts = report.first_locations()
        for reason, count in sorted(report.rejected.items(), key=lambda item: -item[1]):
            self.add_row(reason, f"{count:,}", ", ".join(firsts.get(reason, [])), key=reason)
        self.border_title = f"Rejected rows: {report.rejected_total:,}"
        self.tooltip = "\n".join(f"{reason}: {REASONS.get(reason, '')}" for reason in report.rejected)

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.ReasonChosen(event.row_key.value))
