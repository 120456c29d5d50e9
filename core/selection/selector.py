"""Selection: which pairs to keep, by DM-MUL, DM-ADD or one of the paper's baselines.

`select` runs on every keystroke in the app, so it is numpy end to end (no Python loop
over pairs) and picks the top k with a partition, not a sort.

Accounting. Every pair is exactly one of: *excluded* (a manual exclusion; checked
first), *unscored* (a NaN or +-inf margin in a source the mode uses) or *eligible*.
Only eligible pairs can be selected. TOP/MID/BOT then narrow the eligible pairs to
*candidates* (outlier trim; for MID also |m| <= tau); for the other modes the
candidates are the eligible pairs.

Annotations. Excluded pairs are never selected. Swapped pairs (label flipped by a
person) enter with every margin negated, before anything else, including the automatic
M2. Flags do not matter here (an export may drop flagged pairs: core.export.exporter).

Determinism. Ties in the score go to the smaller `tie_break` key (e.g. pair ids as
uint64, see `tie_keys_from_pair_ids`), then to the lower index. Random and MID draw
their sample from a 64-bit hash of (tie-break key or index, seed), so the same seed
keeps the same pairs whatever the row order and however the candidate set changes
around them (a pair stays picked unless a pair with a smaller hash enters).

Saturated DM-MUL ties. Pairs at or above M2 in every source all get the same fused
score, so with a small budget the pair_id decides among many equally "certain" pairs.
`saturated_ties="margin-sum"` (off by default; the default is the paper's formula)
ranks DM-MUL by the fused log-odds, which keep their order where the sigmoid rounds
to 1.0, and breaks the ties that remain by the sum over the fused sources of each
pair's standardised margin ((m - mean) / std over the eligible pairs), then pair_id.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, NDArray

from core.errors import DmtuiError
from core.selection.fusion import FloatArray, auto_m2, dm_add, dm_mul_log_odds, margin_probability, sigmoid

Mode = Literal["dm-mul", "dm-add", "top", "mid", "bot", "random", "low-gap"]
MODES: tuple[Mode, ...] = get_args(Mode)
SINGLE_SOURCE_MODES = ("top", "mid", "bot")

EXTERNAL = "external"
IMPLICIT = "implicit"
IFD = "ifd"
MARGIN_SOURCES = (EXTERNAL, IMPLICIT, IFD)
"""The paper's margin sources, which `dmtui score` computes; data may bring others."""
DEFAULT_FUSED_SOURCES = (EXTERNAL, IMPLICIT)
"""What DM-MUL and DM-ADD fuse unless told otherwise (those of them that exist). IFD is
a baseline of the paper, fused only when asked."""

DEFAULT_M1 = -2.0
"""The paper's M1 for every source."""
DEFAULT_TRIM = 0.01
"""TOP / MID / BOT drop this share of the eligible margins at each end first."""

SaturatedTies = Literal["pair-id", "margin-sum"]
SATURATED_TIES: tuple[str, ...] = get_args(SaturatedTies)

AUTO_M2_START_DIVISOR = {IMPLICIT: 2.0, EXTERNAL: 1.5}
"""The reference search starts M2 at int(max / divisor); any other source uses 2.0."""
DEFAULT_AUTO_M2_START_DIVISOR = 2.0

DEFAULT_TAU = {IFD: 0.1}
"""MID keeps |m| <= tau: 0.1 for IFD, 1.0 for every other source (docs/method.md, "Baselines")."""
DEFAULT_TAU_OTHER = 1.0


_FULL_PARTITION_BELOW = 50_000
_SAMPLE_SIZE = 10_000


class SelectionError(DmtuiError):
    """Selection parameters or inputs that cannot work."""


