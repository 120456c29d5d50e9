"""Plot-ready data: histogram counts and scatter subsamples, cheap enough for every keystroke.

The UI draws what these return and never bins or samples a million values itself
(plotext redraws everything on every repaint; a 120x35 braille plot has about 33k dots,
so about 5k scatter points is plenty). `selection_plots` builds every view of the
curation pane at once, in the selection's worker thread, so the UI thread only draws.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from core.selection.selector import Selection

MIN_GROUP_SHARE = 0.1
"""`downsample_scatter` gives each group at least this share of the points (if it has them)."""


@dataclass(frozen=True, eq=False)
class Histogram:
    counts: NDArray[np.int64]
    edges: NDArray[np.float64]
    """len(counts) + 1 ascending edges; the last bin includes its right edge."""
    dropped: int
    """NaN and +-inf values, which no bin holds."""
    outside: int
    """Finite values outside an explicit `value_range`."""


def histogram(values: ArrayLike, bins: int = 40, value_range: tuple[float, float] | None = None) -> Histogram:
    """Counts in `bins` equal bins over `value_range` (default: the finite min and max).

    Like numpy.histogram, but NaN and inf are dropped and counted instead of breaking
    the range, and about twice as fast (one scaled cast and a bincount). A value within
    rounding of an inner edge may land in the neighbouring bin.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    x = np.asarray(values, dtype=np.float64).ravel()
    finite_count = int(np.count_nonzero(np.isfinite(x)))
    dropped = x.size - finite_count
    if value_range is None:
        low, high = _finite_range(x, dropped)
    else:
        low, high = (float(v) for v in value_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"value_range must be finite with low < high, got {value_range}")
    edges = np.linspace(low, high, bins + 1)
    # Bin index = floor((x - low) * bins / width). NaN and everything below `low` are
    # parked in bin 0, everything above `high` in the last bin, then taken out again.
    scaled = np.subtract(x, low)
    scaled *= bins / (high - low)
    np.fmax(scaled, 0.0, out=scaled)  # fmax also turns NaN into 0
    np.minimum(scaled, bins - 0.5, out=scaled)
    counts = np.bincount(scaled.astype(np.int32), minlength=bins).astype(np.int64, copy=False)
    below = int(np.count_nonzero(x < low))  # includes -inf
    above = int(np.count_nonzero(x > high))  # includes +inf
    nan_count = int(np.count_nonzero(np.isnan(x))) if dropped else 0
    counts[0] -= below + nan_count
    counts[-1] -= above
    return Histogram(counts, edges, dropped, below + above - (dropped - nan_count))


