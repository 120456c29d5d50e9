"""What the workspace's dataset is: source, format, columns, counts, workspace state."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.data.loading import LoadReport
from core.store.workspace import Workspace


class DatasetSummary(Static):
    """A compact fact sheet about the loaded dataset."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace: Workspace | None = None
        self.report: LoadReport | None = None
        self.scores: dict[str, tuple[int, int]] = {}

    def show(self, workspace: Workspace, report: LoadReport) -> None:
        self.workspace, self.report = workspace, report
        self._render_facts()

    def set_scores(self, scores: dict[str, tuple[int, int]]) -> None:
        """Per margin source: (pairs with a score, pairs in the dataset)."""
        self.scores = scores
        self._render_facts()

    def _render_facts(self) -> None:
        workspace, report = self.workspace, self.report
        if workspace is None or report is None:
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        style = "implicit prompt (split off)" if report.prompt_style == "implicit" else "explicit prompt"
        # Names from the user's files are Text: a Rich table would read "[...]" in a str as markup.
        grid.add_row("dataset", Text(Path(report.source).name or report.source))
        grid.add_row("format", f"{report.source_kind} · {report.format or '?'} · {style}")
        grid.add_row("columns", Text("  ".join(f"{role}={column}" for role, column in report.columns.items())))
        if report.extra_columns:
            grid.add_row("kept", Text(", ".join(report.extra_columns)))
        counts = Text()
        counts.append(f"{report.loaded:,}", style="bold green")
        counts.append(f" of {report.read:,} loaded")
        grid.add_row("rows", counts)
        grid.add_row("workspace", Text(workspace.root.name))
        if not self.scores:
            grid.add_row("scores", "none yet")
        for name, (scored, total) in self.scores.items():
            line = Text(f"{name}: {scored:,}/{total:,}")
            if scored < total:
                line.append(f"  {total - scored:,} without a score", style="yellow")
            grid.add_row("scores" if name == next(iter(self.scores)) else "", line)
        for warning in report.warnings:
            grid.add_row(Text("warning", style="yellow"), Text(warning))
        grid.add_row(Text("next", style="bold green"), self._next_step(report))
        self.update(grid)

    def _next_step(self, report: LoadReport) -> Text:
        """What to do now, by the workspace's state."""
        if report.loaded == 0:
            return Text("nothing loaded: see the rejected rows (b) and fix the file or its column names")
        if not self.scores:
            return Text("no scores yet: press 3 and then S to score, or reopen with --margin NAME=COLUMN "
                        "to use scores the data has")
        return Text("press 2 to curate: tune the selection, spot-check with B, then E exports and T trains")
