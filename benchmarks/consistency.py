"""How well does QC's built-in consistency check catch rationales that argue against their own label?

    .venv/bin/python benchmarks/consistency.py                      # the held-out part of the packaged set
    .venv/bin/python benchmarks/consistency.py benchmarks/data/consistency_heldout.jsonl

Reads a JSONL file of labelled rationales (``text`` ending in ``Conclusion: YES|NO``, ``label``,
``contradicts``; rows with a ``split`` field count only when it is ``heldout``, so the packaged set
is scored on its held-out part), runs ``dartkit.consistency`` (the check ``qc.check_rationale`` uses)
on every analysis and prints one JSON line: precision, recall and false-alarm rate, per label too,
whether the issue-9 targets are met, and the time per rationale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dartkit import consistency


def _round(x):
    return round(x, 4) if isinstance(x, float) else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="?", help="JSONL of labelled rationales (default: packaged)")
    args = ap.parse_args()
    rows = consistency.load_rationales(args.data)
    rows = [r for r in rows if r.split in (None, "heldout")]
    t0 = time.perf_counter()
    consistency.default_model()
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    p = consistency.contradiction_probabilities([r.analysis for r in rows], [r.label for r in rows])
    per_item_ms = (time.perf_counter() - t1) / max(len(rows), 1) * 1000
    flagged = p >= consistency.THRESHOLD
    result = {
        "benchmark": "consistency",
        "data": str(args.data) if args.data else f"dartkit/data/{consistency.DATA_FILE} (heldout)",
        "threshold": consistency.THRESHOLD,
        **consistency.scores(flagged, [r.contradicts for r in rows]),
    }
    for label in ("YES", "NO"):
        idx = [i for i, r in enumerate(rows) if r.label == label]
        s = consistency.scores(flagged[idx], [rows[i].contradicts for i in idx])
        result[f"label_{label}"] = {k: _round(s[k]) for k in ("n", "precision", "recall", "false_alarm_rate")}
    result["meets_targets"] = (
        result["recall"] is not None
        and result["false_alarm_rate"] is not None
        and result["recall"] >= consistency.TARGET_RECALL
        and result["false_alarm_rate"] <= consistency.TARGET_FALSE_ALARMS
    )
    result["train_seconds"] = round(train_s, 2)
    result["ms_per_rationale"] = round(per_item_ms, 3)
    for k in ("precision", "recall", "false_alarm_rate"):
        result[k] = _round(result[k])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
