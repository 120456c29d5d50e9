"""The curation pane: tune a selection and see, live, what it keeps.

Left: the knobs (TuningPanel) and the counts. Right: margin histograms and the joint
scatter. Below: the examples table with a filter and a search. Every change reruns
`core.selection.select` in a thread worker (exclusive, so a burst of keystrokes only
costs the last one) and the result is drawn when it arrives: the event loop never waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.widgets import Input, Select, Static

from core.annotations import AnnotationStore
from core.errors import DmtuiError
from core.export import Annotated
from core.loading import LoadedDataset
from core.margin_sources import ResolvedMargins
from core.pairs import as_text
from core.selection import (
    MODES,
    Selection,
    SelectionParams,
    parse_budget,
    select,
    tie_keys_from_pair_ids,
)
from core.views import (
    ROW_FILTERS,
    AnnotationArrays,
    filter_mask,
    ordered_rows,
    region_mask,
    search_mask,
    search_texts,
)
from core.workspace import Workspace
from dmtui.widgets.examples_table import ExamplesTable, TableColumn, format_number
from dmtui.widgets.margin_plots import MarginPlots
from dmtui.widgets.tuning_panel import TuningPanel

SETTINGS_KEY = "curation"


@dataclass
class SelectionReady(Message):
    selection: Selection
    rows: np.ndarray
    keep_index: int | None
    generation: int


def stored_settings(stored: Any, sources: list[str]) -> dict[str, Any]:
    """The remembered settings with anything of the wrong shape dropped (its default applies).

    settings.json is a file a person may edit: a bad value must not stop the pane opening.
    """
    if not isinstance(stored, dict):
        return {}
    clean: dict[str, Any] = {}
    if stored.get("mode") in MODES:
        clean["mode"] = stored["mode"]
    if stored.get("source") in sources:
        clean["source"] = stored["source"]
    if isinstance(stored.get("budget"), (str, int, float)) and not isinstance(stored.get("budget"), bool):
        clean["budget"] = stored["budget"]
    for bound in ("m1", "m2"):
        values = stored.get(bound)
        if isinstance(values, dict):
            clean[bound] = {name: value for name, value in values.items()
                            if name in sources and isinstance(value, (str, int, float)) and not isinstance(value, bool)}
    return clean


def params_from_settings(settings: dict[str, Any], sources: list[str]) -> SelectionParams:
    """SelectionParams from the panel's settings (what the app remembers per workspace)."""
    mode = settings.get("mode", "dm-mul")
    fused = tuple(sources) if mode in ("dm-mul", "dm-add") else tuple(sources[:1])
    return SelectionParams(
        mode=mode,
        budget=parse_budget(str(settings.get("budget", "10%"))),
        sources=fused,
        source=settings.get("source") or sources[0],
        m1={name: float(settings.get("m1", {}).get(name, -2.0)) for name in sources},
        m2={name: settings.get("m2", {}).get(name, "auto") for name in sources},
    )


