"""Fusion maths: P(m), DM-ADD, DM-MUL (properties and hand-worked values), automatic M2."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.selection.fusion import (
    PROBABILITY_EPS,
    FusionError,
    auto_m2,
    dm_add,
    dm_mul,
    margin_probability,
)

margin_values = st.floats(-50, 50, allow_nan=False)
bounds = st.tuples(st.floats(-5, 0), st.floats(0.1, 20)).map(lambda b: (b[0], b[0] + b[1]))


@st.composite
def sources(draw, max_sources: int = 4):
    """K margin arrays of one length, plus per-source (M1, M2)."""
    k = draw(st.integers(1, max_sources))
    n = draw(st.integers(1, 12))
    margins = [draw(hnp.arrays(np.float64, n, elements=margin_values)) for _ in range(k)]
    return margins, [draw(bounds) for _ in range(k)]


def fuse(margins, source_bounds, weights=None):
    probabilities = [margin_probability(m, lo, hi) for m, (lo, hi) in zip(margins, source_bounds)]
    return dm_mul(probabilities, weights)


def test_margin_probability_hand_worked():
    p = margin_probability([-5.0, -2.0, 0.0, 6.0, 9.0, np.nan], -2.0, 6.0)
    np.testing.assert_array_equal(p[:5], [0.0, 0.0, 0.25, 1.0, 1.0])
    assert math.isnan(p[5])


def test_margin_probability_rejects_m2_not_above_m1():
    with pytest.raises(FusionError, match="greater than M1"):
        margin_probability([1.0], 2.0, 2.0)


def test_margin_probability_writes_into_out():
    margin = np.array([-2.0, 2.0, 6.0])
    result = margin_probability(margin, -2.0, 6.0, out=margin)
    assert result is margin
    np.testing.assert_array_equal(margin, [0.0, 0.5, 1.0])


def test_dm_mul_two_sources_hand_worked():
    # 0.8 * 0.6 / (0.8 * 0.6 + 0.2 * 0.4) = 0.48 / 0.56
    np.testing.assert_allclose(dm_mul([[0.8], [0.6]]), [0.48 / 0.56], rtol=1e-12)
    np.testing.assert_allclose(dm_mul([[0.5], [0.3]]), [0.3], rtol=1e-12)  # 0.5 is neutral


def test_dm_mul_zero_against_one_is_exactly_one_half():
    assert dm_mul([[0.0], [1.0]])[0] == 0.5
    assert dm_mul([[1.0], [0.0]])[0] == 0.5
    # The two certain sources cancel; the third decides.
    np.testing.assert_allclose(dm_mul([[0.0], [1.0], [0.9]]), [0.9], rtol=1e-9)
    # A heavier certain source wins the conflict.
    assert dm_mul([[0.0], [1.0]], weights=[1.0, 2.0])[0] > 1 - 1e-9


def test_dm_mul_zero_keeps_a_tiny_ordered_score():
    low = dm_mul([[0.0, 0.0], [0.2, 0.9]])
    assert 0 < low[0] < low[1] < 1e-9


def test_dm_mul_weights_act_as_exponents():
    # weight 2 on a source = that source counted twice
    np.testing.assert_allclose(dm_mul([[0.7], [0.4]], weights=[2, 1]), dm_mul([[0.7], [0.7], [0.4]]))
    with pytest.raises(FusionError, match="weights"):
        dm_mul([[0.5], [0.5]], weights=[1.0, -1.0])
    with pytest.raises(FusionError, match="weights"):
        dm_mul([[0.5], [0.5]], weights=[0.0, 0.0])
    with pytest.raises(FusionError, match="2 sources"):
        dm_mul([[0.5], [0.5]], weights=[1.0])


def test_dm_mul_overwrite_reuses_the_inputs():
    first, second = np.array([0.8, 0.1]), np.array([0.6, 0.1])
    expected = dm_mul([first, second])
    np.testing.assert_array_equal(first, [0.8, 0.1])  # untouched without overwrite
    result = dm_mul([first, second], overwrite=True)
    assert result is first
    np.testing.assert_array_equal(result, expected)


def test_dm_add_sums_margins_with_weights():
    np.testing.assert_array_equal(dm_add([[1.0, -2.0], [3.0, 0.5]]), [4.0, -1.5])
    np.testing.assert_array_equal(dm_add([[1.0], [3.0]], weights=[2.0, 1.0]), [5.0])
    with pytest.raises(FusionError, match="shape"):
        dm_add([[1.0], [1.0, 2.0]])


@given(sources())
def test_dm_mul_is_a_probability(case):
    margins, source_bounds = case
    fused = fuse(margins, source_bounds)
    assert np.all((fused >= 0) & (fused <= 1))


@given(sources(), st.randoms(use_true_random=False))
def test_dm_mul_is_symmetric_in_its_sources(case, rnd):
    margins, source_bounds = case
    order = list(range(len(margins)))
    rnd.shuffle(order)
    shuffled = fuse([margins[i] for i in order], [source_bounds[i] for i in order])
    np.testing.assert_allclose(shuffled, fuse(margins, source_bounds), rtol=0, atol=1e-12)


@given(sources(), st.data())
def test_dm_mul_is_monotone_in_each_margin(case, data):
    margins, source_bounds = case
    which = data.draw(st.integers(0, len(margins) - 1))
    raised = [m.copy() for m in margins]
    raised[which] += data.draw(hnp.arrays(np.float64, margins[0].size, elements=st.floats(0, 30)))
    assert np.all(fuse(raised, source_bounds) >= fuse(margins, source_bounds) - 1e-12)


@given(hnp.arrays(np.float64, st.integers(1, 20), elements=margin_values), bounds)
def test_one_source_reduces_to_its_probability(margin, source_bounds):
    probability = margin_probability(margin, *source_bounds)
    np.testing.assert_allclose(dm_mul([probability]), probability, rtol=0, atol=1e-12)


@given(sources(), st.data())
def test_nan_margin_gives_nan_and_leaves_other_pairs_alone(case, data):
    margins, source_bounds = case
    which = data.draw(st.integers(0, len(margins) - 1))
    pair = data.draw(st.integers(0, margins[0].size - 1))
    holed = [m.copy() for m in margins]
    holed[which][pair] = np.nan
    fused, clean = fuse(holed, source_bounds), fuse(margins, source_bounds)
    assert math.isnan(fused[pair])
    others = np.arange(fused.size) != pair
    np.testing.assert_array_equal(fused[others], clean[others])
    assert math.isnan(dm_add(holed)[pair])


def test_probability_eps_mirrors_exactly():
    assert 1.0 - (1.0 - PROBABILITY_EPS) == PROBABILITY_EPS


# --- automatic M2 ------------------------------------------------------------------


def literal_auto_m2(values, m1=-2.0, start_divisor=2.0):
    """The reference search, written as the literal +1 loop."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.max() <= m1:
        return m1 + 1.0
    top = finite.max()
    m2 = max(int(top / start_divisor), math.floor(m1) + 1)
    while True:
        count = int((finite >= m2).sum())
        if count < 30 or count < top - m2:
            return float(m2)
        m2 += 1


