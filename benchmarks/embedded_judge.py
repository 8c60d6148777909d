"""Can the embedded model serve as the audit judge? Counts its valid verdicts on real audit pairs.

    .venv/bin/python benchmarks/embedded_judge.py runs/demo/audit/m_int/pairs.jsonl [--n 12] [--retries 1]

Asks the embedded SmolLM2-135M-Instruct the blinded pairwise judge question (dartkit's own prompt,
A/B drawn as in an audit) about the first N pairs of an audit and prints one JSON line: how many
replies parsed as a valid verdict, on the first try and after the retries, with the first replies.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from dartkit.audit.judge import JudgeRequest, ask_judge, candidate_is_b
from dartkit.config import BackendConfig
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", type=Path, help="pairs.jsonl of an audit")
    ap.add_argument("--n", type=int, default=12, help="pairs to judge")
    ap.add_argument("--retries", type=int, default=1, help="follow-ups after an invalid reply")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    args = ap.parse_args()
    pairs = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()][: args.n]
    requests = []
    for p in pairs:
        cand_b = candidate_is_b(p["id"], 0)
        a, b = (
            (p["baseline_text"], p["candidate_text"]) if cand_b else (p["candidate_text"], p["baseline_text"])
        )
        requests.append(JudgeRequest(p["question"], p["gold"], a, b))
    judge = load_backend("embedded", BackendConfig())
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = ask_judge(
            judge, requests, GenerationCache(Path(d) / "c.jsonl"), args.retries, args.max_new_tokens
        )
    print(
        json.dumps(
            {
                "benchmark": "embedded_judge",
                "pairs": len(res),
                "replies": sum(r["attempts"] for r in res),
                "valid_verdicts": sum(r["verdict"] is not None for r in res),
                "valid_first_try": sum(r["verdict"] is not None and r["attempts"] == 1 for r in res),
                "seconds": round(time.perf_counter() - t, 1),
                "first_replies": [r["raw"][:120] for r in res[:3]],
            }
        )
    )


if __name__ == "__main__":
    main()
