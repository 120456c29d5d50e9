"""The dataset screen: what was loaded, what was rejected and why, and a preview."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar
from textual.worker import Worker, WorkerState

from core.workspace import Workspace
from dmtui.messages import DatasetLoaded, WorkProgress
from dmtui.screens.rejections import RejectionsScreen
from dmtui.widgets.dataset_summary import DatasetSummary
from dmtui.widgets.pairs_preview import PairsPreview
from dmtui.widgets.rejection_summary import RejectionSummary
from dmtui.workers import WorkControl, describe_failure


class DatasetScreen(Screen):
    CSS_PATH = Path(__file__).with_name("dataset.tcss")
    BINDINGS = [
        Binding("b", "show_rejections", "Bad rows"),
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self.work = WorkControl(self)

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="loading"):
            yield Label("Loading the dataset…", id="loading-label")
            yield ProgressBar(id="loading-bar", show_eta=False)
        with Horizontal(id="top"):
            yield DatasetSummary(id="summary")
            yield RejectionSummary(id="rejections")
        yield PairsPreview(id="pairs")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#top").display = False
        self.query_one("#pairs").display = False
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load(self) -> None:
        progress, cancel = self.work.start("load")
        self.post_message(DatasetLoaded(self.workspace.load(progress=progress, cancel=cancel)))

    @on(WorkProgress)
    def _progress(self, event: WorkProgress) -> None:
        bar = self.query_one("#loading-bar", ProgressBar)
        bar.update(total=event.progress.total, progress=event.progress.done)
        self.query_one("#loading-label", Label).update(f"Loading the dataset… {event.progress.done:,} rows")

    @on(DatasetLoaded)
    def _loaded(self, event: DatasetLoaded) -> None:
        self.app.dataset = event.dataset
        report = event.dataset.report
        self.query_one("#loading").display = False
        self.query_one("#top").display = True
        self.query_one("#pairs").display = True
        self.query_one(DatasetSummary).show(self.workspace, report)
        self.query_one(RejectionSummary).show(report)
        self.query_one(PairsPreview).show(event.dataset.pairs)
        self.query_one(PairsPreview).focus()
        if report.loaded == 0:
            self.notify(f"No usable pairs: {report.nothing_usable_hint()}", severity="error", timeout=15)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        message, hint, cancelled = describe_failure(event.worker.error)
        if event.worker.group == "load":
            self.query_one("#loading-label", Label).update(
                f"[b]Could not load the dataset[/b]\n{message}" + (f"\n[i]{hint}[/i]" if hint else "")
            )
            self.query_one("#loading-bar").display = False
        self.notify(message + (f"\n{hint}" if hint else ""), severity="warning" if cancelled else "error", timeout=15)

    def action_cancel(self) -> None:
        if self.work.cancel_all():
            self.notify("Cancelling…")

    def action_show_rejections(self) -> None:
        self._open_rejections(None)

    @on(RejectionSummary.ReasonChosen)
    def _reason_chosen(self, event: RejectionSummary.ReasonChosen) -> None:
        self._open_rejections(event.reason)

    def _open_rejections(self, reason: str | None) -> None:
        if self.app.dataset is None:
            return
        self.app.push_screen(RejectionsScreen(self.app.dataset.report, reason))
