"""``audit.md`` and the ΔH histogram: what a reader of one audit sees."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dartkit.audit.core import SEVERITIES, unsettled_line
from dartkit.data.jsonl import save_figure, write_text

CONTENT_WARNING = (
    "> **Content warning.** The answers below were flagged because a harm scorer rated them higher "
    "than the baseline's. They may contain stereotypes or offensive language about demographic groups."
)


def delta_histogram_png(deltas: Sequence[float], tau: float, path: Path, title: str) -> Path:
    """Save a histogram of ΔH with the τ line; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    d = np.asarray(deltas, dtype=float)
    lo, hi = (min(d.min(), -0.05), max(d.max(), 0.05)) if d.size else (-0.05, 0.05)
    ax.hist(d, bins=np.linspace(lo, hi, 41), color="#4c72b0", edgecolor="white")
    ax.axvline(tau, color="#c44e52", linestyle="--", label=f"τ = {tau:g}")
    ax.set_xlabel("ΔH = H(candidate) − H(baseline)")
    ax.set_ylabel("pairs")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def text_histogram(deltas: Sequence[float], edges: Sequence[float], width: int = 40) -> list[str]:
    """A fixed-bin histogram as text rows (for terminals and plain-markdown readers)."""
    d = np.asarray(deltas, dtype=float)
    bounds = [-np.inf, *edges, np.inf]
    counts = [int(((d > a) & (d <= b)).sum()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    top = max(counts) or 1
    rows = []
    for (a, b), c in zip(zip(bounds[:-1], bounds[1:], strict=True), counts, strict=True):
        name = (
            f"ΔH ≤ {b:+.2f}"
            if a == -np.inf
            else f"ΔH > {a:+.2f}"
            if b == np.inf
            else f"{a:+.2f} < ΔH ≤ {b:+.2f}"
        )
        rows.append(f"{name:<22} {c:>5}  {'█' * round(width * c / top)}")
    return rows


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: Sequence[float] | None) -> str:
    return "-" if not ci else f"{_pct(ci[0])}–{_pct(ci[1])}"


def _noise_lines(s: dict[str, Any]) -> list[str]:
    """How to read the interval and the mirror count (nothing for a summary written before they existed)."""
    out = []
    if s.get("drift_rate_ci_method"):
        out.append(f"Drift-rate interval: {s['drift_rate_ci_method']}.")
    st = s.get("sign_test")
    if st:
        judged = "" if s["screen_only"] else " (screen level: the judge is not asked about either count here)"
        out.append(
            f"Mirror: {st['n_mirror']} pairs scored lower by more than τ against {st['n_drift']} scored higher"
            f"{judged}; exact two-sided sign test p = {st['p_value']:.3g}. If fine-tuning changed wording "
            "without making it more harmful, the two counts are equal in expectation."
        )
    return out


def _harness_lines(s: dict[str, Any]) -> list[str]:
    """How the sides read from lm-eval / Inspect logs were mapped (nothing for dartkit files)."""
    um, pc = s.get("unmatched") or {}, s.get("prompt_check") or {}
    sides = [side for side in ("baseline", "candidate") if f"{side}_log" in um]
    if not sides:
        return []
    lines = ["## Harness logs", ""]
    for side in sides:
        r = um[f"{side}_log"]
        how = ", ".join(f"{n} {k}" for k, n in sorted((pc.get("prompt_match") or {}).get(side, {}).items()))
        skipped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in (r.get("skipped") or {}).items())
        lines.append(
            f"- {side}: {r['format']} log `{r['file']}`: {r['samples']} samples → {r['mapped']} mapped by "
            f"{(pc.get('mapped_by') or {}).get(side, 'prompt')}{f' ({how})' if how else ''}, "
            f"{r['unmapped']} unmapped{f'; skipped {skipped}' if skipped else ''}"
        )
    lines.append("")
    lines.append(
        "Exact: the harness sent dartkit's prompt; contains: its prompt only contains dartkit's question "
        "(a template or another system prompt around it). Unmapped samples are listed in summary.json."
    )
    if pc.get("contains"):
        lines.append(
            f"{pc['contains']} pair(s) answered a harness prompt that contains dartkit's question rather than "
            "equalling dartkit's prompt: their numbers are those of the harness's prompt."
        )
    return [*lines, ""]


def quote(text: str | None) -> str:
    """Text as a markdown block quote ("(empty)" for nothing)."""
    return "\n".join("> " + line for line in ((text or "").strip() or "(empty)").splitlines())


def _case(p: dict[str, Any]) -> list[str]:
    judge = p.get("judge") or {}
    head = (
        f"#### {p['id']} — ΔH {p['delta']:+.3f} ({p['severity'] or 'below τ'})"
        f"{', judge: ' + judge['status'] if judge else ''}"
    )
    lines = [head, ""]
    lines.append(
        f"Gold: {p['gold'] or 'unknown'} · baseline said {p['baseline_conclusion'] or 'nothing parseable'}"
        f" · candidate said {p['candidate_conclusion'] or 'nothing parseable'}"
    )
    if p.get("type"):
        lines.append(f" · type: {p['type']}")
    for v, shown in zip(judge.get("verdicts") or [], judge.get("candidate_shown_as") or [], strict=False):
        if v:
            lines.append(
                f"\nJudge (candidate shown as Model {shown}): more harmful = {v['more_harmful']}; {v.get('reason') or ''}"
            )
    lines += ["", f"Baseline (H = {p['h_baseline']:.3f}):", "", quote(p["baseline_text"]), ""]
    lines += [f"Candidate (H = {p['h_candidate']:.3f}):", "", quote(p["candidate_text"]), ""]
    return lines


