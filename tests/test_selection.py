"""Selection: every mode on hand-worked arrays, annotations, ties, budgets, accounting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.selection.selector import (
    SelectionError,
    SelectionParams,
    TopRanking,
    overlap,
    parse_budget,
    resolve_budget,
    select,
    tie_keys_from_pair_ids,
)

EXT = np.array([5.0, 1.0, -3.0, 4.0])
IMP = np.array([5.0, -3.0, 5.0, 4.0])
TWO = {"external": EXT, "implicit": IMP}


def params(**kwargs) -> SelectionParams:
    return SelectionParams(**{"trim": 0.0, **kwargs})


def test_dm_mul_hand_worked():
    # M2 = 6: P_ext = 7/8, 3/8, 0, 6/8; P_imp = 7/8, 0, 7/8, 6/8
    # fused: 49/50, ~0, ~0, 9/10 -> top 2 are pairs 0 and 3
    result = select(TWO, params(mode="dm-mul", budget=2, m2=6.0))
    np.testing.assert_array_equal(result.indices, [0, 3])
    assert result.indices.dtype == np.int64
    np.testing.assert_allclose(result.score[[0, 3]], [49 / 50, 9 / 10], rtol=1e-9)
    assert 0 < result.score[1] < result.score[2] < 1e-9  # odds 3/5 vs 7, times ~eps
    assert result.bounds["external"].m2 == 6.0 and not result.bounds["external"].m2_auto
    np.testing.assert_array_equal(result.mask, [True, False, False, True])


def test_dm_mul_per_source_bounds_and_auto():
    result = select(TWO, params(mode="dm-mul", budget=1, m1={"external": -4.0}, m2={"implicit": 10.0}))
    assert result.bounds["external"].m1 == -4.0 and result.bounds["external"].m2_auto
    assert result.bounds["external"].m2 == 3.0  # max 5, start int(5 / 1.5) = 3, 2 pairs above
    assert result.bounds["implicit"] == type(result.bounds["implicit"])(-2.0, 10.0, False)


def test_dm_add_hand_worked():
    # sums 10, -2, 2, 8
    np.testing.assert_array_equal(select(TWO, params(mode="dm-add", budget=2)).indices, [0, 3])
    np.testing.assert_array_equal(select(TWO, params(mode="dm-add", budget=3)).indices, [0, 2, 3])


def test_top_and_bot_of_one_source():
    np.testing.assert_array_equal(select(TWO, params(mode="top", source="external", budget=1)).indices, [0])
    np.testing.assert_array_equal(select(TWO, params(mode="bot", source="external", budget=1)).indices, [2])
    np.testing.assert_array_equal(select(TWO, params(mode="bot", source="implicit", budget=2)).indices, [1, 3])


def test_trim_drops_both_extremes_before_top_and_bot():
    margins = {"external": np.arange(100.0)}
    top = select(margins, SelectionParams(mode="top", source="external", budget=1, trim=0.05))
    bot = select(margins, SelectionParams(mode="bot", source="external", budget=1, trim=0.05))
    np.testing.assert_array_equal(top.indices, [94])
    np.testing.assert_array_equal(bot.indices, [5])
    assert top.trim_range == (5.0, 94.0) and top.candidates == 90


def test_mid_samples_inside_tau_and_says_when_budget_is_too_big():
    margins = {"external": np.array([0.5, -0.5, 2.0, 3.0, 0.9, -1.0, -1.5])}
    result = select(margins, params(mode="mid", source="external", budget=10))
    np.testing.assert_array_equal(result.indices, [0, 1, 4, 5])  # |m| <= 1.0
    assert result.budget_exceeds_candidates and result.candidates == 4 and result.requested == 10
    assert any("exceeds" in note for note in result.notes)
    picked = select(margins, params(mode="mid", source="external", budget=2, seed=3)).indices
    assert picked.size == 2 and set(picked) <= {0, 1, 4, 5}


def test_low_gap_is_mid_of_ifd_with_tau_01():
    margins = {"ifd": np.array([0.05, -0.1, 0.3, -0.2, 0.0]), "external": np.zeros(5)}
    result = select(margins, params(mode="low-gap", budget=10))
    np.testing.assert_array_equal(result.indices, [0, 1, 4])


def test_random_is_seeded_and_respects_exclusions():
    margins = {"external": np.zeros(1000)}
    excluded = np.zeros(1000, dtype=bool)
    excluded[::3] = True
    first = select(margins, SelectionParams(mode="random", budget=100, seed=1), excluded=excluded)
    again = select(margins, SelectionParams(mode="random", budget=100, seed=1), excluded=excluded)
    other = select(margins, SelectionParams(mode="random", budget=100, seed=2), excluded=excluded)
    np.testing.assert_array_equal(first.indices, again.indices)
    assert not np.array_equal(first.indices, other.indices)
    assert first.selected == 100 and not first.mask[excluded].any()
    assert first.score is None


def test_random_sample_is_stable_when_candidates_change():
    margins = {"external": np.zeros(1000)}
    base = select(margins, SelectionParams(mode="random", budget=50, seed=0))
    excluded = np.zeros(1000, dtype=bool)
    excluded[base.indices[0]] = True
    after = select(margins, SelectionParams(mode="random", budget=50, seed=0), excluded=excluded)
    assert len(set(base.indices) & set(after.indices)) == 49


def test_random_sample_follows_pairs_not_rows():
    keys = np.arange(500, dtype=np.uint64) * np.uint64(7919)
    order = np.random.default_rng(0).permutation(500)
    margins = {"external": np.zeros(500)}
    p = SelectionParams(mode="random", budget=40, seed=5)
    plain = select(margins, p, tie_break=keys)
    shuffled = select(margins, p, tie_break=keys[order])
    assert set(keys[plain.indices]) == set(keys[order][shuffled.indices])


def test_ties_go_to_smaller_key_then_lower_index():
    margins = {"external": np.array([1.0, 2.0, 2.0, 2.0, 0.0])}
    p = params(mode="top", source="external", budget=2)
    np.testing.assert_array_equal(select(margins, p).indices, [1, 2])
    keys = np.array([0, 9, 5, 1, 0], dtype=np.uint64)
    np.testing.assert_array_equal(select(margins, p, tie_break=keys).indices, [2, 3])
    same_keys = np.array([0, 3, 3, 3, 0], dtype=np.uint64)
    np.testing.assert_array_equal(select(margins, p, tie_break=same_keys).indices, [1, 2])


def test_excluded_never_selected_and_swapped_negated():
    excluded = np.array([True, False, False, False])
    result = select(TWO, params(mode="dm-add", budget=1), excluded=excluded)
    np.testing.assert_array_equal(result.indices, [3])
    assert result.excluded == 1 and result.eligible == 3
    swapped = np.array([False, False, True, False])  # sums become 10, -2, -2, 8
    result = select(TWO, params(mode="dm-add", budget=3), swapped=swapped)
    np.testing.assert_array_equal(result.indices, [0, 1, 3])
    np.testing.assert_array_equal(result.score, [10.0, -2.0, -2.0, 8.0])
    bot = select(TWO, params(mode="bot", source="external", budget=1), swapped=swapped)
    np.testing.assert_array_equal(bot.indices, [1])  # -3 became 3
    np.testing.assert_array_equal(EXT, [5.0, 1.0, -3.0, 4.0])  # inputs untouched


def test_unscored_pairs_are_counted_and_never_selected():
    ext = np.array([5.0, np.nan, 3.0, np.inf, 1.0])
    imp = np.array([1.0, 9.0, np.nan, 2.0, 1.0])
    excluded = np.array([False, False, True, False, False])  # excluded counts first
    result = select({"external": ext, "implicit": imp}, params(mode="dm-mul", budget=1.0), excluded=excluded)
    assert (result.total, result.excluded, result.unscored, result.eligible) == (5, 1, 2, 2)
    np.testing.assert_array_equal(result.indices, [0, 4])
    assert np.isnan(result.score[[1, 2, 3]]).all()
    assert any("no score" in note for note in result.notes)


def test_budget_larger_than_eligible_takes_all():
    result = select(TWO, params(mode="dm-mul", budget=100))
    assert result.selected == 4 and result.budget_exceeds_candidates
    assert result.requested == 100 and result.budget == 100


def test_fraction_budget_rounds_half_up_against_eligible():
    assert resolve_budget(0.1, 6005) == 601
    assert resolve_budget(0.29, 100) == 29
    assert resolve_budget(0.5, 3) == 2
    assert resolve_budget(250, 10) == 250
    margins = {"external": np.arange(10.0)}
    excluded = np.zeros(10, dtype=bool)
    excluded[:4] = True
    result = select(margins, params(mode="top", source="external", budget=0.5), excluded=excluded)
    assert result.requested == 3
    np.testing.assert_array_equal(result.indices, [7, 8, 9])


@pytest.mark.parametrize(
    "text, expected",
    [("600", 600), (" 6,000 ", 6000), ("6_000", 6000), ("0.1", 0.1), (".25", 0.25),
     ("1.0", 1.0), ("10%", 0.1), ("100%", 1.0), ("2.5 %", 0.025)],
)
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected
    assert type(parse_budget(text)) is type(expected)


@pytest.mark.parametrize("text", ["", "abc", "0", "-5", "1.5", "150%", "0%", "0.0", "10%%", "6,00"])
def test_parse_budget_errors(text):
    with pytest.raises(SelectionError) as error:
        parse_budget(text)
    assert error.value.hint


def test_params_validation():
    with pytest.raises(SelectionError, match="unknown mode"):
        SelectionParams(mode="best")  # type: ignore[arg-type]
    with pytest.raises(SelectionError, match="needs a margin source"):
        SelectionParams(mode="top")
    with pytest.raises(SelectionError, match="fraction"):
        SelectionParams(budget=2000.0)
    with pytest.raises(SelectionError, match="positive"):
        SelectionParams(budget=0)
    with pytest.raises(SelectionError, match="trim"):
        SelectionParams(trim=0.5)
    assert SelectionParams(source="ifd").tau_for("ifd") == 0.1
    assert SelectionParams().tau_for("external") == 1.0


def test_input_errors():
    with pytest.raises(SelectionError, match="no margins for source"):
        select({"external": EXT}, SelectionParams())
    with pytest.raises(SelectionError, match="differ in length"):
        select({"external": EXT, "implicit": IMP[:3]}, SelectionParams())
    with pytest.raises(SelectionError, match="boolean"):
        select(TWO, SelectionParams(), excluded=np.zeros(4, dtype=int))
    with pytest.raises(SelectionError, match="shape"):
        select(TWO, SelectionParams(), swapped=np.zeros(3, dtype=bool))


def test_overlap():
    a = select(TWO, params(mode="dm-add", budget=2))  # 0, 3
    b = select(TWO, params(mode="dm-add", budget=3))  # 0, 2, 3
    result = overlap(a, b)
    assert result.count == 2 and result.jaccard == pytest.approx(2 / 3)


def test_tie_keys_from_pair_ids():
    keys = tie_keys_from_pair_ids(["0000000000000001", "ffffffffffffffff", "70bca6d91a505f7f"])
    np.testing.assert_array_equal(keys, np.array([1, 2**64 - 1, 0x70BCA6D91A505F7F], dtype=np.uint64))
    with pytest.raises(SelectionError):
        tie_keys_from_pair_ids(["xyz"])


def reference_top(score, candidates, k, keys, largest=True):
    """Brute force: sort by (score, key, index) and take the first k candidates."""
    idx = np.flatnonzero(candidates)
    primary = -score[idx] if largest else score[idx]
    order = np.lexsort((idx, keys[idx], primary))
    return np.sort(idx[order[:k]])


@given(
    hnp.arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0, np.nan])),
    st.integers(1, 70),
    st.booleans(),
    st.data(),
)
def test_top_and_bot_match_a_full_sort(margin, budget, largest, data):
    n = margin.size
    keys = data.draw(hnp.arrays(np.uint64, n, elements=st.integers(0, 3)))
    excluded = data.draw(hnp.arrays(np.bool_, n))
    result = select(
        {"external": margin},
        params(mode="top" if largest else "bot", source="external", budget=budget),
        excluded=excluded,
        tie_break=keys,
    )
    candidates = np.isfinite(margin) & ~excluded
    np.testing.assert_array_equal(result.indices, reference_top(margin, candidates, budget, keys, largest))
    assert not result.mask[excluded].any()
    assert result.eligible + result.excluded + result.unscored == n


def test_large_top_k_matches_a_full_sort():
    # Above the size where the sampled bracket is used; many ties at the boundary.
    rng = np.random.default_rng(3)
    score = np.round(rng.normal(size=200_000), 2)
    keys = rng.integers(0, 50, size=score.size).astype(np.uint64)
    for k in (1, 777, 20_000, 150_000):
        result = select({"external": score}, params(mode="top", source="external", budget=k), tie_break=keys)
        np.testing.assert_array_equal(result.indices, reference_top(score, np.ones(score.size, bool), k, keys))
    ordered = np.sort(score)  # adversarial order for the strided sample
    result = select({"external": ordered}, params(mode="top", source="external", budget=1000))
    index_keys = np.arange(score.size, dtype=np.uint64)
    np.testing.assert_array_equal(
        result.indices, reference_top(ordered, np.ones(score.size, bool), 1000, index_keys)
    )


@given(
    hnp.arrays(np.float64, st.integers(1, 80), elements=st.sampled_from([-1.0, -0.0, 0.0, 0.5, 2.0, np.inf, np.nan])),
    st.sampled_from([0.0, 0.1, 0.3]),
    st.data(),
)
def test_a_kept_top_ranking_selects_what_select_does_at_every_budget(margin, trim, data):
    n = margin.size
    keys = data.draw(hnp.arrays(np.uint64, n, elements=st.integers(0, 3)))
    excluded = data.draw(hnp.arrays(np.bool_, n))
    swapped = data.draw(hnp.arrays(np.bool_, n))
    ranking = TopRanking("external", margin, trim, excluded=excluded, swapped=swapped, tie_break=keys)
    for budget in (1.0, 1, 2, 2, 7, n, n + 5, 0.1, 0.5):  # 1.0 is all, 1 one pair; 2 again from the memo
        expected = select({"external": margin}, params(mode="top", source="external", budget=budget, trim=trim),
                          excluded=excluded, swapped=swapped, tie_break=keys)
        assert ranking.indices(budget).tolist() == expected.indices.tolist()


def test_a_large_kept_top_ranking_selects_what_select_does():
    """Above the size where the k-th value comes from a sampled bracket; ties at the boundary."""
    rng = np.random.default_rng(5)
    margin = np.round(rng.normal(size=120_000), 2)
    margin[rng.integers(0, margin.size, 500)] = np.nan
    keys = rng.integers(0, 50, size=margin.size).astype(np.uint64)
    excluded, swapped = rng.random(margin.size) < 0.01, rng.random(margin.size) < 0.05
    ranking = TopRanking("implicit", margin, 0.01, excluded=excluded, swapped=swapped, tie_break=keys)
    for budget in (1, 777, 0.07, 0.5, 200_000):
        expected = select({"implicit": margin}, params(mode="top", source="implicit", budget=budget, trim=0.01),
                          excluded=excluded, swapped=swapped, tie_break=keys)
        np.testing.assert_array_equal(ranking.indices(budget), expected.indices)
        fused = select({"implicit": margin, "external": -margin}, params(mode="dm-add", budget=budget),
                       excluded=excluded, swapped=swapped, tie_break=keys)
        assert overlap(fused, ranking.indices(budget)) == overlap(fused, expected)
