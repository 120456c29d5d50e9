"""Time the keypress path: auto M2 + DM-MUL fusion + top-10% selection + the plots' data.

    python bench/bench_selection.py [--pairs 1000000] [--repeats 15]

Synthetic margins (external ~ N(0, 4), implicit ~ N(0, 30) with a heavy tail, a few
NaNs, 0.01% excluded and 0.01% swapped). Every figure is the best of `repeats` runs;
ratios compare variants measured side by side in the same run. "Refresh worker" is what
Curate's worker does for a budget edit: `select`, then `selection_plots` with the memo that
keeps the all-pairs histograms (a budget edit re-ranks nothing, so only the selected
pairs are binned again).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.selection.fusion import auto_m2, dm_mul, margin_probability  # noqa: E402
from core.selection.plotdata import HistogramMemo, histogram, selection_plots  # noqa: E402
from core.selection.selector import SelectionParams, select  # noqa: E402

KEYPRESS_BUDGET_MS = 50.0


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def literal_auto_m2(values: np.ndarray, start_divisor: float) -> float:
    """The reference +1 loop, for comparison."""
    finite = values[np.isfinite(values)]
    top = finite.max()
    m2 = int(top / start_divisor)
    while True:
        count = int(np.count_nonzero(finite >= m2))
        if count < 30 or count < top - m2:
            return float(m2)
        m2 += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    n, repeats = args.pairs, args.repeats

    rng = np.random.default_rng(0)
    external = rng.normal(0, 4, n)
    implicit = rng.standard_t(5, n) * 30
    external[rng.integers(0, n, 50)] = np.nan
    implicit[rng.integers(0, n, 50)] = np.nan
    excluded = np.zeros(n, dtype=bool)
    excluded[rng.integers(0, n, n // 10_000)] = True
    swapped = np.zeros(n, dtype=bool)
    swapped[rng.integers(0, n, n // 10_000)] = True
    margins = {"external": external, "implicit": implicit}
    params = SelectionParams(mode="dm-mul", budget=0.1)

    def keypress() -> None:
        result = select(margins, params, excluded=excluded, swapped=swapped)
        histogram(external, 60)
        histogram(implicit, 60)
        histogram(result.score, 60)

    result = select(margins, params, excluded=excluded, swapped=swapped)
    probabilities = [
        margin_probability(external, -2.0, result.bounds["external"].m2),
        margin_probability(implicit, -2.0, result.bounds["implicit"].m2),
    ]
    k = result.requested
    score = result.score

    def argsort_top_k() -> np.ndarray:
        order = np.argsort(-np.where(np.isnan(score) | excluded, -np.inf, score), kind="stable")
        return np.sort(order[:k])

    effective = {name: np.where(swapped, -values, values) for name, values in margins.items()}
    memo = HistogramMemo()

    def refresh_worker() -> None:
        selection = select(margins, params, excluded=excluded, swapped=swapped)
        selection_plots(effective, selection, selection.log_odds, "log-odds", memo=memo)

    figures = {
        "keypress (select + 3 histograms)": best_ms(keypress, repeats),
        "refresh worker (select + plots, memo kept)": best_ms(refresh_worker, repeats),
        "select dm-mul top 10% (auto M2, fuse, pick)": best_ms(
            lambda: select(margins, params, excluded=excluded, swapped=swapped), repeats
        ),
        "select, no annotations": best_ms(lambda: select(margins, params), repeats),
        "auto_m2 external": best_ms(lambda: auto_m2(external, start_divisor=1.5), repeats),
        "auto_m2 implicit": best_ms(lambda: auto_m2(implicit, start_divisor=2.0), repeats),
        "literal +1 loop auto_m2 implicit": best_ms(lambda: literal_auto_m2(implicit, 2.0), 3),
        "margin_probability x2": best_ms(
            lambda: [margin_probability(m, -2.0, 10.0) for m in (external, implicit)], repeats
        ),
        "dm_mul of 2 sources": best_ms(lambda: dm_mul(probabilities), repeats),
        "histogram (60 bins)": best_ms(lambda: histogram(implicit, 60), repeats),
        "np.histogram of finite values": best_ms(
            lambda: np.histogram(implicit[np.isfinite(implicit)], 60), repeats
        ),
        "select top/bot on one margin": best_ms(
            lambda: select(margins, SelectionParams(mode="top", source="implicit", budget=0.1)), repeats
        ),
        "full argsort top 10% (baseline)": best_ms(argsort_top_k, 3),
    }
    assert np.array_equal(argsort_top_k(), result.indices), "argsort baseline disagrees"

    print(f"{n:,} pairs, best of {repeats} (ms)")
    for name, ms in figures.items():
        print(f"  {name:<48} {ms:8.2f}")
    print("ratios (same run)")
    print(f"  keypress / {KEYPRESS_BUDGET_MS:.0f} ms budget: "
          f"{figures['keypress (select + 3 histograms)'] / KEYPRESS_BUDGET_MS:.2f}")
    print(f"  refresh worker / select: "
          f"{figures['refresh worker (select + plots, memo kept)'] / figures['select dm-mul top 10% (auto M2, fuse, pick)']:.2f}x")
    print(f"  full argsort top-k / whole select: "
          f"{figures['full argsort top 10% (baseline)'] / figures['select, no annotations']:.1f}x")
    print(f"  literal loop / vectorised auto_m2 (implicit): "
          f"{figures['literal +1 loop auto_m2 implicit'] / figures['auto_m2 implicit']:.1f}x")
    print(f"  np.histogram / histogram: "
          f"{figures['np.histogram of finite values'] / figures['histogram (60 bins)']:.1f}x")
    print(f"selected {result.selected:,} of {result.eligible:,} eligible; "
          f"M2 external {result.bounds['external'].m2:g}, implicit {result.bounds['implicit'].m2:g}; "
          f"{result.unscored} unscored, {result.excluded} excluded")


if __name__ == "__main__":
    main()
