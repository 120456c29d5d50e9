"""Histogram counts and scatter downsampling for the terminal plots."""

from __future__ import annotations

import numpy as np
import pytest

from core.selection.plotdata import MIN_GROUP_SHARE, downsample_scatter, histogram


def test_histogram_matches_numpy_on_finite_values():
    values = np.random.default_rng(0).normal(size=100_001)
    result = histogram(values, bins=37)
    counts, edges = np.histogram(values, bins=37)
    np.testing.assert_array_equal(result.counts, counts)
    np.testing.assert_allclose(result.edges, edges)
    assert result.dropped == 0 and result.outside == 0


def test_histogram_drops_and_counts_nan_and_inf():
    values = np.array([0.0, 1.0, 2.0, 3.0, np.nan, np.inf, -np.inf])
    result = histogram(values, bins=3)
    np.testing.assert_array_equal(result.counts, [1, 1, 2])  # the last bin holds its right edge
    np.testing.assert_array_equal(result.edges, [0.0, 1.0, 2.0, 3.0])
    assert result.dropped == 3 and result.outside == 0


def test_histogram_with_range_counts_values_outside():
    values = np.array([-5.0, 0.0, 0.5, 1.0, 7.0, np.nan])
    result = histogram(values, bins=2, value_range=(0.0, 1.0))
    np.testing.assert_array_equal(result.counts, [1, 2])
    assert result.outside == 2 and result.dropped == 1
    assert result.counts.sum() + result.outside + result.dropped == values.size


def test_histogram_degenerate_inputs():
    assert histogram(np.full(5, np.nan), bins=4).counts.sum() == 0
    constant = histogram(np.full(5, 2.0), bins=2)
    np.testing.assert_array_equal(constant.edges, [1.5, 2.0, 2.5])
    assert constant.counts.sum() == 5
    with pytest.raises(ValueError):
        histogram([1.0], value_range=(1.0, 1.0))


def test_downsample_keeps_everything_when_small():
    x = np.array([0.0, 1.0, np.nan, 3.0])
    chosen = downsample_scatter(x, x, highlight=np.zeros(4, bool), max_points=10)
    np.testing.assert_array_equal(chosen, [0, 1, 3])


def test_downsample_keeps_a_small_highlight_visible_and_is_deterministic():
    n = 200_000
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=n), rng.normal(size=n)
    highlight = np.zeros(n, bool)
    highlight[rng.choice(n, 40, replace=False)] = True
    chosen = downsample_scatter(x, y, highlight=highlight, max_points=5000)
    assert chosen.size == 5000 and np.all(np.diff(chosen) > 0)
    assert highlight[chosen].sum() == 40  # proportion alone would give 1
    np.testing.assert_array_equal(chosen, downsample_scatter(x, y, highlight=highlight, max_points=5000))
    assert not np.array_equal(chosen, downsample_scatter(x, y, highlight=highlight, seed=1))


def test_downsample_shares_in_proportion_with_a_floor_for_each_group():
    n = 100_000
    x = np.arange(n, dtype=float)
    highlight = np.arange(n) < 30_000  # 30%
    chosen = downsample_scatter(x, x, highlight=highlight, max_points=1000)
    assert highlight[chosen].sum() == 300
    mostly = np.arange(n) < 99_900  # the others are 0.1%: they get the floor (100)
    chosen = downsample_scatter(x, x, highlight=mostly, max_points=1000)
    assert (~mostly[chosen]).sum() == 100 == int(1000 * MIN_GROUP_SHARE)


def test_downsample_is_stable_under_a_small_highlight_change():
    n = 50_000
    x = np.random.default_rng(2).normal(size=n)
    highlight = np.zeros(n, bool)
    before = downsample_scatter(x, x, highlight=highlight, max_points=2000)
    highlight[before[0]] = True
    after = downsample_scatter(x, x, highlight=highlight, max_points=2000)
    assert len(np.intersect1d(before, after)) >= 1990


def test_selection_plots_bin_every_view_from_the_margins_the_selection_used():
    from core.selection.plotdata import HistogramPlot, ScatterPlot, selection_plots
    from core.selection.selector import SelectionParams, select

    rng = np.random.default_rng(4)
    margins = {"external": rng.normal(1, 3, 20_000), "implicit": rng.normal(0, 2, 20_000)}
    margins["implicit"][:10] = np.nan
    selection = select(margins, SelectionParams(budget=0.1, m2={"external": 6.0}))
    plots = selection_plots(margins, selection, selection.score, "score", max_points=500)
    kinds = [type(view) for view in plots.views]
    assert kinds == [HistogramPlot, HistogramPlot, HistogramPlot, ScatterPlot]
    external, implicit, score, scatter = plots.views
    assert external.all_pairs.counts.sum() == 20_000 and implicit.all_pairs.counts.sum() == 19_990
    assert external.selected.counts.sum() == selection.selected == score.selected.counts.sum()
    assert external.guides == (("M1", -2.0), ("M2", 6.0)) and implicit.guides[1][1] == selection.bounds["implicit"].m2
    assert scatter.x.size == 500 and scatter.total == 19_990
    assert 0.1 <= scatter.selected.mean() <= 0.2  # the selected keep at least their share of points
    np.testing.assert_array_equal(np.isin(scatter.x, margins["external"][selection.mask]), scatter.selected)


