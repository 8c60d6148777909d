"""Intervals and paired tests of stats/inference.py, checked against hand computations."""

import math
import time

import numpy as np
import pytest

from dartkit.errors import DataError
from dartkit.stats.inference import (
    cluster_bootstrap,
    cluster_bootstrap_ci,
    mcnemar_exact,
    paired_drift,
    proportion_ci,
    sign_test,
    wilson_ci,
)

Z = 1.959963984540054  # the 97.5% normal quantile


def wilson_by_hand(k, n, z=Z):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [centre - half, centre + half]


@pytest.mark.parametrize(("k", "n"), [(0, 40), (5, 20), (37, 40), (40, 40), (1, 1), (812, 1624)])
def test_wilson_matches_the_formula(k, n):
    assert wilson_ci(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)


def test_wilson_never_collapses_at_zero_or_all():
    low, high = wilson_ci(0, 10)
    assert low == 0 and high == pytest.approx(Z * Z / (10 + Z * Z))  # 0.2775, the textbook value
    assert 0.27 < high < 0.28
    low, high = wilson_ci(10, 10)
    assert high == pytest.approx(1) and low < 0.75
    assert wilson_ci(0, 0) is None
    with pytest.raises(DataError, match="between 0 and 3"):
        wilson_ci(4, 3)


def test_sign_test_by_hand():
    # 8 vs 1 of 9: two-sided P = 2 * (C(9,0) + C(9,1)) / 2^9
    assert sign_test(8, 1) == pytest.approx(2 * 10 / 512)
    assert sign_test(1, 8) == pytest.approx(2 * 10 / 512)
    assert sign_test(5, 5) == pytest.approx(1.0)
    assert sign_test(0, 0) == 1.0


def clustered(n_clusters=20, size=20, seed=1):
    """Every item of a cluster has the cluster's outcome: half the clusters all 1, half all 0."""
    rng = np.random.default_rng(seed)
    outcome = rng.permutation(np.arange(n_clusters) % 2)
    values = np.repeat(outcome, size).astype(float)
    keys = np.repeat([f"s{i}" for i in range(n_clusters)], size).tolist()
    return values, keys


def test_cluster_bootstrap_is_wider_when_items_move_together():
    values, keys = clustered()
    grouped = cluster_bootstrap_ci(values, keys, n_resamples=2000, seed=0)
    items = cluster_bootstrap_ci(values, None, n_resamples=2000, seed=0)
    w = lambda ci: ci[1] - ci[0]  # noqa: E731
    # 400 items but only 20 independent outcomes: the honest interval is about sqrt(20) times wider.
    assert w(grouped) > 3 * w(items)
    # It matches the 20-cluster binomial standard error: 0.5 ± 1.96 * sqrt(0.25 / 20).
    assert grouped == pytest.approx(
        [0.5 - Z * math.sqrt(0.25 / 20), 0.5 + Z * math.sqrt(0.25 / 20)], abs=0.04
    )


def test_cluster_bootstrap_matches_the_normal_approximation():
    rng = np.random.default_rng(7)
    g, m = 400, 4
    cluster_means = rng.uniform(0, 1, g)
    values = np.repeat(cluster_means, m) + rng.normal(0, 0.05, g * m)
    keys = np.repeat(np.arange(g), m).tolist()
    res = cluster_bootstrap(values, keys, n_resamples=4000, seed=3)
    per_cluster = values.reshape(g, m).mean(axis=1)
    se = per_cluster.std(ddof=0) / math.sqrt(g)
    assert res["n_clusters"] == 400 and res["n_skipped"] == 0
    assert res["ci"] == pytest.approx([values.mean() - Z * se, values.mean() + Z * se], abs=0.15 * se * Z)


