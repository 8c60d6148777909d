"""Stage II: audit a candidate model's explanations against a baseline's for harm drift.

    dartkit audit --baseline embedded --candidate embedded+adapter=runs/x/train/adapter \\
        --data runs/demo/data --split test --out runs/x/audit
    dartkit audit --baseline-generations base.jsonl --candidate-generations tuned.jsonl --out audit/

Both models answer the same prompts with identical decoding and seeds (through
the generation cache, so an interrupted audit resumes). Both answers are scored
by the harm scorer; pairs with ΔH > τ are drift candidates; the optional judge,
shown the two answers blinded as Model A / Model B, confirms or rejects each.
Writes pairs.jsonl, drift.jsonl, summary.json, audit.md, delta_hist.png,
config.yaml and manifest.json.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dartkit.audit import harness
from dartkit.audit.core import (
    judge_decision,
    new_pair,
    score_pairs,
    severity_of,
    summarize,
    tau_sweep,
    unsettled_line,
)
from dartkit.audit.inputs import (
    AuditItem,
    GenerationRow,
    describe_mismatch,
    example_item,
    load_prompt_items,
    prompt_mismatches,
)
from dartkit.audit.judge import JudgeRequest, ask_judge, candidate_is_b, structured_counts
from dartkit.audit.markdown import delta_histogram_png, write_audit_md
from dartkit.config import AuditConfig, BackendConfig, DecodingConfig, dump_config
from dartkit.data.jsonl import write_json, write_jsonl
from dartkit.data.prepare import load_split
from dartkit.data.splits import SPLITS
from dartkit.errors import DartkitError, DataError
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache
from dartkit.harm import load_scorer
from dartkit.manifest import write_manifest
from dartkit.parse import is_refusal, parse_conclusion
from dartkit.progress import generate_with_progress, results_console
from dartkit.prompts import render_messages
from dartkit.records import AuditPair, Generation
from dartkit.stages.evaluate import select_examples


def generate_answers(
    items: Sequence[AuditItem],
    spec: str,
    backend_cfg: BackendConfig,
    decoding: DecodingConfig,
    cache: GenerationCache,
    description: str,
) -> tuple[list[Generation], dict[str, Any]]:
    """One model's answers to the audit prompts (cached); returns them and the model identity."""
    backend = load_backend(spec, backend_cfg)
    try:
        texts, keys = generate_with_progress(
            backend, [i.messages for i in items], decoding, cache, description
        )
        identity = backend.identity()
    finally:
        backend.close()
    gens = [
        Generation(
            id=item.id,
            model=spec,
            prompt=render_messages(item.messages),
            text=text,
            conclusion=parse_conclusion(text),
            refusal=is_refusal(text),
            gold=item.label,
            benchmark=item.benchmark,
            cache_key=key,
            question=item.question,
            scenario_key=item.scenario_key,
        )
        for item, text, key in zip(items, texts, keys, strict=True)
    ]
    return gens, identity


def _rows(gens: Sequence[Generation]) -> dict[str, GenerationRow]:
    return {
        g.id: GenerationRow(
            id=g.id,
            text=g.text,
            question=g.question,  # type: ignore[attr-defined]
            label=g.gold,
            benchmark=g.benchmark,
            scenario_key=getattr(g, "scenario_key", None),
        )
        for g in gens
    }


def audit_items(cfg: AuditConfig) -> list[AuditItem]:
    if cfg.prompts is not None:
        return load_prompt_items(cfg.prompts, cfg.policy, cfg.limit)
    return [example_item(e, cfg.policy) for e in select_examples(cfg.data, cfg.split, cfg.limit)]


def candidate_decoding(cfg: AuditConfig) -> DecodingConfig:
    """The candidate decodes exactly like the baseline, except that a sampled null audit re-samples (seed + 1)."""
    if cfg.is_null and not cfg.decoding.greedy:
        return cfg.decoding.model_copy(update={"seed": cfg.decoding.seed + 1})
    return cfg.decoding


