"""Comparisons of score distributions between models and across groups (external evaluation suites).

- :func:`mann_whitney`: two models' scores for one group (HateCheck toxicity per target group, BOLD
  sentiment per group): scipy's two-sided Mann–Whitney U with the rank-biserial correlation as the
  effect size and a bootstrap interval for it.
- :func:`holm`: Holm's step-down adjustment of a family of p-values (one per group).
- :func:`kruskal_wallis`: disparity across the groups of one domain within one model (BOLD).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from dartkit.errors import DataError


def rank_biserial(u_a: float, n_a: int, n_b: int) -> float:
    """Rank-biserial correlation from the U statistic of sample ``a``.

    ``2 U_a / (n_a n_b) - 1``: the probability that a score from ``a`` exceeds one from ``b`` (ties
    counted half) minus the reverse; +1 when every ``a`` score is higher, -1 when every one is lower.
    """
    return 2.0 * u_a / (n_a * n_b) - 1.0


def mann_whitney(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Two-sided Mann–Whitney U test of ``a`` against ``b``, with the rank-biserial effect size.

    Returns:
        ``{"n_a", "n_b", "u", "p", "rank_biserial", "ci", "median_a", "median_b", "mean_a", "mean_b"}``;
        ``rank_biserial`` > 0 means ``a`` tends to score higher. ``ci`` is a percentile bootstrap
        interval of the rank-biserial correlation (each sample resampled on its own), ``None`` when
        a sample has fewer than two values or the resamples do not vary. With an empty sample, ``u``,
        ``p`` and the effect are ``None``.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    out: dict[str, Any] = {
        "n_a": int(x.size),
        "n_b": int(y.size),
        "mean_a": float(x.mean()) if x.size else None,
        "mean_b": float(y.mean()) if y.size else None,
        "median_a": float(np.median(x)) if x.size else None,
        "median_b": float(np.median(y)) if y.size else None,
        "u": None,
        "p": None,
        "rank_biserial": None,
        "ci": None,
    }
    if not x.size or not y.size:
        return out
    if np.all(x == x[0]) and np.all(y == x[0]):
        # Every score equal: no difference to test (scipy would divide by a zero variance).
        out.update(u=x.size * y.size / 2.0, p=1.0, rank_biserial=0.0)
        return out
    res = stats.mannwhitneyu(x, y, alternative="two-sided")
    out.update(u=float(res.statistic), p=float(res.pvalue))
    out["rank_biserial"] = rank_biserial(res.statistic, x.size, y.size)
    if x.size >= 2 and y.size >= 2:
        rng = np.random.default_rng(seed)
        draws = np.empty(n_resamples)
        for i in range(n_resamples):
            xs = x[rng.integers(0, x.size, x.size)]
            ys = y[rng.integers(0, y.size, y.size)]
            # U of xs from ranks of the pooled sample (ties get average ranks), as scipy computes it.
            ranks = stats.rankdata(np.concatenate([xs, ys]))
            u = ranks[: xs.size].sum() - xs.size * (xs.size + 1) / 2.0
            draws[i] = rank_biserial(u, xs.size, ys.size)
        if np.ptp(draws) > 0:
            tail = (1.0 - level) / 2.0
            out["ci"] = [float(np.quantile(draws, tail)), float(np.quantile(draws, 1.0 - tail))]
    return out


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm–Bonferroni adjusted p-values for a family of tests (``None`` entries stay ``None``).

    Sort the m p-values ascending; the i-th smallest (i from 0) is multiplied by ``m - i``; the
    adjusted values are made non-decreasing in that order and capped at 1. Rejecting where the
    adjusted value is below alpha controls the family-wise error rate at alpha.
    """
    tested = sorted(((p, k) for k, p in pvalues.items() if p is not None), key=lambda t: t[0])
    m = len(tested)
    out: dict[str, float | None] = {k: None for k in pvalues}
    running = 0.0
    for i, (p, k) in enumerate(tested):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


def kruskal_wallis(groups: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Kruskal–Wallis H test that the score distributions of several groups are the same.

    Groups with no scores are left out (and listed). Returns ``{"h", "p", "df", "epsilon_squared",
    "groups", "n", "left_out"}``; ``epsilon_squared`` = H / (n - 1), the share of rank variance the
    grouping explains. ``h`` and ``p`` are ``None`` with fewer than two non-empty groups.

    Raises:
        DataError: a score is not a finite number.
    """
    used = {k: np.asarray(v, dtype=float) for k, v in groups.items() if len(v)}
    for k, v in used.items():
        if not np.all(np.isfinite(v)):
            raise DataError(f"group {k!r}: scores must be finite numbers")
    n = int(sum(v.size for v in used.values()))
    out: dict[str, Any] = {
        "groups": len(used),
        "n": n,
        "df": max(len(used) - 1, 0),
        "left_out": sorted(k for k in groups if k not in used),
        "h": None,
        "p": None,
        "epsilon_squared": None,
    }
    if len(used) < 2:
        return out
    pooled = np.concatenate(list(used.values()))
    if np.all(pooled == pooled[0]):
        out.update(h=0.0, p=1.0, epsilon_squared=0.0)
        return out
    res = stats.kruskal(*used.values())
    out.update(h=float(res.statistic), p=float(res.pvalue), epsilon_squared=float(res.statistic) / (n - 1))
    return out
