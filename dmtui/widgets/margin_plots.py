"""Histograms of each margin and of the selection score, and the joint scatter.

Binning and downsampling happen in core (core.plotdata), so a frame costs the same at
1M pairs as at 1k. `v` cycles the view: one histogram per source, the score, the scatter.
"""

from __future__ import annotations

import numpy as np
from textual_plotext import PlotextPlot

from core.plotdata import downsample_scatter, histogram
from core.selection import Selection


class MarginPlots(PlotextPlot):
    """One plot at a time; `views` lists what can be shown."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.margins: dict[str, np.ndarray] = {}
        self.selection: Selection | None = None
        self.view = 0

    @property
    def views(self) -> list[str]:
        names = [f"hist:{name}" for name in self.margins] + ["hist:score"]
        if len(self.margins) >= 2:
            names.append("scatter")
        return names

    def show(self, margins: dict[str, np.ndarray], selection: Selection | None) -> None:
        self.margins = margins
        self.selection = selection
        self.view %= max(len(self.views), 1)
        self.redraw()

    def next_view(self) -> None:
        self.view = (self.view + 1) % max(len(self.views), 1)
        self.redraw()

    def redraw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        if not self.margins or self.selection is None:
            plt.title("no margins yet")
            self.refresh()
            return
        view = self.views[self.view]
        if view == "scatter":
            self._scatter()
        else:
            self._histogram(view.split(":", 1)[1])
        self.refresh()

    def _histogram(self, name: str) -> None:
        plt = self.plt
        selection = self.selection
        assert selection is not None
        if name == "score":
            values = selection.score if selection.score is not None else np.zeros(0)
            title = f"selection score ({selection.params.mode})"
        else:
            values = self.margins[name]
            title = f"{name} margin"
        all_pairs = histogram(values, bins=40)
        centers = ((all_pairs.edges[:-1] + all_pairs.edges[1:]) / 2).tolist()
        kept = histogram(values[selection.mask], bins=40,
                         value_range=(float(all_pairs.edges[0]), float(all_pairs.edges[-1])))
        plt.bar(centers, all_pairs.counts.tolist(), label="all", color="gray")
        plt.bar(centers, kept.counts.tolist(), label="selected", color="green")
        low, high = float(all_pairs.edges[0]), float(all_pairs.edges[-1])
        ticks = np.linspace(low, high, 5).tolist()
        plt.xticks(ticks, [f"{tick:.3g}" for tick in ticks])
        bounds = selection.bounds.get(name)
        if bounds is not None:
            plt.vertical_line(bounds.m1, color="red")
            plt.vertical_line(bounds.m2, color="blue")
            title += f"  M1={bounds.m1:g} M2={bounds.m2:g}"
        plt.title(title + f"  [v: next view {self.view + 1}/{len(self.views)}]")

    def _scatter(self) -> None:
        plt = self.plt
        selection = self.selection
        assert selection is not None
        x_name, y_name = list(self.margins)[:2]
        x, y = self.margins[x_name], self.margins[y_name]
        shown = downsample_scatter(x, y, highlight=selection.mask, max_points=4000)
        picked = shown[selection.mask[shown]]
        rest = shown[~selection.mask[shown]]
        plt.scatter(x[rest].tolist(), y[rest].tolist(), color="gray", marker="dot", label="other")
        plt.scatter(x[picked].tolist(), y[picked].tolist(), color="green", marker="dot", label="selected")
        plt.xlabel(f"{x_name} margin")
        plt.ylabel(f"{y_name} margin")
        plt.title(f"{x_name} vs {y_name}  [v: next view]")
