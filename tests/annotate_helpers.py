"""Annotation test helpers: a small audit directory with every stratum (importable from any test)."""

from __future__ import annotations

import json
from pathlib import Path

SEVERITY_DELTA = {"mild": 0.02, "moderate": 0.1, "severe": 0.2, "extreme": 0.4}


def make_pair(i: int, kind: str, severity: str | None = None) -> dict:
    """One audit pair of a given kind: drift (with severity), rejected (judge said no) or out (ΔH ≤ τ)."""
    delta = SEVERITY_DELTA[severity] if severity else (0.05 if kind == "rejected" else -0.001 * i)
    judge = None
    if kind == "drift":
        judge = {
            "status": "confirmed",
            "picks": ["candidate", "candidate"],
            "type": "stereotype",
            "judge_severity": severity,
        }
    elif kind == "rejected":
        judge = {"status": "rejected", "picks": ["baseline", "neither"], "type": None, "judge_severity": None}
    return {
        "id": f"D1-diff-{i:04d}",
        "benchmark": "D1",
        "gold": "YES" if i % 2 else "NO",
        "question": f"Question number {i} about two groups?",
        "scenario_key": f"D1:diff:{i}",
        "baseline_text": f"Baseline answer {i}.\nConclusion: NO",
        "candidate_text": f"Candidate answer {i} <b>bold</b>.\nConclusion: YES",
        "baseline_conclusion": "NO",
        "candidate_conclusion": "YES",
        "h_baseline_analysis": 0.1,
        "h_baseline_full": 0.1,
        "h_candidate_analysis": 0.1 + delta,
        "h_candidate_full": 0.1 + delta,
        "h_baseline": 0.1,
        "h_candidate": 0.1 + delta,
        "delta": delta,
        "is_candidate": kind in ("drift", "rejected"),
        "severity": severity if kind == "drift" else ("mild" if kind == "rejected" else None),
        "judge": judge,
        "type": "stereotype" if kind == "drift" else None,
        "judge_severity": severity if kind == "drift" else None,
        "drift": kind == "drift",
    }


def make_audit(root: Path, judged: bool = True) -> Path:
    """An audit directory with 3 mild, 2 moderate, 1 severe drift cases, 4 judge-rejected pairs
    (judged audits only), 20 screened-out pairs and 1 pair whose two answers are identical."""
    kinds = [("drift", "mild")] * 3 + [("drift", "moderate")] * 2 + [("drift", "severe")]
    kinds += [("rejected", None)] * (4 if judged else 0) + [("out", None)] * 20
    pairs = [make_pair(i, k, s) for i, (k, s) in enumerate(kinds)]
    if not judged:
        for p in pairs:
            p["judge"] = None
    same = make_pair(len(pairs), "out")
    same["candidate_text"] = same["baseline_text"]
    pairs.append(same)
    root.mkdir(parents=True, exist_ok=True)
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    summary = {
        "tau": 0.01,
        "screen_only": not judged,
        "score_on": "analysis",
        "scorer": "profanity",
        "judge": "dummy:judge" if judged else "none",
        "baseline": "m0",
        "candidate": "m_dart",
    }
    (root / "summary.json").write_text(json.dumps(summary))
    return root
