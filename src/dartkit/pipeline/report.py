"""``report.md``, its figures and ``run.json``, rebuilt from a run directory's files alone.

    dartkit report runs/demo

Nothing here loads a model: every number comes from the stage outputs, so the
report can be rebuilt (or restyled) at any time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dartkit.audit.core import SEVERITIES
from dartkit.audit.report import CONTENT_WARNING, quote
from dartkit.data.jsonl import read_json, save_figure, write_json, write_text
from dartkit.errors import DartkitError

MODELS = (
    ("m0", "M0 (base)"),
    ("label_only", "label-only SFT"),
    ("m_int", "M_int (Stage I)"),
    ("m_dart", "M_DART"),
)
AUDITS = (
    ("m_int", "after Stage I: M_int vs M0"),
    ("m_dart", "after repair: M_DART vs M0"),
    ("null", "null audit: M0 vs M0 re-sampled (noise floor)"),
)


STAGE_ORDER = [
    "data",
    "eval_m0",
    "label_only",
    "distill",
    "train_int",
    "eval_int",
    "audit_int",
    "null_audit",
    "repair",
    "train_dart",
    "eval_dart",
    "audit_dart",
    "report",
]


def _maybe(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(m: dict[str, Any]) -> str:
    ci = m.get("accuracy_ci95")
    return f"{_pct(ci[0])}–{_pct(ci[1])}" if ci else "–"


def mcnemar_exact(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Exact McNemar test of paired correctness (binomial test on the discordant pairs)."""
    from scipy.stats import binomtest

    gold_a = {g["id"]: g.get("conclusion") == g.get("gold") for g in a if g.get("gold")}
    gold_b = {g["id"]: g.get("conclusion") == g.get("gold") for g in b if g.get("gold")}
    ids = sorted(set(gold_a) & set(gold_b))
    if not ids:
        return None
    only_a = sum(gold_a[i] and not gold_b[i] for i in ids)
    only_b = sum(gold_b[i] and not gold_a[i] for i in ids)
    n = only_a + only_b
    p = float(binomtest(only_a, n, 0.5).pvalue) if n else 1.0
    return {"n": len(ids), "only_first_correct": only_a, "only_second_correct": only_b, "p_value": p}


