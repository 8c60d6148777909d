"""The report's ablation table and the analyses around it, from a run directory's files alone.

One row per model the run trained (or M0), all on the same test items:

    M0 · label-only SFT · predicted-label distillation · Stage I (M_int) · toxicity-regularised SFT
    · DART without repair weighting · DART (M_DART)

Columns: accuracy overall / on NO items / on YES items with their intervals (the evaluation's
headline answer mode), mean harm of the answers (the audit's scorer, on the audit's part of the
text), drift against M0 (the audit of that model vs M0 on test) and drift reduction against M_int
(paired on the same items). Around it: accuracy in both answer modes, the λ sweep, teacher-vs-
student harm and the explanation policy on/off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dartkit.data.jsonl import read_json, read_rows
from dartkit.errors import DartkitError
from dartkit.stats.inference import bootstrap_method, cluster_bootstrap_ci, paired_drift
from dartkit.stats.metrics import label_baselines

TABLE_ROWS = (
    ("m0", "M0 (base)"),
    ("label_only", "label-only SFT"),
    ("predicted", "predicted-label distillation"),
    ("m_int", "Stage I (M_int)"),
    ("tox_sft", "toxicity-regularised SFT"),
    ("m_dart_unweighted", "DART without repair weighting"),
    ("m_dart", "DART (M_DART)"),
)
ROW_LABELS = dict(TABLE_ROWS)


def _maybe(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except DartkitError:
        return None


def _harm(pairs: list[dict[str, Any]], side: str, n_boot: int) -> dict[str, Any] | None:
    """Mean harm of one side of an audit's pairs, with a scenario-cluster bootstrap interval."""
    if not pairs:
        return None
    values = np.array([float(p[f"h_{side}"]) for p in pairs])
    clusters = [p.get("scenario_key") or f"id:{p['id']}" for p in pairs]
    return {
        "mean": float(values.mean()),
        "ci95": cluster_bootstrap_ci(values, clusters, n_resamples=n_boot),
        "n": int(values.size),
        "ci_method": bootstrap_method(len(set(clusters)), n_boot),
    }


def _same_as_m_int(root: Path, key: str) -> bool:
    marker = {
        "m_dart": root / "m_dart" / "SAME_AS_M_INT",
        "m_dart_unweighted": root / "ablations" / "unweighted" / "SAME_AS_M_INT",
    }
    return key in marker and marker[key].is_file()


def _all_weights_one(root: Path) -> bool:
    """Whether every accepted repair has loss weight 1 (then weighting changes nothing)."""
    rows = [r for r in read_rows(root / "repair" / "repair.jsonl") if r.get("accepted")]
    return bool(rows) and all(float(r.get("severity_weight", 1)) == 1 for r in rows)


def _same_answers(root: Path, key: str, other: str) -> bool:
    """Whether two models wrote the same text for every test item (then their rows are one model's)."""
    a = {g["id"]: g["text"] for g in read_rows(root / "eval" / key / "test" / "generations.jsonl")}
    b = {g["id"]: g["text"] for g in read_rows(root / "eval" / other / "test" / "generations.jsonl")}
    return bool(a) and a == b


def _predicted_training_note(root: Path) -> list[str]:
    """How many predicted-label rationales the row was trained on, by label, and the teacher's YES rate."""
    rows = read_rows(root / "ablations" / "predicted_distill" / "teacher.jsonl")
    if not rows:
        return []
    kept = [r for r in rows if r.get("accepted")]
    first = [r["attempt_log"][0]["text"] for r in rows if r.get("attempt_log")]
    from dartkit.parse import parse_conclusion

    said = [parse_conclusion(t) for t in first]
    parsed = [c for c in said if c]
    yes = sum(c == "YES" for c in parsed)
    return [
        f"trained on {len(kept)} of {len(rows)} rationales ({sum(r['gold'] == 'YES' for r in kept)} YES, "
        f"{sum(r['gold'] == 'NO' for r in kept)} NO); the teacher's first answer was YES on {yes} of "
        f"{len(parsed)} items"
    ]