def downsample_scatter(
    x: ArrayLike,
    y: ArrayLike,
    *,
    highlight: NDArray[np.bool_],
    max_points: int = 5000,
    seed: int = 0,
) -> NDArray[np.int64]:
    """Indices (ascending) of at most `max_points` points to draw, chosen deterministically.

    Points with a non-finite coordinate are never chosen. If more remain than
    `max_points`, the highlighted (e.g. selected) and the other points share the quota in
    proportion, except that each group gets at least MIN_GROUP_SHARE of it when it has
    that many points, so a small selection stays visible. Within a group, points are
    taken in a fixed seeded random order (cached, so a call at 1M points costs a few ms),
    so a small change of the highlight moves few points and the plot does not flicker.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or highlight.shape != xs.shape or xs.ndim != 1:
        raise ValueError(f"x, y and highlight differ in shape: {xs.shape}, {ys.shape}, {highlight.shape}")
    valid = np.isfinite(xs) & np.isfinite(ys)
    valid_count = int(np.count_nonzero(valid))
    if valid_count <= max_points:
        return np.flatnonzero(valid).astype(np.int64, copy=False)
    highlighted = valid & highlight
    others = valid & ~highlight
    highlighted_count = int(np.count_nonzero(highlighted))
    others_count = valid_count - highlighted_count
    floor_share = int(max_points * MIN_GROUP_SHARE)
    quota = math.floor(max_points * highlighted_count / valid_count + 0.5)
    quota = max(quota, min(highlighted_count, floor_share))
    quota = min(quota, highlighted_count, max_points - min(others_count, floor_share))
    order = _random_order(xs.size, seed)
    chosen = np.zeros(xs.size, dtype=bool)
    for group, group_quota in ((highlighted, quota), (others, max_points - quota)):
        if group_quota:
            chosen[_first_members(order, group, group_quota)] = True
    return np.flatnonzero(chosen).astype(np.int64, copy=False)


@functools.lru_cache(maxsize=2)
def _random_order(size: int, seed: int) -> NDArray[np.int64]:
    """A fixed random permutation of range(size): every call with the same size and seed
    ranks the points alike, so a small change of the groups moves few points."""
    order = np.random.default_rng(seed).permutation(size)
    order.flags.writeable = False
    return order


def _first_members(order: NDArray[np.int64], group: NDArray[np.bool_], count: int) -> NDArray[np.int64]:
    """The first `count` members of `group` in `order`, reading only as far into `order`
    as needed (a few times count / share of the group, not the whole permutation)."""
    scanned, found = 0, []
    step = count * 2
    total = 0
    while total < count and scanned < order.size:
        window = order[scanned : scanned + step]
        hits = window[group[window]]
        found.append(hits)
        total += hits.size
        scanned += window.size
        step *= 2
    return np.concatenate(found)[:count] if found else np.zeros(0, np.int64)


def _finite_range(x: NDArray[np.float64], dropped: int) -> tuple[float, float]:
    """Finite min and max (numpy's +-0.5 widening when they are equal; (0, 1) if none)."""
    if dropped == x.size:
        return 0.0, 1.0
    low, high = float(np.fmin.reduce(x)), float(np.fmax.reduce(x))  # both skip NaN
    if math.isinf(low) or math.isinf(high):
        finite = x[np.isfinite(x)]
        low, high = float(finite.min()), float(finite.max())
    if low == high:
        return low - 0.5, high + 0.5
    return low, high


Guide = tuple[str, float]
"""A named vertical (or horizontal) line on a plot, e.g. ("M1", -2.0)."""


@dataclass(frozen=True, eq=False)
class HistogramPlot:
    """All pairs and the selected ones, binned alike, with the bounds that matter."""

    title: str
    all_pairs: Histogram
    selected: Histogram
    guides: tuple[Guide, ...]


@dataclass(frozen=True, eq=False)
class ScatterPlot:
    """A deterministic subsample of two sources' margins, selected points marked."""

    x_name: str
    y_name: str
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    selected: NDArray[np.bool_]
    x_guides: tuple[Guide, ...]
    y_guides: tuple[Guide, ...]
    total: int
    """Pairs with both margins finite (the points could have been any of them)."""


@dataclass(frozen=True, eq=False)
class PlotData:
    """Every view of the curation pane's plot, in `v` order."""

    views: tuple[HistogramPlot | ScatterPlot, ...]


class HistogramMemo:
    """The all-pairs histogram of each margin and of the score, kept while the same values
    come back: margins change only with a swap, the score only with a choice that re-ranks
    (not a budget edit), so most refreshes bin only the selection. Values are compared bit
    for bit (about 1 ms at 1M pairs, a histogram costs several)."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[NDArray[np.float64], int, Histogram]] = {}
        self._valid: tuple[NDArray[np.float64], NDArray[np.float64], int] | None = None

    def histogram(self, name: str, values: NDArray[np.float64], bins: int) -> Histogram:
        kept = self._kept.get(name)
        if kept is not None and kept[1] == bins and same_values(kept[0], values):
            return kept[2]
        result = histogram(values, bins=bins)
        self._kept[name] = (values, bins, result)
        return result

    def both_finite(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> int:
        """How many pairs have both values finite."""
        if self._valid is not None and same_values(self._valid[0], x) and same_values(self._valid[1], y):
            return self._valid[2]
        count = int(np.count_nonzero(np.isfinite(x) & np.isfinite(y)))
        self._valid = (x, y, count)
        return count


def same_values(a: NDArray[np.float64], b: NDArray[np.float64]) -> bool:
    """Bit for bit equal float64 arrays (a NaN equals the same NaN): cheaper than a float compare."""
    return a is b or (a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64)))


def selection_plots(
    margins: Mapping[str, NDArray[np.float64]],
    selection: Selection,
    score: NDArray[np.float64] | None,
    score_title: str,
    *,
    bins: int = 40,
    max_points: int = 4000,
    memo: HistogramMemo | None = None,
) -> PlotData:
    """One histogram per margin source and one of `score`, then the scatter of the first
    two sources (when there are two).

    `margins` are the margins the selection used: swapped pairs already negated. `score`
    is what the pane shows as the pair's score (DM-MUL: the fused log-odds, which do not
    round to 1.0 the way the fused probability does). `memo` keeps the histograms of all
    pairs between calls (callers must not modify an array they passed).
    """
    memo = memo if memo is not None else HistogramMemo()
    views: list[HistogramPlot | ScatterPlot] = []
    for name, values in margins.items():
        views.append(
            _histogram_plot(
                f"{name} margin",
                values,
                memo.histogram(name, values, bins),
                selection.indices,
                _guides(selection, name),
            )
        )
    if score is not None:
        # " score": no margin source has a name with a space
        views.append(_histogram_plot(score_title, score, memo.histogram(" score", score, bins), selection.indices, ()))
    if len(margins) >= 2:
        (x_name, x), (y_name, y) = list(margins.items())[:2]
        shown = downsample_scatter(x, y, highlight=selection.mask, max_points=max_points)
        valid = memo.both_finite(x, y)
        views.append(
            ScatterPlot(
                x_name,
                y_name,
                x[shown],
                y[shown],
                selection.mask[shown],
                _guides(selection, x_name),
                _guides(selection, y_name),
                valid,
            )
        )
    return PlotData(tuple(views))


def _histogram_plot(
    title: str,
    values: NDArray[np.float64],
    all_pairs: Histogram,
    selected: NDArray[np.int64],
    guides: tuple[Guide, ...],
) -> HistogramPlot:
    value_range = (float(all_pairs.edges[0]), float(all_pairs.edges[-1]))
    kept = histogram(values[selected], bins=all_pairs.counts.size, value_range=value_range)
    return HistogramPlot(title, all_pairs, kept, guides)


def _guides(selection: Selection, source: str) -> tuple[Guide, ...]:
    """DM-MUL's M1 and M2 of `source`, or the outlier-trim cut-offs of a ranked source."""
    bounds = selection.bounds.get(source)
    if bounds is not None:
        return (("M1", bounds.m1), ("M2", bounds.m2))
    if selection.trim_range is not None and selection.params.source == source and selection.params.trim > 0:
        low, high = selection.trim_range
        return (("trim", low), ("trim", high))
    return ()


