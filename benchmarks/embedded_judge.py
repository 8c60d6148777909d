"""Can the embedded model serve as the audit judge? Counts its valid verdicts on real audit pairs.

    .venv/bin/python benchmarks/embedded_judge.py runs/demo/audit/m_int/pairs.jsonl [--n 12] [--retries 1] \
        [--structured auto|off] [--out benchmarks/results-embedded-judge.json]

Asks the embedded SmolLM2-135M-Instruct the blinded pairwise judge question (dartkit's own prompt,
A/B drawn as in an audit) about the first N pairs of an audit and prints one JSON line: how many
replies parsed (as a JSON object; with every verdict field of the right type), how many were
valid verdicts, on the first try and after the retries, the time per reply, and the first
replies. ``--structured auto`` (the default, as in an audit) decodes under the verdict schema's
grammar; ``off`` lets the model write freely and relies on validation and retries only.
``--out`` appends the line to a JSON-lines results file.

A reply that parses is not a meaningful verdict: this measures the format, not judgement.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from dartkit.audit.judge import JudgeRequest, ask_judge, candidate_is_b
from dartkit.config import BackendConfig
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache

# VerdictError messages of a reply that is not a JSON object at all.
NOT_JSON = ("no JSON object found", "the JSON does not parse", "the JSON is not an object")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", type=Path, help="pairs.jsonl of an audit")
    ap.add_argument("--n", type=int, default=12, help="pairs to judge")
    ap.add_argument("--retries", type=int, default=1, help="follow-ups after an invalid reply")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--structured", choices=["auto", "off"], default="auto", help="backend.structured_output")
    ap.add_argument("--out", type=Path, help="append the result line to this JSON-lines file")
    args = ap.parse_args()
    pairs = [json.loads(line) for line in args.pairs.read_text().splitlines() if line.strip()][: args.n]
    requests = []
    for p in pairs:
        cand_b = candidate_is_b(p["id"], 0)
        a, b = (
            (p["baseline_text"], p["candidate_text"]) if cand_b else (p["candidate_text"], p["baseline_text"])
        )
        requests.append(JudgeRequest(p["question"], p["gold"], a, b))
    judge = load_backend("embedded", BackendConfig(structured_output=args.structured))
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = ask_judge(
            judge, requests, GenerationCache(Path(d) / "c.jsonl"), args.retries, args.max_new_tokens
        )
    seconds = time.perf_counter() - t
    grammar = getattr(judge, "_grammar_data", None)
    replies = sum(r["attempts"] for r in res)
    errors = [e for r in res for e in r["errors"]]
    not_json = sum(e.startswith(NOT_JSON) for e in errors)
    # Field errors name the field ('criteria.misses_harm': ...); the rest are cross-field rules.
    bad_fields = sum(not e.startswith(NOT_JSON) and e.startswith("'") for e in errors)
    line = {
        "benchmark": "embedded_judge",
        "structured_output": args.structured,
        "paths": sorted({p for r in res for p in r["structured"]}),
        "pairs_file": str(args.pairs),
        "pairs": len(res),
        "retries": args.retries,
        "max_new_tokens": args.max_new_tokens,
        "replies": replies,
        "replies_json": replies - not_json,
        "replies_schema_shaped": replies - not_json - bad_fields,
        "valid_verdicts": sum(r["verdict"] is not None for r in res),
        "valid_first_try": sum(r["verdict"] is not None and r["attempts"] == 1 for r in res),
        "seconds": round(seconds, 1),
        "seconds_per_reply": round(seconds / max(replies, 1), 2),
        "grammar_tables_build_s": round(grammar.build_seconds, 2) if grammar else None,
        "more_harmful": {
            k: sum((r["verdict"] or {}).get("more_harmful") == k for r in res) for k in ("A", "B", "neither")
        },
        "first_replies": [r["raw"][:160] for r in res[:3]],
        "errors_first": errors[:3],
        "versions": {
            "python": platform.python_version(),
            "transformers": version("transformers"),
            "torch": version("torch"),
            "lm-format-enforcer": version("lm-format-enforcer"),
        },
        "note": "parsing is not judgement: a 135M model's verdicts are not meaningful",
    }
    text = json.dumps(line, ensure_ascii=False)
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
