"""Dual-Margin fusion: margins to probabilities, DM-ADD, DM-MUL, automatic M2.

Plain functions over float64 numpy arrays; docs/method.md is the spec.

Missing scores. A NaN margin means "not scored". Every function here lets NaN
propagate: a pair with a NaN margin in any source gets a NaN probability and a NaN
fused score. `auto_m2` ignores non-finite margins. Selection (core/selection/selector.py) goes
one step further and treats any non-finite margin (NaN or +-inf) as unscored: such
pairs are never selected and are counted in the result.

The 0/0 case of DM-MUL. The Bayesian product of odds
``prod p_k / (prod p_k + prod (1 - p_k))`` is 0/0 when one source says p = 0 and
another p = 1. `dm_mul` works in log-odds and clamps every probability to
``[PROBABILITY_EPS, 1 - PROBABILITY_EPS]`` first, i.e. no source is ever certain. So:
  * p = 0 against p = 1 with equal weights cancel exactly and give 0.5 (the other
    sources, if any, then decide);
  * a pair at p = 0 in one source is not flattened to exactly 0: it keeps a tiny
    score that still grows with the other sources, so the ranking stays informative;
  * one source alone returns P(m) to within 1e-12.
PROBABILITY_EPS is a power of two, so 1 - eps and 1 - (1 - eps) are exact and the
two clamped ends are exact mirror images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from core.errors import DmtuiError

FloatArray = NDArray[np.float64]

PROBABILITY_EPS = 2.0**-40
"""Probabilities are clamped to [eps, 1 - eps] before taking log-odds (about 9.1e-13)."""

TAIL_MAX_PAIRS = 30
"""`auto_m2`: a tail [M2, max] with fewer pairs than this is sparse enough."""

LARGEST_AUTO_M2_MARGIN = 2.0**52
"""`auto_m2` steps M2 by 1, which float64 can no longer do beyond this magnitude."""


class FusionError(DmtuiError):
    """Fusion parameters that cannot work (M2 <= M1, bad weights, absurd margins)."""


def margin_probability(margin: ArrayLike, m1: float, m2: float, *, out: FloatArray | None = None) -> FloatArray:
    """P(m) = (clip(m, M1, M2) - M1) / (M2 - M1): 0 at or below M1, 1 at or above M2.

    NaN stays NaN; +-inf clip to 1 and 0. `out` may be `margin` itself.
    """
    if not m2 > m1:
        raise FusionError(f"M2 ({m2}) must be greater than M1 ({m1})", hint="raise M2 or set it to 'auto'")
    probability = np.clip(np.asarray(margin, dtype=np.float64), m1, m2, out=out)
    probability -= m1
    probability /= m2 - m1
    return probability


def dm_add(margins: Sequence[ArrayLike], weights: Sequence[float] | None = None) -> FloatArray:
    """DM-ADD: the (weighted) sum of the margins over sources. Lenient: one high margin is enough."""
    arrays, weights = _check_sources(margins, weights)
    total = np.zeros(arrays[0].shape, dtype=np.float64)
    for margin, weight in zip(arrays, weights):
        if weight == 1.0:
            total += margin
        else:
            total += weight * margin
    return total


def dm_mul(
    probabilities: Sequence[ArrayLike],
    weights: Sequence[float] | None = None,
    *,
    overwrite: bool = False,
) -> FloatArray:
    """DM-MUL for K sources: prod p_k / (prod p_k + prod (1 - p_k)), with p_k ** w_k.

    Computed as sigmoid(`dm_mul_log_odds`) (see the module docstring for the 0/0 case).
    Strict: a low probability from any source sinks the pair. Result in (0, 1), NaN where
    any source is NaN.
    """
    log_odds = dm_mul_log_odds(probabilities, weights, overwrite=overwrite)
    return sigmoid(log_odds, out=log_odds)


def dm_mul_log_odds(
    probabilities: Sequence[ArrayLike],
    weights: Sequence[float] | None = None,
    *,
    overwrite: bool = False,
) -> FloatArray:
    """The fused log-odds of DM-MUL: sum_k w_k * (log p_k - log(1 - p_k)), each p_k first
    clamped to [PROBABILITY_EPS, 1 - PROBABILITY_EPS]. NaN where any source is NaN.

    With `overwrite`, the inputs may be used as scratch space and the result written into
    the first (pass distinct arrays): each fresh 8 MB array costs about 1.5 ms of page
    faults, which matters at 1M pairs on every keystroke.
    """
    arrays, weights = _check_sources(probabilities, weights)
    log_odds = arrays[0] if overwrite else np.empty_like(arrays[0])
    complement = np.empty_like(log_odds)
    scratch: FloatArray | None = None
    for position, (probability, weight) in enumerate(zip(arrays, weights)):
        if position == 0:
            term = log_odds
        elif overwrite:
            term = probability
        else:
            term = scratch = np.empty_like(log_odds) if scratch is None else scratch
        np.clip(probability, PROBABILITY_EPS, 1.0 - PROBABILITY_EPS, out=term)
        np.subtract(1.0, term, out=complement)
        np.log(term, out=term)
        np.log(complement, out=complement)
        term -= complement
        if weight != 1.0:
            term *= weight
        if position > 0:
            log_odds += term
    return log_odds


def sigmoid(log_odds: FloatArray, out: FloatArray | None = None) -> FloatArray:
    """1 / (1 + exp(-z)), overflow-safe (exp(-z) = inf gives exactly 0)."""
    result = np.negative(log_odds, out=out)
    with np.errstate(over="ignore"):
        np.exp(result, out=result)
    result += 1.0
    return np.reciprocal(result, out=result)


def auto_m2(
    margins: ArrayLike,
    *,
    m1: float = -2.0,
    start_divisor: float = 2.0,
    ignore: NDArray[np.intp] | None = None,
) -> float:
    """The smallest sparse-tail M2 found by the reference +1 search (docs/method.md, "M1 and M2").

    The search starts at ``max(int(max_margin / start_divisor), floor(M1) + 1)`` and
    raises M2 by 1 until the tail [M2, max_margin] holds fewer than `TAIL_MAX_PAIRS`
    pairs or fewer pairs than ``max_margin - M2``. `int` truncates toward zero as in the
    reference; the ``floor(M1) + 1`` floor only matters when that start would not exceed
    M1, and guarantees M2 > M1. The reference starts use divisor 2 for the implicit
    margin and 1.5 for the external one.

    Instead of looping, only the integers where the tail count changes (``floor(v) + 1``
    for each margin v near the top) and the start are tested, so the answer equals the
    loop's at any range, at the cost of one partial sort of the upper tail.

    Non-finite margins, and those at the indices in `ignore` (e.g. excluded pairs), are
    left out. With no margin left, or max_margin <= M1 (every probability is 0 whatever
    M2 is), there is nothing to calibrate and M1 + 1 is returned.
    """
    if not start_divisor > 0:
        raise FusionError(f"the M2 search start divisor must be positive, got {start_divisor}")
    values = np.asarray(margins, dtype=np.float64).ravel()
    ignored = values[ignore] if ignore is not None else values[:0]
    max_margin = float(np.fmax.reduce(values)) if values.size else math.nan
    if max_margin == math.inf or np.any(ignored == max_margin):
        # Rare: copy the values that count (cheaper to skip on every keystroke).
        keep = np.isfinite(values)
        if ignore is not None:
            keep[ignore] = False
        values, ignored = values[keep], values[:0]
        max_margin = float(values.max()) if values.size else math.nan
    if not math.isfinite(max_margin) or max_margin <= m1:
        return m1 + 1.0
    if abs(max_margin) >= LARGEST_AUTO_M2_MARGIN or abs(m1) >= LARGEST_AUTO_M2_MARGIN:
        raise FusionError(
            f"margins up to {max_margin:g} are too large for the automatic M2 search",
            hint="set M2 explicitly for this source",
        )
    start = float(max(int(max_margin / start_divisor), math.floor(m1) + 1))
    in_tail = values >= start
    tail_count = int(np.count_nonzero(in_tail)) - int(np.count_nonzero(ignored >= start))
    headroom = max_margin - start
    if tail_count < TAIL_MAX_PAIRS or tail_count < headroom:
        return start
    # From here on a candidate M2 can only pass once its tail holds fewer than
    # max(TAIL_MAX_PAIRS, headroom) pairs, so the top `kept` margins are all we need:
    # with fewer than `kept` margins above it, a candidate's count is exact; otherwise
    # the count of kept margins (= kept) fails both tests just as the true count does.
    kept = max(TAIL_MAX_PAIRS, math.ceil(headroom))
    if ignored.size:
        in_tail[ignore] = False
    tail = values[in_tail]
    top = np.sort(np.partition(tail, tail.size - kept)[tail.size - kept :])
    candidates = np.floor(top) + 1.0
    candidates = candidates[candidates > start]  # the start itself has already failed
    counts = kept - np.searchsorted(top, candidates, side="left")
    passes = (counts < TAIL_MAX_PAIRS) | (counts < max_margin - candidates)
    # floor(max) + 1 has an empty tail, so some candidate always passes.
    return float(candidates[np.argmax(passes)])


def _check_sources(
    arrays: Sequence[ArrayLike], weights: Sequence[float] | None
) -> tuple[list[FloatArray], list[float]]:
    converted = [np.asarray(a, dtype=np.float64) for a in arrays]
    if not converted:
        raise FusionError("fusion needs at least one margin source")
    shape = converted[0].shape
    if any(a.shape != shape for a in converted):
        raise FusionError(f"margin sources differ in shape: {[a.shape for a in converted]}")
    if weights is None:
        return converted, [1.0] * len(converted)
    weights = [float(w) for w in weights]
    if len(weights) != len(converted):
        raise FusionError(f"{len(weights)} weights for {len(converted)} sources")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
        raise FusionError(f"weights must be finite, non-negative and not all zero, got {weights}")
    return converted, weights
