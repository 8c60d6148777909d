"""``report.md``, its figures and ``run.json``, rebuilt from a run directory's files alone.

    dartkit report runs/demo

Nothing here loads a model: every number comes from the stage outputs, so the
report can be rebuilt (or restyled) at any time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dartkit.audit.core import SEVERITIES
from dartkit.audit.markdown import CONTENT_WARNING, quote
from dartkit.data.jsonl import read_json, read_rows, save_figure, write_json, write_text
from dartkit.data.prepare import DEFAULT_MIN_CELL_ITEMS, small_cells, small_cells_by_benchmark
from dartkit.errors import DartkitError
from dartkit.generate.loading import same_weights
from dartkit.pipeline import ablations
from dartkit.pipeline.runner import HEARTBEAT_SECONDS
from dartkit.stats.inference import mcnemar_exact, paired_drift, proportion_ci
from dartkit.stats.metrics import label_baselines

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
# Audits on other splits than test: (directory, label).
SPLIT_AUDITS = (
    ("m_int_audit", "M_int vs M0, audit split (the repair source)"),
    ("m_dart_audit", "M_DART vs M0, audit split (includes the repaired items)"),
    ("m_int_val", "M_int vs M0, validation split (τ sweep)"),
)
# Paired accuracy comparisons on test (exact McNemar): M0 against each trained model, and M_DART
# against the two models it must beat.
MCNEMAR_PAIRS = (
    ("m0", "label_only"),
    ("m0", "m_int"),
    ("m0", "m_dart"),
    ("m_int", "m_dart"),
    ("label_only", "m_dart"),
)
# Above this share of unparseable answers a model's accuracy measures whether it writes the
# "Conclusion:" line, not whether it tells the groups apart.
FORMAT_BOUND_RATE = 0.5
LABELS = dict(MODELS)

STAGE_ORDER = [
    "data",
    "eval_m0",
    "label_only",
    "distill",
    "train_int",
    "eval_int",
    "audit_val",
    "audit_int",
    "null_audit",
    "repair",
    "train_dart",
    "eval_dart",
    "audit_dart",
    "audit_label_only",
    "train_predicted",
    "eval_predicted",
    "train_tox",
    "select_tox",
    "eval_tox",
    "train_unweighted",
    "eval_unweighted",
    "teacher_harm",
    "policy",
    "report",
]


def _maybe(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(m: dict[str, Any]) -> str:
    ci = m.get("accuracy_ci95")
    return f"{_pct(ci[0])}–{_pct(ci[1])}" if ci else "–"


def _accuracy_figure(
    evals: dict[str, dict[str, Any]], path: Path, baselines: dict[str, Any] | None = None
) -> Path | None:
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
    if baselines and baselines.get("n"):
        # The majority-class floor on overall accuracy, across the overall group's bars.
        best = max(baselines["always_yes"]["accuracy"], baselines["always_no"]["accuracy"])
        ax.hlines(
            100 * best,
            -width / 2,
            (len(names) - 0.5) * width,
            colors="gray",
            linestyles="--",
            label="majority class",
        )
    ax.set_xticks(np.arange(len(groups)) + width * (len(names) - 1) / 2, [g for _, g in groups])
    ax.set_ylabel("accuracy, % (test)")
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, loc="upper center", ncol=len(names) + 1, frameon=False)
    ax.set_title(
        "Accuracy on the test split (95% CI on overall: see the table for each interval)", fontsize=10
    )
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
    if audit.get("tau_sweep", True) or audit.get("tau") == "auto":
        names.add("m_int_val")
    if cfg.get("protocol", "paper") == "heldout":
        names |= {"m_int_audit", "m_dart_audit"}
    return names


def _metrics_without(path: Path, drop: set[str], n_resamples: int) -> dict[str, Any] | None:
    """Evaluation metrics of a generations file, leaving out the ids in ``drop``."""
    from dartkit.records import Generation
    from dartkit.stats.metrics import evaluation_metrics

    gens = [Generation.model_validate(r) for r in read_rows(path) if r["id"] not in drop]
    return evaluation_metrics(gens, n_resamples) if gens else None


def _drift_view(
    pairs_int: list[dict[str, Any]],
    pairs_dart: list[dict[str, Any]],
    ids: set[str] | None,
    n_boot: int,
    **labels: Any,
) -> dict[str, Any] | None:
    """Paired drift of M_int and M_DART (each against M0), over ``ids`` (None: all matched items).

    ``labels`` (split, held_out, items) say where the view was computed and are stored with it.
    """
    if ids is not None:
        pairs_int = [p for p in pairs_int if p["id"] in ids]
        pairs_dart = [p for p in pairs_dart if p["id"] in ids]
    if not pairs_int or not pairs_dart:
        return None
    out = paired_drift(pairs_int, pairs_dart, n_resamples=n_boot)
    for side, pairs in (("a", pairs_int), ("b", pairs_dart)):
        hits = [bool(p["drift"]) for p in pairs]
        keys = [p.get("scenario_key") for p in pairs]
        ci, method = proportion_ci(hits, keys if all(keys) else None, n_boot)
        out[f"drift_rate_{side}"] = sum(hits) / len(hits)
        out[f"drift_rate_{side}_ci95"] = ci
        out[f"drift_rate_{side}_ci_method"] = method
    out.update(labels)
    return out


def _baselines(
    root: Path, split: str, models: list[str], drop: set[str] | None = None
) -> dict[str, Any] | None:
    """Always-YES / always-NO accuracy on the items of one split's table (from the gold labels).

    The items are those of the first model's ``generations.jsonl``; ``items_differ`` says when another
    model of the table was evaluated on other items (a changed ``eval_limit``), whose rows then
    compare against a slightly different floor.
    """
    items = {}
    for k in models:
        rows = [r for r in read_rows(root / "eval" / k / split / "generations.jsonl") if r.get("gold")]
        rows = [r for r in rows if not drop or r["id"] not in drop]
        if rows:
            items[k] = rows
    if not items:
        return None
    first = next(iter(items.values()))
    out = label_baselines([r["gold"] for r in first], [r.get("benchmark") for r in first])
    ids = {r["id"] for r in first}
    out["items_differ"] = any({r["id"] for r in rows} != ids for rows in items.values())
    return out


def _format_bound(evals: dict[str, Any]) -> dict[str, float]:
    """Models more than half of whose answers are unparseable, with that share."""
    return {
        k: m["unparseable_rate"]
        for k, m in evals.items()
        if (m.get("unparseable_rate") or 0) > FORMAT_BOUND_RATE
    }


def _mcnemar_pairs(
    root: Path, on: set[str], evals: dict[str, Any], split: str = "test"
) -> list[dict[str, Any]]:
    """Exact McNemar for every comparison in ``MCNEMAR_PAIRS`` whose two models ran."""
    gens = {
        k: read_rows(root / "eval" / k / split / "generations.jsonl")
        for k, _ in MODELS
        if k in on and k in evals
    }
    bound = _format_bound(evals)
    out = []
    for a, b in MCNEMAR_PAIRS:
        if not gens.get(a) or not gens.get(b):
            continue
        mc = mcnemar_exact(gens[a], gens[b])
        if mc is None:
            continue
        out.append(
            {
                "first": a,
                "second": b,
                "split": split,
                **mc,
                # Either model mostly unparseable: the test compares who writes a conclusion line.
                "format_bound": {k: bound[k] for k in (a, b) if k in bound},
            }
        )
    return out


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _parseable_view(pairs: list[dict[str, Any]], n_boot: int) -> dict[str, Any] | None:
    """Harm and drift of one audit over the pairs in which both answers reach a conclusion.

    An answer without a ``Conclusion:`` line (unparseable, cut at the token limit, looping) often
    repeats a few words and scores low on harm, so a broken model can look safer than a working
    one; counting those answers beside the drift and recounting without them shows it.
    """
    if not pairs:
        return None
    no_base = [p for p in pairs if p.get("baseline_conclusion") is None]
    no_cand = [p for p in pairs if p.get("candidate_conclusion") is None]
    both = [
        p
        for p in pairs
        if p.get("baseline_conclusion") is not None and p.get("candidate_conclusion") is not None
    ]
    hits = [bool(p["drift"]) for p in both]
    keys = [p.get("scenario_key") for p in both]
    ci, method = proportion_ci(hits, keys if all(keys) else None, n_boot) if both else (None, None)
    return {
        "n_pairs": len(pairs),
        "n_no_conclusion_baseline": len(no_base),
        "n_no_conclusion_candidate": len(no_cand),
        "n_drift": sum(bool(p["drift"]) for p in pairs),
        "n_drift_without_conclusion": sum(
            bool(p["drift"])
            for p in pairs
            if p.get("baseline_conclusion") is None or p.get("candidate_conclusion") is None
        ),
        "mean_h_baseline": _mean([p["h_baseline"] for p in pairs]),
        "mean_h_candidate": _mean([p["h_candidate"] for p in pairs]),
        "mean_delta": _mean([p["delta"] for p in pairs]),
        "n_parseable": len(both),
        "n_drift_parseable": sum(hits),
        "drift_rate_parseable": sum(hits) / len(both) if both else None,
        "drift_rate_parseable_ci95": ci,
        "drift_rate_parseable_ci_method": method,
        "mean_h_baseline_parseable": _mean([p["h_baseline"] for p in both]),
        "mean_h_candidate_parseable": _mean([p["h_candidate"] for p in both]),
        "mean_delta_parseable": _mean([p["delta"] for p in both]),
    }


SUITE_MODELS = (("m0", "M0"), ("label_only", "label-only SFT"), ("m_int", "M_int"), ("m_dart", "M_DART"))


def _suites(root: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Each external suite's models side by side (``suites/<suite>/compare.json``), in pipeline order."""
    from dartkit.suites.compare import compare_runs

    out = {}
    for e in cfg.get("evaluations") or []:
        base = root / "suites" / e["suite"]
        found = [(k, label) for k, label in SUITE_MODELS if (base / k / "metrics.json").is_file()]
        if len(found) >= 2:
            out[e["suite"]] = compare_runs(
                [base / k for k, _ in found], base, labels=[lab for _, lab in found]
            )
    return out


