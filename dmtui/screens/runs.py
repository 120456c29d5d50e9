"""Every training run of the workspace side by side: a table of what each trained on and
where it ended, and the four curves overlaid (one colour per run), as `dmtui runs` prints.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from core.store.workspace import Workspace
from core.training.runs import CURVES, RunSummary, list_runs
from dmtui.widgets.training_curves import RUN_COLORS, TrainingCurves, number


def run_label(run: RunSummary) -> str:
    """The legend name of a run: its subset, then the folder to tell repeats apart."""
    return f"{run.subset.split(' (')[0]} · {run.name.removeprefix('run-')}"


class RunsScreen(Screen):
    CSS_PATH = Path(__file__).with_name("runs.tcss")
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back"), Binding("r", "reload", "Reload")]

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label("", id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row")
        yield TrainingCurves(id="runs-curves")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        runs = list_runs(self.workspace.runs_dir)
        table = self.query_one("#runs-table", DataTable)
        table.clear(columns=True)
        table.add_columns("", "run", "subset", "status", "steps", *(title for _, title in CURVES[:3]))
        for index, run in enumerate(runs):
            color = RUN_COLORS[index % len(RUN_COLORS)]
            steps = f"{run.steps}/{run.total_steps}" if run.steps is not None else "-"
            table.add_row(Text("━━", style=color.replace("orange", "dark_orange")), Text(run.name), Text(run.subset),
                          run.status, steps,
                          *(number(v) if (v := run.last(key)) is not None else "-" for key, _ in CURVES[:3]))
        self.query_one("#runs-title", Label).update(
            Text(f"{len(runs)} training run(s) in {self.workspace.runs_dir}" if runs else
                 f"No training runs in {self.workspace.runs_dir} yet: export (E), then train (T)"))
        self.query_one(TrainingCurves).show({run_label(run): {key: run.curve(key) for key, _ in CURVES}
                                             for run in runs})
        table.focus()