def test_without_clusters_it_agrees_with_scipy_bootstrap():
    from scipy import stats

    rng = np.random.default_rng(0)
    x = (rng.uniform(size=400) < 0.3).astype(float)
    ours = cluster_bootstrap_ci(x, None, n_resamples=4000, seed=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", rng=np.random.default_rng(2))
    assert ours == pytest.approx([ref.confidence_interval.low, ref.confidence_interval.high], abs=0.01)


def test_cluster_bootstrap_is_seeded_and_needs_two_clusters():
    values, keys = clustered()
    assert cluster_bootstrap_ci(values, keys, seed=5) == cluster_bootstrap_ci(values, keys, seed=5)
    assert cluster_bootstrap_ci([1.0, 0.0, 1.0], ["a", "a", "a"]) is None
    assert cluster_bootstrap_ci([1.0], None) is None
    with pytest.raises(DataError, match="2 cluster keys for 3 values"):
        cluster_bootstrap_ci([1.0, 0.0, 1.0], ["a", "b"])


def test_cluster_bootstrap_is_fast_at_report_scale():
    """2,000 resamples of 1,600 items in 400 scenario groups, as the report computes them."""
    rng = np.random.default_rng(0)
    values = (rng.uniform(size=1600) < 0.4).astype(float)
    keys = np.repeat(np.arange(400), 4).tolist()
    t0 = time.perf_counter()
    res = cluster_bootstrap(values, keys, n_resamples=2000, seed=0)
    elapsed = time.perf_counter() - t0
    assert res["n_clusters"] == 400
    assert elapsed < 2.0, f"{elapsed:.2f}s"


def test_proportion_ci_picks_its_method():
    values, keys = clustered()
    hits = values.astype(bool)
    ci, method = proportion_ci(hits, keys, n_resamples=500)
    assert method == "cluster bootstrap over 20 scenario groups, 500 resamples" and ci[0] < 0.5 < ci[1]
    ci, method = proportion_ci(hits, None)
    assert method == "Wilson score" and ci == pytest.approx(wilson_by_hand(200, 400))
    # All items alike: a bootstrap can only say [0, 0]; Wilson says how far 0 of 400 could be off.
    ci, method = proportion_ci(np.zeros(400, bool), keys)
    assert method == "Wilson score" and ci[0] == 0 and ci[1] > 0.009
    # A rate within a subset resamples only the subset's clusters (here 4 of the 20).
    sub_keys = ["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5 + ["e"] * 5
    sub_hits = np.array([1] * 5 + [0] * 5 + [1] * 5 + [0] * 5 + [1] * 5, dtype=bool)
    within = np.array([k != "e" for k in sub_keys])
    ci, method = proportion_ci(sub_hits, sub_keys, 300, within=within)
    assert method == "cluster bootstrap over 4 scenario groups, 300 resamples" and ci[0] < 0.5 < ci[1]
    assert proportion_ci(hits, keys, within=np.zeros(400, bool)) == (None, None)


def gen(i, gold, conclusion):
    return {"id": str(i), "gold": gold, "conclusion": conclusion}


def test_mcnemar_exact_by_hand():
    a = [gen(i, "YES", "YES") for i in range(10)] + [gen("x", "NO", "NO"), gen("nolabel", None, "NO")]
    b = [gen(i, "YES", "YES" if i in (0, 9) else "NO") for i in range(10)] + [gen("x", "NO", "YES")]
    res = mcnemar_exact(a, b)
    # a right and b wrong on p1..p8 and x (9), the reverse never: P = 2 / 2^9
    assert res == {
        "n": 11,
        "only_first_correct": 9,
        "only_second_correct": 0,
        "p_value": pytest.approx(2 / 512),
    }
    assert mcnemar_exact(a, [gen("other", "YES", "YES")]) is None


def pair(i, drift, key=None):
    return {"id": f"p{i}", "drift": drift, "scenario_key": key}


def test_paired_drift_by_hand():
    a = [pair(i, i < 6) for i in range(10)] + [pair("a-only", True)]
    b = [pair(i, i in (0, 6)) for i in range(10)] + [pair("b-only", False)]
    res = paired_drift(a, b, n_resamples=1000, seed=0)
    assert (res["n"], res["n_only_a"], res["n_only_b"]) == (10, 1, 1)
    assert (res["n_drift_a"], res["n_drift_b"]) == (6, 2)
    assert res["drift_reduction"] == pytest.approx(1 - 2 / 6)
    # discordant: drift under a only on p1..p5 (5), under b only on p6 (1): P = 2 * (1 + 6) / 64
    assert res["mcnemar"] == {"n_discordant": 6, "only_a": 5, "only_b": 1, "p_value": pytest.approx(14 / 64)}
    lo, hi = res["drift_reduction_ci95"]
    assert lo <= res["drift_reduction"] <= hi <= 1
    assert res["ci_method"] == "cluster bootstrap over 10 items (no scenario keys), 1000 resamples"


def test_paired_drift_without_drift_under_a():
    res = paired_drift([pair(i, False) for i in range(5)], [pair(i, i == 0) for i in range(5)])
    assert res["drift_reduction"] is None and res["drift_reduction_ci95"] is None
    assert res["mcnemar"]["only_b"] == 1


def test_paired_drift_gives_no_point_interval_from_a_few_drifting_groups():
    # Drift under a sits in one of three scenarios: every resample that keeps it gives 0.75, so a
    # bootstrap would print [0.75, 0.75]. With fewer than FEW_EVENTS drifting groups there is no interval.
    a = [pair(i, i < 4, key=f"s{i // 4}") for i in range(12)]
    b = [pair(i, i == 0, key=f"s{i // 4}") for i in range(12)]
    res = paired_drift(a, b, n_resamples=2000, seed=0)
    assert res["drift_reduction"] == pytest.approx(0.75)
    assert res["drift_reduction_ci95"] is None and res["n_groups_with_drift_a"] == 1
    assert "1 scenario group(s)" in res["ci_note"]
    # 1 of 200 drifting, none after: once reported as 100% (95% CI 100-100).
    one = paired_drift([pair(i, i == 0) for i in range(200)], [pair(i, False) for i in range(200)])
    assert one["drift_reduction"] == 1.0 and one["drift_reduction_ci95"] is None


def test_paired_drift_resamples_scenarios_and_counts_skipped_resamples():
    # Drift under a in 6 of 12 scenarios (2 items each); b keeps drifting in two of them.
    a = [pair(i, (i // 2) < 6, key=f"s{i // 2}") for i in range(24)]
    b = [pair(i, (i // 2) < 2, key=f"s{i // 2}") for i in range(24)]
    res = paired_drift(a, b, n_resamples=2000, seed=0)
    assert res["drift_reduction"] == pytest.approx(2 / 3)
    assert res["ci_method"] == "cluster bootstrap over 12 scenario groups, 2000 resamples"
    assert 0 <= res["n_skipped_resamples"] < 20  # (1/2)^12 of resamples hold no drift under a
    lo, hi = res["drift_reduction_ci95"]
    assert lo < res["drift_reduction"] < hi <= 1


def test_paired_drift_interval_widens_with_scenario_groups():
    # 40 scenarios of 10 items; drift under a everywhere, b keeps drifting in whole scenarios.
    a = [pair(i, True, key=f"s{i // 10}") for i in range(400)]
    b = [pair(i, (i // 10) % 3 == 0, key=f"s{i // 10}") for i in range(400)]
    grouped = paired_drift(a, b, n_resamples=2000, seed=0)["drift_reduction_ci95"]
    ungrouped = paired_drift(
        [{**p, "scenario_key": None} for p in a], [{**p, "scenario_key": None} for p in b], 2000, 0
    )["drift_reduction_ci95"]
    assert grouped[1] - grouped[0] > 2.5 * (ungrouped[1] - ungrouped[0])


def test_paired_drift_rejects_bad_pairs():
    with pytest.raises(DataError, match="boolean 'drift'"):
        paired_drift([{"id": "x"}], [])
    with pytest.raises(DataError, match="'p1' repeats"):
        paired_drift([pair(1, True), pair(1, False)], [])


def test_a_rare_event_rate_is_never_narrower_than_wilson():
    from dartkit.stats.inference import proportion_ci, wilson_ci

    hits = [i == 0 for i in range(200)]
    ci, method = proportion_ci(hits, [f"s{i}" for i in range(200)], n_resamples=2000, seed=0)
    wil = wilson_ci(1, 200)
    assert ci[0] <= wil[0] and ci[1] >= wil[1] and method.startswith("wider of Wilson score and")