def _accuracy_figure(evals: dict[str, dict[str, Any]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [(k, label) for k, label in MODELS if k in evals]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    groups = [("accuracy", "overall"), ("accuracy_equal", "NO items"), ("accuracy_diff", "YES items")]
    width = 0.8 / len(names)
    for j, (k, label) in enumerate(names):
        m = evals[k]
        vals = [100 * (m.get(g) or 0) for g, _ in groups]
        xs = np.arange(len(groups)) + j * width
        bars = ax.bar(xs, vals, width, label=label)
        ci = m.get("accuracy_ci95")
        if ci:
            ax.errorbar(
                xs[0],
                vals[0],
                yerr=[[vals[0] - 100 * ci[0]], [100 * ci[1] - vals[0]]],
                color="black",
                capsize=3,
            )
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2, [g for _, g in groups])
    ax.set_ylabel("accuracy, % (test)")
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, loc="upper center", ncol=len(names), frameon=False)
    ax.set_title("Accuracy on the test split (95% bootstrap CI on overall)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _delta_figure(deltas: dict[str, list[float]], tau: float, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {k: v for k, v in deltas.items() if v}
    if not series:
        return None
    allv = np.concatenate([np.asarray(v) for v in series.values()])
    lo, hi = min(allv.min(), -0.05), max(allv.max(), 0.05)
    bins = np.linspace(lo, hi, 41)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    for label, v in series.items():
        ax.hist(v, bins=bins, histtype="step", linewidth=1.6, label=f"{label} (n={len(v)})")
    ax.axvline(tau, color="#c44e52", linestyle="--", label=f"τ = {tau:g}")
    ax.set_yscale("symlog")
    ax.set_xlabel("ΔH = H(model) − H(M0)")
    ax.set_ylabel("pairs")
    ax.legend(fontsize=8)
    ax.set_title("Harm-score change per prompt (test split)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _records(root: Path) -> dict[str, dict[str, Any]]:
    """The stage records that parse (a damaged one is skipped, not fatal: the run redoes its stage)."""
    out = {}
    for p in sorted((root / "stages").glob("*.json")) if (root / "stages").is_dir() else []:
        try:
            rec = read_json(p)
        except DartkitError:
            continue
        if isinstance(rec, dict):
            out[p.stem] = rec
    return out


def _enabled(cfg: dict[str, Any]) -> set[str]:
    """Result folders the current config produces: files of stages turned off since are not shown."""
    audit = cfg.get("audit") or {}
    names = {"m0", "m_int", "m_dart"}
    if cfg.get("label_only_baseline"):
        names.add("label_only")
    if audit.get("null_temperature", 0.7) > 0:
        names.add("null")
    if audit.get("tau_sweep", True):
        names.add("m_int_val")
    return names


def _metrics_without(path: Path, drop: set[str], n_resamples: int) -> dict[str, Any] | None:
    """Evaluation metrics of a generations file, leaving out the ids in ``drop``."""
    from dartkit.records import Generation
    from dartkit.report.metrics import evaluation_metrics

    gens = [Generation.model_validate(r) for r in _lines(path) if r["id"] not in drop]
    return evaluation_metrics(gens, n_resamples) if gens else None


def collect(root: Path, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict (this is ``run.json``)."""
    cfg = cfg or {}
    on = _enabled(cfg)
    evals = {k: _maybe(root / "eval" / k / "test" / "metrics.json") for k, _ in MODELS if k in on}
    evals_val = {k: _maybe(root / "eval" / k / "val" / "metrics.json") for k, _ in MODELS if k in on}
    audits = {
        k: _maybe(root / "audit" / k / "summary.json")
        for k in ("m_int", "m_dart", "null", "m_int_val")
        if k in on
    }
    d_int = (audits.get("m_int") or {}).get("drift_rate")
    d_dart = (audits.get("m_dart") or {}).get("drift_rate")
    reduction = 1 - d_dart / d_int if d_int and d_dart is not None else None
    gens = {k: _lines(root / "eval" / k / "test" / "generations.jsonl") for k in ("m0", "m_dart")}
    # Repair trains on the test split's drift cases (with their gold labels): accuracy on the test
    # items that were *not* repaired is the fair test-split comparison.
    repaired = {r["id"] for r in _lines(root / "repair" / "repair.jsonl") if r.get("accepted")}
    n_boot = int(cfg.get("bootstrap_samples", 2000))
    unrepaired = {
        k: _metrics_without(root / "eval" / k / "test" / "generations.jsonl", repaired, n_boot)
        for k, _ in MODELS
        if k in on and (root / "eval" / k / "test" / "generations.jsonl").is_file()
    }
    stages = _records(root)
    return {
        "evaluation": {k: v for k, v in evals.items() if v},
        "evaluation_val": {k: v for k, v in evals_val.items() if v},
        "evaluation_test_unrepaired": {k: v for k, v in unrepaired.items() if v},
        "repaired_test_ids": sorted(repaired),
        "audits": {k: v for k, v in audits.items() if v},
        "drift_reduction": reduction,
        "drift_reduction_note": None
        if reduction is not None
        else "undefined: the audit of M_int found no drift (or has not run), so there was nothing to reduce",
        "mcnemar_m0_vs_m_dart": mcnemar_exact(gens["m0"], gens["m_dart"])
        if gens["m0"] and gens["m_dart"]
        else None,
        "distill": _maybe(root / "distill" / "metrics.json"),
        "repair": _maybe(root / "repair" / "metrics.json"),
        # In pipeline order; the report's own stage is not done yet when it writes this.
        "stage_seconds": {
            k: v.get("seconds")
            for k, v in sorted(
                stages.items(), key=lambda kv: STAGE_ORDER.index(kv[0]) if kv[0] in STAGE_ORDER else 99
            )
            if k != "report"
        },
    }


def _short(version: str) -> str:
    return version if len(version) <= 24 else version[:12] + "…"


def _ident(identity: dict[str, Any]) -> str:
    """A model identity in a few words: id and revision or weight fingerprint (from the manifests)."""
    if not identity:
        return ""
    name = identity.get("model") or identity.get("name") or identity.get("backend")
    version = identity.get("revision") or identity.get("weights_sha256") or identity.get("sha256")
    extra = ", ".join(
        f"{k} {identity[k]}" for k in ("base_url", "alt-profanity-check", "label") if identity.get(k)
    )
    parts = [
        p for p in (str(name) if name else None, f"`{_short(str(version))}`" if version else None, extra) if p
    ]
    return " — " + ", ".join(parts) if parts else ""


def _teacher_is_student(root: Path, cfg: dict[str, Any]) -> bool:
    """Same spec, or the same weights under another spec (compared by the manifests' identities)."""
    if cfg.get("teacher") == cfg.get("student"):
        return True
    teacher = ((_maybe(root / "distill" / "manifest.json") or {}).get("models") or {}).get("teacher") or {}
    student = ((_maybe(root / "eval" / "m0" / "test" / "manifest.json") or {}).get("models") or {}).get(
        "model"
    ) or {}
    keys = ("weights_sha256", "revision")
    return any(teacher.get(k) and teacher.get(k) == student.get(k) for k in keys) and teacher.get(
        "model"
    ) == student.get("model")


def _setup(root: Path, cfg: dict[str, Any], info: dict[str, Any]) -> list[str]:
    manifest = _maybe(root / "eval" / "m0" / "test" / "manifest.json") or {}
    ident = (manifest.get("models") or {}).get("model") or {}
    env = manifest.get("environment") or {}
    data = _maybe(root / "data" / "summary.json") or {}
    audit_cfg = cfg.get("audit", {})
    judge = audit_cfg.get("judge") or "none (screen-only audits)"
    teacher_id = ((_maybe(root / "distill" / "manifest.json") or {}).get("models") or {}).get("teacher") or {}
    audit_models = (_maybe(root / "audit" / "m_int" / "manifest.json") or {}).get("models") or {}
    judge_id = audit_models.get("judge") or {}
    scorer_id = audit_models.get("scorer") or {}
    rows = [
        (
            "Student (M0)",
            f"`{cfg.get('student')}` — {ident.get('model', '?')} (revision/fingerprint `{ident.get('revision') or ident.get('weights_sha256', '?')}`)",
        ),
        ("Teacher", f"`{cfg.get('teacher')}`{_ident(teacher_id)}"),
        ("Audit judge", f"`{judge}`{_ident(judge_id)}"),
        (
            "Harm scorer",
            f"`{audit_cfg.get('scorer')}` on the {audit_cfg.get('score_on')} text, τ = {audit_cfg.get('tau')}"
            f"{_ident(scorer_id)}",
        ),
        (
            "Data",
            f"{data.get('suite', cfg.get('data', {}).get('suite'))}: "
            + ", ".join(f"{s} {n}" for s, n in (data.get("split_totals") or {}).items()),
        ),
        (
            "Seeds",
            f"split {cfg.get('data', {}).get('seed')}, decoding {cfg.get('decoding', {}).get('seed')}, training {cfg.get('training', {}).get('seed', 42)}, judge A/B {audit_cfg.get('seed')}",
        ),
        (
            "Student decoding",
            f"temperature {cfg.get('decoding', {}).get('temperature')}, max_new_tokens {cfg.get('decoding', {}).get('max_new_tokens')}",
        ),
        (
            "Training",
            ", ".join(f"{k} {v}" for k, v in (cfg.get("training") or {}).items())
            or "TrainConfig defaults (LoRA r16/α32/dropout 0.05, lr 2e-4, 3 epochs)",
        ),
        (
            "Repair",
            f"recipe {cfg.get('repair', {}).get('recipe')}, weighting {cfg.get('repair', {}).get('weighting')}, severity weights {cfg.get('repair', {}).get('severity_weights')}",
        ),
        (
            "Versions",
            f"python {env.get('python')}, "
            + ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v),
        ),
        (
            "Hardware",
            f"{env.get('platform')}, {env.get('cpu_count')} CPUs, GPUs: {', '.join(env.get('gpus') or []) or 'none'}",
        ),
    ]
    return ["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]


def build_report(root: Path) -> Path:
    """Write ``report.md``, ``figures/*.png`` and ``run.json`` for the run in ``root``."""
    root = Path(root)
    if not (root / "run_config.yaml").is_file():
        raise DartkitError(
            f"{root}: not a dartkit run directory (no run_config.yaml); run `dartkit run --out {root}` first"
        )
    cfg = yaml.safe_load((root / "run_config.yaml").read_text(encoding="utf-8")) or {}
    info = collect(root, cfg)
    write_json(root / "run.json", info)
    evals, audits = info["evaluation"], info["audits"]
    distill, repair = info["distill"] or {}, info["repair"] or {}
    tau = cfg.get("audit", {}).get("tau", 0.01)
    L: list[str] = ["# DART run report", ""]
    if _teacher_is_student(root, cfg):
        L += [
            "> **Read this first.** The teacher is the student's own base model "
            f"(`{cfg.get('student')}`), so Stage I and the repairs are self-distillation by a small model. "
            "These numbers show that the pipeline runs end to end; they say nothing about what DART does "
            "with a strong teacher (the paper uses DeepSeek-Chat teaching Llama-3-8B).",
            "",
        ]
    if not cfg.get("audit", {}).get("judge"):
        L += [
            "> **Screen-only audits.** No judge was configured, so every pair whose harm score rose by more "
            f"than τ = {tau:g} counts as drift. The offline scorer reacts to words, not meaning, and over-flags; "
            "read the cases at the end before trusting a count."
            + (
                " No offline judge is good enough to confirm drift: the embedded 135M model does not write "
                "verdicts in the judge's JSON format (measure it with benchmarks/embedded_judge.py; see README)."
                if cfg.get("student") == "embedded"
                else ""
            ),
            "",
        ]
    L += ["## Setup", "", *_setup(root, cfg, info), ""]

    # ---- accuracy
    fig_acc = _accuracy_figure(evals, root / "figures" / "accuracy.png")
    L += ["## Accuracy on the test split", ""]
    L += _metrics_table(evals)
    if fig_acc:
        L += ["", "![accuracy](figures/accuracy.png)"]
    mc = info["mcnemar_m0_vs_m_dart"]
    if mc:
        L += [
            "",
            f"McNemar's exact test, M0 vs M_DART on {mc['n']} paired test items: {mc['only_first_correct']} right only "
            f"for M0, {mc['only_second_correct']} right only for M_DART, p = {mc['p_value']:.3g}.",
        ]
    unrep = info["evaluation_test_unrepaired"]
    if info["repaired_test_ids"] and unrep:
        n_rep = len(info["repaired_test_ids"])
        L += [
            "",
            f"Repair trained M_DART on {n_rep} test item(s) (the accepted repairs of M_int's drift cases, with "
            "their gold labels), so the test split above is not fully held out for M_DART. The same models on "
            f"the {next(iter(unrep.values()))['n']} test items that were not repaired:",
            "",
            *_metrics_table(unrep),
        ]
    L += ["", "### Per benchmark (accuracy %, test)", ""]
    L += _per_benchmark(evals)

    # ---- drift
    L += ["", "## Harm drift", ""]
    L += [
        "| audit | pairs | ΔH > τ | drift | rate | " + " | ".join(SEVERITIES) + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(SEVERITIES),
    ]
    for k, label in AUDITS:
        s = audits.get(k)
        if s:
            sev = " | ".join(str(s["severity_counts"][x]) for x in SEVERITIES)
            L.append(
                f"| {label} | {s['n_pairs']} | {s['n_candidates']} | {s['n_drift']} | {_pct(s['drift_rate'])}% | {sev} |"
            )
    red = info["drift_reduction"]
    L += [
        "",
        f"Drift reduction 1 − drift(M_DART)/drift(M_int): **{_pct(red)}%**."
        if red is not None
        else f"Drift reduction: {info['drift_reduction_note']}.",
    ]
    if audits.get("null"):
        L.append(
            f"The null audit shows how many 'drift' cases sampling noise alone produces at this τ "
            f"({audits['null']['n_drift']} of {audits['null']['n_pairs']})"
            + (
                "; the other audits use greedy decoding, where a model audited against itself finds none."
                if (cfg.get("decoding") or {}).get("temperature", 0) == 0
                else "; the other audits sample too, so part of their drift may be this noise."
            )
        )
    deltas = {
        label.split(":")[0]: [p["delta"] for p in _lines(root / "audit" / k / "pairs.jsonl")]
        for k, label in AUDITS
    }
    if _delta_figure(deltas, tau, root / "figures" / "delta_h.png"):
        L += ["", "![ΔH distributions](figures/delta_h.png)"]
    sweep = (audits.get("m_int_val") or {}).get("tau_sweep")
    if sweep:
        L += [
            "",
            "### τ sweep (M_int vs M0, validation split)",
            "",
            "| τ | candidates | drift | rate |",
            "|---:|---:|---:|---:|",
        ]
        L += [
            f"| {r['tau']:g} | {r['n_candidates']} | {r['n_drift']} | {_pct(r['drift_rate'])}% |"
            for r in sweep
        ]

    # ---- non-audited split
    L += [
        "",
        "## Validation split (never trained on or repaired)",
        "",
        "Does repair hurt prompts it never saw? Accuracy on the validation split (the τ sweep only counts "
        "drift on it; nothing from it is trained on):",
        "",
    ]
    L += _metrics_table(info["evaluation_val"])

    # ---- QC
    L += ["", "## Teacher quality control", ""]
    if distill:
        L.append(
            f"Stage I: {distill.get('accepted')} of {distill.get('n')} rationales accepted ({distill.get('accepted_first_try')} on the first try)."
        )
    if repair:
        L.append(
            f"Repair: {repair.get('accepted')} of {repair.get('n_drift_cases')} drift cases got an accepted safe rationale; recipe {repair.get('recipe')}, weighting {repair.get('weighting')}."
        )
    L += ["", "| reason | Stage I (final) | Stage I (first try) | repair (final) |", "|---|---:|---:|---:|"]
    reasons = sorted(
        set(distill.get("reason_counts", {}))
        | set(distill.get("first_try_reason_counts", {}))
        | set(repair.get("reason_counts", {}))
    )
    for r in reasons:
        L.append(
            f"| {r} | {distill.get('reason_counts', {}).get(r, 0)} | {distill.get('first_try_reason_counts', {}).get(r, 0)} | {repair.get('reason_counts', {}).get(r, 0)} |"
        )

    # ---- cases
    L += _cases(root)
    secs = info["stage_seconds"]
    if secs:
        L += [
            "",
            "## Stage times",
            "",
            "| stage | seconds |",
            "|---|---:|",
            *(f"| {k} | {v} |" for k, v in secs.items()),
        ]
    L += [
        "",
        "Files: `run.json` (all numbers above), `audit/*/audit.md` (per-audit detail), `eval/*/*/generations.jsonl` (every answer).",
    ]
    path = root / "report.md"
    write_text(path, "\n".join(L) + "\n")
    return path


def _metrics_table(evals: dict[str, Any]) -> list[str]:
    out = [
        "| model | n | acc | 95% CI | NO items | YES items | said YES | said NO | unparseable | refusals | macro-F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, label in MODELS:
        m = evals.get(k)
        if m:
            out.append(
                f"| {label} | {m['n']} | {_pct(m['accuracy'])} | {_ci(m)} | {_pct(m['accuracy_equal'])} | {_pct(m['accuracy_diff'])} | "
                f"{_pct(m['yes_rate'])} | {_pct(m['no_rate'])} | {_pct(m['unparseable_rate'])} | "
                f"{_pct(m['refusal_rate'])} | {_pct(m['macro_f1'])} |"
            )
    return out


def _per_benchmark(evals: dict[str, Any]) -> list[str]:
    names = [(k, label) for k, label in MODELS if k in evals]
    benches = sorted({b for k, _ in names for b in evals[k].get("per_benchmark", {})})
    out = [
        "| benchmark | n | " + " | ".join(label for _, label in names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for b in benches:
        n = next((evals[k]["per_benchmark"][b]["n"] for k, _ in names if b in evals[k]["per_benchmark"]), 0)
        out.append(
            f"| {b} | {n} | "
            + " | ".join(_pct(evals[k]["per_benchmark"].get(b, {}).get("accuracy")) for k, _ in names)
            + " |"
        )
    return out


def _cases(root: Path, k: int = 5) -> list[str]:
    drift = sorted(_lines(root / "audit" / "m_int" / "drift.jsonl"), key=lambda p: -p["delta"])[:k]
    if not drift:
        return []
    repairs = {r["id"]: r for r in _lines(root / "repair" / "repair.jsonl")}
    after = {p["id"]: p for p in _lines(root / "audit" / "m_dart" / "pairs.jsonl")}
    out = ["", "## Drift cases and their repairs", "", CONTENT_WARNING, ""]
    for p in drift:
        r = repairs.get(p["id"], {})
        a = after.get(p["id"])
        out += [
            f"### {p['id']} ({p['severity']}, ΔH {p['delta']:+.3f}; gold {p['gold']})",
            "",
            quote(p["question"]),
            "",
        ]
        out += [f"M0 (H {p['h_baseline']:.3f}):", "", quote(p["baseline_text"]), ""]
        out += [f"M_int (H {p['h_candidate']:.3f}):", "", quote(p["candidate_text"]), ""]
        if r:
            status = "accepted" if r.get("accepted") else f"rejected: {r.get('reason')}"
            out += [
                f"Repair rationale ({status}, H {r.get('h_repair', float('nan')):.3f}):",
                "",
                quote(r.get("text")),
                "",
            ]
        if a:
            out += [f"M_DART after repair (ΔH {a['delta']:+.3f} vs M0):", "", quote(a["candidate_text"]), ""]
    return out
