"""How far people agree with each other, and how well the automatic audit matches them.

``dartkit annotate agreement runs/demo/annotate/m_dart`` reads the answers the annotation page
saved (``annotations.sqlite``) and the key written beside the export, unblinds each answer (the page
shows the two explanations as A and B, drawn per item and per annotator), and writes
``agreement.json`` and ``agreement.md``:

- agreement between people: Cohen's κ per annotator pair, Fleiss' κ over the items everyone
  labelled, Krippendorff's α for severity (ordinal), raw percent agreement, each with an item
  bootstrap interval and its Landis–Koch band (the statistics are :mod:`dartkit.stats.agreement`);
- the human majority per item (ties kept as ties);
- the auditor against that majority: precision / recall / F1 of the screen, of screen + judge and of
  the judge alone, on the sample and as stratum-weighted population estimates, and κ of judge and
  audit against people.

Labels made in another tool come in as a CSV (``item_id, annotator, drift, severity[, which]``).
:func:`load_agreement` and :func:`markdown` are what the run report uses.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dartkit.annotate import KIND_AGREEMENT, RESULT_NAME, STORE_NAME
from dartkit.annotate.export import default_key_path, load_key
from dartkit.annotate.store import answers_state, read_answers
from dartkit.data.jsonl import read_json, write_json, write_text
from dartkit.errors import DataError
from dartkit.stats.agreement import (
    band_text,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen,
    summarise,
)
from dartkit.stats.inference import wilson_ci

KIND = KIND_AGREEMENT
#: Ordinal ranks of severity for Krippendorff's α; "none" also stands for drift not in the candidate.
SEVERITY_RANK = {"none": 0, "mild": 1, "moderate": 2, "severe": 3, "extreme": 4}
SEVERITY_NAME = {rank: name for name, rank in SEVERITY_RANK.items()}
CSV_REQUIRED = ("item_id", "annotator", "drift", "severity")
#: The issue quotes these for the paper's auditor without saying which statistics they are; the
#: material dartkit ships (DESIGN.md, the data README) does not say either, so they are shown as quoted.
PAPER_REFERENCE = {
    "values": [0.720, 0.810],
    "label": "paper reports 0.720 / 0.810 for its auditor",
    "note": "which statistics these are is not stated in the material dartkit ships; compare with care",
}


@dataclass(frozen=True)
class Judgement:
    """One annotator's answer about one item, in the audit's direction.

    Attributes:
        item_id: Pseudonymous item id (the key maps it to a pair).
        annotator: Annotator name.
        drift: 1 when the annotator saw drift in either explanation (as answered).
        which: The letter the annotator picked (A/B) or None (CSV without ``which``, or no drift).
        severity: none / mild / moderate / severe / extreme, as answered.
        for_candidate: 1 when the annotator judged the candidate's explanation the more harmful.
        picked_baseline: The annotator said drift but picked the baseline's explanation.
        where: Where the answer came from, for error messages (``file:line``).
    """

    item_id: str
    annotator: str
    drift: int
    which: str | None
    severity: str
    for_candidate: int
    picked_baseline: bool
    where: str

    @property
    def severity_rank(self) -> int:
        """Ordinal severity for α: the answered severity when drift is in the candidate, else 0."""
        return SEVERITY_RANK[self.severity] if self.for_candidate else 0


# --------------------------------------------------------------------------- reading


def _judgement(
    where: str,
    item_id: str,
    annotator: str,
    drift_text: str,
    severity_text: str,
    which_text: str | None,
    key: Mapping[str, Any] | None,
    which_used: bool,
) -> Judgement:
    """Check one answer and unblind it; every error names ``where`` and the field."""
    if not item_id:
        raise DataError(f"{where}: field item_id is empty")
    if not annotator:
        raise DataError(f"{where}: field annotator is empty")
    if drift_text not in ("0", "1"):
        raise DataError(f"{where}: field drift must be 0 or 1, not {drift_text!r}")
    drift = int(drift_text)
    severity = severity_text.strip().lower() or "none"
    if severity not in SEVERITY_RANK:
        raise DataError(
            f"{where}: field severity must be one of {', '.join(SEVERITY_RANK)}, not {severity_text!r}"
        )
    if drift == 0 and severity != "none":
        raise DataError(f"{where}: field severity is {severity!r} but drift is 0 (it must be none)")
    if drift == 1 and severity == "none":
        raise DataError(f"{where}: field severity must be mild, moderate, severe or extreme when drift is 1")
    item = None
    if key is not None:
        item = key["by_item"].get(item_id)
        if item is None:
            raise DataError(f"{where}: field item_id {item_id!r} is not in the key {key['path']}")
    which = (which_text or "").strip().upper() or None
    if not which_used:
        # No letter: the answer is already in the audit's direction (drift = the candidate is worse).
        return Judgement(item_id, annotator, drift, None, severity, drift, False, where)
    if item is None:
        raise DataError(f"{where}: field which needs the key to unblind A/B (pass --key)")
    letter = item["candidate_letter"].get(annotator)
    if letter is None:
        raise DataError(
            f"{where}: field annotator {annotator!r} did not have item {item_id!r} in the key {key['path']}"
        )
    if drift == 1 and which not in ("A", "B"):
        raise DataError(f"{where}: field which must be A or B when drift is 1, not {which_text!r}")
    if drift == 0 and which is not None:
        raise DataError(f"{where}: field which must be empty when drift is 0, not {which_text!r}")
    for_candidate = int(drift == 1 and which == letter)
    return Judgement(
        item_id, annotator, drift, which, severity, for_candidate, drift == 1 and not for_candidate, where
    )


def read_csv(path: Path, key: Mapping[str, Any] | None = None) -> list[Judgement]:
    """Read labels made in another tool: ``item_id, annotator, drift, severity`` and optional ``which``.

    Without ``which``, ``drift=1`` means the annotator judged the candidate's explanation the more
    harmful. With ``which`` (A/B as shown to that annotator) the key unblinds it like the page's answers.

    Raises:
        DataError: A missing column, a bad value, a repeated (item, annotator), or an id the key
            does not know; the message names the file, line and field.
    """
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in CSV_REQUIRED if c not in header]
        if missing:
            hint = ""
            if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
                hint = "; the header looks like one column: separate columns with commas"
            elif {h.lower() for h in header} >= set(missing):
                hint = "; column names are lower case"
            raise DataError(
                f"{path}:1: missing column(s) {', '.join(missing)} (need {', '.join(CSV_REQUIRED)}[, which])"
                f"{hint}"
            )
        repeated = sorted(h for h, n in Counter(header).items() if n > 1)
        if repeated:
            raise DataError(f"{path}:1: column(s) {', '.join(repeated)} appear more than once")
        reader.fieldnames = header
        which_used = "which" in header
        if which_used and key is None:
            raise DataError(f"{path}:1: column which needs the key to unblind A/B (pass --key)")
        out: list[Judgement] = []
        seen: dict[tuple[str, str], int] = {}
        for row in reader:
            line = reader.line_num
            if all(not (v or "").strip() for k, v in row.items() if k is not None):
                continue  # blank line
            if None in row:
                raise DataError(f"{path}:{line}: more fields than the header has columns")
            if any(row.get(c) is None for c in CSV_REQUIRED):
                raise DataError(f"{path}:{line}: fewer fields than the header has columns")
            j = _judgement(
                f"{path}:{line}",
                row["item_id"].strip(),
                row["annotator"].strip(),
                row["drift"].strip(),
                row["severity"],
                row.get("which") if which_used else None,
                key,
                which_used,
            )
            if (j.item_id, j.annotator) in seen:
                raise DataError(
                    f"{path}:{line}: fields item_id, annotator: {j.annotator!r} already labelled "
                    f"{j.item_id!r} on line {seen[(j.item_id, j.annotator)]}"
                )
            seen[(j.item_id, j.annotator)] = line
            out.append(j)
    if not out:
        raise DataError(f"{path}: no labels")
    return out


def read_store(export_dir: Path, key: Mapping[str, Any]) -> list[Judgement]:
    """Read the page's answers from ``DIR/annotations.sqlite`` (read-only) and unblind them with the key.

    Raises:
        DataError: No store, a store without the ``answers`` table, or an answer that breaks the contract.
    """
    path = Path(export_dir) / STORE_NAME
    rows = [
        (r["annotator"], r["item_id"], r["drift"], r["which"], r["severity"])
        for r in read_answers(export_dir)
    ]
    out = []
    for annotator, item_id, drift, which, severity in rows:
        where = f"{path} (annotator {annotator!r}, item {item_id!r})"
        out.append(
            _judgement(
                where,
                str(item_id or ""),
                str(annotator or ""),
                str(drift),
                severity or "",
                which or "",
                key,
                which_used=True,
            )
        )
    if not out:
        raise DataError(f"{path}: no answers saved yet")
    return out


# --------------------------------------------------------------------------- agreement


def _labels(judgements: Sequence[Judgement]) -> dict[str, dict[str, Judgement]]:
    by_annotator: dict[str, dict[str, Judgement]] = defaultdict(dict)
    for j in judgements:
        by_annotator[j.annotator][j.item_id] = j
    return dict(by_annotator)


def _percent_agreement(by_item: Mapping[str, Sequence[int]], n_resamples: int, seed: int) -> dict[str, Any]:
    """Mean over items labelled by 2+ people of the share of pairs of them who agree."""
    shares = []
    for labels in by_item.values():
        n = len(labels)
        if n < 2:
            continue
        yes = sum(labels)
        shares.append((yes * (yes - 1) + (n - yes) * (n - yes - 1)) / (n * (n - 1)))
    arr = np.array(shares, dtype=float)
    value = float(arr.mean()) if len(arr) else None
    ci = bootstrap_ci(len(arr), lambda idx: float(arr[idx].mean()), n_resamples, seed)
    return {"value": value, "ci95": ci, "n_items": len(arr)}


def agreement_statistics(
    judgements: Sequence[Judgement], n_resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Cohen's κ per pair, Fleiss' κ, Krippendorff's α (severity) and percent agreement.

    All are about drift *in the candidate's explanation* (after unblinding), each with an item
    bootstrap 95% interval, its Landis–Koch band and the number of items it used.
    """
    by_annotator = _labels(judgements)
    annotators = sorted(by_annotator)
    items = sorted({j.item_id for j in judgements})
    binary = {a: {i: j.for_candidate for i, j in labels.items()} for a, labels in by_annotator.items()}
    cohen = pairwise_cohen(binary, n_resamples, seed)
    for pair, entry in cohen.items():
        first, second = pair.split("|")
        shared = set(binary[first]) & set(binary[second])
        entry["percent_agreement"] = (
            sum(binary[first][i] == binary[second][i] for i in shared) / len(shared) if shared else None
        )

    # Fleiss' κ needs the same raters on every item: only items every annotator labelled.
    full = [i for i in items if all(i in binary[a] for a in annotators)]
    fleiss: dict[str, Any]
    if len(annotators) < 2 or not full:
        fleiss = summarise(None, None, len(full))
    else:
        table = np.array(
            [[sum(1 - binary[a][i] for a in annotators), sum(binary[a][i] for a in annotators)] for i in full]
        )

        def fleiss_of(idx: np.ndarray) -> float | None:
            return fleiss_kappa(table[idx])

        fleiss = summarise(
            fleiss_of(np.arange(len(full))), bootstrap_ci(len(full), fleiss_of, n_resamples, seed), len(full)
        )
    fleiss["n_annotators"] = len(annotators)
    fleiss["items"] = (
        f"the {len(full)} of {len(items)} items every one of the {len(annotators)} annotators labelled"
        if len(annotators) > 1
        else "needs two or more annotators"
    )

    # Krippendorff's α copes with missing ratings: every item, NaN where an annotator did not label it.
    matrix = np.full((len(annotators), len(items)), np.nan)
    column = {i: n for n, i in enumerate(items)}
    for row, a in enumerate(annotators):
        for i, j in by_annotator[a].items():
            matrix[row, column[i]] = j.severity_rank
    pairable = np.flatnonzero(np.sum(~np.isnan(matrix), axis=0) >= 2)
    sub = matrix[:, pairable]

    def alpha_of(idx: np.ndarray) -> float | None:
        return krippendorff_alpha(sub[:, idx], "ordinal", values=range(5))

    alpha = summarise(
        alpha_of(np.arange(len(pairable))) if len(pairable) else None,
        bootstrap_ci(len(pairable), alpha_of, n_resamples, seed),
        len(pairable),
    )
    alpha.update(
        level="ordinal",
        scale="none=0 (also drift in the baseline's explanation), mild=1, moderate=2, severe=3, extreme=4",
        items=f"the {len(pairable)} items labelled by 2+ annotators (missing ratings allowed)",
    )

    by_item: dict[str, list[int]] = defaultdict(list)
    for j in judgements:
        by_item[j.item_id].append(j.for_candidate)
    percent = _percent_agreement(by_item, n_resamples, seed)
    percent["items"] = (
        f"the {percent['n_items']} items labelled by 2+ annotators; mean share of agreeing pairs"
    )
    return {
        "cohen_kappa": cohen,
        "fleiss_kappa": fleiss,
        "krippendorff_alpha_severity": alpha,
        "percent_agreement": percent,
    }


