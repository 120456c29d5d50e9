"""Histograms of each margin and of the selection score, and the joint scatter.

The selection's worker bins and samples everything (core.selection.plotdata.selection_plots), and
this widget draws the cells itself (block characters for bars, braille dots for the
scatter) from core.selection.plotdata's grids: a frame costs well under a millisecond and the same
at 1M pairs as at 1k. `v` cycles the view: one histogram per source, the score, the
scatter. The title and the bounds live in the border, so they survive a narrow terminal;
the colours are said there too instead of a legend drawn over the bars. Counts are whole
numbers; ticks are round.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.markup import escape
from textual.widget import Widget

from core.selection.plotdata import (
    HistogramPlot,
    PlotData,
    ScatterPlot,
    bar_eighths,
    braille_masks,
    column_counts,
    count_ticks,
    nice_ticks,
    screen_position,
    short_count,
)

GUIDE_COLOURS = {"M1": "red", "M2": "blue", "trim": "magenta"}
BLOCKS = np.array(list(" ▁▂▃▄▅▆▇█"))
BRAILLE = np.array([chr(0x2800 + code) for code in range(256)])
ALL_STYLE, SELECTED_STYLE, BOTH_STYLE, AXIS_STYLE = "grey50", "green", "green on grey50", "dim"


class MarginPlots(Widget):
    """One plot at a time, drawn from precomputed `PlotData`."""

    DEFAULT_CSS = """
    MarginPlots {
        width: 1fr;
        height: 1fr;
        border: round $primary-darken-2;
        border-title-align: left;
        border-subtitle-align: right;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.plots: PlotData | None = None
        self.view = 0
        self._drawn: tuple[object, ...] | None = None
        self._text = Text()

    @property
    def views(self) -> list[str]:
        if self.plots is None:
            return []
        return ["scatter" if isinstance(plot, ScatterPlot) else plot.title for plot in self.plots.views]

    @property
    def showing_scatter(self) -> bool:
        views = self.plots.views if self.plots is not None else ()
        return bool(views) and isinstance(views[self.view], ScatterPlot)

    def show(self, plots: PlotData | None) -> None:
        self.plots = plots
        self.view %= max(len(self.views), 1)
        self._retitle()

    def next_view(self) -> None:
        self.view = (self.view + 1) % max(len(self.views), 1)
        self._retitle()

    def _retitle(self) -> None:
        if self.plots is None or not self.plots.views:
            self.border_title, self.border_subtitle = "no margins yet", ""
        else:
            plot = self.plots.views[self.view]
            self.border_title = _scatter_title(plot) if isinstance(plot, ScatterPlot) else _histogram_title(plot)
            self.border_subtitle = f"v {self.view + 1}/{len(self.plots.views)}"
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size
        key = (id(self.plots), self.view, width, height)
        if key != self._drawn:
            self._drawn = key
            self._text = Text()
            if self.plots is not None and self.plots.views and width > 8 and height > 3:
                plot = self.plots.views[self.view]
                draw = _draw_scatter if isinstance(plot, ScatterPlot) else _draw_histogram
                self._text = draw(plot, width, height)
        return self._text


def _histogram_title(plot: HistogramPlot) -> str:
    guides = " ".join(f"[{GUIDE_COLOURS.get(name, 'white')}]{name} {value:.3g}[/]" for name, value in plot.guides)
    # What matters first: a narrow terminal cuts the border title from the right.
    return (escape(plot.title) + (f"  {guides}" if guides else "")
            + f"  [{ALL_STYLE}]█ all[/] [{SELECTED_STYLE}]█ selected[/]")


def _scatter_title(plot: ScatterPlot) -> str:
    sampled = f"{plot.x.size:,} of {plot.total:,}" if plot.x.size < plot.total else f"{plot.total:,}"
    return (f"x {escape(plot.x_name)} · y {escape(plot.y_name)}  [{SELECTED_STYLE}]⣿ selected[/] "
            f"[{ALL_STYLE}]⣿ other[/] ({sampled} pairs)  [red]M1[/] [blue]M2[/]")


def _draw_histogram(plot: HistogramPlot, width: int, height: int) -> Text:
    edges = plot.all_pairs.edges
    value_range = (float(edges[0]), float(edges[-1]))
    tick_counts = count_ticks(int(plot.all_pairs.counts.max()) if plot.all_pairs.counts.size else 0)
    labels = [short_count(count) for count in tick_counts]
    label_width = max(len(label) for label in labels)
    columns, rows = width - label_width - 1, height - 2
    if columns < 2 or rows < 1:
        return Text()
    all_columns = column_counts(plot.all_pairs.counts, columns)
    top = float(max(all_columns.max(initial=0), tick_counts[-1], 1))
    all_eighths = bar_eighths(all_columns, top, rows)
    selected_eighths = np.minimum(bar_eighths(column_counts(plot.selected.counts, columns), top, rows), all_eighths)
    floor = 8 * np.arange(rows)[::-1, None]  # eighths below each grid row, the top row first
    all_fill = np.clip(all_eighths[None, :] - floor, 0, 8)
    selected_fill = np.clip(selected_eighths[None, :] - floor, 0, 8)
    chars = np.where(selected_fill > 0, BLOCKS[selected_fill], BLOCKS[all_fill])
    styles = np.full(chars.shape, "", dtype=object)
    styles[all_fill > 0] = ALL_STYLE
    styles[selected_fill > 0] = SELECTED_STYLE
    styles[(selected_fill > 0) & (selected_fill < 8) & (all_fill > selected_fill)] = BOTH_STYLE
    guide_columns = _place_guides(plot.guides, value_range, columns)
    for column, colour in guide_columns.items():
        empty = all_fill[:, column] == 0
        chars[empty, column] = "│"
        styles[empty, column] = colour
    tick_rows = {rows - 1 - min(int(round(count / top * rows)), rows - 1): label
                 for count, label in zip(tick_counts, labels)}
    return _framed(chars, styles, tick_rows, label_width, value_range, guide_columns)


def _draw_scatter(plot: ScatterPlot, width: int, height: int) -> Text:
    if plot.x.size == 0:
        return Text("no pair has both margins", style=AXIS_STYLE)
    x_range = (float(plot.x.min()), float(plot.x.max()))
    y_range = (float(plot.y.min()), float(plot.y.max()))
    y_ticks = nice_ticks(*y_range, max(min(height // 3, 4), 2))
    y_labels = [f"{tick:g}" for tick in y_ticks]
    label_width = max((len(label) for label in y_labels), default=1)
    columns, rows = width - label_width - 1, height - 2
    if columns < 2 or rows < 1:
        return Text()
    others = braille_masks(plot.x[~plot.selected], plot.y[~plot.selected], x_range, y_range, columns, rows)
    chosen = braille_masks(plot.x[plot.selected], plot.y[plot.selected], x_range, y_range, columns, rows)
    masks = others | chosen
    chars = BRAILLE[masks]
    chars[masks == 0] = " "
    styles = np.full(chars.shape, "", dtype=object)
    styles[others > 0] = ALL_STYLE
    styles[chosen > 0] = SELECTED_STYLE
    for column, colour in _place_guides(plot.x_guides, x_range, columns).items():
        empty = masks[:, column] == 0
        chars[empty, column] = "│"
        styles[empty, column] = colour
    for row, colour in _place_guides(plot.y_guides, y_range, rows).items():
        row = rows - 1 - row
        empty = masks[row] == 0
        chars[row, empty] = np.where(chars[row, empty] == "│", "┼", "─")
        styles[row, empty] = colour
    tick_rows = {rows - 1 - screen_position(tick, y_range, rows): label for tick, label in zip(y_ticks, y_labels)}
    return _framed(chars, styles, tick_rows, label_width, x_range, {})


def _framed(chars: np.ndarray, styles: np.ndarray, tick_rows: dict[int, str], label_width: int,
            x_range: tuple[float, float], guide_columns: dict[int, str]) -> Text:
    """The grid with its y axis (labels at `tick_rows`) on the left and the x axis below."""
    text = Text(no_wrap=True)
    for row in range(chars.shape[0]):
        label = tick_rows.get(row, "")
        text.append(label.rjust(label_width) + ("┤" if label else "│"), AXIS_STYLE)
        _append_cells(text, chars[row], styles[row])
        text.append("\n")
    _append_x_axis(text, x_range, chars.shape[1], label_width, guide_columns)
    return text


def _place_guides(guides, value_range: tuple[float, float], cells: int) -> dict[int, str]:
    """Screen cell -> colour of each guide inside the plotted range."""
    low, high = value_range
    return {screen_position(value, value_range, cells): GUIDE_COLOURS.get(name, "white")
            for name, value in guides if low <= value <= high}


def _append_cells(text: Text, chars: np.ndarray, styles: np.ndarray) -> None:
    """One grid row, as runs of equal style."""
    start = 0
    for end in range(1, len(chars) + 1):
        if end == len(chars) or styles[end] != styles[start]:
            text.append("".join(chars[start:end]), styles[start] or None)
            start = end


def _append_x_axis(text: Text, value_range: tuple[float, float], columns: int, label_width: int,
                   guides: dict[int, str]) -> None:
    ticks = nice_ticks(*value_range, max(columns // 8, 2))
    axis = ["─"] * columns
    labels = [" "] * (columns + label_width + 1)
    for tick in ticks:
        column = screen_position(tick, value_range, columns)
        axis[column] = "┬"
        label = f"{tick:g}"
        start = max(0, min(label_width + 1 + column - len(label) // 2, len(labels) - len(label)))
        if all(cell == " " for cell in labels[max(start - 1, 0):start + len(label) + 1]):
            labels[start:start + len(label)] = label
    text.append(" " * label_width + "└", AXIS_STYLE)
    for column, char in enumerate(axis):
        text.append(char, guides.get(column, AXIS_STYLE))
    text.append("\n" + "".join(labels).rstrip(), AXIS_STYLE)
