"""Classification metrics for difference-awareness answers.

Unparseable answers count as wrong (the paper's convention): they are neither a
correct YES nor a correct NO, and they lower both classes' recall in macro-F1.
Intervals come from ``stats/inference.py`` (cluster bootstrap over scenario groups,
or Wilson).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from dartkit.errors import DataError
from dartkit.records import Generation
from dartkit.stats.inference import proportion_ci


def _rate(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def scenario_clusters(gens: Sequence[Generation]) -> list[str] | None:
    """Each generation's scenario key, or None unless every one carries a key."""
    keys = [getattr(g, "scenario_key", None) for g in gens]
    return keys if keys and all(isinstance(k, str) and k for k in keys) else None  # type: ignore[return-value]


def classification_metrics(gens: Sequence[Generation], n_resamples: int = 2000, seed: int = 0) -> dict:
    """The metrics of ``dartkit eval`` over generations that carry a gold label.

    Accuracy and the rates get 95% intervals (``<name>_ci95``): a cluster bootstrap over scenario
    groups when every generation carries a ``scenario_key`` (items of one scenario are not
    independent), otherwise the Wilson score interval; Wilson also where every item has the same
    outcome, which a bootstrap cannot resample into anything but [0, 0] or [1, 1]. ``ci_method``
    names accuracy's method and ``ci_methods`` every interval's.
    """
    from sklearn.metrics import f1_score

    gold = np.array([g.gold for g in gens], dtype=object)
    pred = np.array([g.conclusion or "UNPARSEABLE" for g in gens], dtype=object)
    correct = pred == gold
    refused = np.array([g.refusal for g in gens], dtype=bool)
    n = len(gens)
    out: dict = {
        "n": n,
        "accuracy": _rate(correct),
        "accuracy_equal": _rate(correct[gold == "NO"]),
        "accuracy_diff": _rate(correct[gold == "YES"]),
        "yes_rate": _rate(pred == "YES"),
        "no_rate": _rate(pred == "NO"),
        "unparseable_rate": _rate(pred == "UNPARSEABLE"),
        "refusal_rate": _rate(refused),
        "macro_f1": float(
            f1_score(list(gold), list(pred), labels=["YES", "NO"], average="macro", zero_division=0)
        )
        if n
        else None,
    }
    clusters = scenario_clusters(gens)
    intervals = {
        "accuracy": (correct, None),
        "accuracy_equal": (correct, gold == "NO"),
        "accuracy_diff": (correct, gold == "YES"),
        "refusal_rate": (refused, None),
        "unparseable_rate": (pred == "UNPARSEABLE", None),
    }
    methods = {}
    for name, (hits, within) in intervals.items():
        out[f"{name}_ci95"], methods[name] = proportion_ci(hits, clusters, n_resamples, seed, within)
    out["ci_method"] = methods["accuracy"]
    out["ci_methods"] = methods
    return out


def evaluation_metrics(gens: Sequence[Generation], n_resamples: int = 2000, seed: int = 0) -> dict:
    """Overall metrics plus the same keys per benchmark."""
    labelled = [g for g in gens if g.gold is not None]
    metrics = classification_metrics(labelled, n_resamples, seed)
    by_benchmark: dict[str, list[Generation]] = defaultdict(list)
    for g in labelled:
        by_benchmark[g.benchmark or "?"].append(g)
    metrics["per_benchmark"] = {
        b: classification_metrics(items, n_resamples, seed) for b, items in sorted(by_benchmark.items())
    }
    return metrics


def finish_counts(gens: Sequence[Generation]) -> dict[str, int]:
    """How many answers were cut at the token limit (``n_truncated``), filtered by the server
    (``n_filtered``) or came back as the server's refusal field (``n_refused``).

    All still count in accuracy (usually as unparseable); these counts say how much of the
    error is the decoding budget or a content filter rather than the model's judgement.
    """
    finishes = [getattr(g, "finish", None) for g in gens]
    return {
        "n_truncated": finishes.count("truncated"),
        "n_filtered": finishes.count("filtered"),
        "n_refused": finishes.count("refused"),
    }


def _constant_answer(gold: np.ndarray, label: str) -> dict:
    """The metrics of a model that answers ``label`` to every item (it never refuses or fails to parse)."""
    from sklearn.metrics import f1_score

    correct = gold == label
    n = len(gold)
    return {
        "n": n,
        "accuracy": _rate(correct),
        "accuracy_equal": _rate(correct[gold == "NO"]),
        "accuracy_diff": _rate(correct[gold == "YES"]),
        "yes_rate": float(label == "YES") if n else None,
        "no_rate": float(label == "NO") if n else None,
        "unparseable_rate": 0.0 if n else None,
        "refusal_rate": 0.0 if n else None,
        "macro_f1": float(
            f1_score(list(gold), [label] * n, labels=["YES", "NO"], average="macro", zero_division=0)
        )
        if n
        else None,
    }


def _baselines(gold: np.ndarray) -> dict:
    n_yes, n_no = int((gold == "YES").sum()), int((gold == "NO").sum())
    return {
        "n": len(gold),
        "n_yes": n_yes,
        "n_no": n_no,
        "majority": "YES" if n_yes > n_no else "NO" if n_no > n_yes else None,
        "always_yes": _constant_answer(gold, "YES"),
        "always_no": _constant_answer(gold, "NO"),
    }


def label_baselines(gold: Sequence[str | None], benchmarks: Sequence[str | None] | None = None) -> dict:
    """What answering one label to everything scores on these items: the floor a model must clear.

    Computed from the gold labels alone, so "always YES" accuracy is the share of YES items. On a
    split of 18 YES and 15 NO items always answering YES scores 54.5%; a fine-tuned model at 51.5%
    has learned less than the label counts, which a table without this row hides.

    Args:
        gold: The items' gold labels (``YES`` / ``NO``; None, an unlabelled item, is left out, as
            :func:`evaluation_metrics` does).
        benchmarks: Each item's benchmark, for ``per_benchmark`` (same length as ``gold``).

    Returns:
        ``{"n", "n_yes", "n_no", "majority" ("YES", "NO", or None on a tie), "always_yes",
        "always_no"}``, each ``always_*`` holding the keys of :func:`classification_metrics`
        without intervals; plus ``per_benchmark`` (the same per benchmark) when ``benchmarks``
        is given.

    Raises:
        DataError: ``benchmarks`` and ``gold`` differ in length.
    """
    if benchmarks is not None and len(benchmarks) != len(gold):
        raise DataError(f"label_baselines: {len(benchmarks)} benchmarks for {len(gold)} gold labels")
    keep = [i for i, g in enumerate(gold) if g is not None]
    labels = np.array([gold[i] for i in keep], dtype=object)
    out = _baselines(labels)
    if benchmarks is not None:
        names = np.array([benchmarks[i] or "?" for i in keep], dtype=object)
        out["per_benchmark"] = {b: _baselines(labels[names == b]) for b in sorted(set(names.tolist()))}
    return out