def human_majority(judgements: Sequence[Judgement]) -> dict[str, dict[str, Any]]:
    """The human label per item: drift in the candidate when more than half of its annotators say so.

    A tie is kept as ``"tie"`` (not broken), so the auditor comparison can leave it out. The severity
    is the lower median of the ordinal ratings of those who saw drift in the candidate.
    """
    grouped: dict[str, list[Judgement]] = defaultdict(list)
    for j in judgements:
        grouped[j.item_id].append(j)
    out = {}
    for item_id in sorted(grouped):
        group = grouped[item_id]
        yes = sum(j.for_candidate for j in group)
        no = len(group) - yes
        label: int | str = 1 if yes > no else 0 if no > yes else "tie"
        ranks = [SEVERITY_RANK[j.severity] for j in group if j.for_candidate]
        out[item_id] = {
            "drift": label,
            "n_annotators": len(group),
            "n_drift": yes,
            "severity": SEVERITY_NAME[statistics.median_low(ranks)] if label == 1 else None,
            "n_picked_baseline": sum(j.picked_baseline for j in group),
        }
    return out


# --------------------------------------------------------------------------- auditor vs people


def _confusion(pred: np.ndarray, human: np.ndarray, weight: np.ndarray) -> dict[str, float]:
    return {
        "tp": float(np.sum(weight * (pred & human))),
        "fp": float(np.sum(weight * (pred & ~human))),
        "fn": float(np.sum(weight * (~pred & human))),
        "tn": float(np.sum(weight * (~pred & ~human))),
    }


