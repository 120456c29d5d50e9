"""The main screen: the Dataset tab (what was loaded, what was rejected and why, a
preview), the Curate tab (live selection tuning, plots, examples, annotation), the Score
and Run tabs, and the keys that start and stop work from any tab.

The Score and Run panes are mounted the first time their tab is shown or their work is
asked for from another tab (S, E, T): composing and styling their fields is most of what
a start costs besides the Curate tab, whatever the data's size, and many sessions never
open them. Until then the screen keeps the panes as plain objects that hold what they
are told (the dataset's size, the export plan) and draw it when mounted.

Keys and fields: a text field takes every printable key while it has focus (a digit
typed into the budget is a digit). The screen's one-letter keys (1-4, S, E, T, X, R, b,
?, q) therefore work when no field has focus; Esc leaves a field, and ctrl+p / ctrl+q
work from anywhere. A field never selects its whole text on focus, so the first key
after focus does not replace what was there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import AwaitMount, Widget
from textual.widgets import (
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Static,
    TabbedContent,
    TabPane,
)
from textual.widgets.input import Selection as TextSelection
from textual.worker import Worker, WorkerState

from core.models.trust import ModelTrust
from core.store.workspace import Workspace
from dmtui.messages import DatasetLoaded, DemoModelsReady, MarginsResolved, WorkProgress
from dmtui.screens.rejections import RejectionsScreen
from dmtui.widgets.column_mapping import ColumnMapping
from dmtui.widgets.curation_pane import CurationPane
from dmtui.widgets.dataset_summary import DatasetSummary
from dmtui.widgets.examples_table import ExamplesTable
from dmtui.widgets.pairs_preview import PairsPreview
from dmtui.widgets.rejection_summary import RejectionSummary
from dmtui.widgets.run_pane import DEMO_TRAIN_ARGS, DropFlaggedChanged, ExportRequested, RunPane
from dmtui.widgets.score_pane import ScorePane, ScoringEnded
from dmtui.workers import WorkControl, describe_failure

THREAD_WORK = {"load": "loading the dataset", "demo-models": "building the demo models", "export": "exporting"}
"""The screen's cancellable thread workers, by group, in words."""


FOOTER_FIRST = ("quit", "help", "score", "export", "train", "stop_work")
"""Actions the footer shows before any other, in this order."""

TAB_SETTINGS_KEY = "tab"
"""settings.json key of the tab the workspace was last left on (opened there next time)."""
REMEMBERED_TABS = ("dataset", "curate", "score", "run")


