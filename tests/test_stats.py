import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from core.selection.stats import average_ranks, spearman


def test_ties_share_their_average_rank():
    assert average_ranks([3, 1, 3, 3, 2]).tolist() == [4.0, 1.0, 4.0, 4.0, 2.0]


@given(st.lists(st.tuples(st.integers(-5, 5), st.floats(-1e6, 1e6)), min_size=3, max_size=60))
def test_spearman_is_pearson_of_ranks(pairs):
    x, y = (np.array(v, dtype=float) for v in zip(*pairs))
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        assert np.isnan(spearman(x, y))
    else:
        assert abs(spearman(x, y) - np.corrcoef(rx, ry)[0, 1]) < 1e-9


def test_non_finite_values_are_left_out():
    assert spearman([1, 2, np.nan, 3], [1, 2, 100, 3]) == 1.0
    assert np.isnan(spearman([1, np.nan], [1, 2]))