def nice_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Round tick values in [low, high] (steps of 1, 2 or 5 times a power of ten): as many
    as fit in `most` + 1, and never fewer than two."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw_step = (high - low) / max(most, 1)
    power = 10.0 ** math.floor(math.log10(raw_step))
    mantissa = next(factor for factor in (1, 2, 5, 10) if power * factor >= raw_step)
    ticks = _ticks(low, high, power * mantissa)
    while len(ticks) < 2:  # a range just short of one step: take the next smaller step
        mantissa, power = {1: (5, power / 10), 2: (1, power), 5: (2, power), 10: (5, power)}[mantissa]
        ticks = _ticks(low, high, power * mantissa)
    return ticks


def _ticks(low: float, high: float, step: float) -> list[float]:
    first = math.ceil(low / step - 1e-9) * step
    ticks = [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]
    return [0.0 if abs(tick) < step * 1e-9 else float(f"{tick:.12g}") for tick in ticks]


def count_ticks(largest: int, most: int = 3) -> list[int]:
    """Whole-number ticks from 0 up to `largest` for a count axis (never 0.5 of a pair)."""
    if largest <= 0:
        return [0]
    return sorted({int(round(tick)) for tick in nice_ticks(0.0, float(largest), most)})


def short_count(count: int) -> str:
    """A count in at most 5 characters: 950, 12k, 1.2M."""
    for divisor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= divisor - divisor // 2000:  # 999,999 is 1M, not 1000k
            value = count / divisor
            return f"{value:.1f}".rstrip("0").rstrip(".") + suffix if value < 10 else f"{value:.0f}{suffix}"
    return str(count)


# Terminal cells --------------------------------------------------------------------------
# The curation pane draws its plots itself from these grids (a plotting library's frame
# cost tens of milliseconds on the UI thread at every refresh; these cost well under one).

BRAILLE_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint8)
"""Braille dot bit for (row within the cell 0-3, column within the cell 0-1)."""


def column_counts(counts: NDArray[np.int64], columns: int) -> NDArray[np.int64]:
    """Histogram counts redistributed onto `columns` equal-width screen columns: a wide
    plot repeats each bin over its columns, a narrow one adds neighbouring bins up."""
    bins = counts.size
    if columns <= 0 or bins == 0:
        return np.zeros(max(columns, 0), np.int64)
    if columns >= bins:
        return counts[(np.arange(columns) * bins) // columns]
    starts = (np.arange(columns) * bins) // columns
    return np.add.reduceat(counts, starts)


def bar_eighths(values: NDArray[np.int64], top: float, rows: int) -> NDArray[np.int64]:
    """Bar heights in eighths of a row (block characters come in eighths), `top` at the
    full height; any non-zero value gets at least one eighth, so a lone pair shows."""
    if top <= 0:
        return np.zeros(values.size, np.int64)
    eighths = np.round(values / top * rows * 8).astype(np.int64)
    return np.where(values > 0, np.maximum(eighths, 1), 0)


def braille_masks(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    columns: int,
    rows: int,
) -> NDArray[np.uint8]:
    """One braille dot per point on a (rows, columns) grid of cells of 2x4 dots; y grows
    upward. Each cell holds the bit mask of its dots (add 0x2800 for the character)."""
    masks = np.zeros((rows, columns), np.uint8)
    if x.size == 0 or rows <= 0 or columns <= 0:
        return masks
    dot_x = _dot_positions(x, x_range, columns * 2)
    dot_y = (rows * 4 - 1) - _dot_positions(y, y_range, rows * 4)
    np.bitwise_or.at(masks, (dot_y // 4, dot_x // 2), BRAILLE_BITS[dot_y % 4, dot_x % 2])
    return masks


def screen_position(value: float, value_range: tuple[float, float], cells: int) -> int:
    """The cell (0 .. cells-1) a value falls in on an axis of `cells` cells."""
    return int(_dot_positions(np.array([value]), value_range, cells)[0])


def _dot_positions(values: NDArray[np.float64], value_range: tuple[float, float], dots: int) -> NDArray[np.int64]:
    low, high = value_range
    span = high - low if high > low else 1.0
    return np.clip(((values - low) / span * dots).astype(np.int64), 0, dots - 1)