def test_ticks_are_round_and_counts_whole():
    from core.selection.plotdata import count_ticks, nice_ticks, short_count

    assert nice_ticks(-7.3, 12.9, 5) == [-5.0, 0.0, 5.0, 10.0] and nice_ticks(-7.3, 12.9, 3) == [0.0, 10.0]
    assert nice_ticks(0.0, 1.0, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert count_ticks(12_345) == [0, 5000, 10_000] and count_ticks(1) == [0, 1]
    assert all(isinstance(tick, int) for tick in count_ticks(7))
    assert [short_count(n) for n in (7, 1500, 12_345, 999_999, 1_234_567)] == ["7", "1.5k", "12k", "1M", "1.2M"]


def test_the_memo_bins_all_pairs_again_only_when_the_values_change(monkeypatch):
    import core.selection.plotdata as plotdata
    from core.selection.plotdata import HistogramMemo, selection_plots
    from core.selection.selector import SelectionParams, select

    margins = {"m": np.random.default_rng(5).normal(size=5000)}
    memo = HistogramMemo()
    binned = []
    real = plotdata.histogram
    monkeypatch.setattr(plotdata, "histogram", lambda values, **kw: binned.append(len(values)) or real(values, **kw))
    for budget in (100, 200, 300):
        selection = select(margins, SelectionParams(mode="top", source="m", budget=budget))
        plots = selection_plots(margins, selection, selection.score, "score", memo=memo)
        assert plots.views[0].selected.counts.sum() == budget
    assert binned.count(5000) == 2  # the margin once, the score once: a budget edit re-ranks nothing
    swapped = margins["m"].copy()
    swapped[7] = -swapped[7]
    selection_plots({"m": swapped}, selection, None, "score", memo=memo)
    assert binned.count(5000) == 3  # new values (a swap) are binned again
    selection_plots({"m": swapped.copy()}, selection, None, "score", memo=memo)
    assert binned.count(5000) == 3  # the same values in another array are not


def test_cell_grids_for_bars_and_braille():
    from core.selection.plotdata import bar_eighths, braille_masks, column_counts, screen_position

    counts = np.array([1, 2, 3, 4], np.int64)
    np.testing.assert_array_equal(column_counts(counts, 8), [1, 1, 2, 2, 3, 3, 4, 4])  # wide: bins repeat
    np.testing.assert_array_equal(column_counts(counts, 2), [3, 7])  # narrow: neighbours add up
    assert column_counts(counts, 3).sum() == counts.sum()
    np.testing.assert_array_equal(bar_eighths(np.array([0, 1, 50, 100]), 100, rows=2), [0, 1, 8, 16])
    masks = braille_masks(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 0.0]), (0.0, 1.0), (0.0, 1.0), 1, 1)
    assert masks.shape == (1, 1) and masks[0, 0] == 0x40 | 0x08 | 0x80  # bottom left, top right, bottom right
    assert screen_position(0.5, (0.0, 1.0), 10) == 5 and screen_position(9.0, (0.0, 1.0), 10) == 9


async def test_the_plot_widget_draws_bars_guides_and_whole_counts():
    from textual.app import App

    from core.selection.plotdata import selection_plots
    from core.selection.selector import SelectionParams, select
    from dmtui.widgets.margin_plots import MarginPlots

    rng = np.random.default_rng(6)
    margins = {"external": rng.normal(1, 3, 5000), "implicit": rng.normal(0, 3, 5000)}
    selection = select(margins, SelectionParams(budget=500, m2={"external": 5.0, "implicit": 5.0}))

    class PlotApp(App):
        def compose(self):
            yield MarginPlots(id="plots")

    app = PlotApp()
    async with app.run_test(size=(70, 16)) as pilot:
        plots = app.query_one(MarginPlots)
        plots.show(selection_plots(margins, selection, selection.log_odds, "log-odds"))
        await pilot.pause()
        drawn = plots.render().plain.splitlines()
        assert any("█" in line for line in drawn) and any("│" in line[5:] for line in drawn[:-2])  # bars, M1/M2
        labels = [line.split("┤")[0].strip() for line in drawn if "┤" in line]
        assert labels and all(label.rstrip("kM").replace(".", "").isdigit() for label in labels)
        assert "M1 -2" in str(plots.border_title) and "M2 5" in str(plots.border_title)
        for _ in range(3):
            plots.next_view()
        assert plots.showing_scatter
        await pilot.pause()
        assert any(0x2800 < ord(char) <= 0x28FF for char in plots.render().plain)
