"""Histogram counts and scatter downsampling for the terminal plots."""

from __future__ import annotations

import numpy as np
import pytest

from core.plotdata import MIN_GROUP_SHARE, downsample_scatter, histogram


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
