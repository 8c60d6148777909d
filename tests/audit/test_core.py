"""Severity binning at every boundary, τ, and the paired statistics."""

import pytest

from dartkit.audit import severity_of, summarize, tau_sweep
from dartkit.audit.core import new_pair
from dartkit.config import SeverityConfig

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


def pair(i, hb, hc, gold="NO"):
    p = new_pair(f"p{i}", "text a\nConclusion: NO", "text b\nConclusion: YES", "q", gold, "D1")
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