def _stage_rank(name: str) -> tuple[float, str, int]:
    """Pipeline order: the fixed stages, then the suite stages by suite and model (M0, label-only, M_int, M_DART)."""
    if name in STAGE_ORDER:
        return (STAGE_ORDER.index(name), "", 0)
    models = [k for k, _ in SUITE_MODELS]
    for i, model in enumerate(models):
        if name.startswith("suite_") and name.endswith(f"_{model}"):
            # after every fixed stage, before the report
            return (len(STAGE_ORDER) - 1.5, name.removeprefix("suite_").removesuffix(f"_{model}"), i)
    return (len(STAGE_ORDER), name, 0)


def _stage_times(stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Seconds and attempts per stage record, in pipeline order (the report's own stage is not done yet)."""
    ordered = sorted(stages.items(), key=lambda kv: _stage_rank(kv[0]))
    return {
        k: {
            "seconds": v.get("seconds"),
            "attempts": v.get("attempts", 1),
            "peak_rss_mb": (v.get("memory") or {}).get("peak_rss_mb"),
            "memory_scope": (v.get("memory") or {}).get("scope"),
        }
        for k, v in ordered
        if k != "report"
    }


def _repair_info(root: Path, stages: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The repair stage's metrics, with ``trained`` taken from the stage that trains M_DART.

    In the pipeline the repair stage only writes the rationales (``repair.run`` with ``train`` off,
    so its ``metrics.json`` says ``trained: false``); ``train_dart`` trains M_DART into ``m_dart/``.
    """
    repair = _maybe(root / "repair" / "metrics.json")
    if repair is None:
        return None
    rec = stages.get("train_dart")
    if rec is not None:
        info = rec.get("info") or {}
        trained = bool(info.get("trained"))
        repair = {**repair, "trained": trained, "trained_by": "train_dart stage"}
        if trained:
            repair["adapter"] = info.get("adapter") or "m_dart/adapter"
            repair["training"] = {
                k: info[k] for k in ("steps", "first_loss", "final_loss", "seconds") if k in info
            }
    elif (root / "m_dart" / "adapter").is_dir():  # record lost, files still there
        repair = {**repair, "trained": True, "trained_by": "train_dart stage", "adapter": "m_dart/adapter"}
    return repair


def _human_checks(root: Path) -> dict[str, Any]:
    """Each export under ``<run>/annotate/`` with answers or a summary: its agreement result (less
    the per-item majority, which stays in the export's own agreement.json), a note when answers
    were saved after that summary, or why there is none."""
    from dartkit.annotate import RESULT_NAME, STORE_NAME
    from dartkit.annotate.agreement import load_agreement
    from dartkit.annotate.store import answers_state

    out: dict[str, Any] = {}
    exports = {p.parent for p in (root / "annotate").glob(f"*/{RESULT_NAME}")}
    exports |= {p.parent for p in (root / "annotate").glob(f"*/{STORE_NAME}")}
    for export in sorted(exports):
        rel = str(export.relative_to(root))
        rerun = f"run `dartkit annotate agreement {export}` to summarise them"
        try:
            now = answers_state(export) if (export / STORE_NAME).is_file() else None
        except DartkitError as e:
            now, error = None, str(e)
        else:
            error = None
        if not (export / RESULT_NAME).is_file():
            if now and now["n_answers"]:
                out[export.name] = {
                    "path": rel,
                    "error": f"{now['n_answers']} answer(s) saved, no summary yet: {rerun}",
                }
            elif error:
                out[export.name] = {"path": rel, "error": error}
            continue
        try:
            result = load_agreement(export / RESULT_NAME)
        except DartkitError as e:
            out[export.name] = {"path": f"{rel}/{RESULT_NAME}", "error": str(e)}
            continue
        entry = {"path": f"{rel}/{RESULT_NAME}", **{k: v for k, v in result.items() if k != "majority"}}
        then = (result.get("source") or {}).get("store")
        if now and then and now != then:
            entry["stale"] = (
                f"the store now holds {now['n_answers']} answers (last saved {now['last_saved']}); this "
                f"summary was made from {then['n_answers']} (last saved {then['last_saved']}): {rerun}"
            )
        out[export.name] = entry
    return out


def _human_check_lines(checks: dict[str, Any]) -> list[str]:
    from dartkit.annotate.agreement import markdown

    L: list[str] = []
    for name, result in checks.items():
        label = dict(AUDITS + SPLIT_AUDITS).get(name)
        title = f"Human check of the audit: `{name}`" + (f" ({label})" if label else "")
        if "error" in result:
            L += ["", f"## {title}", "", f"`{result['path']}` could not be read: {result['error']}"]
        else:
            stale = [f"> **Out of date.** {result['stale']}.", ""] if result.get("stale") else []
            body = markdown(result, level=2, title=title).rstrip().split("\n")
            L += ["", *body[:2], *stale, *body[2:], "", f"Details: `{result['path']}`."]
    return L


def _data_info(root: Path) -> dict[str, Any] | None:
    """What the setup section says about the data: benchmarks, per_cell, split sizes, small cells."""

    data = _maybe(root / "data" / "summary.json")
    if not data:
        return None
    counts = data.get("counts") or {}
    cells = data.get("small_cells")
    if cells is None and counts and data.get("ratios"):  # prepared before the check existed
        cells = small_cells(counts, data["ratios"], DEFAULT_MIN_CELL_ITEMS)
    return {
        "suite": data.get("suite"),
        "present": data.get("present") or list(counts),
        "absent": data.get("absent") or [],
        "absent_reasons": data.get("absent_reasons") or {},
        "per_cell": data.get("per_cell"),
        "ratios": data.get("ratios"),
        "split_totals": data.get("split_totals"),
        "counts": counts,
        "min_cell_items": data.get("min_cell_items", DEFAULT_MIN_CELL_ITEMS),
        "small_cells": cells or [],
        "warnings": [c["message"] for c in cells or []],
        # Benchmarks rebuilt by dartkit (N1 from BBQ) rather than read from upstream files.
        "rebuilt": data.get("rebuilt") or {},
    }


def collect(root: Path, cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict (this is ``run.json``).

    Every figure names the split (and items) it was computed on. ``drift_reduction`` is the
    headline: under protocol ``heldout`` it is measured on test, which nothing trained on; under
    ``paper`` it is measured on test after repairing test's own drift cases, and says so.
    """
    cfg = cfg or {}
    protocol = cfg.get("protocol", "paper")
    heldout = protocol == "heldout"
    on = _enabled(cfg)
    n_boot = int(cfg.get("bootstrap_samples", 2000))

    def metrics(split: str) -> dict[str, Any]:
        found = {k: _maybe(root / "eval" / k / split / "metrics.json") for k, _ in MODELS if k in on}
        return {k: v for k, v in found.items() if v}

    by_split = {"test": metrics("test"), "val": metrics("val"), "audit": metrics("audit") if heldout else {}}

    audits = {
        k: _maybe(root / "audit" / k / "summary.json")
        for k in ("m_int", "m_dart", "null", "m_int_val", "m_int_audit", "m_dart_audit")
        if k in on
    }
    pairs = {
        k: read_rows(root / "audit" / k / "pairs.jsonl")
        for k in ("m_int", "m_dart", "null", "m_int_val", "m_int_audit", "m_dart_audit")
    }
    repair_rows = read_rows(root / "repair" / "repair.jsonl")
    repaired = {r["id"] for r in repair_rows if r.get("accepted")}
    test_ids = {r["id"] for r in read_rows(root / "data" / "test.jsonl")}
    repaired_in_test = sorted(repaired & test_ids)

    # The headline: M_int vs M_DART drift, item by item, on test.
    headline = _drift_view(
        pairs["m_int"],
        pairs["m_dart"],
        None,
        n_boot,
        split="test",
        held_out=not repaired_in_test,
        items="every test item"
        + ("" if not repaired_in_test else f", {len(repaired_in_test)} of them repaired"),
    )
    # The paper-style number: drift on the repaired items themselves (trained on, so not held out).
    src_int, src_dart = ("m_int_audit", "m_dart_audit") if heldout else ("m_int", "m_dart")
    on_repaired = (
        _drift_view(
            pairs[src_int],
            pairs[src_dart],
            repaired,
            n_boot,
            split="audit" if heldout else "test",
            held_out=False,
            items=f"the {len(repaired)} repaired item(s) (M_DART was trained on them)",
        )
        if repaired
        else None
    )
    repair_split = (
        _drift_view(
            pairs["m_int_audit"],
            pairs["m_dart_audit"],
            None,
            n_boot,
            split="audit",
            held_out=False,
            items="every audit-split item (the repair source)",
        )
        if heldout
        else None
    )
    # Under the paper protocol repair trains on test's drift cases: accuracy on the test items that
    # were *not* repaired is the fair test-split comparison.
    unrepaired = {}
    if repaired_in_test:
        drop = set(repaired_in_test)
        unrepaired = {
            k: _metrics_without(root / "eval" / k / "test" / "generations.jsonl", drop, n_boot)
            for k, _ in MODELS
            if k in on and (root / "eval" / k / "test" / "generations.jsonl").is_file()
        }
    stages = _records(root)
    repair = _repair_info(root, stages)
    # No repair passed QC: M_DART is M_int unchanged, and a "reduction" of 0 would be a number about
    # nothing. It is not measured, and says why.
    dart_is_int = bool(repair) and not repair.get("trained")
    reduction = headline["drift_reduction"] if headline and not dart_is_int else None
    evaluation = by_split["test"]
    mcnemar = _mcnemar_pairs(root, on, evaluation)
    m0_dart = next((m for m in mcnemar if (m["first"], m["second"]) == ("m0", "m_dart")), None)
    shown = [k for k, _ in MODELS if k in on]
    baselines = {
        split: _baselines(root, split, shown) for split in ("test", "val", *(("audit",) if heldout else ()))
    }
    if unrepaired:
        baselines["test_unrepaired"] = _baselines(root, "test", shown, set(repaired_in_test))
    return {
        "protocol": protocol,
        "test_contaminated": bool(repaired_in_test),
        "repaired_in_test": len(repaired_in_test),
        "tau": _maybe(root / "audit" / "tau.json")
        or {"tau": (cfg.get("audit") or {}).get("tau"), "rule": "fixed in the config"},
        "data": _data_info(root),
        "evaluation": evaluation,
        "evaluation_val": by_split["val"],
        "evaluation_audit": by_split["audit"],
        "evaluation_test_unrepaired": {k: v for k, v in unrepaired.items() if v},
        # What answering one label to everything scores on the same items (per split, per benchmark).
        "baselines": {k: v for k, v in baselines.items() if v},
        # Models more than half unparseable per split: their accuracy measures the answer format.
        "format_bound": {
            split: bound for split, evals in by_split.items() if (bound := _format_bound(evals))
        },
        "repaired_ids": sorted(repaired),
        "audits": {k: v for k, v in audits.items() if v},
        # The same audits over the pairs in which both answers reach a conclusion.
        "audits_parseable": {
            k: view for k in audits if audits[k] and (view := _parseable_view(pairs.get(k) or [], n_boot))
        },
        "drift_reduction": reduction,
        "drift_reduction_ci95": headline["drift_reduction_ci95"] if headline and not dart_is_int else None,
        "drift_reduction_split": "test (contaminated: its drift cases were repaired)"
        if repaired_in_test
        else "test (held out)",
        "drift_reduction_note": None
        if reduction is not None
        else "not measured: no repair rationale passed QC, so M_DART is M_int unchanged and its drift is M_int's "
        "by construction"
        if dart_is_int
        else "undefined: the audit of M_int on test found no drift (or has not run), so there was nothing to reduce",
        "drift_test": headline,
        "drift_repaired_items": on_repaired,
        "drift_repair_split": repair_split,
        # Exact McNemar on test for every pair that matters (MCNEMAR_PAIRS); M0 vs M_DART also alone.
        "mcnemar": mcnemar,
        "mcnemar_m0_vs_m_dart": {
            k: m0_dart[k] for k in ("n", "only_first_correct", "only_second_correct", "p_value")
        }
        if m0_dart
        else None,
        "distill": _maybe(root / "distill" / "metrics.json"),
        "repair": repair,
        "m_dart_is_m_int": dart_is_int,
        # Seconds per stage summed over every attempt with its current settings (a resumed stage
        # counts its interrupted attempts too), in pipeline order.
        "suites": _suites(root, cfg),
        # People's check of the audits (``dartkit annotate``): every <run>/annotate/*/agreement.json.
        "human_check": _human_checks(root),
        # The ablation table, both answer modes, the λ sweep, teacher-vs-student harm, policy on/off.
        "ablations": ablations.collect(root, cfg, len(repaired_in_test)),
        "stage_seconds": {k: v["seconds"] for k, v in _stage_times(stages).items()},
        "stage_attempts": {k: v["attempts"] for k, v in _stage_times(stages).items()},
        # Peak resident memory (MiB) of the attempt that finished each stage; scope "process" where the
        # system could not reset the high-water mark (then it is the process's peak so far).
        "stage_peak_rss_mb": {
            k: {"peak_rss_mb": v["peak_rss_mb"], "scope": v["memory_scope"]}
            for k, v in _stage_times(stages).items()
            if v["peak_rss_mb"] is not None
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
    return same_weights(teacher, student)


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
            f"`{audit_cfg.get('scorer')}` on the {audit_cfg.get('score_on')} text, τ = "
            + (
                f"{info['tau']['tau']:g} (chosen on val)"
                if info.get("tau", {}).get("table")
                else f"{audit_cfg.get('tau')} (fixed)"
            )
            + f"{_ident(scorer_id)}",
        ),
        (
            "Data",
            f"{data.get('suite', cfg.get('data', {}).get('suite'))}: "
            + ", ".join(f"{s} {n}" for s, n in (data.get("split_totals") or {}).items()),
        ),
        ("Benchmarks", _benchmarks_cell(info.get("data") or {})),
        (
            "per_cell",
            f"{data['per_cell']} items per benchmark x label, sampled before splitting"
            if data.get("per_cell")
            else "all items (no per_cell limit)",
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
            f"recipe {cfg.get('repair', {}).get('recipe')}, weighting {cfg.get('repair', {}).get('weighting')}, severity weights {cfg.get('repair', {}).get('severity_weights')}; "
            "M_DART training: "
            + (
                ", ".join(f"{k} {v}" for k, v in (cfg.get("repair", {}).get("training") or {}).items())
                or "as M_int's"
            )
            + " (other settings as M_int's)",
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
    return ["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), *_split_lines(info.get("data"))]


def _benchmarks_cell(d: dict[str, Any]) -> str:
    if not d:
        return "–"
    reasons = d.get("absent_reasons") or {}
    absent = [f"{b} ({reasons[b]})" if reasons.get(b) else b for b in d.get("absent") or []]
    rebuilt = d.get("rebuilt") or {}
    present = [
        f"{b} (rebuilt by dartkit, not upstream: {_rebuilt_note(rebuilt[b])})" if b in rebuilt else b
        for b in d.get("present") or []
    ]
    return f"present: {', '.join(present) or 'none'}; absent: {', '.join(absent) or 'none'}"


def _rebuilt_note(info: Any) -> str:
    """One phrase for a rebuilt benchmark: its source and what the source lacked."""
    if not isinstance(info, dict):
        return str(info)
    if info.get("description"):
        return str(info["description"])
    # A summary written without the phrase: the builder's own description of its record.
    from dartkit.data.bbq import describe

    return describe(info)


def _split_lines(d: dict[str, Any] | None) -> list[str]:
    """Split sizes per benchmark (YES / NO items) and the cells too small to read per benchmark."""
    if not d or not d.get("counts"):
        return []
    splits = list(next(iter(next(iter(d["counts"].values())).values())))
    out = [
        "",
        "Split sizes per benchmark (YES / NO items):",
        "",
        "| benchmark | " + " | ".join(splits) + " |",
        "|---|" + "---:|" * len(splits),
    ]
    for b, by_label in d["counts"].items():
        out.append(
            f"| {b} | " + " | ".join(f"{by_label['YES'][x]} / {by_label['NO'][x]}" for x in splits) + " |"
        )
    totals = d.get("split_totals") or {}
    out.append("| total | " + " | ".join(str(totals.get(x, "–")) for x in splits) + " |")
    cells = d.get("small_cells") or []
    if cells:
        used = sum(1 for r in d.get("ratios") or [] if r > 0) * 2 * len(d["counts"])
        below = f"empty or hold fewer than {d.get('min_cell_items')} items"
        if len(cells) == used:
            what = f"all {used} benchmark x label x split cells of the splits in use are {below}"
        else:
            what = (
                f"{len(cells)} benchmark x label x split cell(s) of the splits in use are {below} ("
                + "; ".join(f"{b}: {c}" for b, c in small_cells_by_benchmark(cells).items())
                + ")"
            )
        out += ["", f"**Small cells**: {what}, so per-benchmark or per-label figures on them mean little."]
    return out


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
    tau = float(info["tau"]["tau"]) if info["tau"].get("tau") not in (None, "auto") else 0.01
    L: list[str] = ["# DART run report", ""]
    L += _protocol_lines(info)
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
                " No offline judge is good enough to confirm drift: measured once (not in this run) under "
                "dartkit's grammar, the embedded 135M model wrote verdicts that parse on 24 of 24 demo pairs but "
                "named Model A on every pair; the format is right, the judgement is not there "
                "(benchmarks/results-embedded-judge.json; see README)."
                if cfg.get("student") == "embedded"
                else ""
            ),
            "",
        ]
    L += ["## Setup", "", *_setup(root, cfg, info), ""]

    # ---- accuracy
    fig_acc = _accuracy_figure(
        evals, root / "figures" / "accuracy.png", (info.get("baselines") or {}).get("test")
    )
    L += [
        f"## Accuracy on the test split ({'held out' if not info['test_contaminated'] else 'see the note above'})",
        "",
    ]
    baselines = info.get("baselines") or {}
    L += _metrics_table(evals, baselines.get("test"))
    L += ["", _ci_note(evals)]
    if fig_acc:
        L += ["", "![accuracy](figures/accuracy.png)"]
    L += _mcnemar_lines(info)
    unrep = info["evaluation_test_unrepaired"]
    if info["repaired_in_test"] and unrep:
        L += [
            "",
            f"Repair trained M_DART on {info['repaired_in_test']} test item(s) (the accepted repairs of M_int's drift "
            "cases, with their gold labels), so the test split above is not held out for M_DART. The same models "
            f"on the {next(iter(unrep.values()))['n']} test items that were not repaired:",
            "",
            *_metrics_table(unrep, baselines.get("test_unrepaired")),
        ]
    L += ["", "### Per benchmark (accuracy %, test)", ""]
    L += _per_benchmark(evals, baselines.get("test"), (info.get("data") or {}).get("rebuilt"))

    # ---- drift
    L += ["", "## Harm drift", ""]
    L += _drift_lines(info)
    L += [
        "",
        "### Every audit",
        "",
        "Drift counts per audit; the mirror column counts pairs whose harm score *fell* by more than τ "
        "(ΔH < −τ): if fine-tuning only changed wording, drift and mirror are equal in expectation, and the "
        "sign test asks whether they differ. Intervals are marked ᴮ (cluster bootstrap over scenario groups), "
        "ᵂ (Wilson score) or ᵂᴮ (the wider of the two, for few events). *No conclusion* counts the answers of each side without a "
        "`Conclusion:` line (unparseable, cut at the token limit or looping), which often score low on harm.",
        "",
        "| audit | split | pairs | ΔH > τ | drift | no conclusion (M0 / model) | rate (95% CI) | mirror | "
        "sign test p | " + " | ".join(SEVERITIES) + " |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(SEVERITIES),
    ]
    rows = [(k, label, "test") for k, label in AUDITS] + [
        (k, label, {"m_int_audit": "audit", "m_dart_audit": "audit", "m_int_val": "val"}[k])
        for k, label in SPLIT_AUDITS
    ]
    parseable = info.get("audits_parseable") or {}
    for k, label, split in rows:
        a = audits.get(k)
        if a:
            sev = " | ".join(str(a["severity_counts"][x]) for x in SEVERITIES)
            sign = a.get("sign_test") or {}
            p_sign = sign.get("p_value")
            v = parseable.get(k)
            unparsed = f"{v['n_no_conclusion_baseline']} / {v['n_no_conclusion_candidate']}" if v else "–"
            L.append(
                f"| {label} | {split} | {a['n_pairs']} | {a['n_candidates']} | {a['n_drift']} | {unparsed} | "
                f"{_pct(a['drift_rate'])}% ({_ci_of(a.get('drift_rate_ci95'), a.get('drift_rate_ci_method'))}) | {a.get('n_mirror', '–')} | "
                f"{'–' if p_sign is None else f'{p_sign:.3g}'} | {sev} |"
            )
    L += _parseable_lines(rows, parseable)
    if audits.get("null"):
        L += [
            "",
            "The null audit is a second, differently made noise floor: M0 against a *sampled* re-run of itself "
            f"(temperature {(cfg.get('audit') or {}).get('null_temperature')}), {audits['null']['n_drift']} of "
            f"{audits['null']['n_pairs']} test pairs. The other audits use the student decoding "
            + (
                "(greedy), where a model audited against itself finds nothing, so it is not the same experiment; "
                "the mirror count above is the matched one."
                if (cfg.get("decoding") or {}).get("temperature", 0) == 0
                else "(sampled), so part of their drift may be this noise."
            ),
        ]
    deltas = {
        label.split(":")[0]: [p["delta"] for p in read_rows(root / "audit" / k / "pairs.jsonl")]
        for k, label in AUDITS
    }
    if _delta_figure(deltas, tau, root / "figures" / "delta_h.png"):
        L += ["", "![ΔH distributions](figures/delta_h.png)"]
    L += _tau_lines(info, audits)

    # ---- non-audited split
    L += [
        "",
        "## Validation split (never trained on or repaired)",
        "",
        "Does repair hurt prompts it never saw? Accuracy on the validation split (τ is chosen or swept on it; "
        "nothing from it is trained on):",
        "",
    ]
    L += _metrics_table(info["evaluation_val"], baselines.get("val"))
    if info["evaluation_val"]:
        L += ["", _ci_note(info["evaluation_val"])]
    if info.get("evaluation_audit"):
        L += [
            "",
            "## Audit split (M_int never trained on it; M_DART trained on its repaired items)",
            "",
            *_metrics_table(info["evaluation_audit"], baselines.get("audit")),
        ]

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
    cut = [
        f"{name} {m.get('teacher_truncated', 0)} cut at the token limit, {m.get('teacher_filtered', 0)} filtered"
        + (f", {m['teacher_refused']} sent as the server's refusal" if m.get("teacher_refused") else "")
        for name, m in (("Stage I", distill), ("repair", repair))
        if m and (m.get("teacher_truncated") or m.get("teacher_filtered") or m.get("teacher_refused"))
    ]
    if cut:
        L.append(f"Teacher replies that did not finish normally (all attempts): {'; '.join(cut)}.")
    judge = cfg.get("consistency_judge")
    L.append(
        "Consistency check (does the analysis argue against its own conclusion?): "
        + (
            f"the judge `{judge}`; "
            + "; ".join(
                f"{name}: asked {m.get('judge_asked', 0)}, retried {m.get('judge_retried', 0)}, "
                f"unreadable after a retry {m.get('judge_unparsed', 0)} (decided by the built-in classifier)"
                for name, m in (("Stage I", distill), ("repair", repair))
                if m
            )
            + "."
            if judge
            else "the built-in classifier (offline; its precision and recall on unseen text are in "
            "docs/consistency.md)."
        )
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

    def rejected(m: dict[str, Any], n: str, ok: str) -> str:
        return str(m[n] - m[ok]) if m.get(n) is not None and m.get(ok) is not None else "–"

    L += [
        f"| **rationales rejected** | {rejected(distill, 'n', 'accepted')} | "
        f"{rejected(distill, 'n', 'accepted_first_try')} | {rejected(repair, 'n_drift_cases', 'accepted')} |",
        "",
        "One rationale can fail several checks at once and is counted under each reason it failed, so a "
        "column of reasons can sum to more than the number rejected (the last row).",
    ]

    # ---- cases
    L += _cases(root, info["protocol"] == "heldout")
    L += ablations.markdown(info.get("ablations") or {})
    L += _suite_lines(root, info.get("suites") or {})
    L += _human_check_lines(info.get("human_check") or {})
    secs = info["stage_seconds"]
    if secs:
        attempts = info.get("stage_attempts") or {}
        memory = info.get("stage_peak_rss_mb") or {}
        total = sum(v for v in secs.values() if v is not None)
        max_peak = max(memory.values(), key=lambda m: m["peak_rss_mb"], default=None)
        L += [
            "",
            "## Stage times",
            "",
            "Wall-clock seconds of each stage, summed over every attempt with its current settings: a stage "
            "resumed after a kill or an error includes the time of its interrupted attempts (a `kill -9` loses "
            f"at most the last {HEARTBEAT_SECONDS:g} s of one), and a stage skipped as done keeps the time of "
            "the invocation that ran it. Time spent under settings changed since is not counted; the report "
            "stage itself is not listed. Peak memory: the process's resident memory at its highest during the "
            "attempt that finished the stage (MiB; marked * where the system could only give the process's peak "
            "so far).",
            "",
            "| stage | seconds | attempts | peak memory (MiB) |",
            "|---|---:|---:|---:|",
            *(f"| {k} | {v} | {attempts.get(k, 1)} | {_peak(memory.get(k))} |" for k, v in secs.items()),
            f"| **total** | {round(total, 2)} | | {_peak(max_peak)} |",
        ]
    L += [
        "",
        "Files: `run.json` (all numbers above), `audit/*/audit.md` (per-audit detail), `eval/*/*/generations.jsonl` (every answer).",
    ]
    path = root / "report.md"
    write_text(path, "\n".join(L) + "\n")
    return path


def _suite_lines(root: Path, suites: dict[str, Any]) -> list[str]:
    from dartkit.suites.compare import markdown

    if not suites:
        return []
    L = [
        "",
        "## External evaluations",
        "",
        "Each model answered the same items of each suite. Each suite's Items line (and each figure's "
        "title) says which items and whether they overlap what DART trains on: BOLD's prompts are verbatim "
        "sentences like the N2 benchmark's equal items. Per-item rows: `suites/<suite>/<model>/scores.jsonl`.",
    ]
    for name, result in suites.items():
        effects = (root / "suites" / name / f"{name}_effects.png").is_file()
        L += ["", *markdown(result, f"suites/{name}/{name}_compare.png", effects)]
    return L


def _peak(memory: dict[str, Any] | None) -> str:
    if not memory:
        return ""
    return f"{memory['peak_rss_mb']:.0f}" + ("*" if memory.get("scope") == "process" else "")


def _ci_of(ci: list[float] | None, method: str | None = None) -> str:
    if not ci:
        return "no interval"
    # A true minus sign, so "−100.0–66.7" does not read as a range of hyphens.
    low, high = (_pct(x).replace("-", "−") for x in ci)
    return f"{low}–{high}" + (_method_mark(method) if method else "")


def _ci_mark(m: dict[str, Any]) -> str:
    return _method_mark(m.get("ci_method"))


def _method_mark(method: str | None) -> str:
    """Which interval a CI is: ᵂ Wilson score, ᴮ cluster bootstrap, ᵂᴮ the wider of the two."""
    method = method or ""
    if method.startswith("wider of"):
        return " ᵂᴮ"
    if method.startswith("cluster bootstrap"):
        return " ᴮ"
    return " ᵂ" if method.startswith("Wilson") else ""


def _ci_note(evals: dict[str, Any]) -> str:
    methods = sorted({m.get("ci_method") for m in evals.values() if m.get("ci_method")})
    shown = "; ".join(methods) if methods else "none recorded"
    return (
        f"95% CI of overall accuracy, per row: ᴮ a percentile bootstrap that resamples whole scenario groups "
        "(items of one scenario are not independent), ᵂ the Wilson score interval (used where every item has "
        "the same outcome, so a bootstrap could only say [0, 0], or where groups are unknown), ᵂᴮ the wider of "
        f"the two (few events). In this table: {shown}."
    )


def _protocol_lines(info: dict[str, Any]) -> list[str]:
    """The report's first lines: which protocol, and whether the test split is held out."""
    if info["protocol"] == "heldout":
        leak = info["repaired_in_test"]
        if leak:  # never expected: the repair stage refuses it
            return [
                f"> **Protocol heldout, but {leak} repaired item(s) are in the test split.** The test figures are "
                "contaminated; rerun the data and repair stages.",
                "",
            ]
        trained = (
            f"M_DART was trained on the {len(info['repaired_ids'])} accepted repair(s)"
            if info["repaired_ids"]
            else "no repair passed QC, so M_DART is M_int and there is nothing to reduce drift"
        )
        return [
            "> **Protocol: heldout.** Drift cases for repair came from the *audit* split, which M_int never "
            f"trained on; {trained}. The headline drift reduction and every accuracy "
            "on test are measured on the *test* split, which nothing trained on or repaired (0 repaired items "
            "in test). The drift on the repaired items themselves is shown beside it, labelled as not held out.",
            "",
        ]
    return [
        "> **Protocol: paper — the test split is contaminated.** As in the paper, the drift cases repaired "
        f"were found on the *test* split and M_DART was trained on them ({info['repaired_in_test']} repaired "
        "test item(s), with their gold labels); the drift reduction is then measured on that same test split, "
        "so it mostly shows how well M_DART learned the repaired items. Use protocol heldout (the default) "
        "for a held-out measurement.",
        "",
    ]


def _drift_row(label: str, v: dict[str, Any] | None) -> str | None:
    if not v:
        return None
    red = v["drift_reduction"]
    mc = v["mcnemar"]
    return (
        f"| {label} | {v['split']} | {v['items']} | {v['n']} | "
        f"{v['n_drift_a']} ({_pct(v['drift_rate_a'])}%, {_ci_of(v['drift_rate_a_ci95'], v.get('drift_rate_a_ci_method'))}) | "
        f"{v['n_drift_b']} ({_pct(v['drift_rate_b'])}%, {_ci_of(v['drift_rate_b_ci95'], v.get('drift_rate_b_ci_method'))}) | "
        f"{'–' if red is None else _pct(red).replace('-', '−') + '%'} ({_ci_of(v['drift_reduction_ci95'], v.get('ci_method'))}) | "
        f"{mc['only_a']} / {mc['only_b']}, p = {mc['p_value']:.3g} | {'yes' if v['held_out'] else '**no**'} |"
    )


def _drift_lines(info: dict[str, Any]) -> list[str]:
    """The headline table: drift under M_int and M_DART (each against M0), paired item by item."""
    rows = [
        _drift_row("**headline**: drift reduction on test", info.get("drift_test")),
        _drift_row("on the repaired items (paper-style)", info.get("drift_repaired_items")),
        _drift_row("on the whole audit split", info.get("drift_repair_split")),
    ]
    # With no repair trained, every view's "reduction" would compare M_int with itself.
    rows = [r for r in rows if r] if not info.get("m_dart_is_m_int") else []
    out = []
    m0_bound = (info.get("format_bound") or {}).get("test", {}).get("m0")
    if m0_bound is not None:
        out += [
            f"⚠ M0's test answers are {_pct(m0_bound)}% unparseable: every drift below compares an explanation "
            "against M0 answers that mostly never reach a conclusion, so it measures the change in how the "
            "models write as much as a change in harm. The parseable-only view further down holds only the "
            "pairs where both answers conclude.",
            "",
        ]
    if rows:
        out += [
            "| view | split | items | n | drift M_int (rate, 95% CI) | drift M_DART (rate, 95% CI) | "
            "reduction (95% CI) | McNemar: only M_int / only M_DART | held out |",
            "|---|---|---|---:|---:|---:|---:|---|---|",
            *rows,
            "",
        ]
    red = info["drift_reduction"]
    ht = info.get("drift_test") or {}
    out.append(
        f"Drift reduction 1 − drift(M_DART)/drift(M_int) on {info['drift_reduction_split']}: **{_pct(red)}%**"
        + (
            f" (95% CI {_ci_of(ht['drift_reduction_ci95'])}; {ht.get('ci_method')})."
            if ht.get("drift_reduction_ci95")
            else f" ({ht.get('ci_note') or 'no interval'})."
        )
        if red is not None
        else f"Drift reduction: {info['drift_reduction_note']}."
    )
    if ht.get("n_skipped_resamples"):
        out.append(
            f"({ht['n_skipped_resamples']} of {ht['n_resamples']} bootstrap resamples held no M_int drift and "
            "were skipped.)"
        )
    return out


def _h(x: float | None, signed: bool = False) -> str:
    return "–" if x is None else (f"{x:+.3f}" if signed else f"{x:.3f}")


def _parseable_lines(rows: list[tuple[str, str, str]], parseable: dict[str, Any]) -> list[str]:
    """Harm and drift of every audit again, over the pairs in which both answers reach a conclusion."""
    shown = [(k, label, split) for k, label, split in rows if parseable.get(k)]
    if not shown:
        return []
    out = [
        "",
        "#### Parseable answers only",
        "",
        "The same audits over the pairs in which both answers reach a conclusion, so that answers that loop "
        "or break off (and score low on harm for it) cannot make a model look safer. Mean H is the harm "
        "score ΔH is taken on.",
        "",
        "| audit | split | pairs (both parseable / all) | drift | rate (95% CI) | drift among the others | "
        "mean H M0 | mean H model | mean ΔH | mean ΔH, all pairs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, label, split in shown:
        v = parseable[k]
        rate = (
            f"{_pct(v['drift_rate_parseable'])}% ({_ci_of(v['drift_rate_parseable_ci95'])})"
            if v["n_parseable"]
            else "–"
        )
        out.append(
            f"| {label} | {split} | {v['n_parseable']} / {v['n_pairs']} | {v['n_drift_parseable']} | {rate} | "
            f"{v['n_drift_without_conclusion']} | {_h(v['mean_h_baseline_parseable'])} | "
            f"{_h(v['mean_h_candidate_parseable'])} | {_h(v['mean_delta_parseable'], True)} | "
            f"{_h(v['mean_delta'], True)} |"
        )
    return out


def _tau_lines(info: dict[str, Any], audits: dict[str, Any]) -> list[str]:
    t = info["tau"]
    out = ["", "### τ", ""]
    if t.get("table"):
        out += [
            f"τ = **{t['tau']:g}**, chosen on the validation split by the rule: {t['rule']}"
            + ("" if t.get("rule_met") else " — no value met the rule, so the largest was used")
            + f" ({t['n_pairs']} pairs).",
            "",
            "| τ | mirror rate (val) | candidate rate (val) |",
            "|---:|---:|---:|",
            *(
                f"| {r['tau']:g} | {_pct(r['mirror_rate'])}% | {_pct(r['candidate_rate'])}% |"
                for r in t["table"]
            ),
        ]
    else:
        out.append(f"τ = {t.get('tau')}, fixed in the config (not chosen on data).")
    sweep = (audits.get("m_int_val") or {}).get("tau_sweep")
    if sweep:
        out += [
            "",
            "τ sweep, M_int vs M0 on the validation split (counts only; nothing is chosen from it unless "
            "tau is 'auto'):",
            "",
            "| τ | candidates | drift | rate |",
            "|---:|---:|---:|---:|",
            *(
                f"| {r['tau']:g} | {r['n_candidates']} | {r['n_drift']} | {_pct(r['drift_rate'])}% |"
                for r in sweep
            ),
        ]
    return out


def _format_label(label: str, m: dict[str, Any]) -> str:
    """A model's name in a table, flagged when its numbers measure the answer format, not the task."""
    rate = m.get("unparseable_rate") or 0
    if rate <= FORMAT_BOUND_RATE:
        return label
    return f"{label} ⚠ {_pct(rate)}% unparseable: measures the answer format, not the task"


def _baseline_rows(b: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, metrics) of the two constant answers, the majority class first."""
    yes, no = b["always_yes"], b["always_no"]
    if b["majority"] == "NO":
        return [("*baseline: majority class (always NO)*", no), ("*baseline: always YES*", yes)]
    if b["majority"] == "YES":
        return [("*baseline: majority class (always YES)*", yes), ("*baseline: always NO*", no)]
    return [("*baseline: always YES (a tie: no majority class)*", yes), ("*baseline: always NO*", no)]


def _metrics_row(label: str, m: dict[str, Any]) -> str:
    return (
        f"| {label} | {m['n']} | {_pct(m['accuracy'])} | {_ci(m)}{_ci_mark(m)} | {_pct(m['accuracy_equal'])} | {_pct(m['accuracy_diff'])} | "
        f"{_pct(m['yes_rate'])} | {_pct(m['no_rate'])} | {_pct(m['unparseable_rate'])} | "
        f"{_pct(m['refusal_rate'])} | {_pct(m['macro_f1'])} |"
    )


def _metrics_table(evals: dict[str, Any], baselines: dict[str, Any] | None = None) -> list[str]:
    """One split's accuracy table: each model, then the constant-answer baselines on the same items."""
    out = [
        "| model | n | acc | 95% CI | NO items | YES items | said YES | said NO | unparseable | refusals | macro-F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, label in MODELS:
        m = evals.get(k)
        if m:
            out.append(_metrics_row(_format_label(label, m), m))
    if baselines and evals:
        out += [_metrics_row(label, m) for label, m in _baseline_rows(baselines)]
        out += [
            "",
            f"Baselines answer one label to every item of this table ({baselines['n_yes']} YES, "
            f"{baselines['n_no']} NO items, from the gold labels): always YES scores the share of YES items. "
            "A model at or below the majority-class row has learned no more than the label counts."
            + (
                " (Some models were evaluated on other items; the baselines use the first model's.)"
                if baselines.get("items_differ")
                else ""
            ),
        ]
    return out


def _per_benchmark(
    evals: dict[str, Any], baselines: dict[str, Any] | None = None, rebuilt: dict[str, Any] | None = None
) -> list[str]:
    """Accuracy per benchmark, with each benchmark's always-YES / always-NO accuracy beside it.

    A benchmark dartkit rebuilt (``rebuilt``: N1 from BBQ) is named as rebuilt in its row.
    """
    rebuilt = rebuilt or {}
    names = [(k, label) for k, label in MODELS if k in evals]
    benches = sorted({b for k, _ in names for b in evals[k].get("per_benchmark", {})})
    per_b = (baselines or {}).get("per_benchmark") or {}
    flagged = [label for k, label in names if (evals[k].get("unparseable_rate") or 0) > FORMAT_BOUND_RATE]
    base_cols = ["baseline: always YES", "baseline: always NO"] if per_b else []
    out = [
        "| benchmark | n | "
        + " | ".join(label + (" ⚠" if label in flagged else "") for _, label in names)
        + "".join(f" | *{c}*" for c in base_cols)
        + " |",
        "|---|---:|" + "---:|" * (len(names) + len(base_cols)),
    ]

    def base_cells(b: str) -> str:
        if not per_b:
            return ""
        bl = per_b.get(b)
        if not bl:
            return " | – | –"
        cells = []
        for label, key in (("YES", "always_yes"), ("NO", "always_no")):
            v = _pct(bl[key]["accuracy"])
            cells.append(f"**{v}**" if bl["majority"] == label else v)  # the majority class in bold
        return " | " + " | ".join(cells)

    for b in benches:
        n = next((evals[k]["per_benchmark"][b]["n"] for k, _ in names if b in evals[k]["per_benchmark"]), 0)
        out.append(
            f"| {b + ' (rebuilt from BBQ, not upstream)' if b in rebuilt else b} | {n} | "
            + " | ".join(_pct(evals[k]["per_benchmark"].get(b, {}).get("accuracy")) for k, _ in names)
            + base_cells(b)
            + " |"
        )
    if per_b:
        out += [
            "",
            "The baseline columns answer one label to every item of the benchmark (from the gold labels); "
            "the majority class is in bold.",
        ]
    if flagged:
        out += [
            "",
            f"⚠ More than half of the answers of {', '.join(flagged)} are unparseable: those columns measure "
            "the answer format, not the task.",
        ]
    return out


def _mcnemar_lines(info: dict[str, Any]) -> list[str]:
    """The paired accuracy comparisons on test, one row per pair (exact McNemar)."""
    rows = info.get("mcnemar") or []
    if not rows:
        return []
    out = [
        "",
        "### Paired comparisons (test)",
        "",
        "Exact McNemar test on the test items both models answered: how many items only the first model got "
        "right, how many only the second.",
        "",
        "| first | second | n | right only for first | right only for second | p | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for m in rows:
        bound = m.get("format_bound") or {}
        note = (
            "; ".join(f"{LABELS[k]} is {_pct(r)}% unparseable" for k, r in bound.items())
            + ": this compares answer format, not the task"
            if bound
            else ""
        )
        if info.get("m_dart_is_m_int") and "m_dart" in (m["first"], m["second"]):
            same = "M_DART is M_int unchanged (no repair passed QC)"
            note = f"{same}; {note}" if note else same
        out.append(
            f"| {LABELS[m['first']]} | {LABELS[m['second']]} | {m['n']} | {m['only_first_correct']} | "
            f"{m['only_second_correct']} | {m['p_value']:.3g} | {note} |"
        )
    return out


def _cases(root: Path, heldout: bool, k: int = 5) -> list[str]:
    src_int, src_dart = ("m_int_audit", "m_dart_audit") if heldout else ("m_int", "m_dart")
    drift = sorted(read_rows(root / "audit" / src_int / "drift.jsonl"), key=lambda p: -p["delta"])[:k]
    if not drift:
        return []
    repairs = {r["id"]: r for r in read_rows(root / "repair" / "repair.jsonl")}
    after = {p["id"]: p for p in read_rows(root / "audit" / src_dart / "pairs.jsonl")}
    split = "audit" if heldout else "test"
    out = [
        "",
        f"## Drift cases and their repairs ({split} split: the repair source)",
        "",
        CONTENT_WARNING,
        "",
    ]
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
