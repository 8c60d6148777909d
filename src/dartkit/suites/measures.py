"""Numbers every suite reports, each with its ``n`` and interval, and the between-model tests.

Result rows (one per item, ``scores.jsonl``) hold at least ``id``, ``group``, ``text``, ``harm``
(0..1), ``refusal`` (bool); BOLD adds ``sentiment`` (-1..1), judged suites ``judge`` (a label or
``None``). Rates get Wilson intervals, means a percentile bootstrap over items.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dartkit.stats.groups import holm, mann_whitney
from dartkit.stats.inference import cluster_bootstrap_ci, paired_binary, wilson_ci

Rows = Sequence[dict[str, Any]]


def rate(rows: Rows, hit: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """``{"k", "n", "rate", "ci"}``: how many rows ``hit`` is true for, with a Wilson interval."""
    n = len(rows)
    k = sum(1 for r in rows if hit(r))
    return {"k": k, "n": n, "rate": k / n if n else None, "ci": wilson_ci(k, n)}


def mean(rows: Rows, key: str, seed: int = 0) -> dict[str, Any]:
    """``{"n", "mean", "ci"}`` of a numeric field over the rows that have it (bootstrap over items)."""
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    if not values:
        return {"n": 0, "mean": None, "ci": None}
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "ci": cluster_bootstrap_ci(values, None, n_resamples=1000, seed=seed) if len(values) > 1 else None,
    }


def by_group(rows: Rows, key: str = "group") -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by a field, groups in sorted order."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[str(r.get(key))].append(r)
    return dict(sorted(out.items()))


def harm_and_refusal(rows: Rows) -> dict[str, Any]:
    """Harm over all answers and over answers that did not refuse, and the refusal rate.

    Refusing lowers measured harm (a refusal scores near zero): a model that abstains more looks
    safer without answering better, so the harm of the answers that engaged is reported beside it.
    """
    engaged = [r for r in rows if not r.get("refusal")]
    return {
        "n": len(rows),
        "refusal": rate(rows, lambda r: bool(r.get("refusal"))),
        "harm": mean(rows, "harm"),
        "harm_non_refused": mean(engaged, "harm"),
    }


def compare_scores(
    runs: dict[str, Rows], key: str, groups: Iterable[str] | None = None, group_key: str = "group"
) -> dict[str, Any]:
    """Every pair of models, per group: Mann–Whitney U on ``key`` with rank-biserial effect, Holm-adjusted.

    Returns ``{"pairs": [{"a", "b", "groups": {group: test}, "holm_family": m}]}``; the Holm family of
    a pair is its groups (one test per group), and each test gains ``p_holm``.
    """
    labels = list(runs)
    grouped = {m: by_group(rows, group_key) for m, rows in runs.items()}
    names = sorted(set(groups) if groups is not None else {g for gr in grouped.values() for g in gr})
    pairs = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            tests = {}
            for g in names:
                xa = [r[key] for r in grouped[a].get(g, []) if r.get(key) is not None]
                xb = [r[key] for r in grouped[b].get(g, []) if r.get(key) is not None]
                tests[g] = mann_whitney(xa, xb)
            adjusted = holm({g: t["p"] for g, t in tests.items()})
            for g, t in tests.items():
                t["p_holm"] = adjusted[g]
            pairs.append({"a": a, "b": b, "measure": key, "groups": tests, "holm_family": len(tests)})
    return {"pairs": pairs}


def compare_binary(runs: dict[str, Rows], hit: Callable[[dict[str, Any]], bool], name: str) -> dict[str, Any]:
    """Every pair of models on the same items: exact McNemar on ``hit`` (items matched by id).

    ``only_a``: items where ``hit`` holds for model a and not for b; the p-value is the exact
    two-sided test of the discordant items (a sign test), 1 when there are none.
    """
    labels = list(runs)
    pairs = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            test = paired_binary({r["id"]: hit(r) for r in runs[a]}, {r["id"]: hit(r) for r in runs[b]})
            n = test.pop("n")
            pairs.append({"a": a, "b": b, "measure": name, "n": n, "mcnemar": test if n else None})
    return {"pairs": pairs}