def test_auto_m2_sparse_at_the_start():
    # 0..39: max 39, start int(39 / 2) = 19, tail [19, 39] holds 21 < 30 pairs
    assert auto_m2(np.arange(40.0)) == 19.0


def test_auto_m2_steps_until_fewer_than_30():
    # 0..99: start 49; the tail holds 100 - M2 pairs, never fewer than 99 - M2; < 30 at 71
    assert auto_m2(np.arange(100.0)) == 71.0
    # external start int(99 / 1.5) = 66, same stopping point
    assert auto_m2(np.arange(100.0), start_divisor=1.5) == 71.0


def test_auto_m2_stops_on_fewer_pairs_than_headroom():
    # 25 at 50.5, 30 at 60.5, max 100: start 50 holds 56 >= 50 headroom; M2 = 51 holds
    # 31 pairs, not < 30, but < 100 - 51 = 49
    values = np.concatenate([np.full(25, 50.5), np.full(30, 60.5), [100.0]])
    assert auto_m2(values) == 51.0


def test_auto_m2_all_equal_goes_just_above_the_value():
    assert auto_m2(np.full(50, 5.0)) == 6.0  # 2, 3, 4, 5 hold all 50; 6 holds none


def test_auto_m2_degenerate_cases_return_m1_plus_one():
    assert auto_m2(np.array([])) == -1.0
    assert auto_m2(np.array([np.nan, np.inf, -np.inf])) == -1.0
    assert auto_m2(np.full(40, -3.0)) == -1.0  # max <= M1
    assert auto_m2(np.full(40, -2.0), m1=-2.0) == -1.0


def test_auto_m2_start_never_at_or_below_m1():
    # max 4, int(4 / 2) = 2 would be below M1 = 3: the search starts at floor(M1) + 1
    assert auto_m2(np.array([4.0, 3.5]), m1=3.0) == 4.0


def test_auto_m2_ignores_nan_inf_and_ignored_indices():
    values = np.concatenate([np.arange(100.0), [np.nan, np.inf]])
    assert auto_m2(values) == 71.0
    # ignoring the max (99) and 98: max 97, start 48, tail < 30 from 69
    assert auto_m2(values, ignore=np.array([98, 99])) == literal_auto_m2(np.arange(98.0))


def test_auto_m2_huge_range_is_fast_and_guarded():
    values = np.concatenate([np.arange(1000.0), [1e12]])
    assert auto_m2(values) == 5e11  # one pair above the start: no million-step loop
    with pytest.raises(FusionError, match="too large"):
        auto_m2(np.array([1e17]))


@settings(max_examples=300)
@given(
    hnp.arrays(
        np.float64,
        st.integers(0, 300),
        elements=st.one_of(
            st.floats(-20, 120),
            st.integers(-20, 120).map(float),
            st.sampled_from([np.nan, np.inf, -np.inf]),
        ),
    ),
    st.sampled_from([-2.0, -10.0, 0.5, 3.0]),
    st.sampled_from([1.5, 2.0, 3.0]),
)
def test_auto_m2_equals_the_literal_loop(values, m1, start_divisor):
    assert auto_m2(values, m1=m1, start_divisor=start_divisor) == literal_auto_m2(
        values, m1, start_divisor
    )


def test_auto_m2_equals_the_literal_loop_on_random_data():
    rng = np.random.default_rng(7)
    for _ in range(300):
        values = rng.standard_t(3, size=int(rng.integers(1, 3000))) * rng.choice([1.0, 10.0, 80.0])
        if rng.random() < 0.3:
            values = np.round(values)
        divisor = float(rng.choice([1.5, 2.0]))
        assert auto_m2(values, start_divisor=divisor) == literal_auto_m2(values, -2.0, divisor)
