"""Group comparisons checked against scipy and against values worked out by hand."""

import numpy as np
import pytest
from scipy import stats

from dartkit.errors import DataError
from dartkit.stats.groups import holm, kruskal_wallis, mann_whitney, rank_biserial

TOX_A = [0.02, 0.10, 0.31, 0.05, 0.44, 0.12, 0.08, 0.27, 0.05, 0.60]
TOX_B = [0.01, 0.03, 0.02, 0.09, 0.04, 0.05, 0.00, 0.11, 0.02]


def test_mann_whitney_matches_scipy_and_gives_the_rank_biserial_effect():
    got = mann_whitney(TOX_A, TOX_B, n_resamples=500, seed=1)
    want = stats.mannwhitneyu(TOX_A, TOX_B, alternative="two-sided")
    assert got["u"] == pytest.approx(want.statistic) and got["p"] == pytest.approx(want.pvalue)
    assert got["rank_biserial"] == pytest.approx(2 * want.statistic / (10 * 9) - 1)
    assert got["rank_biserial"] > 0.5  # A's answers are clearly more toxic
    lo, hi = got["ci"]
    assert lo < got["rank_biserial"] < hi <= 1.0
    assert (got["n_a"], got["n_b"]) == (10, 9)


def test_rank_biserial_extremes_and_ties():
    assert mann_whitney([1, 2, 3], [4, 5, 6])["rank_biserial"] == -1.0
    assert mann_whitney([4, 5, 6], [1, 2, 3])["rank_biserial"] == 1.0
    # Ties count half: a = [1, 2], b = [2, 3] -> U_a = 0 + 0.5 = 0.5 -> r = 2 * 0.5 / 4 - 1 = -0.75
    assert rank_biserial(stats.mannwhitneyu([1, 2], [2, 3]).statistic, 2, 2) == pytest.approx(-0.75)


def test_the_bootstrap_computes_u_the_way_scipy_does():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 12).astype(float), rng.integers(0, 5, 9).astype(float)  # many ties
    ranks = stats.rankdata(np.concatenate([x, y]))
    u = ranks[:12].sum() - 12 * 13 / 2
    assert u == pytest.approx(stats.mannwhitneyu(x, y).statistic)


def test_mann_whitney_with_an_empty_or_constant_sample():
    assert mann_whitney([], [0.1])["p"] is None
    same = mann_whitney([0.0, 0.0], [0.0, 0.0, 0.0])
    assert same["p"] == 1.0 and same["rank_biserial"] == 0.0


def test_holm_against_hand_computed_values():
    got = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5, "e": None})
    # sorted: a .01*4=.04, c .03*3=.09, b .04*2=.08 -> raised to .09 (monotone), d .5*1=.5
    assert got == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5, "e": None})
    assert holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}


def test_kruskal_wallis_matches_scipy_and_leaves_out_empty_groups():
    groups = {"g1": [0.1, 0.4, 0.35, 0.2], "g2": [0.5, 0.6, 0.55, 0.7, 0.9], "g3": [0.3, 0.2, 0.1], "g4": []}
    got = kruskal_wallis(groups)
    want = stats.kruskal(groups["g1"], groups["g2"], groups["g3"])
    assert got["h"] == pytest.approx(want.statistic) and got["p"] == pytest.approx(want.pvalue)
    assert got["df"] == 2 and got["n"] == 12 and got["left_out"] == ["g4"]
    assert got["epsilon_squared"] == pytest.approx(want.statistic / 11)
    assert kruskal_wallis({"only": [1.0]})["p"] is None


def test_kruskal_wallis_refuses_non_numbers():
    with pytest.raises(DataError, match="'g1'"):
        kruskal_wallis({"g1": [0.1, float("nan")], "g2": [0.2]})