def _counts(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """An audit's drift and mirror counts (mirror: pairs whose harm fell by more than τ)."""
    if not summary:
        return None
    return {
        "n_drift": summary.get("n_drift"),
        "n_mirror": summary.get("n_mirror"),
        "n": summary.get("n_pairs"),
    }


def enabled_rows(cfg: dict[str, Any]) -> set[str]:
    """The table rows the run's config makes: files of rows turned off since are not shown."""
    abl = cfg.get("ablations") or {}
    on = {"m0", "m_int", "m_dart"}
    for key, flag in (
        ("label_only", cfg.get("label_only_baseline")),
        ("predicted", abl.get("predicted_labels")),
        ("tox_sft", abl.get("tox_sft")),
        ("m_dart_unweighted", abl.get("unweighted_repair")),
    ):
        if flag:
            on.add(key)
    return on


def ablation_table(
    root: Path, n_boot: int = 2000, repaired_in_test: int = 0, on: set[str] | None = None
) -> dict[str, Any] | None:
    """The ablation table's rows (those enabled in ``on`` that the run has files for); None when no
    ablation row exists, since the main tables already show M0, M_int and M_DART."""
    rows: list[dict[str, Any]] = []
    pairs_int = read_rows(root / "audit" / "m_int" / "pairs.jsonl")
    for key, label in TABLE_ROWS:
        if on is not None and key not in on:
            continue
        source = "m_int" if key == "m_dart_unweighted" and _same_as_m_int(root, key) else key
        metrics = _maybe(root / "eval" / source / "test" / "metrics.json")
        if metrics is None:
            continue
        row: dict[str, Any] = {"model": key, "label": label, "n": metrics["n"]}
        for k in ("accuracy", "accuracy_equal", "accuracy_diff"):
            row[k] = metrics.get(k)
            row[f"{k}_ci95"] = metrics.get(f"{k}_ci95")
        row["answer_mode"] = metrics.get("answer_mode", "generate")
        row["unparseable_rate"] = metrics.get("unparseable_rate")
        row["ci_method"] = metrics.get("ci_method")
        notes = []
        is_m_int = source != key or (key == "m_dart" and _same_as_m_int(root, key))
        if is_m_int:
            notes.append("no repair was accepted: this row is M_int")
        elif key == "m_dart_unweighted" and _all_weights_one(root):
            notes.append("every accepted repair has weight 1, so this training is DART's by construction")
        if key in ("m_dart", "m_dart_unweighted") and repaired_in_test and not is_m_int:
            notes.append(
                f"trained on repairs of {repaired_in_test} of these test items (protocol paper): not held out"
            )
        if key == "m0":
            row["harm"] = _harm(pairs_int, "baseline", n_boot)
            row["drift"] = None
        else:
            audit_dir = root / "audit" / source
            pairs = read_rows(audit_dir / "pairs.jsonl")
            summary = _maybe(audit_dir / "summary.json")
            row["harm"] = _harm(pairs, "candidate", n_boot)
            row["drift"] = (
                {
                    "rate": summary["drift_rate"],
                    "ci95": summary.get("drift_rate_ci95"),
                    "n_drift": summary["n_drift"],
                    "n": summary["n_pairs"],
                    "screen_only": summary.get("screen_only"),
                }
                if summary
                else None
            )
            if key not in ("m_int",) and pairs and pairs_int:
                pd = paired_drift(pairs_int, pairs, n_boot)
                row["drift_reduction_vs_m_int"] = {
                    "n_drift_m_int": pd["n_drift_a"],
                    "n_drift": pd["n_drift_b"],
                    "value": pd["drift_reduction"],
                    "ci95": pd["drift_reduction_ci95"],
                    "mcnemar_p": pd["mcnemar"]["p_value"],
                    "note": pd.get("ci_note"),
                }
        if key in ("tox_sft", "predicted", "label_only") and _same_answers(root, key, "m_int"):
            notes.append("every answer is identical to M_int's")
        if key == "predicted":
            notes += _predicted_training_note(root)
        if key == "tox_sft":
            sweep = _maybe(root / "ablations" / "tox_sft" / "sweep.json")
            if sweep:
                row["label"] = f"{label} (λ = {sweep['chosen']:g}, chosen on val)"
        row["notes"] = notes
        rows.append(row)
    if not any(r["model"] not in ("m0", "m_int", "m_dart") for r in rows):
        return None
    sizes = {r["n"] for r in rows}
    shown = {r["model"] for r in rows}
    return {
        "not_run": [label for k, label in TABLE_ROWS if k not in shown],
        "split": "test",
        "answer_mode": rows[0]["answer_mode"],
        "items": f"the same {rows[0]['n']} test items for every row"
        if len(sizes) == 1
        else "not the same number of items in every row (see n)",
        "rows": rows,
    }


def answer_modes(root: Path, models: list[str]) -> dict[str, Any]:
    """Accuracy on test under both answer modes, per model (evaluations that scored both options)."""
    out = {}
    for key in models:
        m = _maybe(root / "eval" / key / "test" / "metrics.json")
        modes = (m or {}).get("answer_modes")
        if modes:
            gens = read_rows(root / "eval" / key / "test" / "generations.jsonl")
            # What answering YES to everything scores on the same items: a likelihood that always
            # prefers one option (small models often do) scores exactly this.
            gold = [g.get("gold") for g in gens]
            always_yes = label_baselines(gold)["always_yes"]["accuracy"] if any(gold) else None
            out[key] = {**modes, "always_yes_accuracy": always_yes, "loglik_context": m.get("loglik_context")}
    return out


def collect(root: Path, cfg: dict[str, Any], repaired_in_test: int = 0) -> dict[str, Any]:
    """Everything of this module the report and run.json show.

    ``repaired_in_test``: test items whose repair M_DART trained on (protocol paper); the rows trained
    on them say so.
    """
    n_boot = int(cfg.get("bootstrap_samples", 2000))
    abl = cfg.get("ablations") or {}
    on = enabled_rows(cfg)
    models = [k for k, _ in TABLE_ROWS if k in on]
    policy = {}
    for key in models if abl.get("policy") else []:
        with_policy = _maybe(root / "eval" / key / "test_policy" / "metrics.json")
        if with_policy is None:
            continue
        same = "m_int" if _same_as_m_int(root, key) else key  # not repaired: the model is M_int
        off = _maybe(root / "eval" / same / "test" / "metrics.json")
        audit_off = _maybe(root / "audit" / same / "summary.json") if key != "m0" else None
        audit_on = _maybe(root / "audit" / f"policy_{key}" / "summary.json")
        pairs_on = read_rows(root / "audit" / f"policy_{key}" / "pairs.jsonl")
        pairs_off = read_rows(root / "audit" / ("m_int" if key == "m0" else same) / "pairs.jsonl")
        policy[key] = {
            "accuracy_off": (off or {}).get("accuracy"),
            "accuracy_off_ci95": (off or {}).get("accuracy_ci95"),
            "accuracy_on": with_policy.get("accuracy"),
            "accuracy_on_ci95": with_policy.get("accuracy_ci95"),
            "harm_off": _harm(pairs_off, "baseline" if key == "m0" else "candidate", n_boot),
            "harm_on": _harm(pairs_on, "candidate", n_boot),
            "drift_off": (audit_off or {}).get("drift_rate"),
            "drift_on": (audit_on or {}).get("drift_rate"),
            "drift_counts_off": _counts(audit_off),
            "drift_counts_on": _counts(audit_on),
            "unparseable_off": (off or {}).get("unparseable_rate"),
            "unparseable_on": with_policy.get("unparseable_rate"),
            "n": with_policy.get("n"),
        }
    loglik = cfg.get("loglik", True) or cfg.get("answer_mode") == "loglik"
    return {
        "ablation_table": ablation_table(root, n_boot, repaired_in_test, on),
        "answer_modes": answer_modes(root, models) if loglik else {},
        "tox_sweep": _maybe(root / "ablations" / "tox_sft" / "sweep.json") if abl.get("tox_sft") else None,
        "teacher_harm": _maybe(root / "ablations" / "teacher_harm" / "summary.json")
        if abl.get("teacher_harm", True)
        else None,
        "policy": policy or None,
        # Test items M_DART (and unweighted DART) trained on, under protocol paper: every table says so.
        "repaired_in_test": repaired_in_test,
    }


# ---- markdown --------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _pct_ci(x: float | None, ci: list[float] | None) -> str:
    return _pct(x) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "")


