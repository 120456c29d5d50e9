"""What the workspace's dataset is: source, format, columns, counts, workspace state."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from core.loading import LoadReport
from core.workspace import Workspace


class DatasetSummary(Static):
    """A compact fact sheet about the loaded dataset."""

    def show(self, workspace: Workspace, report: LoadReport) -> None:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        style = "implicit prompt (split off)" if report.prompt_style == "implicit" else "explicit prompt"
        grid.add_row("dataset", Path(report.source).name or report.source)
        grid.add_row("format", f"{report.source_kind} · {report.format or '?'} · {style}")
        grid.add_row("columns", "  ".join(f"{role}={column}" for role, column in report.columns.items()))
        if report.extra_columns:
            grid.add_row("kept", ", ".join(report.extra_columns))
        counts = Text()
        counts.append(f"{report.loaded:,}", style="bold green")
        counts.append(f" of {report.read:,} loaded")
        grid.add_row("rows", counts)
        grid.add_row("workspace", workspace.root.name)
        score_files = sorted(p.stem for p in workspace.scores_dir.glob("*.parquet"))
        grid.add_row("scores", ", ".join(score_files) if score_files else "none yet")
        for warning in report.warnings:
            grid.add_row(Text("warning", style="yellow"), warning)
        self.update(grid)
