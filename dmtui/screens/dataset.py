"""The main screen: the Dataset tab (what was loaded, what was rejected and why, a
preview) and the Curate tab (live selection tuning, plots, examples, annotation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (
    Footer,
    Header,
    Label,
    ProgressBar,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import Worker, WorkerState

from core.model_trust import ModelTrust
from core.workspace import Workspace
from dmtui.messages import DatasetLoaded, DemoModelsReady, MarginsResolved, WorkProgress
from dmtui.screens.rejections import RejectionsScreen
from dmtui.widgets.curation_pane import CurationPane
from dmtui.widgets.dataset_summary import DatasetSummary
from dmtui.widgets.examples_table import ExamplesTable
from dmtui.widgets.pairs_preview import PairsPreview
from dmtui.widgets.rejection_summary import RejectionSummary
from dmtui.widgets.run_pane import DropFlaggedChanged, ExportRequested, RunPane
from dmtui.widgets.score_pane import ScorePane, ScoreRequested
from dmtui.workers import WorkControl, describe_failure


class DatasetScreen(Screen):
    CSS_PATH = Path(__file__).with_name("dataset.tcss")
    BINDINGS = [
        Binding("1", "tab('dataset')", "Dataset"),
        Binding("2", "tab('curate')", "Curate"),
        Binding("3", "tab('score')", "Score"),
        Binding("4", "tab('run')", "Run"),
        Binding("b", "show_rejections", "Bad rows"),
        Binding("escape", "cancel", "Cancel", show=False),
    ]

    def __init__(self, workspace: Workspace, build_demo_models: bool = False,
                 margin_specs: list[str] | None = None, model_trust: ModelTrust = ModelTrust()) -> None:
        super().__init__()
        self.workspace = workspace
        self.build_demo_models = build_demo_models
        self.margin_specs = margin_specs or []
        self.model_trust = model_trust
        self.work = WorkControl(self)

    def compose(self) -> ComposeResult:
        yield Header()
        warning = self.model_trust.warning()
        if warning:  # on every tab: the runs this app starts may execute a model's own code
            yield Label(warning, id="trust-warning", markup=False)
        with Vertical(id="loading"):
            yield Label("Loading the dataset…", id="loading-label")
            yield ProgressBar(id="loading-bar", show_eta=False)
        with TabbedContent(id="tabs"):
            with TabPane("Dataset", id="dataset"):
                with Horizontal(id="top"):
                    yield DatasetSummary(id="summary")
                    yield RejectionSummary(id="rejections")
                yield PairsPreview(id="pairs")
            with TabPane("Curate", id="curate"):
                yield Static("Loading margins…", id="curate-placeholder")
            with TabPane("Score", id="score"):
                yield ScorePane(self._score_defaults(), id="score-pane")
            with TabPane("Run", id="run"):
                yield RunPane(self.workspace.root, self._default_policy(), self.model_trust.flags(), id="run-pane")
        yield Label("", id="models-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tabs").display = False
        self.query_one("#models-status").display = False
        self.load()
        if self.build_demo_models:
            self.ensure_demo_models()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load(self) -> None:
        progress, cancel = self.work.start("load")
        # A workspace made for a file that loads nothing is removed again.
        self.post_message(DatasetLoaded(self.workspace.load_or_discard(progress=progress, cancel=cancel)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="demo-models")
    def ensure_demo_models(self) -> None:
        """Build the demo world's tiny models in the background if they are missing."""
        from core.demo.models import (
            DemoModelsConfig,
            demo_models_dir,
            ensure_demo_models,
        )

        config = DemoModelsConfig()
        if demo_models_dir(config).exists():
            return
        progress, cancel = self.work.start("demo-models")
        models = ensure_demo_models(config, progress=progress, cancel=cancel)
        self.post_message(DemoModelsReady(str(models.root)))

    @on(DemoModelsReady)
    def _demo_models_ready(self, event: DemoModelsReady) -> None:
        self.query_one("#models-status").display = False
        self.notify(f"Demo models ready in {event.root}", title="Demo models", markup=False)

    @on(WorkProgress)
    def _progress(self, event: WorkProgress) -> None:
        if event.group == "score":
            self.query_one(ScorePane).show_progress(event.progress)
            return
        if event.group == "demo-models":
            status = self.query_one("#models-status", Label)
            status.display = True
            step = event.progress
            total = f"/{step.total:,}" if step.total else ""
            status.update(f"Building the demo models (Esc cancels): {step.stage} {step.done:,}{total} {step.unit}")
            return
        bar = self.query_one("#loading-bar", ProgressBar)
        bar.update(total=event.progress.total, progress=event.progress.done)
        self.query_one("#loading-label", Label).update(f"Loading the dataset… {event.progress.done:,} rows")

    @on(DatasetLoaded)
    def _loaded(self, event: DatasetLoaded) -> None:
        self.app.dataset = event.dataset
        report = event.dataset.report
        self.query_one("#loading").display = False
        self.query_one("#tabs").display = True
        self.query_one(DatasetSummary).show(self.workspace, report)
        self.query_one(RejectionSummary).show(report)
        self.query_one(PairsPreview).show(event.dataset.pairs)
        self.query_one(PairsPreview).focus()
        if report.loaded == 0:
            discarded = "; no workspace was kept" if not self.workspace.root.exists() else ""
            self.notify(f"No usable pairs: {report.nothing_usable_hint()}{discarded}", severity="error", timeout=15)
            self.query_one("#curate-placeholder", Static).update(
                Text(f"No usable pairs: {report.nothing_usable_hint()}{discarded}"))
            return
        self.resolve_margins(event.dataset)

    @work(thread=True, exclusive=True, exit_on_error=False, group="margins")
    def resolve_margins(self, dataset) -> None:
        """Margins from `--margin` columns and the workspace's newest score table per source."""
        from core.curation import margin_specs_for
        from core.margin_sources import MarginSpec, resolve_margins

        specs = margin_specs_for(self.workspace, [MarginSpec.parse(text) for text in self.margin_specs])
        self.post_message(MarginsResolved(dataset, resolve_margins(dataset, specs, self.workspace)))

    @on(MarginsResolved)
    async def _margins_resolved(self, event: MarginsResolved) -> None:
        margins = event.resolved.margins if event.resolved is not None else {}
        total = event.dataset.pairs.num_rows
        self.query_one(DatasetSummary).set_scores(
            {name: (int(np.isfinite(values).sum()), total) for name, values in margins.items()})
        # The pane explains missing margins itself (Random needs none); one rebuilt after scoring
        # replaces the old one, whose removal must be over before the new one takes its id.
        await self.query("#curate-placeholder").remove()
        await self.query(CurationPane).remove()
        self.query_one("#curate", TabPane).mount(CurationPane(self.workspace, event.dataset, event.resolved,
                                                              id="curation"))

    def _score_defaults(self) -> dict[str, str]:
        """The demo world's models when the app runs on it (with the demo's seed DPO rate)."""
        if not self.build_demo_models:
            return {}
        from core.demo.models import DemoModelsConfig, demo_models_dir

        root = demo_models_dir(DemoModelsConfig())
        return {"reward_model": str(root / "reward"), "reference_model": str(root / "policy"), "seed_lr": "1e-4"}

    @on(ScoreRequested)
    def _score_requested(self, event: ScoreRequested) -> None:
        if self.app.dataset is None:
            self.notify("The dataset is still loading", severity="warning")
            self.query_one(ScorePane).set_running(False)
            return
        self.score(self.app.dataset, event.settings)

    @work(thread=True, exclusive=True, exit_on_error=False, group="score")
    def score(self, dataset, settings: dict) -> None:
        from core.scoring import ScoringConfig, score

        progress, cancel = self.work.start("score")
        trust = self.model_trust
        config = ScoringConfig(**settings, trust_remote_code=trust.trust_remote_code, allow_pickle=trust.allow_pickle)
        report = score(dataset, self.workspace, config, progress=progress, cancel=cancel)
        parts = [f"{name}: {r.scored:,} scored, {r.reused:,} reused"
                 + (f", {len(r.token_identical_ids):,} token-identical" if r.token_identical_ids else "")
                 for name, r in report.sources.items()]
        self.app.call_from_thread(self._scored, "done: " + "; ".join(parts), dataset)

    def _scored(self, summary: str, dataset) -> None:
        self.query_one(ScorePane).finished(summary)
        self.notify(summary, title="Scoring finished")
        for pane in self.query(CurationPane):
            pane.remove()
        if not self.query("#curate-placeholder"):
            self.query_one("#curate", TabPane).mount(Static("Loading margins…", id="curate-placeholder"))
        self.resolve_margins(dataset)

    def _default_policy(self) -> str:
        """The demo pi_0 when the app runs on the demo world, else nothing to suggest."""
        if not self.build_demo_models:
            return ""
        from core.demo.models import DemoModelsConfig, demo_models_dir

        return str(demo_models_dir(DemoModelsConfig()) / "policy")

    @on(ExportRequested)
    def _export_requested(self, event: ExportRequested) -> None:
        panes = self.query(CurationPane)
        problem = panes.first().export(event.out, event.include_scores) if panes else "the Curate tab is not ready"
        if problem:
            self.query_one(RunPane).export_refused(problem)

    @on(CurationPane.ExportFinished)
    def _exported(self, event: CurationPane.ExportFinished) -> None:
        self.query_one(RunPane).export_finished(event.out, event.manifest)

    @on(CurationPane.StateChanged)
    def _curation_state(self, event: CurationPane.StateChanged) -> None:
        self.query_one(RunPane).show_plan(event.plan, event.problem, event.drop_flagged)

    @on(DropFlaggedChanged)
    def _drop_flagged(self, event: DropFlaggedChanged) -> None:
        for pane in self.query(CurationPane):
            pane.set_drop_flagged(event.flags)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Put the keyboard where the tab's work is (focusing earlier would switch tabs)."""
        if event.pane.id == "curate":
            tables = self.query(ExamplesTable)
            if tables:
                tables.first().focus()

    def action_curation(self, action: str) -> None:
        """Run a Curate-tab action from anywhere (the command palette)."""
        panes = self.query(CurationPane)
        if not panes:
            self.notify("The Curate tab needs margins first", severity="warning")
            return
        self.action_tab("curate")
        getattr(panes.first(), f"action_{action}")()

    def action_help(self) -> None:
        self.app.action_help()

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        message, hint, cancelled = describe_failure(event.worker.error)
        if event.worker.group == "load":
            self.query_one("#loading-label", Label).update(Text.assemble(
                ("Could not load the dataset", "bold"), "\n", message, ("\n" + hint, "italic") if hint else ""))
            self.query_one("#loading-bar").display = False
        if event.worker.group == "demo-models":
            self.query_one("#models-status").display = False
        if event.worker.group == "margins" and self.query("#curate-placeholder"):
            self.query_one("#curate-placeholder", Static).update(
                Text(f"Could not read the margins: {message}" + (f"\n{hint}" if hint else "")))
        if event.worker.group == "score":
            self.query_one(ScorePane).finished(("cancelled: " if cancelled else "failed: ") + message)
        self.notify(message + (f"\n{hint}" if hint else ""), severity="warning" if cancelled else "error", timeout=15,
                    markup=False)

    def action_cancel(self) -> None:
        if self.work.cancel_all():
            self.notify("Cancelling…")
        self.query_one(RunPane).action_stop_training()

    def action_show_rejections(self) -> None:
        self._open_rejections(None)

    @on(RejectionSummary.ReasonChosen)
    def _reason_chosen(self, event: RejectionSummary.ReasonChosen) -> None:
        self._open_rejections(event.reason)

    def _open_rejections(self, reason: str | None) -> None:
        if self.app.dataset is None:
            return
        self.app.push_screen(RejectionsScreen(self.app.dataset.report, reason))
