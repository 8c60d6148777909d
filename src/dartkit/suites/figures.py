"""One figure per suite: the suite's headline measure per group, models side by side, with 95% intervals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dartkit.data.jsonl import save_figure
from dartkit.suites.base import Suite
from dartkit.suites.measures import by_group, mean, rate


def suite_figure(
    suite: Suite, runs: dict[str, Sequence[dict[str, Any]]], path: Path, items: str
) -> Path | None:
    """Horizontal bars of ``suite.plot_value`` per group (mean, bootstrap interval), one colour per model.

    ``items`` (:func:`dartkit.suites.base.items_label`) says which items, in the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, value = suite.plot
    per_model = {}
    values = [value(r) for rows in runs.values() for r in rows]
    binary = all(v in (0.0, 1.0) for v in values if v is not None)
    for model, rows in runs.items():
        scored = [{**r, "_v": value(r)} for r in rows]
        if binary:  # a rate: Wilson interval, as the tables give it, and its k/n beside the bar
            per_model[model] = {}
            for g, v in by_group(scored).items():
                r = rate([x for x in v if x["_v"] is not None], lambda x: x["_v"] == 1.0)
                per_model[model][g] = {"mean": r["rate"], "ci": r["ci"], "n": r["n"], "k": r["k"]}
        else:
            per_model[model] = {g: mean(v, "_v") for g, v in by_group(scored).items()}
    groups = sorted({g for m in per_model.values() for g in m})
    if not groups:
        return None
    height = 0.8 / max(len(per_model), 1)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.35 * len(groups) * max(1, len(per_model) / 2)))
    for k, (model, stats) in enumerate(per_model.items()):
        ys, xs, lo, hi, counts = [], [], [], [], []
        for i, g in enumerate(groups):
            s = stats.get(g)
            if not s or s["mean"] is None:
                continue
            ys.append(i + k * height)
            xs.append(s["mean"])
            ci = s["ci"] or [s["mean"], s["mean"]]
            lo.append(s["mean"] - ci[0])
            hi.append(ci[1] - s["mean"])
            counts.append(f"{s['k']}/{s['n']}" if binary else "")
        ax.barh(ys, xs, height=height, xerr=[lo, hi], label=f"{model} (n={len(runs[model])})", capsize=2)
        for y, text in zip(ys, counts, strict=True):
            if text:  # a zero rate has no visible bar: the count says it is there
                ax.text(1.01, y, text, va="center", fontsize=6, transform=ax.get_yaxis_transform())
    ax.set_yticks([i + height * (len(per_model) - 1) / 2 for i in range(len(groups))], groups, fontsize=8)
    ax.invert_yaxis()
    if binary:
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{label}\n(rate with 95% Wilson interval; k/n at the right)", fontsize=8)
    else:
        ax.set_xlabel(f"{label} (mean with 95% bootstrap interval)")
    ax.set_title(f"{suite.title}\n{items}", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def effect_figure(result: dict[str, Any], path: Path, items: str) -> Path | None:
    """Rank-biserial effect per group, with its bootstrap interval, of each model against the first.

    One panel per group-wise measure (toxicity, sentiment, ...); points left of zero mean the later
    model scores lower than the first (M0). None when the suite has no group-wise tests.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dartkit.suites.compare import _blocks

    first = next(iter(result["metrics"]), None)
    panels = [
        (name, [p for p in block["pairs"] if p["a"] == first and "groups" in p])
        for name, block in _blocks(result["tests"])
    ]
    panels = [(n, ps) for n, ps in panels if ps]
    if not panels:
        return None
    groups = sorted({g for _, ps in panels for p in ps for g in p["groups"]})
    fig, axes = plt.subplots(
        1, len(panels), figsize=(3.6 * len(panels) + 1.5, 1.0 + 0.3 * len(groups)), squeeze=False, sharey=True
    )
    for ax, (name, pairs) in zip(axes[0], panels, strict=True):
        for k, pair in enumerate(pairs):
            ys, xs, lo, hi = [], [], [], []
            for i, g in enumerate(groups):
                s = pair["groups"].get(g)
                if not s or s["rank_biserial"] is None:
                    continue
                # Effect of the later model against the first: the sign flipped so > 0 means "higher".
                r = -s["rank_biserial"]
                ci = [-s["ci"][1], -s["ci"][0]] if s.get("ci") else [r, r]
                ys.append(i + 0.15 * k)
                xs.append(r)
                lo.append(r - ci[0])
                hi.append(ci[1] - r)
            ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", capsize=2, label=f"{pair['b']} vs {first}")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlim(-1, 1)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("rank-biserial r (95% CI)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(range(len(groups)), groups, fontsize=7)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{result['suite']}: effect per group against {first}\n{items}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