def _num(x: float | None, ci: list[float] | None = None, signed: bool = False) -> str:
    if x is None:
        return "–"
    s = f"{x:+.4f}" if signed else f"{x:.4f}"
    return s + (
        f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci and signed else f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
    )


def markdown(info: dict[str, Any], labels: dict[str, str] | None = None) -> list[str]:
    """The report's sections for this module's results (empty when none exist)."""
    labels = {**ROW_LABELS, **(labels or {})}
    lines: list[str] = []
    n_rep = info.get("repaired_in_test") or 0
    contaminated = (
        f" **Not held out for M_DART (and DART without weighting): they trained on repairs of {n_rep} of "
        "these test items (protocol paper).**"
        if n_rep
        else ""
    )
    table = info.get("ablation_table")
    if table:
        lines += [
            "## Ablations",
            "",
            f"Split: **{table['split']}**, {table['items']} (every row is audited against M0 on these items; "
            "nothing in this table was trained on them unless a note says so). Accuracy (answers read in "
            f"*{table.get('answer_mode', 'generate')}* mode) is % with 95% intervals "
            f"({(table['rows'][0].get('ci_method') or 'see each evaluation').rstrip('.')}; Wilson where every "
            "answer is the same); harm is the mean harm score of the answers (audit scorer) with a cluster-bootstrap "
            "interval over scenario groups; drift is the share of items whose answer drifted against M0's; drift "
            "reduction is against M_int, paired item by item (cluster bootstrap). ⚠: more than half of the model's "
            "answers are unparseable, so its accuracy measures the answer format."
            + (f" Not run (switched off): {', '.join(table['not_run'])}." if table.get("not_run") else ""),
            "",
            "| model | n | accuracy | NO items | YES items | harm (mean) | drift vs M0 | drift reduction vs M_int | notes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in table["rows"]:
            d = r.get("drift")
            drift_cell = _pct_ci(d["rate"], d["ci95"]) + f" ({d['n_drift']}/{d['n']})" if d else "–"
            red = r.get("drift_reduction_vs_m_int")
            red_cell = "–"
            if red:
                red_cell = (
                    _pct_ci(red["value"], red["ci95"])
                    + f" ({red.get('n_drift_m_int', '?')} → {red.get('n_drift', '?')} items)"
                    + (f"; {red['note']}" if red.get("note") and not red["ci95"] else "")
                    if red["value"] is not None
                    else "undefined (no drift under M_int)"
                )
            flag = " ⚠" if (r.get("unparseable_rate") or 0) > 0.5 else ""
            lines.append(
                f"| {r['label']}{flag} | {r['n']} | {_pct_ci(r['accuracy'], r['accuracy_ci95'])} "
                f"| {_pct_ci(r['accuracy_equal'], r['accuracy_equal_ci95'])} "
                f"| {_pct_ci(r['accuracy_diff'], r['accuracy_diff_ci95'])} "
                f"| {_num((r.get('harm') or {}).get('mean'), (r.get('harm') or {}).get('ci95'))} "
                f"| {drift_cell} "
                f"| {red_cell} | {'; '.join(r['notes']) or ''} |"
            )
        lines.append("")
    modes = info.get("answer_modes")
    if modes:
        context = next(iter(modes.values())).get("loglik_context") or "analysis"
        after = "after the model's own analysis" if context == "analysis" else "directly after the prompt"
        lines += [
            "## Answer modes: the conclusion line vs its likelihood",
            "",
            "Split: **test**, each model's evaluated items. *generate* reads the `Conclusion:` line the model "
            "wrote (no line: wrong); *loglik* takes the likelier of `Conclusion: YES` and `Conclusion: NO` "
            f"{after}, so a model that cannot follow the format is still measured on the "
            "task. A large gap means generate-mode accuracy measures the format." + contaminated,
            "",
            "| model | generate: accuracy | unparseable | loglik: accuracy | loglik: NO items | loglik: YES items "
            "| loglik: said YES | modes agree | always YES |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for key, m in modes.items():
            g, ll = m.get("generate") or {}, m.get("loglik") or {}
            agree = m.get("agreement") or {}
            agree_cell = f"{_pct(agree.get('rate'))}% of {agree.get('n')}" if agree.get("n") else "–"
            lines.append(
                f"| {labels.get(key, key)} | {_pct_ci(g.get('accuracy'), g.get('accuracy_ci95'))} "
                f"| {_pct(g.get('unparseable_rate'))} | {_pct_ci(ll.get('accuracy'), ll.get('accuracy_ci95'))} "
                f"| {_pct(ll.get('accuracy_equal'))} | {_pct(ll.get('accuracy_diff'))} | {_pct(ll.get('yes_rate'))} "
                f"| {agree_cell} | {_pct(m.get('always_yes_accuracy'))} |"
            )
        lines += [
            "",
            "*said YES*: share of items the likelihood answered YES; a model whose likelihood prefers one option "
            "everywhere scores exactly the *always YES* (or always NO) accuracy, whatever it wrote. *modes agree*: "
            "how often the likelier option equals the written conclusion, over answers that wrote one.",
            "",
        ]
    sweep = info.get("tox_sweep")
    if sweep:
        trained = any("final_sft_loss" in t for t in sweep["table"])
        lines += [
            "## Toxicity-regularised SFT: the λ sweep",
            "",
            f"Split: **val**, {sweep.get('items')}; toxicity = mean harm score ({sweep.get('scorer')}, "
            f"{sweep.get('score_on')}) of each model's validation answers. Rule: {sweep['rule']}. "
            f"Chosen: **λ = {sweep['chosen']:g}**, then evaluated and audited on test (the ablation table).",
            "",
            *(
                [
                    "| λ | accuracy | toxicity | harmonic mean | training: samples' toxicity "
                    "| training: final SFT loss | |",
                    "|---|---|---|---|---|---|---|",
                ]
                if trained
                else ["| λ | accuracy | toxicity | harmonic mean | |", "|---|---|---|---|---|"]
            ),
        ]
        for t in sweep["table"]:
            mark = "chosen" if t["lambda"] == sweep["chosen"] else (t.get("excluded") or "")
            hm = t.get("score")
            loss = t.get("final_sft_loss")
            training = (
                f" {_num(t.get('train_sample_toxicity'))} | {'–' if loss is None else f'{loss:.5f}'} |"
                if trained
                else ""
            )
            lines.append(
                f"| {t['lambda']:g} | {_pct(t.get('accuracy'))} | {_num(t.get('toxicity'))} "
                f"| {'–' if hm is None else f'{hm:.4f}'} |{training} {mark} |"
            )
        lines.append("")
        if trained:
            lines += [
                "The training columns show what the penalty acted on: the scorer's mean value on the rationales the "
                "student sampled under teacher forcing (mean over steps), and the SFT part of the final loss. When "
                "they barely move across λ, the penalty was too small against the SFT loss to change the model.",
                "",
            ]
    th = info.get("teacher_harm")
    if th:
        lines += [
            "## Is drift inherited from the teacher?",
            "",
            f"Split: **train**, the {th['n']} {th['items']}; not held out by design. Harm: {th['scorer']} on the "
            f"{th['score_on']}; intervals: {th['ci_method']}.",
            "",
            "| text | mean harm |",
            "|---|---|",
        ]
        for m in th["means"].values():
            lines.append(f"| {m['label']} | {_num(m['mean'], m['ci95'])} |")
        lines += [
            "",
            "| comparison | mean difference | items above by > τ (first / second) | Wilcoxon p (two-sided) |",
            "|---|---|---|---|",
        ]
        for name, c in th["comparisons"].items():
            a, b = name.split("-")
            p = c["paired_test"].get("p_value")
            lines.append(
                f"| {th['means'][a]['label']} − {th['means'][b]['label']} "
                f"| {_num(c['mean_difference'], c['mean_difference_ci95'], signed=True)} "
                f"| {c['n_first_higher_by_tau']} / {c['n_second_higher_by_tau']} | {'–' if p is None else f'{p:.3g}'} |"
            )
        lines += ["", f"**{th['verdict']}**", ""]
    pol = info.get("policy")
    if pol:
        lines += [
            "## The explanation policy on every model",
            "",
            "Split: **test**, the same items with and without the policy system prompt. Drift is against M0 "
            "under the same setting (M0's own row: M0 with the policy against M0 without it)." + contaminated,
            "",
            "| model | accuracy off | accuracy on | unparseable off / on | harm off | harm on "
            "| drift off (drift / mirror of n) | drift on (drift / mirror of n) |",
            "|---|---|---|---|---|---|---|---|",
        ]

        def counts(c: dict[str, Any] | None) -> str:
            return f" ({c['n_drift']} / {c['n_mirror']} of {c['n']})" if c else ""

        for key, p in pol.items():
            flag = " ⚠" if (p.get("unparseable_on") or 0) > 0.5 else ""
            lines.append(
                f"| {labels.get(key, key)}{flag} | {_pct_ci(p['accuracy_off'], p['accuracy_off_ci95'])} "
                f"| {_pct_ci(p['accuracy_on'], p['accuracy_on_ci95'])} "
                f"| {_pct(p.get('unparseable_off'))} / {_pct(p.get('unparseable_on'))} "
                f"| {_num((p['harm_off'] or {}).get('mean'))} | {_num((p['harm_on'] or {}).get('mean'))} "
                f"| {_pct(p['drift_off'])}{counts(p.get('drift_counts_off'))} "
                f"| {_pct(p['drift_on'])}{counts(p.get('drift_counts_on'))} |"
            )
        lines += [
            "",
            "Read *drift on* against M0's own row: the policy changes M0's answers too, so a lower drift rate with "
            "the policy can mean a more harmful M0 baseline rather than better answers (then the mirror count, "
            "pairs whose harm *fell* by more than τ, rises). Unparseable answers count as wrong and often score as "
            "less harmful (shorter text); ⚠: more than half unparseable with the policy on.",
            "",
        ]
    return lines
