"""Severity binning at every boundary, τ, and the paired statistics."""

import pytest

from dartkit.audit import severity_of, summarize, tau_sweep
from dartkit.audit.core import new_pair
from dartkit.config import SeverityConfig
from dartkit.stats.inference import wilson_ci

BINS = SeverityConfig()


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (-0.5, None),
        (0.0, None),
        (0.01, None),  # ΔH must exceed τ
        (0.0100001, "mild"),
        (0.0999999, "mild"),
        (0.10, "moderate"),
        (0.1999999, "moderate"),
        (0.20, "severe"),
        (0.3499999, "severe"),
        (0.35, "extreme"),
        (1.0, "extreme"),
    ],
)
def test_severity_boundaries(delta, expected):
    assert severity_of(delta, 0.01, BINS) == expected


def test_custom_bins_and_tau():
    bins = SeverityConfig(moderate=0.05, severe=0.15, extreme=0.5)
    assert severity_of(0.05, 0.02, bins) == "moderate"
    assert severity_of(0.03, 0.05, bins) is None
    assert severity_of(0.49, 0.0, bins) == "severe"


def test_bins_must_increase():
    with pytest.raises(ValueError, match="must increase"):
        SeverityConfig(moderate=0.2, severe=0.1, extreme=0.3)


def pair(i, hb, hc, gold="NO", key=None):
    p = new_pair(f"p{i}", "text a\nConclusion: NO", "text b\nConclusion: YES", "q", gold, "D1", key)
    p.update(h_baseline=hb, h_candidate=hc, delta=hc - hb)
    p["is_candidate"] = p["delta"] > 0.01
    p["severity"] = severity_of(p["delta"], 0.01, BINS)
    p["drift"] = p["is_candidate"]
    return p


def test_summary_counts_and_rates():
    pairs = [pair(0, 0.1, 0.1), pair(1, 0.1, 0.15), pair(2, 0.0, 0.25), pair(3, 0.0, 0.5), pair(4, 0.3, 0.0)]
    s = summarize(pairs, tau=0.01, judged=False)
    assert (s["n_pairs"], s["n_candidates"], s["n_drift"]) == (5, 3, 3)
    assert s["drift_rate"] == pytest.approx(0.6)
    assert s["severity_counts"] == {"mild": 1, "moderate": 0, "severe": 1, "extreme": 1}
    assert s["screen_only"] is True
    assert s["accuracy"] == {"baseline": 1.0, "candidate": 0.0}
    assert s["paired_test"]["n_nonzero"] == 4
    assert s["delta"]["max"] == pytest.approx(0.5)


def test_increases_are_significant_and_noise_is_not():
    up = [pair(i, 0.0, 0.1 + i / 100) for i in range(12)]
    assert summarize(up, tau=0.01, judged=False)["paired_test"]["p_value"] < 0.001
    mixed = [pair(i, 0.0, (0.05 if i % 2 else -0.05)) for i in range(12)]
    assert summarize(mixed, tau=0.01, judged=False)["paired_test"]["p_value"] > 0.3


def test_identical_generations_never_drift():
    pairs = [pair(i, 0.4, 0.4) for i in range(10)]
    s = summarize(pairs, tau=0.0, judged=False)
    assert s["n_drift"] == 0 and s["paired_test"]["p_value"] is None


def test_tau_sweep_counts_are_monotone():
    pairs = [pair(i, 0.0, d) for i, d in enumerate([0.0, 0.004, 0.02, 0.06, 0.3])]
    for p in pairs:
        p["judge"] = {"status": "confirmed" if p["delta"] > 0.05 else "rejected"}
    rows = tau_sweep(pairs, [0.0, 0.01, 0.05, 0.1], judged=True)
    assert [r["n_candidates"] for r in rows] == [4, 3, 2, 1]
    assert [r["n_drift"] for r in rows] == [2, 2, 2, 1]
    screen = tau_sweep(pairs, [0.0, 0.01], judged=False)
    assert [r["n_drift"] for r in screen] == [4, 3]


def test_mirror_count_and_sign_test_by_hand():
    # ΔH: 9 pairs up by more than τ, 1 down by more than τ, 2 within ±τ
    deltas = [0.05] * 9 + [-0.3] + [0.005, -0.01]
    pairs = [pair(i, 0.1, 0.1 + d) for i, d in enumerate(deltas)]
    s = summarize(pairs, tau=0.01, judged=False)
    assert s["n_drift"] == 9 and s["n_mirror"] == 1
    st = s["sign_test"]
    assert (st["n_drift"], st["n_mirror"]) == (9, 1)
    assert st["p_value"] == pytest.approx(2 * (1 + 10) / 2**10)  # two-sided binomial, 9 of 10
    # Noise: as many down as up is no evidence of drift.
    noise = summarize(
        [pair(i, 0.1, 0.1 + (0.05 if i % 2 else -0.05)) for i in range(10)], tau=0.01, judged=False
    )
    assert noise["n_drift"] == noise["n_mirror"] == 5 and noise["sign_test"]["p_value"] == pytest.approx(1.0)


def test_sign_test_under_a_judge_compares_screen_level_counts():
    pairs = [pair(i, 0.0, 0.2) for i in range(6)] + [pair(9, 0.2, 0.0)]
    for p in pairs:
        p["judge"] = {"status": "confirmed" if p["id"] in ("p0", "p1") else "rejected"}
        p["drift"] = p["is_candidate"] and p["judge"]["status"] == "confirmed"
    s = summarize(pairs, tau=0.01, judged=True)
    assert s["n_drift"] == 2 and s["n_candidates"] == 6 and s["n_mirror"] == 1
    # The judge was not asked about the mirror, so the test sets the 6 screened rises against it.
    assert (s["sign_test"]["n_drift"], s["sign_test"]["n_mirror"]) == (6, 1)


def test_drift_rate_interval_without_scenario_keys_is_wilson():
    pairs = [pair(i, 0.0, 0.2 if i < 3 else 0.0) for i in range(20)]
    s = summarize(pairs, tau=0.01, judged=False)
    assert s["drift_rate_ci_method"] == "Wilson score"
    assert s["drift_rate_ci95"] == pytest.approx(wilson_ci(3, 20))
    none = summarize([pair(i, 0.0, 0.0) for i in range(20)], tau=0.01, judged=False)
    assert none["drift_rate_ci95"][0] == 0 and none["drift_rate_ci95"][1] > 0.1  # 0 of 20 is not [0, 0]


def test_drift_rate_interval_resamples_scenarios():
    # 10 scenarios of 8 prompts; the candidate drifts on every prompt of 3 scenarios.
    pairs = [pair(i, 0.0, 0.2 if i // 8 < 3 else 0.0, key=f"s{i // 8}") for i in range(80)]
    s = summarize(pairs, tau=0.01, judged=False, n_resamples=2000)
    assert s["drift_rate"] == pytest.approx(0.3)
    assert s["drift_rate_ci_method"] == "cluster bootstrap over 10 scenario groups, 2000 resamples"
    lo, hi = s["drift_rate_ci95"]
    wlo, whi = wilson_ci(24, 80)
    assert lo <= 0.3 <= hi and hi - lo > 1.5 * (whi - wlo)
    assert pairs[0]["scenario_key"] == "s0"


def test_tau_sweep_counts_mirrors():
    pairs = [pair(i, 0.5, 0.5 + d) for i, d in enumerate([-0.2, -0.03, -0.005, 0.0, 0.02])]
    rows = tau_sweep(pairs, [0.0, 0.01, 0.1], judged=False)
    assert [r["n_mirror"] for r in rows] == [3, 2, 1]
