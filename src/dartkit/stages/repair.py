"""Stage III: safe rationales for the audit's drift cases, then M_int -> M_DART.

    dartkit repair --drift runs/x/audit_int/drift.jsonl --data runs/x/data \\
        --init-adapter runs/x/m_int/adapter --distill runs/x/distill/teacher.jsonl --out runs/x/repair

For every drift case the teacher writes a rationale for the gold label under
the explanation policy (short; no repeating, quoting or elaborating harmful
content; no generalising beyond the case), through the same QC and format-fix
loop as Stage I. A rationale that passes QC but still scores as more harmful
than M0's own answer (H(repair) > H(M0) + τ) is rejected as ``still_harmful``.
Rejected rows stay in ``repair.jsonl`` with their reasons. Then training
continues from M_int's adapter on the distillation data plus the repair
examples weighted by severity (recipe ``mix``), or on the repair examples alone
(``repair-only``); weights act on the loss or by oversampling.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from dartkit.config import ConfigError, RepairConfig, dump_config
from dartkit.data.jsonl import iter_json_lines, read_text, write_json, write_jsonl
from dartkit.errors import DataError
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache
from dartkit.generate.loading import teacher_is_student
from dartkit.harm import load_scorer, score_cached
from dartkit.manifest import write_manifest
from dartkit.parse import split_analysis
from dartkit.progress import results_console
from dartkit.prompts import load_teacher_examples, repair_messages
from dartkit.stages.distill import FileTeacher, _qc_table, distill_metrics, distill_rationales
from dartkit.train.data import load_prepared_examples

SEVERITY_FIELD = "severity_weight"


def read_drift_cases(path: Path) -> list[dict[str, Any]]:
    """Rows of an audit's drift.jsonl (validated: id, severity, h_baseline_analysis)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: drift file not found (run the audit first)")
    rows = []
    for n, row in iter_json_lines(read_text(Path(path)), str(path)):
        for key in ("id", "severity"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{path}:{n}: field '{key}' is missing or not a string")
        if row["severity"] not in ("mild", "moderate", "severe", "extreme"):
            raise DataError(f"{path}:{n}: field 'severity' must be mild, moderate, severe or extreme")
        rows.append(row)
    return rows


def repair_rationales(
    cases: Sequence[dict[str, Any]], cfg: RepairConfig, cache: GenerationCache
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The repair.jsonl rows (one per drift case, accepted or rejected with reasons) and model identities."""
    examples = load_prepared_examples(cfg.data)
    missing = [c["id"] for c in cases if c["id"] not in examples]
    if missing:
        raise DataError(f"{cfg.drift}: drift case ids not in {cfg.data}: {', '.join(missing[:5])}")
    items = [examples[c["id"]] for c in cases]
    teacher = (
        FileTeacher(Path(cfg.teacher[5:]))
        if cfg.teacher.startswith("file:")
        else load_backend(cfg.teacher, cfg.backend)
    )
    if cfg.qc.consistency == "judge" and not cfg.judge:
        raise ConfigError("qc.consistency is 'judge' but no judge model is configured")
    judge = (
        load_backend(cfg.judge, cfg.backend)
        if cfg.judge and cfg.qc.consistency in ("judge", "auto")
        else None
    )
    scorer = load_scorer(cfg.scorer)
    scores_path = cache.path.with_name("scores.jsonl")
    h_m0 = [c.get("h_baseline_analysis", c.get("h_baseline")) for c in cases]

    def harm_check(indices: list[int], texts: list[str]) -> list[list[str]]:
        # A repair that scores above M0's own answer by more than τ would itself count as drift: it is
        # sent back with a follow-up, like any other QC failure.
        hs = score_cached(scorer, [split_analysis(t) for t in texts], scores_path)
        return [
            ["still_harmful"] if h_m0[i] is not None and h > h_m0[i] + cfg.tau else []
            for i, h in zip(indices, hs, strict=True)
        ]

    try:
        rows = list(
            distill_rationales(
                items,
                teacher,
                cfg,
                cache,
                judge,
                messages_fn=partial(repair_messages, examples=load_teacher_examples(cfg.teacher_examples)),
                extra_check=harm_check,
            )
        )
        identities = {"teacher": teacher.identity(), "judge": judge.identity() if judge else None}
    finally:
        teacher.close()
        if judge:
            judge.close()
    identities["scorer"] = scorer.identity()
    scores = score_cached(scorer, [split_analysis(r["text"]) for r in rows], scores_path)
    weights = cfg.severity_weights.model_dump()
    for row, case, h in zip(rows, cases, scores, strict=True):
        h_m0 = case.get("h_baseline_analysis", case.get("h_baseline"))
        row.update(
            severity=case["severity"],
            delta=case.get("delta"),
            drifted_text=case.get("candidate_text"),
            h_repair=h,
            h_m0=h_m0,
        )
        row[SEVERITY_FIELD] = weights[case["severity"]]
    return rows, identities


def run(cfg: RepairConfig, console: Console | None = None) -> dict[str, Any]:
    """Write repair.jsonl for the drift cases and (unless ``cfg.train`` is off) train M_DART."""
    console = console or results_console()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    cases = read_drift_cases(cfg.drift)
    rows, identities = (
        repair_rationales(cases, cfg, GenerationCache(out / "cache.jsonl")) if cases else ([], {})
    )
    write_jsonl(out / "repair.jsonl", rows)
    metrics = (
        distill_metrics(rows)
        if rows
        else {
            "n": 0,
            "accepted": 0,
            "reason_counts": {},
            "first_try_reason_counts": {},
            "judge_asked": 0,
            "judge_retried": 0,
            "judge_unparsed": 0,
            "teacher_truncated": 0,
            "teacher_filtered": 0,
            "teacher_refused": 0,
        }
    )
    metrics.update(
        n_drift_cases=len(cases),
        teacher=cfg.teacher,
        teacher_is_student=teacher_is_student(cfg.teacher, cfg.student, identities.get("teacher")),
        recipe=cfg.recipe,
        weighting=cfg.weighting,
        severity_weights=cfg.severity_weights.model_dump(),
        accepted_by_severity={
            s: sum(r["accepted"] and r["severity"] == s for r in rows)
            for s in ("mild", "moderate", "severe", "extreme")
        },
    )
    if rows:
        console.print(_qc_table(metrics))
    timings = {"repair": time.perf_counter() - t0}
    metrics["trained"] = False
    if cfg.train:
        if not metrics["accepted"]:
            console.print(
                "[yellow]no repair rationale was accepted: nothing to repair, so M_DART is M_int unchanged[/yellow]"
            )
            metrics["adapter"] = str(cfg.init_adapter)
        else:
            from dartkit.train import run as train_run

            t1 = time.perf_counter()
            metrics["training"] = train_run(training_config(cfg, out))
            metrics["trained"] = True
            metrics["adapter"] = str(out / "train" / "adapter")
            timings["train"] = time.perf_counter() - t1
    write_json(out / "metrics.json", metrics)
    write_manifest(
        out,
        command="repair",
        config=cfg.model_dump(mode="json"),
        models=identities,
        timings=timings,
        n_items=len(rows),
    )
    console.print(f"repair rationales: {out / 'repair.jsonl'}  metrics: {out / 'metrics.json'}")
    return metrics


def training_config(cfg: RepairConfig, out: Path):
    """M_DART's TrainConfig: continue M_int's adapter on (distillation +) severity-weighted repairs."""
    from dartkit.train.config import TrainConfig

    data = [out / "repair.jsonl"]
    if cfg.recipe == "mix":
        data.insert(0, Path(cfg.distill))
    return TrainConfig.model_validate(
        {
            **cfg.training,
            "base": cfg.student,
            "data": data,
            "prepared": Path(cfg.data),
            "out": out / "train",
            "init_adapter": cfg.init_adapter,
            "weights_from": SEVERITY_FIELD,
            "weighting": cfg.weighting,
        }
    )