class CurationPane(Vertical):
    BINDINGS = [
        Binding("v", "next_plot", "Plot"),
        Binding("o", "sort_next", "Sort"),
        Binding("O", "sort_reverse", "Reverse", show=False),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("B", "spot_check", "Spot-check BOT"),
    ]

    def __init__(self, workspace: Workspace, dataset: LoadedDataset, resolved: ResolvedMargins,
                 *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace = workspace
        self.dataset = dataset
        self.resolved = resolved
        self.margins = resolved.margins
        self.sources = list(self.margins)
        self.pair_ids = dataset.pairs["pair_id"].combine_chunks()
        self.tie_keys = tie_keys_from_pair_ids(self.pair_ids)
        self.store = AnnotationStore(workspace.annotations_path)
        masks = self.store.masks(self.pair_ids)
        self.annotations = AnnotationArrays(masks.flagged, masks.excluded, masks.swapped)
        self.settings = stored_settings(workspace.read_settings().get(SETTINGS_KEY), self.sources)
        self.selection: Selection | None = None
        self.row_filter = "all"
        self.query_text = ""
        self.sort_names = ["row", *self.sources, "score"]
        self.sort_index = len(self.sort_names) - 1
        self.descending = True
        self._texts: pa.Array | None = None
        # A thread worker cannot be interrupted: results of superseded runs are dropped.
        self._generation = 0

    # Layout ------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="tune-top"):
            with Vertical(id="tune-left"):
                yield TuningPanel(self.sources, self.settings, id="tuning")
                yield Static("", id="selection-stats")
            yield MarginPlots(id="plots")
        with Horizontal(id="filter-bar"):
            options = [(name, name) for name in ROW_FILTERS]
            options += [(f"{region}:{name}", f"{region}:{name}") for name in self.sources for region in ("top", "mid", "bot")]
            yield Select(options, value="all", allow_blank=False, compact=True, id="row-filter")
            yield Input(placeholder="search text or pair_id (/)", compact=True, id="search")
        yield ExamplesTable(id="examples")

    def on_mount(self) -> None:
        self.query_one(ExamplesTable).border_title = "Examples"
        # The first selection runs when the TuningPanel posts its initial settings.

    def on_unmount(self) -> None:
        self.store.close()

    # Selection ---------------------------------------------------------------
    def current_params(self) -> SelectionParams:
        return params_from_settings(self.settings, self.sources)

    @on(TuningPanel.Changed)
    def _tuned(self, event: TuningPanel.Changed) -> None:
        self.settings = event.settings
        try:
            self.workspace.write_settings({**self.workspace.read_settings(), SETTINGS_KEY: self.settings})
        except DmtuiError as error:  # the selection still follows; only remembering it failed
            self.notify(f"{error.message}\n{error.hint or ''}", title="Settings not saved", severity="warning",
                        markup=False)
        self.reselect()

    def reselect(self, keep_index: int | None = None) -> None:
        """Recompute the selection and the table's rows in the background."""
        self._generation += 1
        self._reselect(self.current_params(), keep_index, self._generation)

    @work(thread=True, exclusive=True, exit_on_error=False, group="select")
    def _reselect(self, params: SelectionParams, keep_index: int | None, generation: int) -> None:
        selection = select(self.margins, params, excluded=self.annotations.excluded,
                           swapped=self.annotations.swapped, tie_break=self.tie_keys)
        rows = self._view_rows(selection, params)
        self.post_message(SelectionReady(selection, rows, keep_index, generation))

    def _view_rows(self, selection: Selection, params: SelectionParams) -> np.ndarray:
        n = len(self.pair_ids)
        if ":" in self.row_filter:
            region, source = self.row_filter.split(":", 1)
            mask = region_mask(self.margins, source, region, params, self.annotations)
        else:
            mask = filter_mask(self.row_filter, selection, self.annotations, n)
        if self.query_text:
            if self._texts is None:
                self._texts = search_texts(self.dataset.pairs)
            mask = mask & search_mask(self._texts, self.query_text, self.pair_ids)
        name = self.sort_names[self.sort_index]
        key = None if name == "row" else selection.score if name == "score" else self._effective(name)
        return ordered_rows(mask, key, self.descending)

    def annotated(self) -> Annotated:
        """The exclusions and swaps the current selection honours, as an export records them."""
        ids = self.pair_ids
        return Annotated(
            excluded=tuple(sorted(ids.filter(pa.array(self.annotations.excluded)).to_pylist())),
            swapped=tuple(sorted(ids.filter(pa.array(self.annotations.swapped)).to_pylist())),
        )

    def _effective(self, source: str) -> np.ndarray:
        margin = self.margins[source]
        return np.where(self.annotations.swapped, -margin, margin)

    @on(SelectionReady)
    def _selection_ready(self, event: SelectionReady) -> None:
        if event.generation != self._generation:
            return
        self.selection = event.selection
        self.query_one(MarginPlots).show(self.margins, event.selection)
        self.query_one("#selection-stats", Static).update(self._stats_text(event.selection))
        table = self.query_one(ExamplesTable)
        table.show(self._columns(), event.rows, keep_index=event.keep_index)
        order = self.sort_names[self.sort_index]
        table.border_title = (f"Examples: {len(event.rows):,} shown ({self.row_filter}"
                              + (f", '{escape(self.query_text)}'" if self.query_text else "")  # typed: not markup
                              + f"), sorted by {order} {'↓' if self.descending else '↑'}")

    @staticmethod
    def _stats_text(selection: Selection) -> str:
        lines = [f"[b]{selection.selected:,}[/b] of {selection.total:,} selected",
                 f"eligible {selection.eligible:,} · excluded {selection.excluded:,} · unscored {selection.unscored:,}"]
        for name, bounds in selection.bounds.items():
            lines.append(f"{name}: M1 {bounds.m1:g} · M2 {bounds.m2:g}{' (auto)' if bounds.m2_auto else ''}")
        lines.extend(f"[yellow]{escape(note)}[/]" for note in selection.notes)
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
            effective = self._effective(name)
            columns.append(TableColumn(name[:8], 8, lambda i, m=effective: format_number(m[i]), align_right=True))
        if selection is not None and selection.score is not None:
            columns.append(TableColumn("score", 8, lambda i: format_number(selection.score[i]), align_right=True))

        def state(i: int) -> str:
            marks = ("✓" if selection is not None and selection.mask[i] else " ")
            marks += "⚑" if annotations.flagged[i] else " "
            marks += "✗" if annotations.excluded[i] else " "
            marks += "⇄" if annotations.swapped[i] else " "
            return marks

        columns.append(TableColumn("state", 5, state))
        columns.append(TableColumn("prompt", 60, lambda i: as_text(pairs["prompt"][i].as_py())))
        return columns

    # View controls -------------------------------------------------------------
    @on(Select.Changed, "#row-filter")
    def _filter_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.row_filter = str(event.value)
        self.reselect(self.query_one(ExamplesTable).current_index)

    @on(Input.Submitted, "#search")
    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.query_text = event.value
        self.reselect()

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_next_plot(self) -> None:
        self.query_one(MarginPlots).next_view()

    def action_sort_next(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(self.sort_names)
        self.reselect(self.query_one(ExamplesTable).current_index)

    def action_sort_reverse(self) -> None:
        self.descending = not self.descending
        self.reselect(self.query_one(ExamplesTable).current_index)

    # Inspecting and annotating ---------------------------------------------------
    @on(ExamplesTable.PairOpened)
    def _open_pair(self, event: ExamplesTable.PairOpened) -> None:
        table = self.query_one(ExamplesTable)
        self._inspect(table.rows, event.position, "examples")

    def action_spot_check(self) -> None:
        """Walk the lowest margins of the chosen source (the TOP/MID/BOT source) upward."""
        source = self.settings.get("source") or self.sources[0]
        margin = self._effective(source)
        candidates = np.isfinite(margin) & ~self.annotations.excluded
        rows = ordered_rows(candidates, margin, descending=False)
        if len(rows):
            self._inspect(rows, 0, f"spot-check BOT of {source}")

    def _inspect(self, rows: np.ndarray, position: int, title: str) -> None:
        from dmtui.screens.pair_detail import PairDetailScreen

        def done(_: object) -> None:
            self.reselect(self.query_one(ExamplesTable).current_index)

        self.app.push_screen(
            PairDetailScreen(self.dataset, self.margins, self.selection, self.store, self.annotations,
                             rows, position, title),
            done,
        )