@dataclass(frozen=True)
class SelectionParams:
    """Everything that decides a selection; exports record it to rebuild the subset."""

    mode: Mode = "dm-mul"
    """dm-mul, dm-add (fuse `sources`), top / mid / bot (of `source`), random, or
    low-gap (MID of the 'ifd' source, whatever `source` says)."""

    budget: int | float = 0.1
    """How many pairs to keep: an int is a count, a float in (0, 1] a fraction of the
    eligible pairs, rounded half up (0.1 of 6,005 eligible -> 601). See `parse_budget`."""

    sources: tuple[str, ...] = DEFAULT_FUSED_SOURCES
    """Margin sources fused by dm-mul and dm-add, in this order (the paper: external, implicit)."""

    source: str | None = None
    """The margin source ranked by top, mid and bot."""

    m1: float | Mapping[str, float] = DEFAULT_M1
    """Lower clip M1 of P(m) for dm-mul: one value for every source, or a value per source
    (sources not named get -2.0)."""

    m2: float | Literal["auto"] | Mapping[str, float | Literal["auto"]] = "auto"
    """Upper clip M2 of P(m) for dm-mul: a value, 'auto' (`core.selection.fusion.auto_m2` on the
    eligible margins, search started at int(max / 1.5) for 'external' and int(max / 2)
    otherwise), or a mapping per source (sources not named get 'auto')."""

    tau: float | None = None
    """MID window |m| <= tau; None means 0.1 for 'ifd' and 1.0 for any other source."""

    trim: float = DEFAULT_TRIM
    """Outlier trim before top / mid / bot: drop the eligible margins below the trim-quantile
    and above the (1 - trim)-quantile (floor(trim * eligible) ranks from each end; margins
    equal to a cut-off value are kept). 0 disables it. Must be in [0, 0.5)."""

    weights: Mapping[str, float] | None = None
    """Per-source weights for dm-mul (exponents on each source's odds) and dm-add
    (multipliers on each margin); sources not named get 1.0."""

    seed: int = 0
    """Seed of the random and MID samples."""

    saturated_ties: SaturatedTies = "pair-id"
    """dm-mul only: 'pair-id' (the paper's formula; equal scores go to the smaller pair_id)
    or 'margin-sum' (rank by fused log-odds, then by the sum of standardised margins)."""

    def __post_init__(self) -> None:
        checked_mode(self.mode)
        _check_budget(self.budget)
        if self.mode in SINGLE_SOURCE_MODES and not self.source:
            raise SelectionError(f"mode {self.mode!r} needs a margin source")
        if self.mode in ("dm-mul", "dm-add") and not self.sources:
            raise SelectionError(f"mode {self.mode!r} needs at least one source to fuse")
        if not 0.0 <= self.trim < 0.5:
            raise SelectionError(f"trim must be in [0, 0.5), got {self.trim}")
        if self.tau is not None and not self.tau >= 0:
            raise SelectionError(f"tau must be >= 0, got {self.tau}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SelectionError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.saturated_ties not in SATURATED_TIES:
            raise SelectionError(
                f"unknown saturated-tie rule {self.saturated_ties!r}", hint=f"one of: {', '.join(SATURATED_TIES)}"
            )

    def m1_for(self, source: str) -> float:
        return float(self.m1.get(source, DEFAULT_M1) if isinstance(self.m1, Mapping) else self.m1)

    def m2_for(self, source: str) -> float | Literal["auto"]:
        value = self.m2.get(source, "auto") if isinstance(self.m2, Mapping) else self.m2
        return "auto" if value == "auto" else float(value)

    def tau_for(self, source: str) -> float:
        if self.tau is not None:
            return self.tau
        return DEFAULT_TAU.get(source, DEFAULT_TAU_OTHER)

    def weight_for(self, source: str) -> float:
        return 1.0 if self.weights is None else float(self.weights.get(source, 1.0))


@dataclass(frozen=True)
class SourceBounds:
    """The P(m) clip bounds dm-mul actually used for one source."""

    m1: float
    m2: float
    m2_auto: bool


@dataclass(frozen=True, eq=False)
class Selection:
    """What `select` kept, the scores it ranked by, and how every pair was accounted for."""

    params: SelectionParams
    indices: NDArray[np.int64]
    """Selected pair indices, ascending."""
    mask: NDArray[np.bool_]
    """True for selected pairs."""
    score: FloatArray | None
    """The ranked score per pair: fused for dm-*, the (swap-negated) margin for
    top / mid / bot / low-gap (then possibly the caller's own array: do not write to it),
    None for random. NaN for unscored pairs."""
    log_odds: FloatArray | None
    """dm-mul only: the fused log-odds, sum_k w_k * logit(p_k), of which `score` is the
    sigmoid; unlike the score it does not round to 1.0 for nearly certain pairs."""
    bounds: Mapping[str, SourceBounds]
    """dm-mul only: M1 and M2 per source."""
    trim_range: tuple[float, float] | None
    """top / mid / bot / low-gap: the margin range [low, high] kept by the outlier trim."""
    trimmed: NDArray[np.bool_] | None
    """top / mid / bot / low-gap: True for eligible pairs the outlier trim dropped."""
    total: int
    excluded: int
    unscored: int
    eligible: int
    candidates: int
    """Pairs the mode could pick from: eligible, after trim (and the tau window for MID)."""
    budget: int | float
    """The budget as requested."""
    requested: int
    """The budget as a count (fractions resolved against `eligible`)."""
    notes: tuple[str, ...] = field(default=())
    """Plain-language remarks for the user (budget larger than the candidates, ...)."""

    @property
    def selected(self) -> int:
        return int(self.indices.size)

    @property
    def budget_exceeds_candidates(self) -> bool:
        """True when fewer pairs than requested were available, so all candidates were taken."""
        return self.requested > self.candidates


@dataclass(frozen=True)
class Overlap:
    count: int
    jaccard: float
    """|A & B| / |A | B|; 1.0 when both selections are empty."""


def overlap(a: Selection, b: Selection | NDArray[np.integer]) -> Overlap:
    """How many pairs two selections of the same dataset share, and their Jaccard index;
    `b` may be the ascending indices a selection keeps (`TopRanking.indices`)."""
    if isinstance(b, Selection) and a.total != b.total:
        raise SelectionError(f"selections cover different datasets ({a.total} vs {b.total} pairs)")
    kept = b.indices if isinstance(b, Selection) else b
    shared = int(np.count_nonzero(a.mask[kept]))
    union = a.selected + int(kept.size) - shared
    return Overlap(shared, shared / union if union else 1.0)


class TopRanking:
    """TOP of one source at any budget, for fixed annotations and trim.

    `select` in mode top redoes for every budget the work that does not depend on it (the
    swaps, which pairs are eligible, the outlier trim, the ranking array); this keeps it,
    so a budget costs the k-th value and the ties at it. `indices(budget)` is the
    `indices` of `select` with the same inputs (tests/test_selection.py compares them).
    The curation pane's overlap counts ask for two TOPs on every budget edit.
    """

    def __init__(
        self,
        source: str,
        margin: ArrayLike,
        trim: float,
        *,
        excluded: NDArray[np.bool_] | None = None,
        swapped: NDArray[np.bool_] | None = None,
        tie_break: NDArray[np.integer] | None = None,
    ) -> None:
        # A one-pair TOP through `select` itself: the same eligibility, trim and swaps.
        base = select(
            {source: margin},
            SelectionParams(mode="top", source=source, budget=1, trim=trim),
            excluded=excluded,
            swapped=swapped,
            tie_break=tie_break,
        )
        assert base.score is not None and base.trimmed is not None
        self.score = base.score
        self.eligible = base.eligible
        self.candidate_count = base.candidates
        self.candidates = np.isfinite(base.score) & ~base.trimmed
        if excluded is not None:
            self.candidates &= ~excluded
        self.keys = None if tie_break is None else np.asarray(tie_break)
        self._order = _ranking_order(self.score, self.candidates, self.candidate_count, largest=True)
        self._last: tuple[tuple[type, int | float], NDArray[np.intp]] | None = None
        """The last budget asked (its type too: 1 is a pair, 1.0 all of them) and its answer."""

    def indices(self, budget: int | float) -> NDArray[np.intp]:
        """The pairs TOP keeps at `budget` (a count or a fraction of the eligible pairs), ascending;
        do not write to them (the last answer is kept for the next call)."""
        _check_budget(budget)
        last = self._last
        if last is not None and last[0] == (type(budget), budget):
            return last[1]
        k = min(resolve_budget(budget, self.eligible), self.candidate_count)
        found = _top_k(self.score, self.candidates, self.candidate_count, k, True, self.keys, order=self._order)
        self._last = ((type(budget), budget), found)
        return found


_COUNT = re.compile(r"\d+|\d{1,3}(?:[,_]\d{3})+")
_NUMBER = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?", re.IGNORECASE)


def parse_budget(text: str) -> int | float:
    """Parse a budget: '600' (count), '0.1' (fraction of eligible pairs) or '10%'.

    >>> parse_budget("6,000"), parse_budget("0.25"), parse_budget("10%")
    (6000, 0.25, 0.1)
    """
    stripped = text.strip()
    hint = "a whole count such as 2000, a fraction in (0, 1] such as 0.1, or a percentage such as 10%"
    if _COUNT.fullmatch(stripped):
        count = int(stripped.replace(",", "").replace("_", ""))
        if count == 0:
            raise SelectionError("a budget of 0 pairs selects nothing", hint=hint)
        return count
    percent = stripped.endswith("%")
    number = stripped[:-1].strip() if percent else stripped
    if not _NUMBER.fullmatch(number):
        raise SelectionError(f"cannot read the budget {text!r}", hint=hint)
    fraction = float(number) / 100.0 if percent else float(number)
    if not 0.0 < fraction <= 1.0:
        shown = f"{number}%" if percent else number
        raise SelectionError(
            f"the budget {shown} is not a fraction in (0, 1] or a percentage in (0, 100]",
            hint=hint,
        )
    return fraction


def budget_text(budget: int | float) -> str:
    """A budget as a person writes it: a count as is, a fraction as a percentage (the
    budget field's own form, whichever of '0.1' and '10%' was typed).

    >>> budget_text(6000), budget_text(0.1), budget_text(0.005)
    ('6000', '10%', '0.5%')
    """
    return f"{budget * 100:.6g}%" if isinstance(budget, float) else str(budget)


def resolve_budget(budget: int | float, eligible: int) -> int:
    """A budget as a count: ints as they are, fractions of `eligible` rounded half up."""
    if isinstance(budget, float):
        return math.floor(budget * eligible + 0.5)
    return budget


def tie_keys_from_pair_ids(pair_ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> NDArray[np.uint64]:
    """Pair ids (16 hex digits, core.data.pairs.pair_id) as uint64 tie-break keys, vectorised:
    read from the ids' Arrow buffer, with no Python string per pair."""
    array = pair_ids if isinstance(pair_ids, (pa.Array, pa.ChunkedArray)) else pa.array(pair_ids, pa.string())
    array = (array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array).cast(pa.string())
    if len(array) == 0:
        return np.zeros(0, dtype=np.uint64)
    lengths = pc.utf8_length(array)
    if array.null_count or pc.min(lengths).as_py() != 16 or pc.max(lengths).as_py() != 16:
        raise SelectionError("pair ids must be 16 hex digits")
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=len(array) + 1, offset=array.offset * 4)
    hex_text = array.buffers()[2][offsets[0] : offsets[-1]].to_pybytes().decode("ascii", errors="replace")
    try:
        raw = bytes.fromhex(hex_text)
    except ValueError as error:
        raise SelectionError(f"pair ids must be hex digits: {error}") from None
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def select(
    margins: Mapping[str, ArrayLike],
    params: SelectionParams,
    *,
    excluded: NDArray[np.bool_] | None = None,
    swapped: NDArray[np.bool_] | None = None,
    tie_break: NDArray[np.integer] | None = None,
) -> Selection:
    """Select pairs by `params` from per-source margins (one float array per source).

    `excluded` and `swapped` are boolean masks of manual annotations; `tie_break` holds
    one integer key per pair (smaller wins a tie). All arrays have one entry per pair.
    """
    used = used_sources(params)
    missing = [s for s in used if s not in margins]
    if missing:
        raise SelectionError(
            f"no margins for source(s) {', '.join(missing)}",
            hint=f"scored sources: {', '.join(margins) or 'none'}",
        )
    total = _pair_count(margins, used, excluded, swapped, tie_break)
    keys = None if tie_break is None else np.asarray(tie_break)
    swapped_at = np.flatnonzero(swapped) if swapped is not None else np.empty(0, np.intp)
    effective: dict[str, FloatArray] = {}  # private copies only where a swap forces one
    scored = np.ones(total, dtype=bool)
    for source in used:
        margin = np.asarray(margins[source], dtype=np.float64)
        if swapped_at.size:
            margin = margin.copy()
            margin[swapped_at] *= -1.0
        effective[source] = margin
        scored &= np.isfinite(margin)
    all_scored = bool(scored.all())
    excluded_mask = np.zeros(total, dtype=bool) if excluded is None else excluded
    eligible_mask = scored & ~excluded_mask
    excluded_count = int(np.count_nonzero(excluded_mask))
    eligible = int(np.count_nonzero(eligible_mask))
    unscored = total - excluded_count - eligible
    notes: list[str] = []
    if unscored:
        notes.append(f"{unscored} pairs have no score in {', '.join(used)} and were left out")

    bounds: dict[str, SourceBounds] = {}
    trim_range: tuple[float, float] | None = None
    trimmed: NDArray[np.bool_] | None = None
    log_odds: FloatArray | None = None
    tie_score: FloatArray | None = None
    candidates = eligible_mask
    score: FloatArray | None
    if params.mode in ("dm-mul", "dm-add"):
        weights = [params.weight_for(s) for s in used]
        if params.mode == "dm-add":
            score = dm_add([effective[s] for s in used], weights)
        else:
            left_out = np.flatnonzero(~eligible_mask) if eligible < total else None
            probabilities = []
            for source in used:
                margin = effective[source]
                bounds[source] = _resolve_bounds(source, margin, left_out, params, notes)
                probabilities.append(
                    margin_probability(
                        margin,
                        bounds[source].m1,
                        bounds[source].m2,
                        out=margin if swapped_at.size else None,  # overwrite only our copies
                    )
                )
            log_odds = dm_mul_log_odds(probabilities, weights, overwrite=True)
            score = sigmoid(log_odds)
            if not all_scored:
                log_odds[~scored] = np.nan
            if params.saturated_ties == "margin-sum":
                tie_score = _standardised_sum(
                    [np.asarray(margins[s], dtype=np.float64) for s in used], swapped_at, eligible_mask
                )
        if not all_scored:  # +-inf margins fuse to finite scores, but count as unscored
            score[~scored] = np.nan
    elif params.mode == "random":
        score = None
    else:
        source = used[0]
        score = effective[source]  # may be the caller's array: never written to
        if not all_scored:
            score = np.where(scored, score, np.nan)
        candidates, trim_range = _trim(score, eligible_mask, eligible, params.trim)
        trimmed = eligible_mask & ~candidates
        if params.mode in ("mid", "low-gap"):
            candidates &= np.abs(score) <= params.tau_for(source)

    candidate_count = eligible if candidates is eligible_mask else int(np.count_nonzero(candidates))
    requested = resolve_budget(params.budget, eligible)
    k = min(requested, candidate_count)
    if requested > candidate_count:
        notes.append(
            f"the budget of {requested} pairs exceeds the {candidate_count} candidate pairs; took all {candidate_count}"
        )
    if params.mode in ("random", "mid", "low-gap"):
        indices = _sample(candidates, k, params.seed, keys)
    else:
        ranked = log_odds if tie_score is not None else score
        assert ranked is not None
        indices = _top_k(ranked, candidates, candidate_count, k, params.mode != "bot", keys, tie_score)
    mask = np.zeros(total, dtype=bool)
    mask[indices] = True
    return Selection(
        params=params,
        indices=indices.astype(np.int64, copy=False),
        mask=mask,
        score=score,
        log_odds=log_odds,
        bounds=bounds,
        trim_range=trim_range,
        trimmed=trimmed,
        total=total,
        excluded=excluded_count,
        unscored=unscored,
        eligible=eligible,
        candidates=candidate_count,
        budget=params.budget,
        requested=requested,
        notes=tuple(notes),
    )


def checked_mode(text: str) -> Mode:
    """`text` as a mode, or the SelectionError an unknown one gets."""
    if text not in MODES:
        raise SelectionError(f"unknown mode {text!r}", hint=f"one of: {', '.join(MODES)}")
    return text


def _check_budget(budget: int | float) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise SelectionError(f"the budget must be a count or a fraction, got {budget!r}")
    if isinstance(budget, int) and budget <= 0:
        raise SelectionError(f"a budget count must be positive, got {budget}")
    if isinstance(budget, float) and not 0.0 < budget <= 1.0:
        raise SelectionError(
            f"a fractional budget must be in (0, 1], got {budget}",
            hint="write a count as an int: 2000, not 2000.0",
        )


def used_sources(params: SelectionParams) -> tuple[str, ...]:
    """The margin sources a selection with `params` reads (none for random)."""
    if params.mode in ("dm-mul", "dm-add"):
        return params.sources
    if params.mode == "low-gap":
        return (IFD,)
    if params.mode == "random":
        return ()
    assert params.source is not None
    return (params.source,)


def _pair_count(
    margins: Mapping[str, ArrayLike],
    used: tuple[str, ...],
    *masks: NDArray | None,
) -> int:
    lengths = {name: len(np.asarray(margins[name])) for name in (used or tuple(margins))}
    if not lengths:  # random needs no margin: the annotation or tie-break arrays count the pairs
        sized = [mask for mask in masks if mask is not None]
        if not sized:
            raise SelectionError("no margins given: nothing to select from")
        lengths = {"pairs": len(sized[0])}
    if len(set(lengths.values())) > 1:
        raise SelectionError(f"margin sources differ in length: {lengths}")
    total = next(iter(lengths.values()))
    for mask in masks:
        if mask is not None and (mask.ndim != 1 or mask.size != total):
            raise SelectionError(f"an annotation or tie-break array has shape {mask.shape}, not ({total},)")
    for mask in masks[:2]:
        if mask is not None and mask.dtype != np.bool_:
            raise SelectionError(f"excluded / swapped must be boolean masks, got {mask.dtype}")
    return total


def _resolve_bounds(
    source: str,
    margin: FloatArray,
    left_out: NDArray[np.intp] | None,
    params: SelectionParams,
    notes: list[str],
) -> SourceBounds:
    """M1 and M2 for one source; an automatic M2 is fitted to the eligible pairs only."""
    m1 = params.m1_for(source)
    m2 = params.m2_for(source)
    if m2 != "auto":
        return SourceBounds(m1, m2, m2_auto=False)
    divisor = AUTO_M2_START_DIVISOR.get(source, DEFAULT_AUTO_M2_START_DIVISOR)
    resolved = auto_m2(margin, m1=m1, start_divisor=divisor, ignore=left_out)
    if resolved == m1 + 1.0:
        pool = margin if left_out is None else np.delete(margin, left_out)
        if not np.any(pool > m1):
            notes.append(f"{source}: no eligible margin above M1 = {m1:g}; M2 set to {resolved:g}")
    return SourceBounds(m1, resolved, m2_auto=True)


def _trim(
    margin: FloatArray, eligible_mask: NDArray[np.bool_], eligible: int, trim: float
) -> tuple[NDArray[np.bool_], tuple[float, float] | None]:
    """Candidates after dropping floor(trim * eligible) ranks at each end (ties kept)."""
    cut = math.floor(trim * eligible)
    if eligible == 0:
        return eligible_mask.copy(), None
    pool = margin if eligible == margin.size else margin[eligible_mask]
    if cut == 0:
        return eligible_mask.copy(), (float(pool.min()), float(pool.max()))
    low, high = np.partition(pool, [cut, eligible - 1 - cut])[[cut, eligible - 1 - cut]]
    kept = eligible_mask & (margin >= low) & (margin <= high)
    return kept, (float(low), float(high))


def _top_k(
    score: FloatArray,
    candidates: NDArray[np.bool_],
    candidate_count: int,
    k: int,
    largest: bool,
    keys: NDArray[np.integer] | None,
    tie_score: FloatArray | None = None,
    order: FloatArray | None = None,
) -> NDArray[np.intp]:
    """Indices of the k best candidates; ties to the larger `tie_score` (if given), then the
    smaller key, then the lower index. `order` is `_ranking_order` of the same arguments,
    when the caller keeps it for several k."""
    if k >= candidate_count:
        return np.flatnonzero(candidates)
    if k == 0:
        return np.empty(0, dtype=np.intp)
    if order is None:
        order = _ranking_order(score, candidates, candidate_count, largest)
    all_candidates = candidate_count == order.size
    kth = _kth_smallest(order, k - 1)
    kth_score = -kth if largest else kth
    chosen = score > kth_score if largest else score < kth_score  # NaN compares False
    at_kth = score == kth_score
    if not all_candidates:
        chosen &= candidates
        at_kth &= candidates
    tied = np.flatnonzero(at_kth)
    needed = k - int(np.count_nonzero(chosen))
    if tie_score is not None and needed < tied.size:
        by_key = np.zeros(tied.size, dtype=np.uint64) if keys is None else keys[tied].astype(np.uint64)
        # NaN tie scores (a source without spread) rank last among the tied.
        tie_order = np.lexsort((tied, by_key, np.nan_to_num(-tie_score[tied], nan=np.inf)))
        chosen[tied[tie_order[:needed]]] = True
    else:
        chosen[_first_by_key(tied, needed, None if keys is None else keys[tied])] = True
    return np.flatnonzero(chosen)


def _ranking_order(score: FloatArray, candidates: NDArray[np.bool_], candidate_count: int, largest: bool) -> FloatArray:
    """What `_top_k` ranks on: the best first, non-candidates (NaN included) pushed to the end."""
    order = np.negative(score) if largest else score.copy()
    if candidate_count != order.size:
        order[~candidates] = np.inf
    return order


def _standardised_sum(
    margins: list[FloatArray], swapped_at: NDArray[np.intp], eligible: NDArray[np.bool_]
) -> FloatArray:
    """Per pair, the sum over sources of (m - mean) / std, both taken over the eligible
    pairs (swaps applied); a source whose eligible margins do not vary adds 0."""
    total = np.zeros(eligible.size, dtype=np.float64)
    for margin in margins:
        if swapped_at.size:
            margin = margin.copy()
            margin[swapped_at] *= -1.0
        pool = margin[eligible]
        spread = float(pool.std()) if pool.size else 0.0
        if spread > 0 and np.isfinite(spread):
            total += (margin - float(pool.mean())) / spread
    return total


def _kth_smallest(values: FloatArray, rank: int) -> float:
    """``np.partition(values, rank)[rank]`` for NaN-free values, but faster on large arrays.

    A strided sample of about 10k values brackets the answer and only the values inside
    the bracket are partitioned; when the bracket misses (adversarial order), it falls
    back to partitioning everything. Exact either way.
    """
    n = values.size
    if n <= _FULL_PARTITION_BELOW:
        return float(np.partition(values, rank)[rank])
    sample = np.sort(values[:: n // _SAMPLE_SIZE])
    share = rank / n
    centre = share * sample.size
    spread = 4.0 * math.sqrt(sample.size * share * (1.0 - share)) + 8.0
    low = sample[max(0, math.floor(centre - spread))]
    high = sample[min(sample.size - 1, math.ceil(centre + spread))]
    below = int(np.count_nonzero(values < low))
    in_bracket = (values >= low) & (values <= high)
    bracket = values[in_bracket]
    if below <= rank < below + bracket.size:
        return float(np.partition(bracket, rank - below)[rank - below])
    return float(np.partition(values, rank)[rank])


def _first_by_key(indices: NDArray[np.intp], k: int, keys: NDArray[np.integer] | None) -> NDArray[np.intp]:
    """The k of `indices` (ascending) with the smallest `keys` (one per index); equal keys
    go to the lower index, and no keys means the lowest indices."""
    if k >= indices.size:
        return indices
    if keys is None:
        return indices[:k]
    kth = np.partition(keys, k - 1)[k - 1]
    below = keys < kth
    ties = np.flatnonzero(keys == kth)[: k - int(np.count_nonzero(below))]
    below[ties] = True
    return indices[below]


def _sample(candidates: NDArray[np.bool_], k: int, seed: int, keys: NDArray[np.integer] | None) -> NDArray[np.intp]:
    """A seeded sample of k candidates: the ones with the smallest hash of (key, seed)."""
    indices = np.flatnonzero(candidates)
    if k >= indices.size:
        return indices
    identity = indices.astype(np.uint64) if keys is None else keys[indices].astype(np.uint64)
    return _first_by_key(indices, k, _splitmix64(identity, seed))


def _splitmix64(values: NDArray[np.uint64], seed: int) -> NDArray[np.uint64]:
    """SplitMix64 finaliser of value + seed * golden ratio: a fixed, well-mixed 64-bit hash."""
    mixed = values + np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    mixed ^= mixed >> np.uint64(30)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(27)
    mixed *= np.uint64(0x94D049BB133111EB)
    mixed ^= mixed >> np.uint64(31)
    return mixed