def _check_split(cfg: AuditConfig, ids: set[str], examples: dict[str, Any]) -> None:
    """Refuse generation files with ids that are not in ``--split`` (naming the splits they are in).

    The split gives each pair its question, label and benchmark; an id outside it would be shown
    to the judge with the rendered prompt for a question, and counted in the split's rates.

    Raises:
        DataError: an id of the files is not in the split.
    """
    missing = ids - examples.keys()
    if not ids or not missing:
        return
    where = []
    for split in SPLITS:
        if split != cfg.split:
            try:
                found = len(missing & {e.id for e in load_split(cfg.data, split)})
            except DartkitError:  # a split that was not prepared, or does not read: no hint from it
                continue
            if found:
                where.append(f"{found} in {split}")
    hint = f" ({', '.join(where)})" if where else ""
    if missing == ids:
        what = f"none of the {len(ids)} id(s) in the generation files is in"
    else:
        what = f"{len(missing)} of the {len(ids)} id(s) in the generation files are not in"
    raise DataError(
        f"--split {cfg.split}: {what} {cfg.data}/{cfg.split}.jsonl{hint}, e.g. '{sorted(missing)[0]}': "
        "check --split, or audit one split at a time"
    )


def collect_answers(
    cfg: AuditConfig, out: Path
) -> tuple[dict[str, GenerationRow], dict[str, GenerationRow], dict[str, Any]]:
    """Both sides' answers keyed by id: read from files, or generated by the two models."""
    models: dict[str, Any] = {}
    if cfg.baseline_generations is not None:
        base, cand, models = read_generation_files(cfg)
        if cfg.data is not None:  # questions, labels and benchmarks from the prepared split
            examples = {e.id: e for e in load_split(cfg.data, cfg.split)}
            _check_split(cfg, set(base) | set(cand), examples)
            for rows in (base, cand):
                for r in rows.values():  # every id is in the split (checked above)
                    item = example_item(examples[r.id], cfg.policy)
                    r.question, r.label, r.benchmark = item.question, r.label or item.label, item.benchmark
                    r.scenario_key = item.scenario_key
        return base, cand, models
    items = audit_items(cfg)
    cache = GenerationCache(out / "cache.jsonl")
    base_gens, models["baseline"] = generate_answers(
        items, cfg.baseline, cfg.backend, cfg.decoding, cache, "baseline answers"
    )
    write_jsonl(out / "baseline_generations.jsonl", base_gens)
    cand_spec = cfg.baseline if cfg.null else cfg.candidate
    cand_gens, models["candidate"] = generate_answers(
        items, cand_spec, cfg.backend, candidate_decoding(cfg), cache, "candidate answers"
    )
    write_jsonl(out / "candidate_generations.jsonl", cand_gens)
    return _rows(base_gens), _rows(cand_gens), models


def read_generation_files(
    cfg: AuditConfig,
) -> tuple[dict[str, GenerationRow], dict[str, GenerationRow], dict[str, Any]]:
    """Both sides' answers from files: dartkit JSONL, or harness logs mapped onto dartkit ids.

    A side that is an lm-eval or Inspect log gets ``models[side]["log"]``: how its samples were
    read and mapped (see ``harness.map_log``).
    """
    paths = {"baseline": cfg.baseline_generations}
    if not cfg.null:
        paths["candidate"] = cfg.candidate_generations
    fmts = {
        side: harness.detect_format(p) if cfg.generations_format == "auto" else cfg.generations_format
        for side, p in paths.items()
    }
    # Harness logs carry no dartkit ids: they are mapped onto every prompt of the split or prompt
    # file (--limit does not apply to answers read from files).
    items = None
    if any(f != "dartkit" for f in fmts.values()):
        if cfg.prompts is not None:
            items = load_prompt_items(cfg.prompts, cfg.policy)
        elif cfg.data is not None:
            items = [example_item(e, cfg.policy) for e in load_split(cfg.data, cfg.split)]
    id_fields = harness.parse_id_fields(cfg.id_field)
    rows: dict[str, dict[str, GenerationRow]] = {}
    models: dict[str, Any] = {}
    for side, path in paths.items():
        rows[side], report = harness.load_side(path, fmts[side], items, id_fields)
        models[side] = {"file": str(path), "format": fmts[side], **({"log": report} if report else {})}
    if cfg.null:
        rows["candidate"], models["candidate"] = rows["baseline"], models["baseline"]
    return rows["baseline"], rows["candidate"], models


