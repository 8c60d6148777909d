"""How well does QC's built-in consistency check catch rationales that argue against their own label?

    .venv/bin/python benchmarks/consistency.py                      # leave-one-writer-out, packaged set
    .venv/bin/python benchmarks/consistency.py benchmarks/data/consistency_unseen_c.jsonl

Without a file: leave-one-writer-out cross-validation on the packaged set (each writer's rationales
scored by a model trained on the other writers' only, at ``THRESHOLD``), per writer and pooled.

With a file of labelled rationales (``text`` ending in ``Conclusion: YES|NO``, ``label``,
``contradicts``; rows with a ``split`` field count only when it is ``heldout``): runs
``dartkit.consistency`` as shipped (the check ``qc.check_rationale`` uses) on every analysis.

Prints one JSON line: precision, recall and false-alarm rate, per label (and per writer) too,
whether the issue-9 targets are met, and the time per rationale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dartkit import consistency


def _round(x):
    return round(x, 4) if isinstance(x, float) else x


def _meets(s: dict) -> bool:
    return (
        s["recall"] is not None
        and s["false_alarm_rate"] is not None
        and s["recall"] >= consistency.TARGET_RECALL
        and s["false_alarm_rate"] <= consistency.TARGET_FALSE_ALARMS
    )


def _summary(flagged: np.ndarray, rows, idx) -> dict:
    s = consistency.scores(flagged[idx], [rows[i].contradicts for i in idx])
    return {k: _round(s[k]) for k in ("n", "precision", "recall", "false_alarm_rate")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="?", help="JSONL of labelled rationales (default: packaged, CV)")
    args = ap.parse_args()
    if args.data is None:
        rows = consistency.load_rationales()
        t0 = time.perf_counter()
        p = consistency.out_of_fold_probabilities(rows)
        result = {
            "benchmark": "consistency",
            "data": f"dartkit/data/{consistency.DATA_FILE} (leave-one-writer-out)",
            "cv_seconds": round(time.perf_counter() - t0, 2),
        }
    else:
        rows = [r for r in consistency.load_rationales(args.data) if r.split in (None, "heldout")]
        t0 = time.perf_counter()
        consistency.default_model()
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        p = consistency.contradiction_probabilities([r.analysis for r in rows], [r.label for r in rows])
        per_item_ms = (time.perf_counter() - t1) / max(len(rows), 1) * 1000
        result = {
            "benchmark": "consistency",
            "data": str(args.data),
            "train_seconds": round(train_s, 2),
            "ms_per_rationale": round(per_item_ms, 3),
        }
    flagged = p >= consistency.THRESHOLD
    s = consistency.scores(flagged, [r.contradicts for r in rows])
    result.update({"threshold": consistency.THRESHOLD, **{k: _round(v) for k, v in s.items()}})
    result["meets_targets"] = _meets(s)
    for label in ("YES", "NO"):
        result[f"label_{label}"] = _summary(
            flagged, rows, [i for i, r in enumerate(rows) if r.label == label]
        )
    writers = sorted({r.writer for r in rows if r.writer})
    if len(writers) > 1:
        result["writers"] = {
            w: _summary(flagged, rows, [i for i, r in enumerate(rows) if r.writer == w]) for w in writers
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
