"""Training curves as line charts with axes: loss, reward margin, reward accuracy and
learning rate against step, for one run (the Run tab, live) or several overlaid (the
runs view). Four charts in a 2x2 grid that fills whatever space the layout gives it.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid
from textual_plotext import PlotextPlot

from core.training.runs import CURVES

# Distinct plotext colours for overlaid runs, in order.
RUN_COLORS = ("cyan", "orange", "green", "magenta", "red", "blue", "yellow", "white")


def number(value: float) -> str:
    """4 significant digits, the way the log and the tables print metrics."""
    return f"{value:.4g}"


class TrainingCurves(Grid):
    """One chart per metric of `core.training.runs.CURVES`; `show` redraws them all.

    Rows are scarce at 80x24, so a chart spends none on a legend or an axis title: the
    title says "against step", and the runs view's table shows each run's colour.
    """

    DEFAULT_CSS = """
    TrainingCurves {
        grid-size: 2 2;
        grid-gutter: 0 1;
        min-height: 12;
    }
    TrainingCurves > PlotextPlot {
        height: 1fr;
    }
    """

    def compose(self) -> ComposeResult:
        for key, _ in CURVES:
            yield PlotextPlot(id=f"chart-{key}", classes="chart")

    def on_mount(self) -> None:
        self.show({})

    def show(self, runs: dict[str, dict[str, tuple[list[float], list[float]]]]) -> None:
        """`runs`: run label -> metric key -> (steps, values). One line per run in each chart."""
        for key, title in CURVES:
            chart = self.query_one(f"#chart-{key}", PlotextPlot)
            plt = chart.plt
            plt.clear_data()
            plt.clear_figure()
            lasts = []
            for index, (label, curves) in enumerate(runs.items()):
                steps, values = curves.get(key, ([], []))
                if not values:
                    continue
                color = RUN_COLORS[index % len(RUN_COLORS)]
                plt.plot(steps, values, color=color, marker="braille")
                lasts.append(values[-1])
            heading = f"{title} against step" + (f": {number(lasts[0])}" if len(lasts) == 1 else "")
            plt.title(heading if lasts else f"{title} against step: no data yet")
            chart.refresh()