def write_audit_md(
    path: Path,
    summary: dict[str, Any],
    pairs: Sequence[dict[str, Any]],
    histogram_png: Path | None,
    worst: int,
) -> Path:
    """The readable audit: counts, severity, ΔH histogram, unmatched ids, worst cases."""
    s = summary
    title = "Null audit (baseline against itself)" if s.get("null") else "Harm-drift audit"
    lines = [f"# {title}", ""]
    lines.append(f"- Baseline: `{s['baseline']}`")
    lines.append(f"- Candidate: `{s['candidate']}`")
    lines.append(f"- Scorer: `{s['scorer']}` on the {s['score_on']} text; τ = {s['tau']:g}")
    if s["screen_only"]:
        lines.append(
            "- Judge: **none — this audit is screen-only.** Every pair with ΔH > τ counts as drift; "
            "word-level scorers over-flag, so read the flagged texts below before trusting the count."
        )
    else:
        lines.append(f"- Judge: `{s['judge']}` (blinded A/B{', both orders' if s.get('judge_swap') else ''})")
    lines += [
        "",
        "## Counts",
        "",
        "| pairs | ΔH > τ (candidates) | drift cases | drift rate | 95% CI | mirror: ΔH < −τ |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines.append(
        f"| {s['n_pairs']} | {s['n_candidates']} | {s['n_drift']} | {_pct(s['drift_rate'])} "
        f"| {_ci(s.get('drift_rate_ci95'))} | {s.get('n_mirror', '-')} |"
    )
    if s.get("n_unsettled"):
        lines += ["", f"**{unsettled_line(s)}.**"]
    lines += ["", *_noise_lines(s)]
    lines += ["", "| " + " | ".join(SEVERITIES) + " |", "|" + "---:|" * len(SEVERITIES)]
    lines.append("| " + " | ".join(str(s["severity_counts"][k]) for k in SEVERITIES) + " |")
    if not s["screen_only"]:
        lines += [
            "",
            "Judge decisions on candidates: "
            + ", ".join(f"{k} {v}" for k, v in s.get("judge_status_counts", {}).items()),
        ]
        if s.get("type_counts"):
            lines.append("Drift types: " + ", ".join(f"{k} {v}" for k, v in s["type_counts"].items()))
    d, t = s["delta"], s["paired_test"]
    if d["mean"] is not None:
        lines += [
            "",
            f"Mean ΔH {d['mean']:+.4f}, median {d['median']:+.4f}, max {d['max']:+.4f}; "
            f"{s['identical_texts']} of {s['n_pairs']} pairs have identical texts.",
        ]
    if t.get("p_value") is not None:
        lines.append(f"Paired {t['test']}: p = {t['p_value']:.3g} over {t['n_nonzero']} pairs with ΔH ≠ 0.")
    if s.get("accuracy"):
        lines.append(
            f"Accuracy against gold: baseline {_pct(s['accuracy']['baseline'])}, candidate {_pct(s['accuracy']['candidate'])}."
        )
    lines += ["", "## ΔH distribution", ""]
    if histogram_png is not None:
        lines += [f"![ΔH histogram]({histogram_png.name})", ""]
    edges = [
        -0.2,
        -0.1,
        -s["tau"],
        s["tau"],
        s["severity"]["moderate"],
        s["severity"]["severe"],
        s["severity"]["extreme"],
    ]
    lines += ["```", *text_histogram([p["delta"] for p in pairs], sorted(set(edges))), "```", ""]
    if s.get("tau_sweep"):
        lines += [
            "## τ sweep",
            "",
            "| τ | candidates | drift | drift rate | mirror: ΔH < −τ |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['tau']:g} | {r['n_candidates']} | {r['n_drift']} | {_pct(r['drift_rate'])} | {r.get('n_mirror', '-')} |"
            for r in s["tau_sweep"]
        ]
        lines.append("")
    pc = s.get("prompt_check") or {}
    if pc.get("mismatched"):
        shown = ", ".join(f"`{i}`" for i in (pc.get("mismatched_ids") or [])[:20])
        lines += [
            "## Answers to different prompts (allowed by --allow-prompt-mismatch)",
            "",
            f"**{pc['mismatched']} pair(s) compare answers given to different prompt texts**, so their ΔH and "
            f"drift flags do not measure the fine-tune alone: {shown}.",
            "",
        ]
    lines += _harness_lines(s)
    um = s.get("unmatched") or {}
    if um.get("baseline_only") or um.get("candidate_only"):
        lines += ["## Unmatched ids (not audited)", ""]
        for side in ("baseline_only", "candidate_only"):
            ids = um.get(side) or []
            if ids:
                shown = ", ".join(f"`{i}`" for i in ids[:20]) + (
                    f" and {len(ids) - 20} more" if len(ids) > 20 else ""
                )
                lines.append(f"- only in the {side.split('_')[0]} file ({len(ids)}): {shown}")
        lines.append("")
    drift = sorted((p for p in pairs if p["drift"]), key=lambda p: -p["delta"])[:worst]
    rejected = [p for p in pairs if p["is_candidate"] and not p["drift"]]
    rejected = sorted(rejected, key=lambda p: -p["delta"])[: min(worst, 5)]
    if drift or rejected:
        lines += ["## Cases", "", CONTENT_WARNING, ""]
    if drift:
        lines += [f"### Worst drift cases ({len(drift)} of {s['n_drift']})", ""]
        for p in drift:
            lines += _case(p)
    if rejected:
        lines += ["### Flagged by the scorer but not confirmed by the judge", ""]
        for p in rejected:
            lines += _case(p)
    write_text(path, "\n".join(lines) + "\n")
    return path
