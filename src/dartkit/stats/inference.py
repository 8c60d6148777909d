"""Confidence intervals and paired tests that respect how the data is grouped.

Items of one scenario are not independent (a D3 scenario holds up to ~45
wordings), so an interval that resamples single items is too narrow. Three tools:

- ``wilson_ci``: the Wilson score interval of a plain proportion. Chosen over
  Clopper–Pearson because its coverage is close to the nominal level on average
  while Clopper–Pearson is conservative by construction (often 97–99% for a
  "95%" interval); like it, Wilson never collapses to [0, 0] at 0 successes.
  Computed by ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``.
- ``cluster_bootstrap``: a percentile bootstrap that resamples whole clusters
  (scenario groups) with replacement, for any statistic that is a function of
  per-cluster sums (a mean, a ratio of two counts).
- ``paired_drift`` and ``mcnemar_exact``: two models judged on the same items,
  compared item by item (exact McNemar on the discordant items).

Example::

    from dartkit.stats.inference import cluster_bootstrap_ci, wilson_ci
    wilson_ci(0, 40)                                   # [0.0, 0.0876]
    cluster_bootstrap_ci(correct, scenario_keys, n_resamples=2000, seed=0)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from dartkit.errors import DataError

# A statistic of the resampled data, computed from per-cluster aggregates: ``sums`` has one row per
# resample and one column per value column (sum over the items of the resampled clusters), ``counts``
# the number of items in each resample. It returns one number per resample, NaN where undefined.
Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Resample in blocks so that the resample x cluster matrix stays small (about 16 MB of int64).
_BLOCK_CELLS = 2_000_000


def wilson_ci(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval of the proportion ``k / n``.

    Args:
        k: Successes.
        n: Trials.
        level: Confidence level.

    Returns:
        ``[low, high]``, or None when ``n`` is 0.

    Raises:
        DataError: ``k`` is outside ``0..n``.
    """
    if n == 0:
        return None
    if not 0 <= k <= n:
        raise DataError(f"wilson_ci: successes must be between 0 and {n}, got {k}")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def mean_statistic(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of the first value column over the resampled items."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / counts


def _cluster_index(clusters: Sequence[Hashable] | None, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise DataError(f"cluster bootstrap: {len(clusters)} cluster keys for {n} values")
    index: dict[Hashable, int] = {}
    codes = np.array([index.setdefault(c, len(index)) for c in clusters], dtype=np.int64)
    return codes, len(index)


def cluster_bootstrap(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[Hashable] | None = None,
    statistic: Statistic = mean_statistic,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any] | None:
    """Percentile bootstrap interval that resamples whole clusters with replacement.

    Each resample draws as many clusters as there are, with replacement, and evaluates
    ``statistic`` on the items of the drawn clusters (a cluster drawn twice counts twice).
    Only the per-cluster sums enter, so the work is one matrix product per block of
    resamples, whatever the number of items.

    Args:
        values: One number per item, or an ``(items, columns)`` array for statistics that
            combine several columns (``paired_drift`` bootstraps a ratio of two counts).
        clusters: One hashable key per item (the scenario group); None makes every item its
            own cluster (the ordinary bootstrap).
        statistic: Maps ``(sums, counts)`` of each resample to one number per resample, NaN
            where it is undefined; such resamples are skipped and counted.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling, so a rerun gives the same interval.
        level: Confidence level.

    Returns:
        ``{"ci": [low, high], "n_clusters", "n_resamples", "n_skipped"}``, or None when there are
        fewer than two clusters or every resample was undefined.

    Raises:
        DataError: ``clusters`` does not have one key per item, or ``n_resamples`` is below 1.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if n_resamples < 1:
        raise DataError(f"cluster bootstrap: n_resamples must be at least 1, got {n_resamples}")
    codes, n_clusters = _cluster_index(clusters, x.shape[0])
    if n_clusters < 2:
        return None
    sums = np.zeros((n_clusters, x.shape[1]))
    np.add.at(sums, codes, x)
    counts = np.bincount(codes, minlength=n_clusters).astype(float)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // n_clusters)
    stats = []
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        draws = rng.integers(0, n_clusters, size=(b, n_clusters))
        # How often each cluster was drawn in each resample: one bincount over row-offset codes.
        weights = np.bincount(
            (draws + n_clusters * np.arange(b)[:, None]).ravel(), minlength=b * n_clusters
        ).reshape(b, n_clusters)
        stats.append(statistic(weights @ sums, weights @ counts))
    s = np.concatenate(stats)
    ok = s[np.isfinite(s)]
    if not ok.size:
        return None
    tail = (1 - level) / 2
    low, high = np.quantile(ok, [tail, 1 - tail])
    return {
        "ci": [float(low), float(high)],
        "n_clusters": int(n_clusters),
        "n_resamples": int(n_resamples),
        "n_skipped": int(s.size - ok.size),
    }


def cluster_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[Hashable] | None = None,
    statistic: Statistic = mean_statistic,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[float] | None:
    """``[low, high]`` of ``cluster_bootstrap`` (None for fewer than two clusters)."""
    res = cluster_bootstrap(values, clusters, statistic, n_resamples, seed, level)
    return res["ci"] if res else None


def bootstrap_method(n_clusters: int, n_resamples: int, grouped: bool = True) -> str:
    """The readable name of a cluster-bootstrap interval, as metrics and summaries record it."""
    unit = "scenario groups" if grouped else "items (no scenario keys)"
    return f"cluster bootstrap over {n_clusters} {unit}, {n_resamples} resamples"


WILSON = "Wilson score"
# Below this many events (or non-events) an interval leans on Wilson too, and a drift reduction
# needs this many scenario groups with drift under M_int before it gets a bootstrap interval.
FEW_EVENTS = 5


def proportion_ci(
    hits: Sequence[bool] | np.ndarray,
    clusters: Sequence[Hashable] | None,
    n_resamples: int = 2000,
    seed: int = 0,
    within: Sequence[bool] | np.ndarray | None = None,
) -> tuple[list[float] | None, str | None]:
    """95% interval of a rate, and the name of the method that made it.

    With cluster keys, a cluster bootstrap over them. The Wilson score interval is used
    instead without keys, with fewer than two clusters, and when every item has the same
    outcome: there a bootstrap cannot vary and would report [0, 0] or [1, 1].

    Args:
        hits: One boolean per item (the event counted).
        clusters: One key per item, or None when the grouping is unknown.
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.
        within: Optional mask of the items the rate is taken over (e.g. gold-NO items for
            accuracy on NO items); only their clusters are resampled.

    Returns:
        ``(ci, method)``; ``(None, None)`` when the rate is taken over no items.
    """
    h = np.asarray(hits, dtype=bool)
    w = np.ones(h.size, dtype=bool) if within is None else np.asarray(within, dtype=bool)
    n = int(w.sum())
    k = int((h & w).sum())
    if n == 0:
        return None, None
    if clusters is not None and 0 < k < n:
        keep = np.flatnonzero(w)
        res = cluster_bootstrap(h[keep], [clusters[i] for i in keep], mean_statistic, n_resamples, seed)
        if res is not None:
            method = bootstrap_method(res["n_clusters"], n_resamples)
            if min(k, n - k) < FEW_EVENTS:
                # With a handful of events the percentile bootstrap is too narrow (1 of 200 gives
                # [0, 1.5%] against Wilson's [0.09%, 2.8%]): report the union of the two.
                wil = wilson_ci(k, n) or res["ci"]
                return [
                    min(res["ci"][0], wil[0]),
                    max(res["ci"][1], wil[1]),
                ], f"wider of {WILSON} and {method}"
            return res["ci"], method
    return wilson_ci(k, n), WILSON


def sign_test(n_up: int, n_down: int) -> float:
    """Exact two-sided sign test: p-value of ``n_up`` against ``n_down`` under equal chances (1 when both are 0)."""
    from scipy.stats import binomtest

    n = n_up + n_down
    return float(binomtest(n_up, n, 0.5).pvalue) if n else 1.0


def paired_binary(a: Mapping[Hashable, bool], b: Mapping[Hashable, bool]) -> dict[str, Any]:
    """Exact McNemar test of a yes/no outcome over the ids both ``a`` and ``b`` hold.

    Returns:
        ``{"n", "only_a", "only_b", "p_value"}``: items matched, items where the outcome holds only
        under ``a`` / only under ``b``, and the exact two-sided test of those discordant items (a sign
        test; 1 when there are none).
    """
    ids = [i for i in a if i in b]
    only_a = sum(1 for i in ids if a[i] and not b[i])
    only_b = sum(1 for i in ids if b[i] and not a[i])
    return {"n": len(ids), "only_a": only_a, "only_b": only_b, "p_value": sign_test(only_a, only_b)}


def mcnemar_exact(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Exact McNemar test of paired correctness of two models' generations (dicts with id, gold, conclusion).

    Items are matched by id; only items with a gold label count.

    Returns:
        ``{"n", "only_first_correct", "only_second_correct", "p_value"}`` (p = 1 with no discordant
        items), or None when no labelled id is in both.
    """
    gold_a = {g["id"]: g.get("conclusion") == g.get("gold") for g in a if g.get("gold")}
    gold_b = {g["id"]: g.get("conclusion") == g.get("gold") for g in b if g.get("gold")}
    test = paired_binary(gold_a, gold_b)
    if not test["n"]:
        return None
    return {
        "n": test["n"],
        "only_first_correct": test["only_a"],
        "only_second_correct": test["only_b"],
        "p_value": test["p_value"],
    }


def _drift_by_id(pairs: Sequence[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in pairs:
        if not isinstance(p, dict) or "id" not in p or not isinstance(p.get("drift"), bool):
            raise DataError(
                f"{name}: every pair needs an 'id' and a boolean 'drift' (an audit's pairs.jsonl)"
            )
        if p["id"] in out:
            raise DataError(f"{name}: pair id '{p['id']}' repeats")
        out[p["id"]] = p
    return out


def _reduction_statistic(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    # Ratio of sums over the resample: 1 − (drift under b) / (drift under a); undefined (NaN,
    # skipped) when the resample holds no drift under a.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 0] > 0, 1 - sums[:, 1] / sums[:, 0], np.nan)


def paired_drift(
    pairs_a: Sequence[dict[str, Any]],
    pairs_b: Sequence[dict[str, Any]],
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare two audits of the same prompts item by item (e.g. M_int vs M0 and M_DART vs M0 on test).

    Pairs are matched by id. ``drift_reduction`` = 1 − drift_b / drift_a over the matched items.
    Its 95% interval is a cluster bootstrap over scenario groups (a pair's ``scenario_key``; an item
    without one is its own group): each resample computes the ratio of the summed drift counts, and
    a resample with no drift under ``a`` has no reduction and is skipped (``n_skipped_resamples``).
    The exact McNemar test compares the discordant items (drift under ``a`` only vs under ``b`` only).

    Args:
        pairs_a: The first audit's pairs (``pairs.jsonl`` records: ``id``, ``drift``, ``scenario_key``).
        pairs_b: The second audit's pairs.
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.

    Returns:
        ``n`` (matched), ``n_only_a`` / ``n_only_b`` (unmatched), ``n_drift_a``, ``n_drift_b``,
        ``drift_reduction`` (None when ``a`` has no drift), ``drift_reduction_ci95`` (None when it
        cannot be bootstrapped), ``ci_method``, ``n_resamples``, ``n_skipped_resamples`` and
        ``mcnemar`` ``{"n_discordant", "only_a", "only_b", "p_value"}``; ``n_groups_with_drift_a`` and,
        when there is no interval, ``ci_note`` saying why (drift under ``a`` in fewer than
        ``FEW_EVENTS`` scenario groups, or a bootstrap with no spread).

    Raises:
        DataError: a pair lacks ``id`` or a boolean ``drift``, or an id repeats.
    """
    a = _drift_by_id(pairs_a, "first audit")
    b = _drift_by_id(pairs_b, "second audit")
    ids = [i for i in a if i in b]
    da = np.array([a[i]["drift"] for i in ids], dtype=bool)
    db = np.array([b[i]["drift"] for i in ids], dtype=bool)
    keys = [a[i].get("scenario_key") or b[i].get("scenario_key") for i in ids]
    grouped = any(keys)
    clusters = [k or f"id:{i}" for k, i in zip(keys, ids, strict=True)]
    n_a, n_b = int(da.sum()), int(db.sum())
    test = paired_binary({i: a[i]["drift"] for i in ids}, {i: b[i]["drift"] for i in ids})
    out: dict[str, Any] = {
        "n": len(ids),
        "n_only_a": sum(i not in b for i in a),
        "n_only_b": sum(i not in a for i in b),
        "n_drift_a": n_a,
        "n_drift_b": n_b,
        "drift_reduction": 1 - n_b / n_a if n_a else None,
        "drift_reduction_ci95": None,
        "ci_method": None,
        "n_resamples": n_resamples,
        "n_skipped_resamples": None,
        "mcnemar": {
            "n_discordant": test["only_a"] + test["only_b"],
            "only_a": test["only_a"],
            "only_b": test["only_b"],
            "p_value": test["p_value"],
        },
    }
    drift_groups = len({c for c, d in zip(clusters, da, strict=True) if d})
    out["n_groups_with_drift_a"] = drift_groups
    if n_a and drift_groups < FEW_EVENTS:
        # A ratio bootstrapped from a few drifting groups collapses: every resample that keeps one
        # of them gives the same value, and the interval shrinks to a point. Say so instead.
        out["ci_note"] = (
            f"no interval: drift under the first model sits in {drift_groups} scenario group(s); "
            f"a bootstrap interval of the ratio needs at least {FEW_EVENTS}"
        )
    elif n_a:
        res = cluster_bootstrap(
            np.column_stack([da, db]).astype(float), clusters, _reduction_statistic, n_resamples, seed
        )
        if res is not None and res["ci"][0] < res["ci"][1]:
            out.update(
                drift_reduction_ci95=res["ci"],
                ci_method=bootstrap_method(res["n_clusters"], n_resamples, grouped),
                n_skipped_resamples=res["n_skipped"],
            )
        else:
            out["ci_note"] = "no interval: every bootstrap resample gave the same reduction"
    return out
