"""The curation pane: tune a selection and see, live, what it keeps.

Left: the knobs (TuningPanel) and the counts. Right: margin histograms and the joint
scatter. Below: the examples table with a filter and a search. The pane holds no
curation logic of its own: a `core.curation.session.CurationSession` parses the choices, selects
and exports. Every change reruns the selection in a thread worker (exclusive, so a burst
of keystrokes only costs the last one) and the result is drawn when it arrives: the
event loop never waits. While a control is invalid the last valid selection stays on
screen, filter, sort and search keep working on it, and Export refuses, naming the
control. The choices are remembered per workspace, written at most every
`SETTINGS_DEBOUNCE_S` seconds, off the event loop.

The worker does everything that grows with the data, in the order the screen needs it:
the selection and the plots' bins and scatter sample (core.selection.plotdata), posted at once so
the counts, plots and the table's flags redraw; then the table's rows
(core.selection.views.ExamplesView, which keeps each full sort, so a budget edit re-sorts nothing);
then the overlap counts. A change of the filter, search or sort alone reuses the
selection on screen.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from core.curation.session import (
    MODE_LABELS,
    SETTINGS_KEY,
    CurationSession,
    ExportPlan,
    ParsedChoices,
    SelectionChoices,
    default_source,
)
from core.data.loading import LoadedDataset
from core.data.pairs import as_text
from core.errors import DmtuiError
from core.selection.plotdata import HistogramMemo, PlotData, selection_plots
from core.selection.selector import Overlap, Selection, SelectionParams
from core.selection.views import (
    ROW_FILTERS,
    VIEW_SETTINGS_KEY,
    ExamplesView,
    ViewChoice,
    displayed_score,
    format_kept_value,
    kept_column_names,
    kept_values,
    sort_steps,
)
from core.store.annotations import AnnotationStore
from core.store.margin_sources import ResolvedMargins
from core.store.workspace import Workspace
from dmtui.widgets.examples_table import ExamplesTable, TableColumn, format_number
from dmtui.widgets.margin_plots import MarginPlots
from dmtui.widgets.static_text import update_text
from dmtui.widgets.tuning_panel import TuningPanel
from dmtui.workers import describe_failure

SETTINGS_DEBOUNCE_S = 0.5
"""A burst of keystrokes writes settings.json once, this long after the last key."""

KEPT_TABLE_COLUMNS = 4
KEPT_CELL_WIDTH = 14

NO_MARGINS_TEXT = ("No margins yet: press 3, then S, to score the dataset, or open it with --margin NAME=COLUMN to use "
                   "scores the data already has. Random needs no margin.")


@dataclass
class SelectionReady(Message):
    selection: Selection | None
    plots: PlotData | None
    generation: int


@dataclass
class RowsReady(Message):
    rows: np.ndarray
    keep_cursor: bool
    """Keep the pair under the cursor (where it is when the rows arrive), else go to the top."""
    generation: int


@dataclass
class OverlapsReady(Message):
    overlaps: dict[str, Overlap]
    generation: int


class CurationPane(Vertical):
    BINDINGS = [
        Binding("v", "next_plot", "Plot"),
        Binding("o", "sort_next", "Sort"),
        Binding("O", "sort_reverse", "Reverse", show=False),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("B", "spot_check", "Spot-check BOT"),
        Binding("m", "edit_selection", "Mode & budget"),
        Binding("c", "toggle_kept_columns", "Your columns", show=False),
    ]

    @dataclass
    class StateChanged(Message):
        """What Export would write now, or why it cannot (for the Run tab)."""

        plan: ExportPlan | None
        problem: str | None
        drop_flagged: tuple[str, ...]

    @dataclass
    class ExportFinished(Message):
        out: str
        manifest: dict

    def __init__(self, workspace: Workspace, dataset: LoadedDataset, resolved: ResolvedMargins,
                 *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace = workspace
        self.dataset = dataset
        self.store = AnnotationStore(workspace.annotations_path, refusal=workspace.write_refusal)
        self.session = CurationSession(dataset, resolved, self.store.masks(dataset.pairs["pair_id"]),
                                       workspace=workspace)
        self.resolved = resolved
        self.margins = resolved.margins
        self.sources = self.session.sources
        self.pair_ids = self.session.pair_ids
        self.annotations = self.session.annotations
        self.choices = self.session.stored_choices()
        self.parsed: ParsedChoices = self.session.parse(self.choices)
        self.params: SelectionParams | None = self.parsed.params
        """The last valid parameters: what the selection on screen was made with."""
        self.selection: Selection | None = None
        self.overlaps: dict[str, Overlap] = {}
        self.filters = [*ROW_FILTERS,
                        *(f"{region}:{name}" for name in self.sources for region in ("top", "mid", "bot"))]
        self.view = ViewChoice.from_stored(workspace.read_settings().get(VIEW_SETTINGS_KEY), self.filters,
                                           [name for name, _ in sort_steps(self.sources)])
        self.examples = ExamplesView(dataset, self.session.select)
        self._histograms = HistogramMemo()
        self._view_lock = threading.Lock()
        self.kept_names = kept_column_names(dataset)
        self.show_kept = False
        self._kept_rows: dict[int, dict] = {}
        """The kept values of rows drawn lately (a JSON record is parsed once per row shown)."""
        self._spot_source: str | None = None
        self._walk_when_ready: str | None = None
        """A `B` walk waiting for the table's new rows (its title)."""
        # A thread worker cannot be interrupted: results of superseded runs are dropped.
        self._generation = 0
        self._save_timer: Timer | None = None
        self._settings_lock = threading.Lock()
        self._settings_written = 0
        self._settings_wanted = 0
        self._told_read_only = False
        self._saved = self.choices.to_json()
        """The choices settings.json holds (as far as this window knows): unchanged ones are not written."""

    # Layout ------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="tune-top"):
            with Vertical(id="tune-left"):
                yield TuningPanel(self.sources, self.choices, self.session.mode_requirements(), id="tuning")
                yield Static("", id="selection-stats")
            yield MarginPlots(id="plots")
        with Horizontal(id="filter-bar"):
            yield Select([(name, name) for name in self.filters], value=self.view.row_filter, allow_blank=False,
                         compact=True, id="row-filter")
            yield Input(placeholder="search text, pair_id or your own id (/)", compact=True, id="search")
        yield ExamplesTable(id="examples")

    def on_mount(self) -> None:
        self.query_one(ExamplesTable).border_title = "Examples"
        # The first selection runs when the TuningPanel posts its initial choices.

    def on_unmount(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
            self._save_timer = None
            self._write_settings(self._settings_wanted, self.choices.to_json())
        self.store.close()

    # Choices -------------------------------------------------------------------
    @on(TuningPanel.Changed)
    def _tuned(self, event: TuningPanel.Changed) -> None:
        self.choices = replace(event.choices, drop_flagged=self.choices.drop_flagged)
        self._apply_choices()

    def set_drop_flagged(self, flags: tuple[str, ...]) -> None:
        """The Run tab's choice of flags an export leaves out."""
        self.choices = replace(self.choices, drop_flagged=flags)
        self._apply_choices()

    def _apply_choices(self) -> None:
        self.parsed = self.session.parse(self.choices)
        self.query_one(TuningPanel).show_problems(self.parsed)
        self._schedule_save()
        if self.parsed.ok:
            self.params = self.parsed.params
            self.reselect()
        else:
            self.show_stats()
            self._post_state()

    def _schedule_save(self) -> None:
        if self.choices.to_json() == self._saved:
            return
        refusal = self.workspace.write_refusal()
        if refusal:  # a read-only window: the selection follows, the workspace keeps the holder's
            if not self._told_read_only:
                self._told_read_only = True
                self.notify(f"{refusal}: this window's selection is not saved", title="Read-only", markup=False)
            return
        self._settings_wanted += 1
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(SETTINGS_DEBOUNCE_S, self._save_now)

    def _save_now(self) -> None:
        self._save_timer = None
        self._saved = self.choices.to_json()
        self._save_settings(self._settings_wanted, self._saved)

    @work(thread=True, exit_on_error=False, group="settings")
    def _save_settings(self, sequence: int, choices: dict) -> None:
        try:
            self._write_settings(sequence, choices)
        except DmtuiError as error:  # the selection still follows; only remembering it failed
            self.app.call_from_thread(self.notify, f"{error.message}\n{error.hint or ''}", title="Settings not saved",
                                      severity="warning", markup=False)

    def _write_settings(self, sequence: int, choices: dict) -> None:
        """Write `choices` unless a later change was written already (workers may overtake)."""
        with self._settings_lock:
            if sequence <= self._settings_written:
                return
            self.workspace.update_settings(SETTINGS_KEY, choices)
            self._settings_written = sequence

    def export_problem(self) -> str | None:
        """Why Export (and Train) must not run now, naming the control; None when they may."""
        if not self.parsed.ok:
            return "; ".join(problem.describe() for problem in self.parsed.problems)
        if self.selection is None:
            return "the selection is still being computed"
        return None

    # Selection ---------------------------------------------------------------
    def reselect(self) -> None:
        """Recompute the selection, its plots and the table's rows in the background; the
        cursor stays on its pair."""
        self._refresh(keep_cursor=True, reuse_selection=False)

    def _reorder(self, keep_cursor: bool) -> None:
        """Recompute the table's rows for a new filter, search or sort."""
        self._refresh(keep_cursor, reuse_selection=True)

    def _refresh(self, keep_cursor: bool, reuse_selection: bool) -> None:
        self._generation += 1
        current = self.selection if reuse_selection else None
        self._refresh_worker(self.params, self.view, current, keep_cursor, self._generation)

    @work(thread=True, exclusive=True, exit_on_error=False, group="select")
    def _refresh_worker(self, params: SelectionParams | None, view: ViewChoice, current: Selection | None,
                        keep_cursor: bool, generation: int) -> None:
        worker = get_current_worker()
        fresh = current is None or params is None or current.params != params
        selection = current
        if fresh:
            selection = self.session.select(params) if params is not None and self.session.total else None
            plots = None if selection is None else selection_plots(
                self._effective_margins(), selection, displayed_score(selection), self._score_title(selection),
                memo=self._histograms)
            if worker.is_cancelled:
                return
            self.post_message(SelectionReady(selection, plots, generation))
        rows = self.examples.rows(view, selection, params, self.annotations, self._effective_margins())
        if worker.is_cancelled:
            return
        self.post_message(RowsReady(rows, keep_cursor, generation))
        if fresh and selection is not None:
            overlaps = self.session.top_overlaps(selection)
            if not worker.is_cancelled:
                self.post_message(OverlapsReady(overlaps, generation))

    def _effective_margins(self) -> dict[str, np.ndarray]:
        """The margins as the selection uses them: swapped pairs negated (cached by the session)."""
        return {source: self.session.effective_margin(source) for source in self.sources}

    @staticmethod
    def _score_title(selection: Selection) -> str:
        if selection.log_odds is not None:
            return f"{MODE_LABELS[selection.params.mode]}: fused log-odds"
        return f"selection score: {MODE_LABELS[selection.params.mode]}"

    def annotated(self):
        """The annotations the current selection honours, as an export records them."""
        return self.session.annotated()

    @on(SelectionReady)
    def _selection_ready(self, event: SelectionReady) -> None:
        if event.generation != self._generation:
            return
        self.selection = event.selection  # the overlap counts on screen stay until the new ones come
        clamped = event.selection is not None and event.selection.budget_exceeds_candidates
        self.query_one(TuningPanel).show_budget_note(
            f"{event.selection.requested:,} asked, {event.selection.candidates:,} candidates: took all "
            f"{event.selection.selected:,}" if clamped else None)
        self.query_one(MarginPlots).show(event.plots)
        self.show_stats()
        self.query_one(ExamplesTable).set_columns(self._columns())
        self._post_state()

    @on(RowsReady)
    def _rows_ready(self, event: RowsReady) -> None:
        if event.generation != self._generation:
            return
        table = self.query_one(ExamplesTable)
        table.show(table.columns, event.rows, keep_index=table.current_index if event.keep_cursor else None)
        view = self.view
        table.border_title = (f"Examples: {len(event.rows):,} shown ({view.row_filter}"
                              + (f", '{escape(view.query)}'" if view.query else "")  # typed: not markup
                              + f"), sorted by {view.sort} {'↓' if view.descending else '↑'}")
        if self._walk_when_ready is not None:
            title, self._walk_when_ready = self._walk_when_ready, None
            if len(event.rows):
                self._inspect(event.rows, 0, title)
            else:
                self.notify("The BOT region is empty: nothing to spot-check", severity="warning")

    @on(OverlapsReady)
    def _overlaps_ready(self, event: OverlapsReady) -> None:
        if event.generation == self._generation:
            self.overlaps = event.overlaps
            self.show_stats()

    def _post_state(self) -> None:
        plan = None
        if self.parsed.ok and self.selection is not None:
            plan = self.session.plan_export(self.selection, self.parsed.drop_flagged)
        self.post_message(self.StateChanged(plan, self.export_problem(), self.parsed.drop_flagged))

    def show_stats(self) -> None:
        update_text(self.query_one("#selection-stats", Static), self._stats_text())

    def _stats_text(self) -> str:
        lines: list[str] = []
        refusal = self.workspace.write_refusal()
        if refusal:
            lines.append(f"[yellow]read-only: {escape(refusal)}[/]")
        if not self.sources:
            lines.append(f"[yellow]{NO_MARGINS_TEXT}[/]")
        selection = self.selection
        if not self.parsed.ok:
            controls = ", ".join(problem.control for problem in self.parsed.problems)
            lines.append(f"[red]Not applied: fix {escape(controls)}.[/] "
                         + ("Showing the last valid selection; Export waits." if selection is not None
                            else "Export waits."))
        if selection is not None:
            lines.append(f"[b]{selection.selected:,}[/b] of {selection.total:,} selected "
                         f"({MODE_LABELS[selection.params.mode]})")
            lines.append(f"eligible {selection.eligible:,} · excluded {selection.excluded:,} · "
                         f"unscored {selection.unscored:,}")
            for name, bounds in selection.bounds.items():
                lines.append(f"{escape(name)}: M1 {bounds.m1:g} · M2 {bounds.m2:g}{' (auto)' if bounds.m2_auto else ''}")
            if selection.trimmed is not None and selection.trim_range is not None:
                low, high = selection.trim_range
                lines.append(f"trim {selection.params.trim * 100:g}%/end: {int(selection.trimmed.sum()):,} cut (✂) "
                             f"outside [{low:.3g}, {high:.3g}]")
            if self.overlaps:
                lines.append("shared with " + " · ".join(
                    f"{MODE_LABELS['top']} {escape(label.split(':', 1)[1])} {found.count:,}/{selection.selected:,}"
                    for label, found in self.overlaps.items()))
            flagged = {flag: n for flag, n in self.session.flag_counts(selection.indices).items() if n}
            if flagged:
                lines.append("[yellow]⚑ flagged, selected: "
                             + ", ".join(f"{flag} {n}" for flag, n in flagged.items()) + "[/]")
            lines.extend(f"[yellow]{escape(note)}[/]" for note in selection.notes)
        lines.extend(f"[dim]{escape(note)}[/]" for note in self.parsed.notes)
        return "\n".join(lines)

    def _columns(self) -> list[TableColumn]:
        pairs = self.dataset.pairs
        selection = self.selection
        annotations = self.annotations
        columns = [
            TableColumn("row", 7, lambda i: str(pairs["row_index"][i].as_py()), align_right=True),
            TableColumn("pair_id", 16, lambda i: self.pair_ids[i].as_py()),
        ]
        for name in self.sources:
            effective = self.session.effective_margin(name)
            columns.append(TableColumn(name[:8], 8, lambda i, m=effective: format_number(m[i]), align_right=True))
        score = displayed_score(selection)
        if score is not None:  # DM-MUL: log-odds, which tell apart the pairs whose score rounds to 1.000
            title = "logodds" if selection.log_odds is not None else "score"
            columns.append(TableColumn(title, 8, lambda i: format_number(score[i]), align_right=True))
        trimmed = selection.trimmed if selection is not None else None

        def state(i: int) -> str:
            marks = "✓" if selection is not None and selection.mask[i] else (
                "✂" if trimmed is not None and trimmed[i] else " ")
            marks += "⚑" if annotations.flagged[i] else " "
            marks += "✗" if annotations.excluded[i] else " "
            marks += "⇄" if annotations.swapped[i] else " "
            return marks

        columns.append(TableColumn("state", 5, state))
        if self.show_kept:
            for name in self.kept_names[:KEPT_TABLE_COLUMNS]:
                columns.append(TableColumn(name[:KEPT_CELL_WIDTH], KEPT_CELL_WIDTH,
                                           lambda i, n=name: self._kept_cell(i, n)))
        columns.append(TableColumn("prompt", 60, lambda i: as_text(pairs["prompt"][i].as_py())))
        return columns

    def _kept_cell(self, index: int, name: str) -> str:
        row = self._kept_rows.get(index)
        if row is None:
            if len(self._kept_rows) > 2048:
                self._kept_rows.clear()
            row = self._kept_rows[index] = kept_values(self.dataset, index)
        return format_kept_value(row[name], KEPT_CELL_WIDTH) if name in row else "—"

    # Export --------------------------------------------------------------------
    def export(self, out: str, include_scores: bool) -> str | None:
        """Start writing the current selection to `out`; the reason it cannot, if so."""
        problem = self.export_problem()
        if problem is None:
            assert self.parsed.params is not None
            self._export(self.parsed.params, self.parsed.drop_flagged, out, include_scores)
        return problem

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def _export(self, params: SelectionParams, drop_flagged: tuple[str, ...], out: str, include_scores: bool) -> None:
        progress, cancel = self.screen.work.start("export")
        # The form's own parameters, selected afresh: what the controls say is what is written.
        selection = self.session.select(params)
        manifest = self.session.export(selection, out, drop_flagged=drop_flagged, include_scores=include_scores,
                                       progress=progress, cancel=cancel)
        self.post_message(self.ExportFinished(out, manifest))

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """A failed selection, export or settings write, said in words (worker events do not bubble)."""
        if event.state != WorkerState.ERROR:
            return
        message, hint, cancelled = describe_failure(event.worker.error)
        title = {"export": "Export", "settings": "Settings not saved", "view-settings": "Settings not saved"}.get(
            event.worker.group, "Selection")
        self.notify(message + (f"\n{hint}" if hint else ""), title=title, markup=False, timeout=15,
                    severity="warning" if cancelled else "error")

    # View controls -------------------------------------------------------------
    @on(Select.Changed, "#row-filter")
    def _filter_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.view = replace(self.view, row_filter=str(event.value))
        self._reorder(keep_cursor=True)
        self._save_view()

    @work(thread=True, exit_on_error=False, group="view-settings")
    def _save_view(self) -> None:
        """Remember the table's filter and sort, unless the window is read-only (the
        selection controls say so once). A failure is said by `_worker_failed`. The view is
        read under the lock, so whichever write comes last writes the latest view."""
        with self._view_lock:
            if not self.workspace.write_refusal():
                self.workspace.update_settings(VIEW_SETTINGS_KEY, self.view.to_json())

    @on(Input.Submitted, "#search")
    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.view = replace(self.view, query=event.value)
        self._reorder(keep_cursor=False)

    def action_edit_selection(self) -> None:
        """m: to the selection controls (the mode; Tab goes on to the budget and the rest)."""
        self.screen.set_focus(self.query_one("#mode", Select))

    def action_search(self) -> None:
        self.screen.set_focus(self.query_one("#search", Input))

    def action_toggle_kept_columns(self) -> None:
        """Show the dataset's own columns (an id, a topic, ...) in the table, or hide them."""
        if not self.kept_names:
            self.notify("The data has no columns besides prompt, chosen and rejected")
            return
        self.show_kept = not self.show_kept
        self.query_one(ExamplesTable).set_columns(self._columns())

    def action_next_plot(self) -> None:
        plots = self.query_one(MarginPlots)
        plots.next_view()
        self.set_class(plots.showing_scatter, "-scatter")

    def action_sort_next(self) -> None:
        """The next sort in `sort_steps`, in its useful direction; the table jumps to the top."""
        steps = sort_steps(self.sources)
        names = [name for name, _ in steps]
        position = names.index(self.view.sort) if self.view.sort in names else -1
        name, descending = steps[(position + 1) % len(steps)]
        self.view = replace(self.view, sort=name, descending=descending)
        self._reorder(keep_cursor=False)
        self._save_view()

    def action_sort_reverse(self) -> None:
        self.view = replace(self.view, descending=not self.view.descending)
        self._reorder(keep_cursor=False)
        self._save_view()

    # Inspecting and annotating ---------------------------------------------------
    @on(ExamplesTable.PairOpened)
    def _open_pair(self, event: ExamplesTable.PairOpened) -> None:
        table = self.query_one(ExamplesTable)
        self._inspect(table.rows, event.position, "examples")

    def action_spot_check(self) -> None:
        """Walk the BOT region of a source, lowest margin first: the region the filter shows
        (`bot:SOURCE`), or one of a source the user picks, which the table then shows too."""
        if not self.sources:
            self.notify(NO_MARGINS_TEXT, severity="warning")
            return
        if self.view.row_filter.startswith("bot:"):
            self._walk_bot(self.view.row_filter.split(":", 1)[1])
            return
        if len(self.sources) == 1:
            self._walk_bot(self.sources[0])
            return
        from dmtui.screens.source_picker import SourcePicker

        def picked(source: str | None) -> None:
            if source is not None:
                self._walk_bot(source)

        current = self._spot_source or (self.params.source if self.params is not None else None) \
            or default_source(self.sources)
        self.app.push_screen(SourcePicker("Spot-check the BOT region of", self.sources, current), picked)

    def _walk_bot(self, source: str) -> None:
        self._spot_source = source
        self._walk_when_ready = f"spot-check BOT of {source}"
        self.view = replace(self.view, row_filter=f"bot:{source}", sort=source, descending=False)
        row_filter = self.query_one("#row-filter", Select)
        with row_filter.prevent(Select.Changed):
            row_filter.value = self.view.row_filter
        self._reorder(keep_cursor=False)
        self._save_view()

    def _inspect(self, rows: np.ndarray, position: int, title: str) -> None:
        from dmtui.screens.pair_detail import PairDetailScreen

        def done(_: object) -> None:
            self.reselect()

        self.app.push_screen(
            PairDetailScreen(self.dataset, self.margins, self.selection, self.store, self.annotations,
                             rows, position, title, effective=self._effective_margins()),
            done,
        )