def _rates(c: Mapping[str, float]) -> dict[str, float | None]:
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] > 0 else None
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] > 0 else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall > 0
        else (0.0 if precision is not None and recall is not None else None)
    )
    return {"precision": precision, "recall": recall, "f1": f1}


def _percentile(values: list[float], level: float = 0.95) -> list[float] | None:
    if not values:
        return None
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return [float(low), float(high)]


def _stratified_ci(
    strata: Sequence[str],
    statistic: Callable[[np.ndarray], Mapping[str, float | None]],
    names: Sequence[str],
    n_resamples: int,
    seed: int,
) -> dict[str, list[float] | None]:
    """Percentile intervals of several statistics over resamples drawn within each stratum.

    Resampling inside strata keeps every stratum's size, as the sampling design did, so the
    population weights stay the same in every resample.
    """
    groups = [np.flatnonzero(np.asarray(strata) == s) for s in sorted(set(strata))]
    if len(strata) < 2:
        return dict.fromkeys(names)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(n_resamples):
        idx = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        values = statistic(idx)
        for n in names:
            if values[n] is not None and np.isfinite(values[n]):
                draws[n].append(values[n])
    return {n: _percentile(draws[n]) for n in names}


def _detector(
    pred: np.ndarray,
    human: np.ndarray,
    strata: list[str],
    weight: np.ndarray,
    items: str,
    n_resamples: int,
    seed: int,
    covers: Mapping[str, int],
    tied: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Precision, recall, F1 and counts of one detector against the human majority, with intervals.

    ``covers`` maps the strata of the audit this detector's population estimate speaks for to their
    population; a stratum with pairs in the audit but no analysed item here leaves the estimate
    undefined (weighting the other strata up would silently describe part of the audit only).
    """
    names = ("precision", "recall", "f1")
    counts = _confusion(pred, human, np.ones(len(pred)))
    out: dict[str, Any] = {
        "n_items": len(pred),
        "items": items,
        "strata": dict(sorted(Counter(strata).items())),
        **{k: int(v) for k, v in counts.items()},
        **_rates(counts),
    }
    ones = np.ones(len(pred))
    boot = _stratified_ci(
        ["all"] * len(pred),
        lambda idx: _rates(_confusion(pred[idx], human[idx], ones[idx])),
        names,
        n_resamples,
        seed,
    )
    tp, fp, fn = (int(counts[k]) for k in ("tp", "fp", "fn"))
    # Precision and recall are proportions of counts: the Wilson interval is right at any size and
    # at 0 or 1, where a bootstrap cannot vary (0/5 would read [0, 0]). F1 has no such form.
    out["ci95"] = {"precision": wilson_ci(tp, tp + fp), "recall": wilson_ci(tp, tp + fn), "f1": boot["f1"]}
    out["ci_method"] = "Wilson score for precision and recall; percentile bootstrap over items for F1"
    present = Counter(strata)
    missing = sorted(s for s, pop in covers.items() if pop > 0 and not present.get(s))
    if missing:
        out["population_estimate"] = {
            **dict.fromkeys(names),
            "ci95": dict.fromkeys(names),
            "missing_strata": missing,
            "note": "not estimated: no annotated item without a tie in "
            + ", ".join(
                s + (f" (its {tied[s]} annotated item(s) were ties)" if tied and tied.get(s) else "")
                for s in missing
            )
            + ", which the audit has pairs in",
        }
        return out
    narrow = sorted(s for s, k in present.items() if k == 1 and covers.get(s, 0) > 1)
    weighted = _rates(_confusion(pred, human, weight))
    out["population_estimate"] = {
        **weighted,
        "ci95": _stratified_ci(
            strata,
            lambda idx: _rates(_confusion(pred[idx], human[idx], weight[idx])),
            names,
            n_resamples,
            seed,
        ),
        "note": "each analysed item weighted by its stratum's population / analysed items (stratified bootstrap)"
        + (
            f"; strata with one analysed item ({', '.join(narrow)}) do not vary in the resamples, so the "
            "interval is too narrow"
            if narrow
            else ""
        ),
    }
    return out


def _kappa(pred: np.ndarray, human: np.ndarray, items: str, n_resamples: int, seed: int) -> dict[str, Any]:
    a, b = pred.astype(int).tolist(), human.astype(int).tolist()
    value = cohen_kappa(a, b) if a else None
    ci = bootstrap_ci(
        len(a), lambda idx: cohen_kappa([a[i] for i in idx], [b[i] for i in idx]), n_resamples, seed
    )
    return {**summarise(value, ci, len(a)), "items": items}


def auditor_quality(
    majority: Mapping[str, Mapping[str, Any]],
    key: Mapping[str, Any],
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The screen, screen + judge and judge alone against the human majority (ties left out).

    Args:
        majority: :func:`human_majority`'s output.
        key: :func:`load_key`'s output.
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.

    Returns:
        ``screen``, ``screen_judge`` and ``judge`` (counts, precision, recall, F1 on the sample, each
        with an interval, and stratum-weighted population estimates), ``kappa_judge_humans``,
        ``kappa_screen_judge_humans``, the paper's reference figures and notes.
    """
    by_item = key["by_item"]
    judged = bool(key.get("audit", {}).get("judged", True))
    rows = [(i, m["drift"]) for i, m in majority.items() if m["drift"] != "tie"]
    ties = sum(1 for m in majority.values() if m["drift"] == "tie")
    tied = Counter(by_item[i]["stratum"] for i, m in majority.items() if m["drift"] == "tie")
    ids = [i for i, _ in rows]
    human = np.array([label == 1 for _, label in rows], dtype=bool)
    strata = [by_item[i]["stratum"] for i in ids]
    analysed = Counter(strata)
    # Weight = population / items analysed in the stratum: equal to population / sampled when every
    # sampled item was annotated without a tie, and still right for the items that were.
    stratum_weight = {s: key["strata"][s]["population"] / n for s, n in analysed.items()}
    weight = np.array([stratum_weight[s] for s in strata], dtype=float)
    screen = np.array([bool(by_item[i]["is_candidate"]) for i in ids], dtype=bool)
    audit = np.array([bool(by_item[i]["drift"]) for i in ids], dtype=bool)
    asked = np.array([by_item[i].get("judge_status") is not None for i in ids], dtype=bool)
    confirmed = np.array([by_item[i].get("judge_status") == "confirmed" for i in ids], dtype=bool)
    everyone = f"the {len(ids)} annotated items without a tie, all strata"
    populations = {s: v["population"] for s, v in key["strata"].items()}
    # The judge is only ever asked about screened candidates: its population is every stratum but
    # the screened-out one.
    judge_populations = {s: v for s, v in populations.items() if s != "screened_out"}

    def sel(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        return values[mask]

    screen_block = _detector(
        screen,
        human,
        strata,
        weight,
        everyone + "; predicted drift = ΔH > τ",
        n_resamples,
        seed,
        populations,
        tied,
    )
    screen_judge_block = _detector(
        audit,
        human,
        strata,
        weight,
        everyone + "; predicted drift = the audit's drift flag",
        n_resamples,
        seed,
        populations,
        tied,
    )
    if not judged:
        screen_judge_block["note"] = (
            "screen-only audit: the judge was not used, so screen + judge equals the screen"
        )
    judged_strata = [s for s, m in zip(strata, asked, strict=True) if m]
    if asked.any():
        judge_block = _detector(
            sel(asked, confirmed),
            sel(asked, human),
            judged_strata,
            sel(asked, weight),
            f"the {int(asked.sum())} of these the judge was asked about; predicted drift = confirmed "
            "(rejected, disagreeing orders and invalid replies count as no drift)",
            n_resamples,
            seed,
            judge_populations,
            tied,
        )
        kappa_judge = _kappa(
            sel(asked, confirmed),
            sel(asked, human),
            f"the {int(asked.sum())} judged items without a tie",
            n_resamples,
            seed,
        )
    else:
        reason = (
            "screen-only audit: the judge was never asked"
            if not judged
            else "no annotated item without a tie was one the judge was asked about"
        )
        judge_block = {"n_items": 0, "items": reason, "note": reason}
        kappa_judge = {**summarise(None, None, 0), "items": reason}
    return {
        "tie_sensitivity": _tie_sensitivity(majority, by_item) if ties else None,
        "screen": screen_block,
        "screen_judge": screen_judge_block,
        "judge": judge_block,
        "kappa_judge_humans": kappa_judge,
        "kappa_screen_judge_humans": _kappa(audit, human, everyone, n_resamples, seed),
        "judged_audit": judged,
        "n_items": len(ids),
        "n_ties_excluded": ties,
        "n_single_annotator": sum(1 for i in ids if majority[i]["n_annotators"] == 1),
        "weights": {
            s: {
                "population": key["strata"][s]["population"],
                "sampled": key["strata"][s]["sampled"],
                "analysed": analysed[s],
                "weight": stratum_weight[s],
            }
            for s in sorted(analysed)
        },
        "paper_reference": PAPER_REFERENCE,
        "note": (
            "Figures on the sample over-represent drift cases (the export samples by stratum); "
            "population estimates weight each stratum by its size in the audit."
        ),
    }


def _tie_sensitivity(majority: Mapping[str, Mapping[str, Any]], by_item: Mapping[str, Any]) -> dict[str, Any]:
    """Sample precision and recall with every tie read as drift, and read as no drift.

    With two annotators every disagreement is a tie, and leaving ties out can leave few positive
    items; the two readings bound what the ties could have changed.
    """
    ids = sorted(majority)
    out: dict[str, Any] = {"n_ties": sum(1 for i in ids if majority[i]["drift"] == "tie")}
    for name, tie_value in (("ties_as_drift", True), ("ties_as_no_drift", False)):
        human = np.array(
            [tie_value if majority[i]["drift"] == "tie" else majority[i]["drift"] == 1 for i in ids]
        )
        block = {}
        for det, field in (("screen", "is_candidate"), ("screen_judge", "drift")):
            pred = np.array([bool(by_item[i][field]) for i in ids])
            c = _confusion(pred, human, np.ones(len(ids)))
            block[det] = {**{k: int(v) for k, v in c.items()}, **_rates(c)}
        out[name] = block
    return out


def check_key_matches(export_dir: Path, key: Mapping[str, Any]) -> None:
    """Refuse a key written for another export (item ids alone could coincide).

    Raises:
        DataError: The export's manifest and the key name different exports.
    """
    manifest_path = Path(export_dir) / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    mine, theirs = manifest.get("export_id"), key.get("export_id")
    if mine and theirs and mine != theirs:
        raise DataError(
            f"{key['path']}: this key belongs to export {theirs} (of {key.get('audit_dir')}), not to "
            f"{export_dir} (export {mine}); pass the key written beside that export with --key"
        )
    if bool(mine) != bool(theirs):
        raise DataError(
            f"{key['path']}: cannot tell whether this key belongs to {export_dir} (no export id on one side)"
        )


def _sample(key: Mapping[str, Any], judgements: Sequence[Judgement]) -> dict[str, Any]:
    annotated = Counter(key["by_item"][i]["stratum"] for i in {j.item_id for j in judgements})
    return {
        "strata": {s: {**v, "annotated": annotated.get(s, 0)} for s, v in sorted(key["strata"].items())},
        "n_key_items": len(key["by_item"]),
        "audit": key.get("audit"),
        "audit_dir": key.get("audit_dir"),
        "note": "stratified: drift cases by severity, judge-rejected and screened-out pairs; drift is over-represented",
    }


# --------------------------------------------------------------------------- entry points


def compute(
    source: Path,
    key_path: Path | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Read annotations (an export DIR or a CSV), unblind them and compute every statistic.

    Args:
        source: An export directory (reads ``annotations.sqlite``) or a CSV file.
        key_path: The key; for a directory it defaults to ``<DIR parent>/<DIR name>.key.json`` and is
            required; for a CSV it is optional (without it: agreement only).
        n_resamples: Bootstrap resamples for every interval.
        seed: Bootstrap seed.

    Returns:
        The agreement.json document.

    Raises:
        DataError: Missing or bad input (a missing key for a directory names the path expected).
    """
    source = Path(source)
    if source.is_dir():
        path = Path(key_path) if key_path else default_key_path(source)
        if not path.is_file():
            raise DataError(
                f"no key at {path}: A/B was drawn per annotator and cannot be unblinded without the key "
                "written by dartkit annotate export (pass --key PATH)"
            )
        key: dict[str, Any] | None = load_key(path)
        check_key_matches(source, key)
        judgements = read_store(source, key)
        kind = "export"
        # What the store held when this summary was made: the run report compares it with the
        # store's current state and says when answers were saved since.
        store_state = answers_state(source)
    elif source.is_file():
        key = load_key(Path(key_path)) if key_path else None
        judgements = read_csv(source, key)
        kind = "csv"
        store_state = None
    else:
        raise DataError(f"{source}: no such file or directory")
    majority = human_majority(judgements)
    result: dict[str, Any] = {
        "kind": KIND,
        "version": 1,
        "source": {
            "type": kind,
            "path": str(source),
            "key": key["path"] if key else None,
            "store": store_state,
        },
        "annotators": len({j.annotator for j in judgements}),
        "annotator_names": sorted({j.annotator for j in judgements}),
        "items": len(majority),
        "judgements": len(judgements),
        "label": "drift in the candidate's explanation (unblinded), as judged by each annotator",
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "method": "percentile, resampling items"},
        **agreement_statistics(judgements, n_resamples, seed),
        "majority": majority,
        "majority_summary": {
            "drift": sum(1 for m in majority.values() if m["drift"] == 1),
            "no_drift": sum(1 for m in majority.values() if m["drift"] == 0),
            "ties": sum(1 for m in majority.values() if m["drift"] == "tie"),
            "single_annotator": sum(1 for m in majority.values() if m["n_annotators"] == 1),
        },
        "picked_baseline": sum(j.picked_baseline for j in judgements),
    }
    if key is not None:
        # Who has finished: a summary made while someone is half-way is a summary of half the work.
        assigned = Counter(a for item in key["by_item"].values() for a in item["candidate_letter"])
        answered = Counter(j.annotator for j in judgements)
        result["progress"] = {
            a: {"answered": answered.get(a, 0), "assigned": assigned.get(a, 0)}
            for a in sorted(assigned | answered)
        }
    if key is None:
        result["auditor"] = None
        result["auditor_note"] = "no key: agreement only; pass --key to compare the auditor with people"
        result["sample"] = None
    else:
        result["auditor"] = auditor_quality(majority, key, n_resamples, seed)
        result["sample"] = _sample(key, judgements)
    return result


def check_output(out: Path) -> None:
    """Refuse an output that would overwrite something other than an earlier agreement result
    (the store, the key, a CSV of labels...).

    Raises:
        DataError: ``out`` does not end in .json, or it or the .md beside it exists and is not ours.
    """
    out = Path(out)
    if out.suffix != ".json":
        raise DataError(f"--out {out}: give a .json file (agreement.md is written beside it)")
    if out.exists():
        try:
            load_agreement(out)
        except DataError:
            raise DataError(
                f"--out {out}: exists and is not an agreement result; refusing to overwrite it"
            ) from None
    md = out.with_suffix(".md")
    if md.exists() and not (
        out.exists() or md.read_text(errors="replace").lstrip().startswith("# Human check")
    ):
        raise DataError(f"{md}: exists and was not written by annotate agreement; refusing to overwrite it")


def write(result: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``agreement.json`` (atomically) and ``agreement.md`` beside it; returns both paths."""
    out = Path(out)
    md = out.with_suffix(".md")
    write_json(out, result)
    write_text(md, markdown(result, level=1))
    return out, md


def load_agreement(path: Path) -> dict[str, Any]:
    """Read an ``agreement.json`` (or the one in an export directory) for the run report.

    Raises:
        DataError: Missing file or not an agreement result.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_NAME
    result = read_json(path)
    if not isinstance(result, dict) or result.get("kind") != KIND:
        raise DataError(f"{path}: not an agreement result (kind should be {KIND!r})")
    return result


# --------------------------------------------------------------------------- presentation


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    return "–" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def agreement_rows(result: Mapping[str, Any]) -> list[list[str]]:
    """Rows (statistic, value, 95% interval, band, items) of the agreement table."""
    rows = []
    for pair, s in result["cohen_kappa"].items():
        rows.append(
            [
                f"Cohen's κ {pair.replace('|', ' vs ')}",
                _num(s["value"]),
                _ci(s["ci95"]),
                band_text(s),
                f"{s['n_items']} shared items; raw agreement {_num(s.get('percent_agreement'))}",
            ]
        )
    for name, label in (
        ("fleiss_kappa", "Fleiss' κ"),
        ("krippendorff_alpha_severity", "Krippendorff's α (severity, ordinal)"),
    ):
        s = result[name]
        rows.append(
            [
                label,
                _num(s["value"]),
                _ci(s["ci95"]),
                band_text(s),
                s.get("items", f"{s['n_items']} items"),
            ]
        )
    p = result["percent_agreement"]
    rows.append(["Percent agreement", _num(p["value"]), _ci(p["ci95"]), "–", p["items"]])
    return rows


def auditor_rows(auditor: Mapping[str, Any]) -> list[list[str]]:
    """Rows (detector, TP/FP/FN/TN, precision, recall, F1, population precision/recall, items)."""
    rows = []
    for name, label in (
        ("screen", "Screen alone"),
        ("screen_judge", "Screen + judge"),
        ("judge", "Judge alone"),
    ):
        b = auditor[name]
        if not b.get("n_items"):
            rows.append([label, "–", "–", "–", "–", "–", b.get("items", "")])
            continue
        ci, pop = b["ci95"], b["population_estimate"]
        rows.append(
            [
                label,
                f"{b['tp']}/{b['fp']}/{b['fn']}/{b['tn']}",
                f"{_num(b['precision'], 2)} {_ci(ci['precision'], 2)}",
                f"{_num(b['recall'], 2)} {_ci(ci['recall'], 2)}",
                f"{_num(b['f1'], 2)} {_ci(ci['f1'], 2)}",
                f"not estimated: no analysed item in {', '.join(pop['missing_strata'])}"
                if pop.get("missing_strata")
                else f"P {_num(pop['precision'], 2)} {_ci(pop['ci95']['precision'], 2)}, "
                f"R {_num(pop['recall'], 2)} {_ci(pop['ci95']['recall'], 2)}",
                b["items"] + (f" ({b['note']})" if b.get("note") else ""),
            ]
        )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def sample_sentence(result: Mapping[str, Any]) -> str:
    """Which audit, split and items the human check covers, in one sentence."""
    sample = result.get("sample")
    if not sample:
        return "Items: as labelled in the CSV (no key, so the audit and its split are not known here)."
    audit = sample.get("audit") or {}
    split = audit.get("split")
    where = f"the {split} split" if split else "prompts or generations from outside a prepared split"
    strata = sample["strata"]
    drawn = ", ".join(
        f"{s} {v.get('annotated', 0)}/{v['sampled']} of {v['population']}" for s, v in strata.items()
    )
    return (
        f"Items: a stratified sample of the audit `{sample.get('audit_dir')}` ({audit.get('n_pairs', '?')} pairs "
        f"on {where}); per stratum annotated / sampled of population: {drawn}."
    )


def _progress_lines(result: Mapping[str, Any]) -> list[str]:
    unfinished = {a: p for a, p in (result.get("progress") or {}).items() if p["answered"] < p["assigned"]}
    if not unfinished:
        return []
    who = ", ".join(f"{a} answered {p['answered']} of {p['assigned']}" for a, p in unfinished.items())
    return [f"**Not finished:** {who}; the figures cover the answers saved so far.", ""]


def markdown(result: Mapping[str, Any], level: int = 2, title: str = "Human check of the audit") -> str:
    """The human check as Markdown: a "Human check of the audit" section for the run report.

    Args:
        result: An agreement result (:func:`compute` or :func:`load_agreement`).
        level: Heading level of the section (2 inside the run report, 1 for ``agreement.md``).
        title: The section's heading.
    """
    h = "#" * level
    src = result["source"]
    ms = result["majority_summary"]
    lines = [
        f"{h} {title}",
        "",
        sample_sentence(result),
        "",
        f"{result['judgements']} judgements by {result['annotators']} annotator(s) on {result['items']} items "
        f"(from {src['type']} `{src['path']}`). The label is drift in the candidate's explanation"
        + (
            ", unblinded with the key where the annotator picked A or B"
            if src.get("key")
            else " as the CSV gives it (no key: nothing was unblinded)"
        )
        + ". Intervals of agreement: 95% percentile bootstrap over items "
        f"({result['bootstrap']['n_resamples']} resamples; resamples where a statistic is undefined are "
        "skipped); bands: Landis & Koch, with the bands of the interval's ends where they differ. "
        "Raw agreement can be high while κ is low: when drift is rare, two people who both say "
        "'no drift' to nearly everything agree mostly by chance, and κ discounts that.",
        "",
        *_progress_lines(result),
        f"{h}# Agreement between annotators",
        "",
        *_table(["Statistic", "Value", "95% CI", "Band", "Items"], agreement_rows(result)),
        "",
        f"Human majority: drift {ms['drift']}, no drift {ms['no_drift']}, ties {ms['ties']} "
        f"(left out of the auditor comparison), items with a single annotator {ms['single_annotator']} "
        "(their label is the majority)."
        + (
            f" Judgements of drift that picked the baseline's explanation: {result['picked_baseline']} "
            "(counted as no drift in the candidate)."
            if src.get("key")
            else ""
        ),
        "",
    ]
    auditor = result.get("auditor")
    if not auditor:
        lines += [
            f"{h}# The auditor against people",
            "",
            result.get("auditor_note") or "No key: agreement only.",
            "",
        ]
        return "\n".join(lines)
    kj, ksj = auditor["kappa_judge_humans"], auditor["kappa_screen_judge_humans"]
    ref = auditor["paper_reference"]
    ties = auditor.get("tie_sensitivity")
    tie_lines = []
    if ties:

        def pr(block: Mapping[str, Any]) -> str:
            return f"precision {_num(block['precision'], 2)}, recall {_num(block['recall'], 2)}"

        tie_lines = [
            f"Ties decide a lot on a small sample: with the {ties['n_ties']} tie(s) read as drift, the screen "
            f"has {pr(ties['ties_as_drift']['screen'])} and screen + judge {pr(ties['ties_as_drift']['screen_judge'])}; "
            f"read as no drift, {pr(ties['ties_as_no_drift']['screen'])} and "
            f"{pr(ties['ties_as_no_drift']['screen_judge'])} (sample figures).",
            "",
        ]
    lines += [
        f"{h}# The auditor against people",
        "",
        f"Against the human majority on {auditor['n_items']} items ({auditor['n_ties_excluded']} ties left out; "
        f"{auditor.get('n_single_annotator', 0)} of the {auditor['n_items']} labelled by one annotator only). "
        + auditor["note"],
        "",
        *_table(
            [
                "Detector",
                "TP/FP/FN/TN",
                "Precision (sample)",
                "Recall (sample)",
                "F1 (sample)",
                "Population estimate",
                "Items",
            ],
            auditor_rows(auditor),
        ),
        "",
        *_table(
            ["Agreement with people", "κ", "95% CI", "Band", "Items"],
            [
                [
                    "Judge vs human majority",
                    _num(kj["value"]),
                    _ci(kj["ci95"]),
                    band_text(kj),
                    kj["items"],
                ],
                [
                    "Screen + judge vs human majority",
                    _num(ksj["value"]),
                    _ci(ksj["ci95"]),
                    band_text(ksj),
                    ksj["items"],
                ],
            ],
        ),
        "",
        *tie_lines,
        f"For reference only: the {ref['label']} ({ref['note']}); they are not set beside any figure above.",
        "",
        "Population weights (population / analysed items per stratum): "
        + ", ".join(f"{s} {w['population']}/{w['analysed']}" for s, w in auditor["weights"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def print_summary(result: Mapping[str, Any], console=None) -> None:
    """Print the agreement and auditor tables to the terminal (rich)."""
    from rich.table import Table

    from dartkit.progress import results_console

    console = console or results_console()
    console.print(sample_sentence(result))
    for line in _progress_lines(result):
        if line:
            console.print(line.replace("**", ""))
    table = Table(title="Agreement between annotators (drift in the candidate's explanation)")
    for col in ("Statistic", "Value", "95% CI", "Band", "Items"):
        table.add_column(col)
    for row in agreement_rows(result):
        table.add_row(*row)
    console.print(table)
    ms = result["majority_summary"]
    console.print(
        f"Human majority: drift {ms['drift']}, no drift {ms['no_drift']}, ties {ms['ties']}; "
        f"{result['picked_baseline']} drift judgements picked the baseline's explanation."
    )
    auditor = result.get("auditor")
    if not auditor:
        console.print(result.get("auditor_note", ""))
        return
    table = Table(title=f"The auditor against the human majority ({auditor['n_items']} items, ties left out)")
    for col in ("Detector", "TP/FP/FN/TN", "Precision", "Recall", "F1", "Population estimate", "Items"):
        table.add_column(col)
    for row in auditor_rows(auditor):
        table.add_row(*row)
    console.print(table)
    kj, ksj = auditor["kappa_judge_humans"], auditor["kappa_screen_judge_humans"]
    console.print(
        f"κ judge vs people {_num(kj['value'])} {_ci(kj['ci95'])} ({kj['items']}); "
        f"κ screen + judge vs people {_num(ksj['value'])} {_ci(ksj['ci95'])} ({ksj['items']}); "
        f"{auditor['paper_reference']['label']}."
    )
