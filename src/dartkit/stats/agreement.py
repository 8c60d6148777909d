"""Agreement between annotators: Cohen's κ, Fleiss' κ, Krippendorff's α, with bootstrap intervals.

The statistics come from kept libraries (scikit-learn's ``cohen_kappa_score``, statsmodels'
``fleiss_kappa``, the ``krippendorff`` package); this module adds what an audit's human check
needs around them: items with missing ratings, percentile bootstrap intervals that resample
items, and the Landis–Koch band each value falls in.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from dartkit.errors import DataError

# Landis & Koch (1977): upper bounds (exclusive, except the last) and their names.
LANDIS_KOCH = (
    (0.0, "poor"),
    (0.20, "slight"),
    (0.40, "fair"),
    (0.60, "moderate"),
    (0.80, "substantial"),
    (1.0, "almost perfect"),
)


def landis_koch(value: float | None) -> str | None:
    """The Landis–Koch band of a κ (or α): poor (< 0), slight, fair, moderate, substantial, almost perfect."""
    if value is None or not np.isfinite(value):
        return None
    if value < 0:
        return "poor"
    for bound, name in LANDIS_KOCH[1:]:
        if value <= bound:
            return name
    return "almost perfect"


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's κ of two annotators over the same items (None when it is undefined: one label only)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b):
        raise DataError(f"cohen_kappa: {len(a)} labels against {len(b)}")
    if not a:
        return None
    if len(set(a) | set(b)) < 2:
        return None  # both gave one and the same label to everything: chance agreement is 1
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(cohen_kappa_score(list(a), list(b)))
    return value if np.isfinite(value) else None


def fleiss_kappa(table: np.ndarray) -> float | None:
    """Fleiss' κ from an (items × categories) table of counts, every item rated by the same number of people."""
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[0] < 1:
        raise DataError("fleiss_kappa: expected an items × categories table of counts")
    per_item = table.sum(axis=1)
    if not np.allclose(per_item, per_item[0]):
        raise DataError("fleiss_kappa: every item needs the same number of ratings")
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(sm_fleiss(table, method="fleiss"))
    return value if np.isfinite(value) else None


def krippendorff_alpha(
    reliability: np.ndarray, level: str = "ordinal", values: Sequence[float] | None = None
) -> float | None:
    """Krippendorff's α of an (annotators × items) matrix with NaN for missing ratings.

    Args:
        reliability: Ratings as numbers (ordinal categories as their ranks), NaN where missing.
        level: nominal, ordinal, interval or ratio.
        values: The possible values in order (so an ordinal level no one used still counts).
    """
    import krippendorff

    data = np.asarray(reliability, dtype=float)
    if data.ndim != 2:
        raise DataError("krippendorff_alpha: expected an annotators × items matrix")
    pairable = (np.sum(~np.isnan(data), axis=0) >= 2).sum()
    if pairable < 1 or len(np.unique(data[~np.isnan(data)])) < 2:
        return None
    value_domain = list(values) if values is not None else None
    return float(krippendorff.alpha(data, level_of_measurement=level, value_domain=value_domain))


def bootstrap_ci(
    n_items: int,
    statistic: Callable[[np.ndarray], float | None],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[float] | None:
    """Percentile interval of ``statistic(indices)`` over item resamples (undefined resamples skipped)."""
    if n_items < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        v = statistic(rng.integers(0, n_items, size=n_items))
        if v is not None and np.isfinite(v):
            values.append(v)
    if not values:
        return None
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return [float(low), float(high)]


def summarise(value: float | None, ci: list[float] | None, n: int) -> dict[str, Any]:
    """A statistic as agreement.json keeps it: value, interval, band, the bands of the interval's
    ends (a band read off the point estimate alone overstates what a small sample shows), items."""
    bands_ci = [landis_koch(ci[0]), landis_koch(ci[1])] if ci else None
    return {"value": value, "ci95": ci, "band": landis_koch(value), "band_ci95": bands_ci, "n_items": n}


def band_text(stat: dict[str, Any]) -> str:
    """The band of a summarised statistic, with the interval's bands when they differ from it."""
    band = stat.get("band")
    if not band:
        return "–"
    ends = stat.get("band_ci95")
    if ends and (ends[0] != band or ends[1] != band):
        return f"{band} (interval: {ends[0]} to {ends[1]})"
    return band


def pairwise_cohen(
    labels: Mapping[str, Mapping[str, Hashable]], n_resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Cohen's κ for every pair of annotators over the items both labelled, with bootstrap intervals.

    Args:
        labels: ``{annotator: {item_id: label}}``.
    """
    names = sorted(labels)
    out = {}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sorted(set(labels[first]) & set(labels[second]))
            a = [labels[first][k] for k in shared]
            b = [labels[second][k] for k in shared]
            value = cohen_kappa(a, b)
            ci = bootstrap_ci(
                len(shared),
                lambda idx, a=a, b=b: cohen_kappa([a[j] for j in idx], [b[j] for j in idx]),
                n_resamples,
                seed,
            )
            out[f"{first}|{second}"] = summarise(value, ci, len(shared))
    return out
