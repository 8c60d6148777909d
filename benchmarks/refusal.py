"""How well the refusal detector finds refusals in text it was not trained on.

    .venv/bin/python benchmarks/refusal.py

Prints one JSON line: leave-one-writer-out scores on the two training writers (train on A, test on
B and the reverse) at several thresholds, the phrase rules' scores on the same text, and the shipped
detector (trained on A and B) on writer C's held-out answers, with the phrase rules beside it.
"""

from __future__ import annotations

import json

from dartkit.parse import has_refusal_phrase
from dartkit.refusal import (
    THRESHOLD,
    is_refusal_label,
    load_heldout,
    load_responses,
    refusal_probabilities,
    scores,
    train,
)

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def _round(d):
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


def main() -> None:
    rows = load_responses()
    writers = sorted({r["writer"] for r in rows})
    cv = {}
    for held in writers:
        train_rows = [r for r in rows if r["writer"] != held]
        test_rows = [r for r in rows if r["writer"] == held]
        truth = [is_refusal_label(r["label"]) for r in test_rows]
        probs = refusal_probabilities([r["response"] for r in test_rows], train(train_rows))
        cv[held] = {str(t): _round(scores([p >= t for p in probs], truth)) for t in THRESHOLDS} | {
            "phrase_rules": _round(scores([has_refusal_phrase(r["response"]) for r in test_rows], truth))
        }
    heldout = load_heldout()
    truth = [is_refusal_label(r["label"]) for r in heldout]
    probs = refusal_probabilities([r["response"] for r in heldout])
    print(
        json.dumps(
            {
                "benchmark": "refusal",
                "training_rows": len(rows),
                "leave_one_writer_out": cv,
                "threshold": THRESHOLD,
                "heldout_writer_C": _round(scores([p >= THRESHOLD for p in probs], truth)),
                "heldout_writer_C_phrase_rules": _round(
                    scores([has_refusal_phrase(r["response"]) for r in heldout], truth)
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
