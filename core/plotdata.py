"""Plot-ready data: histogram counts and scatter subsamples, cheap enough for every keystroke.

The UI draws what these return and never bins or samples a million values itself
(plotext redraws everything on every repaint; a 120x35 braille plot has about 33k dots,
so about 5k scatter points is plenty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

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


def histogram(
    values: ArrayLike, bins: int = 40, value_range: tuple[float, float] | None = None
) -> Histogram:
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
    taken in a fixed seeded random order, so a small change of the highlight moves
    few points and the plot does not flicker.
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
    priority = np.random.default_rng(seed).random(xs.size)
    chosen = np.zeros(xs.size, dtype=bool)
    for group, group_quota in ((highlighted, quota), (others, max_points - quota)):
        if group_quota == 0:
            continue
        members = np.flatnonzero(group)
        if group_quota < members.size:
            members = members[np.argpartition(priority[members], group_quota - 1)[:group_quota]]
        chosen[members] = True
    return np.flatnonzero(chosen).astype(np.int64, copy=False)


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