class DatasetScreen(Screen):
    CSS_PATH = Path(__file__).with_name("dataset.tcss")
    BINDINGS = [
        # The tab titles show 1-4; the footer keeps its room for the keys that start work.
        Binding("1", "tab('dataset')", "Dataset", show=False),
        Binding("2", "tab('curate')", "Curate", show=False),
        Binding("3", "tab('score')", "Score tab", show=False),
        Binding("4", "tab('run')", "Run tab", show=False),
        Binding("S", "score", "Score", key_display="S"),
        Binding("E", "export", "Export", key_display="E"),
        Binding("T", "train", "Train", key_display="T"),
        Binding("X", "stop_work", "Stop", key_display="X"),
        Binding("R", "runs", "Runs", key_display="R", show=False),
        Binding("b", "show_rejections", "Bad rows", show=False),
        Binding("escape", "leave_field", "Leave field", show=False),
    ]

    def __init__(self, workspace: Workspace, build_demo_models: bool = False,
                 margin_specs: list[str] | None = None, model_trust: ModelTrust = ModelTrust()) -> None:
        super().__init__()
        self.workspace = workspace
        self.build_demo_models = build_demo_models
        self.margin_specs = margin_specs or []
        self._tab_saved: str | None = None
        self._tab_restored = False
        """Tabs are remembered only once the stored one was read (not the first tab shown)."""
        self.model_trust = model_trust
        self.work = WorkControl(self)
        self.score_pane = ScorePane(workspace.root, self._score_defaults(), model_trust.flags(), id="score-pane")
        self.run_pane = RunPane(workspace.root, self._default_policy(), model_trust.flags(),
                                default_args=DEMO_TRAIN_ARGS if build_demo_models else "", id="run-pane")
        self._lazy_panes: dict[str, Widget] = {"score": self.score_pane, "run": self.run_pane}
        """The tabs whose pane is mounted on first need (see the module's docstring)."""
        self._pane_mounts: dict[str, AwaitMount] = {}
        self._margins_waiting: MarginsResolved | None = None
        """Margins resolved while a pair view was open, shown when it is closed."""

    def compose(self) -> ComposeResult:
        yield Header()
        warning = self.model_trust.warning()
        if warning:  # on every tab: the runs this app starts may execute a model's own code
            yield Label(warning, id="trust-warning", markup=False)
        with Vertical(id="loading"):
            yield Label("Loading the dataset…", id="loading-label")
            yield ProgressBar(id="loading-bar", show_eta=False)
        with TabbedContent(id="tabs"):
            with TabPane("1 Dataset", id="dataset"):
                with Horizontal(id="top"):
                    yield DatasetSummary(id="summary")
                    yield RejectionSummary(id="rejections")
                yield PairsPreview(id="pairs")
            with TabPane("2 Curate", id="curate"):
                yield Static("Loading margins…", id="curate-placeholder")
            yield TabPane("3 Score", id="score")
            yield TabPane("4 Run", id="run")
        yield Label("", id="models-status")
        yield Footer()

    @property
    def active_bindings(self) -> dict:
        """The footer lists these in order and cuts from the right on a narrow terminal: the
        global keys (quit, help, start and stop work) go first, the focused widget's after."""
        bindings = super().active_bindings
        first = {key: active for key, active in bindings.items() if active.binding.action in FOOTER_FIRST}
        return {**dict(sorted(first.items(), key=lambda item: FOOTER_FIRST.index(item[1].binding.action))),
                **{key: active for key, active in bindings.items() if key not in first}}

    def on_mount(self) -> None:
        # A workspace made for this start may still change its load options (column mapping).
        self.may_remap = self.workspace.created_now
        self._claim_workspace()
        tabs = self.query_one("#tabs", TabbedContent)
        self.watch(tabs, "active", self._mount_pane, init=False)  # however the tab is shown: key, mouse, restore
        tabs.display = False
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
        if event.group == "demo-models":
            status = self.query_one("#models-status", Label)
            status.display = True
            step = event.progress
            total = f"/{step.total:,}" if step.total else ""
            status.update(f"Building the demo models (X stops): {step.stage} {step.done:,}{total} {step.unit}")
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
        if not (report.loaded and self._restore_tab()):  # focus elsewhere would switch the tab back
            self.query_one(PairsPreview).focus()
        self.score_pane.set_pair_count(report.loaded)
        if report.loaded == 0:
            mostly_missing = report.rejected.get("missing_column", 0) * 2 >= report.read > 0
            if mostly_missing and self._offer_mapping_for(report.file_columns, report.suggested_mapping()):
                self.query_one("#loading-label", Label).update(Text.assemble(
                    ("No usable pairs", "bold"), "\n", report.nothing_usable_hint()))
                self.query_one("#loading-bar").display = False
                return
            discarded = "; no workspace was kept" if not self.workspace.root.exists() else ""
            self.notify(f"No usable pairs: {report.nothing_usable_hint()}{discarded}", severity="error", timeout=15)
            self.query_one("#curate-placeholder", Static).update(
                Text(f"No usable pairs: {report.nothing_usable_hint()}{discarded}"))
            return
        self.resolve_margins(event.dataset)

    def _restore_tab(self) -> bool:
        """Open on the tab the workspace was last left on (settings key "tab"); whether
        that is another tab than the Dataset tab."""
        stored = self.workspace.read_settings().get(TAB_SETTINGS_KEY)
        self._tab_saved, self._tab_restored = stored, True
        if stored not in REMEMBERED_TABS or stored == "dataset":
            return False
        self.query_one("#tabs", TabbedContent).active = stored
        return True

    @work(thread=True, exit_on_error=False, group="tab-settings")
    def _remember_tab(self, tab: str) -> None:
        """A read-only window remembers nothing (its selection controls say so once); a
        failed write is said by `_worker_state`."""
        if not self.workspace.write_refusal():
            self.workspace.update_settings(TAB_SETTINGS_KEY, tab)

    @work(thread=True, exclusive=True, exit_on_error=False, group="margins")
    def resolve_margins(self, dataset) -> None:
        """Margins from `--margin` columns and the workspace's newest score table per source."""
        from core.curation.session import margin_specs_for
        from core.store.margin_sources import MarginSpec, resolve_margins

        specs = margin_specs_for(self.workspace, [MarginSpec.parse(text) for text in self.margin_specs])
        self.post_message(MarginsResolved(dataset, resolve_margins(dataset, specs, self.workspace)))

    @on(MarginsResolved)
    async def _margins_resolved(self, event: MarginsResolved) -> None:
        margins = event.resolved.margins if event.resolved is not None else {}
        total = event.dataset.pairs.num_rows
        self.query_one(DatasetSummary).set_scores(
            {name: (int(np.isfinite(values).sum()), total) for name, values in margins.items()})
        from dmtui.screens.pair_detail import PairDetailScreen

        if any(isinstance(screen, PairDetailScreen) for screen in self.app.screen_stack):
            # An open pair view writes through the Curate pane's store and masks: the pane is
            # rebuilt when the view is closed, from the store that then holds its changes.
            self._margins_waiting = event
            return
        await self._show_margins(event)

    @on(events.ScreenResume)
    async def _margins_waited(self) -> None:
        if (event := self._margins_waiting) is not None:
            self._margins_waiting = None
            await self._show_margins(event)

    async def _show_margins(self, event: MarginsResolved) -> None:
        """The Curate pane for these margins, in place of the one shown."""
        # The pane explains missing margins itself (Random needs none); one rebuilt after scoring
        # replaces the old one, whose removal must be over before the new one takes its id.
        await self.query("#curate-placeholder").remove()
        await self.query(CurationPane).remove()
        await self.query_one("#curate", TabPane).mount(CurationPane(self.workspace, event.dataset, event.resolved,
                                                                    id="curation"))
        if self.query_one("#tabs", TabbedContent).active == "curate":  # opened on Curate: keys go to the table
            self.query_one(ExamplesTable).focus()

    def _score_defaults(self) -> dict[str, str]:
        """The demo world's models when the app runs on it, and its seed DPO settings (`dmtui score --demo`)."""
        if not self.build_demo_models:
            return {}
        from core.demo.models import DEMO_SCORING, DemoModelsConfig, demo_models_dir

        root = demo_models_dir(DemoModelsConfig())
        return {"reward_model": str(root / "reward"), "reference_model": str(root / "policy"),
                "seed_lr": f"{DEMO_SCORING['seed_lr']:g}", "seed_pairs": str(DEMO_SCORING["seed_pairs"]), "demo": "yes"}

    @on(ScoringEnded)
    def _scoring_ended(self, event: ScoringEnded) -> None:
        self.notify(event.summary, title="Scoring finished" if event.ok else "Scoring stopped",
                    severity="information" if event.ok else "warning", markup=False, timeout=10)
        if self.app.dataset is not None:
            self.resolve_margins(self.app.dataset)  # finished chunks count even when scoring stopped early

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
            self.run_pane.export_refused(problem)

    @on(CurationPane.ExportFinished)
    def _exported(self, event: CurationPane.ExportFinished) -> None:
        self.run_pane.export_finished(event.out, event.manifest)

    @on(CurationPane.StateChanged)
    def _curation_state(self, event: CurationPane.StateChanged) -> None:
        self.run_pane.show_plan(event.plan, event.problem, event.drop_flagged)

    @on(DropFlaggedChanged)
    def _drop_flagged(self, event: DropFlaggedChanged) -> None:
        for pane in self.query(CurationPane):
            pane.set_drop_flagged(event.flags)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Put the keyboard where the tab's work is (a tab chosen with the mouse), and remember
        the tab for the next start. No focus moves before the loaded dataset is shown, nor for
        a tab no longer shown: a focus in another tab switches back to it."""
        if self._tab_restored and event.pane.id in REMEMBERED_TABS and event.pane.id != self._tab_saved:
            self._tab_saved = event.pane.id
            self._remember_tab(event.pane.id)
        shown = self._tab_restored and self.query_one("#tabs", TabbedContent).active == event.pane.id
        if shown and (home := self._tab_home(event.pane.id)) is not None:
            self.set_focus(home)

    def _mount_pane(self, tab: str) -> None:
        """Mount the Score or Run pane when its tab is first shown (nothing for the other tabs)."""
        self._pane_ready(tab)

    def _pane_ready(self, tab: str) -> AwaitMount | None:
        """The mount of `tab`'s pane, started the first time it is asked for; awaiting it
        (again) waits until the pane's fields exist. None for a tab composed at start."""
        pane = self._lazy_panes.get(tab)
        if pane is None:
            return None
        if tab not in self._pane_mounts:
            self._pane_mounts[tab] = self.query_one(f"#{tab}", TabPane).mount(pane)
        return self._pane_mounts[tab]

    async def _mounted(self, tab: str) -> None:
        """Wait until `tab`'s pane is mounted (a key that works from any tab: S, E, T)."""
        mount = self._pane_ready(tab)
        if mount is not None:
            await mount

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
        """1-4; the focus moves at once (after the switch: a focus in another tab switches back),
        so the next key of a burst already goes to the new tab's table."""
        self.query_one("#tabs", TabbedContent).active = tab
        if (home := self._tab_home(tab)) is not None:
            self.set_focus(home)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        message, hint, cancelled = describe_failure(event.worker.error)
        if event.worker.group == "load":
            self.query_one("#loading-label", Label).update(Text.assemble(
                ("Could not load the dataset", "bold"), "\n", message, ("\n" + hint, "italic") if hint else ""))
            self.query_one("#loading-bar").display = False
            self._offer_mapping(event.worker.error)
        if event.worker.group == "demo-models":
            self.query_one("#models-status").display = False
        if event.worker.group == "margins" and self.query("#curate-placeholder"):
            self.query_one("#curate-placeholder", Static).update(
                Text(f"Could not read the margins: {message}" + (f"\n{hint}" if hint else "")))
        self.notify(message + (f"\n{hint}" if hint else ""), severity="warning" if cancelled else "error", timeout=15,
                    markup=False)

    # Starting and stopping work ----------------------------------------------------
    async def action_score(self) -> None:
        """S: score with the Score tab's settings, from any tab."""
        if self.app.dataset is None:
            self.notify("The dataset is still loading", severity="warning")
            return
        await self._mounted("score")
        if self.score_pane.start():
            self.notify("Scoring started (3 shows progress, X stops)", title="Score")

    async def action_export(self) -> None:
        """E: export the current selection, as the Run tab's Export button does."""
        from textual.widgets import Button

        await self._mounted("run")
        self.run_pane.query_one("#export", Button).press()

    async def action_train(self) -> None:
        """T: train on the latest export, after a confirmation showing what will run."""
        from dmtui.screens.confirm import ConfirmScreen

        await self._mounted("run")
        pane = self.run_pane
        if (plan := pane.ready_plan()) is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                pane.start_training(plan)
                self.action_tab("run")

        self.app.push_screen(ConfirmScreen("Start training?", plan.describe(), yes="train", no="not now"), answered)

    def running_work(self) -> list[str]:
        """What is running now, in words (the quit and stop questions name it). A pane not
        mounted yet runs nothing: its work starts from its fields."""
        work = []
        if self.score_pane.running:
            work.append("scoring (stops at the next chunk; finished chunks are kept)")
        if self.run_pane.running:
            work.append("training (stops at the next step with a checkpoint)")
        return work + [THREAD_WORK[group] for group in self._running_thread_work()]

    def _running_thread_work(self) -> list[str]:
        return [worker.group for worker in self.workers if worker.is_running and worker.group in THREAD_WORK]

    def action_stop_work(self) -> None:
        """X: stop what runs; a training run only after a yes (it may have run for hours)."""
        from dmtui.screens.confirm import ConfirmScreen

        stopped = bool(self._running_thread_work())
        self.work.cancel_all()
        scoring = self.score_pane
        if scoring.running:
            scoring.stop()
            stopped = True
        training = self.run_pane
        if training.running:
            def answered(yes: bool | None) -> None:
                if yes:
                    training.stop_training()

            self.app.push_screen(ConfirmScreen("Stop training?", "The run stops at the next step and keeps a "
                                               "checkpoint; `dmtui train --resume` continues it.",
                                               yes="stop training", no="keep training"), answered)
            return
        self.notify("Stopping…" if stopped else "Nothing is running")

    async def stop_all_work(self) -> None:
        """Stop everything and wait until it has (quitting): children get SIGTERM and are awaited."""
        self.work.cancel_all()
        scoring, training = self.score_pane, self.run_pane
        scoring.stop()
        training.stop_training()
        await scoring.wait()
        await training.wait()
        for worker in list(self.workers):
            if worker.is_running and worker.group in THREAD_WORK:
                await worker.wait()

    def kill_children(self) -> None:
        """SIGKILL the scoring and training children (quitting, when SIGTERM was not enough)."""
        for pane in (self.score_pane, self.run_pane):
            if pane.job is not None:
                pane.job.kill()

    def action_runs(self) -> None:
        from dmtui.screens.runs import RunsScreen

        self.app.push_screen(RunsScreen(self.workspace))

    # Focus -------------------------------------------------------------------------
    def action_leave_field(self) -> None:
        """Esc: out of a field, onto the tab's table (or nothing), where the one-letter keys work."""
        self.set_focus(self._tab_home(self.query_one("#tabs", TabbedContent).active))

    def _tab_home(self, tab: str) -> Widget | None:
        """The table where a tab's one-letter keys work (none on Score and Run)."""
        home = {"dataset": PairsPreview, "curate": ExamplesTable}.get(tab)
        targets = self.query(home) if home is not None else []
        return targets.first() if targets else None

    @on(events.DescendantFocus)
    def _no_select_all(self, event: events.DescendantFocus) -> None:
        """A focused field keeps its text: the first key adds to it rather than replacing all of it."""
        widget = event.widget
        if isinstance(widget, Input):
            widget.select_on_focus = False
            if widget.selection.start != widget.selection.end:
                widget.selection = TextSelection.cursor(len(widget.value))

    @on(PairsPreview.RowSelected, "#pairs")
    def _preview_pair_opened(self, event: PairsPreview.RowSelected) -> None:
        """Enter on the Dataset tab's preview: the pair view, walking the preview's rows."""
        event.stop()
        dataset = self.app.dataset
        if dataset is None:
            return
        from core.store.annotations import AnnotationStore
        from dmtui.screens.pair_detail import PairDetailScreen

        rows = np.arange(self.query_one(PairsPreview).row_count, dtype=np.int64)
        panes = self.query(CurationPane)
        if panes:  # share the Curate tab's store: margins and selection show, and Curate follows annotations
            pane = panes.first()
            screen = PairDetailScreen(dataset, pane.margins, pane.selection, pane.store, pane.annotations, rows,
                                      event.cursor_row, "dataset preview")
            self.app.push_screen(screen, lambda _: pane.reselect())
            return
        store = AnnotationStore(self.workspace.annotations_path, refusal=self.workspace.write_refusal)
        masks = store.masks(dataset.pairs["pair_id"].combine_chunks())
        self.app.push_screen(PairDetailScreen(dataset, {}, None, store, masks, rows, event.cursor_row,
                                              "dataset preview"), lambda _: store.close())

    def _claim_workspace(self) -> None:
        """One writer per workspace: claim it, or (held by another live window) ask whether to
        take it over or open it read-only. `dmtui open --read-only / --take-over` decided already."""
        from core.store.workspace import WorkspaceLocked
        from dmtui.screens.confirm import ConfirmScreen

        if self.workspace.read_only:
            self.notify(f"Read-only: {self.workspace.read_only}", title="Workspace", markup=False)
            return
        try:
            self.workspace.acquire_lock()
        except WorkspaceLocked as locked:
            holder = locked.holder
            self.workspace.set_read_only(f"{holder.describe()} holds this workspace")  # until answered

            def answered(take_over: bool | None) -> None:
                if take_over:
                    self.workspace.acquire_lock(take_over=True)
                    self.notify("This window writes the workspace now; the other one turns read-only",
                                title="Workspace taken over")
                else:
                    self.notify("Read-only: annotations and settings are not saved here", title="Workspace")
                for pane in self.query(CurationPane):
                    pane.show_stats()

            self.app.push_screen(ConfirmScreen(
                "This workspace is open in another dmtui",
                f"{holder.describe()} writes it. Take it over (that window turns read-only at its next "
                "write), or open it read-only here (annotations and settings are not saved)?",
                yes="take over", no="open read-only"), answered)

    def on_unmount(self) -> None:
        self.workspace.release_lock()

    def _offer_mapping(self, error: BaseException | None) -> None:
        from core.data.shapes import MissingColumnsError

        if isinstance(error, MissingColumnsError):
            self._offer_mapping_for(error.found, error.suggestion)

    def _offer_mapping_for(self, found: list[str], suggestion: dict[str, str]) -> bool:
        """For a file whose column names are not the usual ones, offer to map them (on a
        workspace made for this start: an existing one keeps the load options it was made
        with). True when offered."""
        if not self.may_remap or not found or self.query(ColumnMapping):
            return False
        self.query_one("#loading").display = True
        self.query_one("#tabs").display = False
        self.query_one("#loading", Vertical).mount(ColumnMapping(
            found, suggestion, f"Which columns hold the pair? The file has: {', '.join(found)}", id="column-mapping"))
        return True

    @on(ColumnMapping.Chosen)
    async def _mapping_chosen(self, event: ColumnMapping.Chosen) -> None:
        """Make the workspace again with the chosen columns (the failed load removed it) and load."""
        from dataclasses import replace

        from core.store.workspace import Workspace

        config = replace(self.workspace.load_config, prompt_col=event.mapping.get("prompt"),
                         chosen_col=event.mapping["chosen"], rejected_col=event.mapping["rejected"])
        self.workspace = Workspace.create(self.workspace.root, self.workspace.dataset.source, config)
        self.app.workspace = self.workspace
        self._claim_workspace()
        await self.query("#column-mapping").remove()
        self.query_one("#loading-label", Label).update("Loading the dataset…")
        self.query_one("#loading-bar").display = True
        self.load()

    def action_show_rejections(self) -> None:
        self._open_rejections(None)

    @on(RejectionSummary.ReasonChosen)
    def _reason_chosen(self, event: RejectionSummary.ReasonChosen) -> None:
        self._open_rejections(event.reason)

    def _open_rejections(self, reason: str | None) -> None:
        if self.app.dataset is None:
            return
        self.app.push_screen(RejectionsScreen(self.app.dataset.report, reason))
