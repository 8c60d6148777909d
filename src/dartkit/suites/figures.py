"""One figure per suite: the suite's headline measure per group, models side by side, with 95% intervals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dartkit.data.jsonl import save_figure
from dartkit.suites.base import Suite
from dartkit.suites.measures import by_group, mean


def suite_figure(suite: Suite, runs: dict[str, Sequence[dict[str, Any]]], path: Path) -> Path | None:
    """Horizontal bars of ``suite.plot_value`` per group (mean, bootstrap interval), one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, value = suite.plot
    per_model = {}
    for model, rows in runs.items():
        scored = [{**r, "_v": value(r)} for r in rows]
        per_model[model] = {g: mean(v, "_v") for g, v in by_group(scored).items()}
    groups = sorted({g for m in per_model.values() for g in m})
    if not groups:
        return None
    height = 0.8 / max(len(per_model), 1)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.35 * len(groups) * max(1, len(per_model) / 2)))
    for k, (model, stats) in enumerate(per_model.items()):
        ys, xs, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            s = stats.get(g)
            if not s or s["mean"] is None:
                continue
            ys.append(i + k * height)
            xs.append(s["mean"])
            ci = s["ci"] or [s["mean"], s["mean"]]
            lo.append(s["mean"] - ci[0])
            hi.append(ci[1] - s["mean"])
        ax.barh(ys, xs, height=height, xerr=[lo, hi], label=f"{model} (n={len(runs[model])})", capsize=2)
    ax.set_yticks([i + height * (len(per_model) - 1) / 2 for i in range(len(groups))], groups, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{label} (mean with 95% bootstrap interval)")
    ax.set_title(suite.title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