def no_pairs_message(
    base: dict[str, Any],
    cand: dict[str, Any],
    cfg: AuditConfig,
    reports: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Why an audit with no matched ids fails: it checked nothing, so it must not pass (or exit 0).

    Args:
        base: The baseline's answers keyed by id.
        cand: The candidate's answers keyed by id.
        cfg: The audit's config (names the files and the split).
        reports: ``harness.map_log`` reports of the sides read from harness logs: their mapping
            lines are part of the message, since "0 id(s)" alone hides that the log's samples
            were read but mapped onto none of the audit's prompts.
    """
    shown = "; ".join(
        f"{side} e.g. {', '.join(repr(i) for i in list(ids)[:3])}"
        for side, ids in (("baseline", base), ("candidate", cand))
        if ids
    )
    where = (
        f"{cfg.baseline_generations} and {cfg.candidate_generations}"
        if cfg.baseline_generations is not None
        else "the two models' answers"
    )
    msg = (
        f"no ids matched between {where}: the baseline has {len(base)} id(s), the candidate {len(cand)}, "
        f"none in common{f' ({shown})' if shown else ''}; nothing was audited. Both sides must answer the "
        "same prompts, with the same ids"
    )
    if not reports:
        return msg
    lines = "; ".join(harness.describe_log(side, r) for side, r in reports.items())
    if cfg.prompts is None and cfg.data is None:  # mapped by --id-field alone
        return f"{msg}. {lines}. Check that --id-field names the field holding dartkit's ids in each log"
    source = (
        f"--prompts {cfg.prompts}" if cfg.prompts is not None else f"--data {cfg.data} --split {cfg.split}"
    )
    return (
        f"{msg}. {lines}. Harness log samples are mapped onto the prompts of {source}: check that "
        "--split / --data (or --prompts) name the prompts the logs answered, or map by a field of the "
        "logs with --id-field"
    )


def _question(b: GenerationRow, c: GenerationRow) -> str:
    return b.question or c.question or b.prompt or c.prompt or "(the prompt was not given)"


def run_judge(cfg: AuditConfig, judged: list[dict[str, Any]], cache: GenerationCache) -> dict[str, Any]:
    """Ask the judge about ``judged`` pairs (blinded, optionally both orders); adds ``judge`` to each."""
    judge = load_backend(cfg.judge, cfg.backend)
    requests: list[JudgeRequest] = []
    orders: list[list[bool]] = []
    for p in judged:
        first = candidate_is_b(p["id"], cfg.seed)
        order = [first, not first] if cfg.judge_swap else [first]
        orders.append(order)
        for cand_b in order:
            a, b = (
                (p["baseline_text"], p["candidate_text"])
                if cand_b
                else (p["candidate_text"], p["baseline_text"])
            )
            requests.append(JudgeRequest(p["question"], p["gold"], a, b))
    try:
        results = ask_judge(judge, requests, cache, cfg.judge_retries, cfg.judge_max_new_tokens)
        identity = judge.identity()
    finally:
        judge.close()
    it = iter(results)
    for p, order in zip(judged, orders, strict=True):
        res = [next(it) for _ in order]
        decision = judge_decision([r["verdict"] for r in res], order)
        p["judge"] = {
            "status": decision["status"],
            "candidate_shown_as": ["B" if b else "A" for b in order],
            "picks": decision["picks"],
            "verdicts": [r["verdict"] for r in res],
            "attempts": [r["attempts"] for r in res],
            "errors": [r["errors"] for r in res],
            "raw": [r["raw"] if r["verdict"] is None else None for r in res],
            # Per order, per reply: json_schema / grammar (held to the verdict schema) or none.
            "structured": [r["structured"] for r in res],
        }
        p["type"] = decision["type"]
        p["judge_severity"] = decision["judge_severity"]
    return identity


def _check_prompts(
    cfg: AuditConfig, base: dict[str, GenerationRow], cand: dict[str, GenerationRow], console: Console
) -> dict[str, Any]:
    """Refuse to pair answers given to different prompt texts (unless allowed, which is recorded)."""
    mismatched, unchecked = prompt_mismatches(base, cand)
    check = {
        "mismatched": len(mismatched),
        "unchecked": unchecked,
        "allowed": cfg.allow_prompt_mismatch,
        "mismatched_ids": mismatched[:50],
    }
    if mismatched:
        shown = "; ".join(
            describe_mismatch(i, base[i].prompt or "", cand[i].prompt or "") for i in mismatched[:3]
        )
        shared = sum(i in cand for i in base)
        msg = (
            f"{len(mismatched)} of the {shared} id(s) both sides answered were answered with different "
            f"prompt texts, so their answers are not comparable: {shown}"
        )
        if not cfg.allow_prompt_mismatch:
            raise DataError(
                f"{msg}. Regenerate one side with the same prompts, or pass --allow-prompt-mismatch"
            )
        console.print(
            f"[yellow]{msg} (allowed by --allow-prompt-mismatch; recorded in summary.json)[/yellow]"
        )
    return check


def _check_logs(
    cfg: AuditConfig,
    base: dict[str, GenerationRow],
    cand: dict[str, GenerationRow],
    reports: dict[str, dict[str, Any]],
    unmatched: dict[str, Any],
    prompt_check: dict[str, Any],
    console: Console,
) -> None:
    """Add how harness logs were mapped to ``unmatched`` / ``prompt_check``, and refuse answers
    mapped by --id-field whose prompt does not contain dartkit's question (unless allowed)."""
    log_unmatched, log_check, lines = harness.log_checks(base, cand, reports)
    unmatched.update(log_unmatched)
    prompt_check.update(log_check)
    for line in lines:
        console.print(line)
    if log_check["differs"]:
        shown = ", ".join(repr(i) for i in log_check["differs_ids"][:3])
        msg = (
            f"{log_check['differs']} id(s) mapped by --id-field were answered to a prompt that does not "
            f"contain dartkit's question for that id ({shown})"
        )
        if not cfg.allow_prompt_mismatch:
            raise DataError(f"{msg}. Check --id-field and the data, or pass --allow-prompt-mismatch")
        console.print(
            f"[yellow]{msg} (allowed by --allow-prompt-mismatch; recorded in summary.json)[/yellow]"
        )
    if log_check["contains"]:
        console.print(
            f"{log_check['contains']} pair(s) answered a harness prompt that contains dartkit's question "
            "rather than equalling dartkit's prompt (prompt_check.contains_ids in summary.json)"
        )


def run(cfg: AuditConfig, console: Console | None = None) -> dict[str, Any]:
    """Run the audit described by ``cfg``; returns ``summary.json``'s contents."""
    console = console or results_console()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    scorer = load_scorer(cfg.scorer, device=cfg.scorer_device)  # a bad scorer fails before any generation
    base, cand, models = collect_answers(cfg, out)
    t1 = time.perf_counter()
    pairs = [
        new_pair(
            i,
            b.text,
            cand[i].text,
            _question(b, cand[i]),
            b.label or cand[i].label,
            b.benchmark or cand[i].benchmark,
            scenario_key=b.scenario_key or cand[i].scenario_key,
        )
        for i, b in base.items()
        if i in cand
    ]
    unmatched = {
        "baseline_only": [i for i in base if i not in cand],
        "candidate_only": [i for i in cand if i not in base],
    }
    reports = {side: m["log"] for side, m in models.items() if isinstance(m, dict) and "log" in m}
    if not pairs:
        raise DataError(no_pairs_message(base, cand, cfg, reports))
    prompt_check = _check_prompts(cfg, base, cand, console)
    if reports:
        _check_logs(cfg, base, cand, reports, unmatched, prompt_check, console)
    if unmatched["baseline_only"] or unmatched["candidate_only"]:
        console.print(
            f"[yellow]unmatched ids, not audited: {len(unmatched['baseline_only'])} only in the baseline, "
            f"{len(unmatched['candidate_only'])} only in the candidate (listed in summary.json)[/yellow]"
        )
    score_pairs(pairs, scorer, GenerationCache(out / "scores.jsonl"), cfg.score_on)
    t2 = time.perf_counter()
    judge_tau = min([cfg.tau, *cfg.tau_grid]) if cfg.tau_sweep else cfg.tau
    for p in pairs:
        p["is_candidate"] = p["delta"] > cfg.tau
        p["severity"] = severity_of(p["delta"], cfg.tau, cfg.severity)
        p.update(judge=None, type=None, judge_severity=None)
    judged = [p for p in pairs if p["delta"] > judge_tau]
    judge_identity = None
    if cfg.judge and judged:
        judge_identity = run_judge(cfg, judged, GenerationCache(out / "cache.jsonl"))
    for p in pairs:
        confirmed = (p["judge"] or {}).get("status") == "confirmed"
        p["drift"] = bool(p["is_candidate"] and (cfg.judge is None or confirmed))
    t3 = time.perf_counter()
    summary = summarize(pairs, tau=cfg.tau, judged=cfg.judge is not None)
    summary.update(
        baseline=cfg.baseline or str(cfg.baseline_generations),
        candidate=(cfg.baseline if cfg.null else cfg.candidate)
        or str(cfg.candidate_generations or cfg.baseline_generations),
        null=cfg.is_null,
        scorer=cfg.scorer,
        scorer_identity=scorer.identity(),
        score_on=cfg.score_on,
        judge=cfg.judge or "none",
        judge_swap=cfg.judge_swap,
        severity=cfg.severity.model_dump(),
        decoding=cfg.decoding.model_dump(),
        unmatched=unmatched,
        prompt_check=prompt_check,
    )
    if judge_identity is not None:
        # Which path judge replies took: held to the verdict schema by the server (json_schema) or
        # a local grammar, or validated and retried only (none).
        summary["judge_structured_output"] = structured_counts(
            [{"structured": s} for p in judged for s in p["judge"]["structured"]]
        )
    if cfg.tau_sweep:
        summary["tau_sweep"] = tau_sweep(pairs, cfg.tau_grid, cfg.judge is not None)
    # Validated against the record type, so a field renamed in code cannot silently change the files.
    records = [AuditPair.model_validate(p) for p in pairs]
    write_jsonl(out / "pairs.jsonl", records)
    write_jsonl(out / "drift.jsonl", [r for r in records if r.drift])
    write_json(out / "summary.json", summary)
    png = delta_histogram_png(
        [p["delta"] for p in pairs],
        cfg.tau,
        out / "delta_hist.png",
        f"{summary['candidate']} vs {summary['baseline']}",
    )
    write_audit_md(out / "audit.md", summary, pairs, png, cfg.worst_cases)
    write_manifest(
        out,
        command="audit",
        config=cfg.model_dump(mode="json"),
        models={**models, "scorer": scorer.identity(), "judge": judge_identity},
        timings={
            "total": time.perf_counter() - t0,
            "generation": t1 - t0,
            "scoring": t2 - t1,
            "judge": t3 - t2,
        },
        n_items=len(pairs),
    )
    console.print(summary_table(summary))
    if summary.get("n_unsettled"):
        console.print(f"[yellow]{unsettled_line(summary)}[/yellow]")
    if cfg.tau_sweep:
        console.print(sweep_table(summary["tau_sweep"]))
    console.print(f"audit: {out / 'audit.md'}  pairs: {out / 'pairs.jsonl'}  summary: {out / 'summary.json'}")
    return summary


def summary_table(s: dict[str, Any]) -> Table:
    kind = "null audit" if s["null"] else "audit"
    judge = "screen-only" if s["screen_only"] else f"judge {s['judge']}"
    table = Table(title=f"{kind}: {s['candidate']} vs {s['baseline']} ({judge}, τ={s['tau']:g})")
    for col in ("pairs", "ΔH>τ", "drift", "rate", "mild", "moderate", "severe", "extreme", "mean ΔH"):
        table.add_column(col, justify="right", no_wrap=True)
    sc = s["severity_counts"]
    mean = s["delta"]["mean"]
    table.add_row(
        str(s["n_pairs"]),
        str(s["n_candidates"]),
        str(s["n_drift"]),
        "-" if s["drift_rate"] is None else f"{100 * s['drift_rate']:.1f}%",
        *(str(sc[k]) for k in ("mild", "moderate", "severe", "extreme")),
        "-" if mean is None else f"{mean:+.4f}",
    )
    return table


def sweep_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="τ sweep")
    for col in ("τ", "candidates", "drift", "rate"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['tau']:g}", str(r["n_candidates"]), str(r["n_drift"]), f"{100 * (r['drift_rate'] or 0):.1f}%"
        )
    return table
