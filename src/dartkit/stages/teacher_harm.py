"""Teacher-vs-student harm (the paper's appendix K.4): is drift inherited from the teacher?

M_int is trained on the teacher's accepted rationales. If its answers are more harmful than
M0's, two stories fit: the teacher's rationales were already that harmful (drift inherited), or
fine-tuning made the student's own wording worse than what it was shown (drift introduced). On
the training items whose rationale was accepted, this scores, with the audit's scorer and on the
same part of the text:

- the teacher's accepted rationale (what M_int was trained on),
- M0's answer and M_int's answer to the same question (generated here, with the run's decoding),

and reports each mean with a scenario-cluster bootstrap interval, the paired differences
(M_int − teacher, M_int − M0, teacher − M0) with intervals and a two-sided Wilcoxon signed-rank
test, and how many items exceed the other side by more than τ.

These are *training* items: M_int was trained on them (that is the point of the comparison), so
nothing here is a held-out figure, and every table says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from dartkit.config import BackendConfig, DecodingConfig
from dartkit.data.jsonl import read_rows, write_json, write_jsonl
from dartkit.data.prepare import load_split
from dartkit.errors import DartkitError
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache
from dartkit.harm import load_scorer
from dartkit.harm.base import scored_part
from dartkit.harm.cache import score_cached
from dartkit.stats.inference import bootstrap_method, cluster_bootstrap_ci

ITEMS = "training items with an accepted teacher rationale (M_int was trained on them)"
# (first, second): each comparison is first − second.
COMPARISONS = (("m_int", "teacher"), ("m_int", "m0"), ("teacher", "m0"))
LABELS = {"teacher": "teacher rationale", "m0": "M0 answer", "m_int": "M_int answer"}


def paired_comparison(
    a: np.ndarray, b: np.ndarray, clusters: list[str], tau: float, n_boot: int, seed: int = 0
) -> dict[str, Any]:
    """Mean of ``a − b`` with a cluster-bootstrap interval, a two-sided Wilcoxon test, counts beyond τ."""
    from scipy import stats

    d = a - b
    nonzero = d[d != 0]
    test: dict[str, Any] = {"test": "wilcoxon signed-rank, two-sided", "n_nonzero": int(nonzero.size)}
    if nonzero.size:
        res = stats.wilcoxon(nonzero)
        test.update(statistic=float(res.statistic), p_value=float(res.pvalue))
    else:
        test.update(statistic=None, p_value=None)
    return {
        "n": int(d.size),
        "mean_difference": float(d.mean()) if d.size else None,
        "mean_difference_ci95": cluster_bootstrap_ci(d, clusters, n_resamples=n_boot, seed=seed),
        "n_first_higher_by_tau": int((d > tau).sum()),
        "n_second_higher_by_tau": int((d < -tau).sum()),
        "paired_test": test,
    }


def verdict(summary: Mapping[str, Any]) -> str:
    """One sentence a reader can act on, from the M_int − teacher and M_int − M0 intervals."""
    c = summary["comparisons"]
    up_vs_m0 = (c["m_int-m0"].get("mean_difference_ci95") or [0, 0])[0] > 0
    up_vs_teacher = (c["m_int-teacher"].get("mean_difference_ci95") or [0, 0])[0] > 0
    teacher_up = (c["teacher-m0"].get("mean_difference_ci95") or [0, 0])[0] > 0
    if up_vs_m0 and up_vs_teacher:
        return "M_int is more harmful than both M0 and the teacher it learned from: fine-tuning introduced the drift."
    if up_vs_m0 and teacher_up:
        return "M_int and the teacher are both more harmful than M0, and M_int is not clearly above the teacher: the drift is consistent with inheriting the teacher's wording."
    if up_vs_m0:
        return "M_int is more harmful than M0, but neither clearly above nor below the teacher: these items do not settle where the drift comes from."
    return (
        "M_int is not clearly more harmful than M0 on these items (no interval of M_int − M0 lies above 0): "
        "there is no drift here to attribute to the teacher or to fine-tuning."
    )


def run(
    *,
    distill: Path,
    data: Path,
    models: Mapping[str, str],
    scorer: str,
    score_on: str,
    decoding: DecodingConfig,
    backend: BackendConfig,
    out: Path,
    tau: float,
    n_boot: int = 2000,
    console: Console | None = None,
) -> dict[str, Any]:
    """Score the teacher's accepted rationales against M0's and M_int's answers on the same items.

    Args:
        distill: Stage I's ``teacher.jsonl``.
        data: The prepared data directory (its train split holds the items).
        models: ``{"m0": spec, "m_int": spec}``.
        scorer: Harm scorer spec (the audit's).
        score_on: ``analysis`` or ``full`` (the audit's).
        decoding: Student decoding (the run's).
        backend: Backend settings.
        out: Output directory: ``scores.jsonl``, ``summary.json``, generation cache.
        tau: The audit's τ, for the counts of items beyond it.
        n_boot: Bootstrap resamples.

    Returns:
        The summary written to ``summary.json``.
    """
    from dartkit.stages.evaluate import answer_examples

    console = console or Console()
    accepted = {r["id"]: r["text"] for r in read_rows(distill) if r.get("accepted")}
    if not accepted:
        raise DartkitError(f"{distill}: no accepted rationale, so there is nothing to compare")
    examples = [e for e in load_split(data, "train") if e.id in accepted]
    missing = sorted(set(accepted) - {e.id for e in examples})
    if missing:
        raise DartkitError(
            f"{distill}: {len(missing)} accepted id(s) are not in {data}/train.jsonl ({', '.join(missing[:3])})"
        )
    out.mkdir(parents=True, exist_ok=True)
    cache = GenerationCache(out / "cache.jsonl")
    texts: dict[str, list[str]] = {"teacher": [accepted[e.id] for e in examples]}
    for name, spec in models.items():
        model = load_backend(spec, backend)
        try:
            gens = answer_examples(examples, model, decoding, cache, description=f"teacher harm: {name}")
        finally:
            model.close()
        write_jsonl(out / f"answers_{name}.jsonl", gens)
        texts[name] = [g.text for g in gens]
    harm = load_scorer(scorer)
    scores = {
        name: np.array(score_cached(harm, [scored_part(t, score_on) for t in ts], out / "score_cache.jsonl"))
        for name, ts in texts.items()
    }
    clusters = [e.group_key or e.scenario_key for e in examples]
    write_jsonl(
        out / "scores.jsonl",
        [
            {
                "id": e.id,
                "benchmark": e.benchmark,
                "gold": e.label,
                **{f"h_{k}": float(v[i]) for k, v in scores.items()},
            }
            for i, e in enumerate(examples)
        ],
    )
    n_clusters = len(set(clusters))
    summary: dict[str, Any] = {
        "items": ITEMS,
        "split": "train",
        "n": len(examples),
        "scorer": scorer,
        "score_on": score_on,
        "tau": tau,
        "ci_method": bootstrap_method(n_clusters, n_boot),
        "means": {
            k: {
                "mean": float(v.mean()),
                "ci95": cluster_bootstrap_ci(v, clusters, n_resamples=n_boot),
                "label": LABELS[k],
            }
            for k, v in scores.items()
        },
        "comparisons": {
            f"{a}-{b}": paired_comparison(scores[a], scores[b], clusters, tau, n_boot)
            for a, b in COMPARISONS
            if a in scores and b in scores
        },
    }
    summary["verdict"] = verdict(summary)
    write_json(out / "summary.json", summary)
    console.print(f"teacher vs student harm on {len(examples)} {ITEMS}: {summary['verdict']}")
    return summary
