"""Models side by side on one suite: ``dartkit suite compare DIR_A DIR_B ...``.

Each directory is a finished ``dartkit suite run`` of the same suite. Items are matched by id (a
paired test only counts items both models answered). Writes ``compare.json`` and a figure in
``--out`` and prints the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dartkit.data.jsonl import read_json, read_rows, write_json
from dartkit.errors import DataError
from dartkit.suites.base import items_label
from dartkit.suites.registry import get_suite


def load_run(directory: Path) -> tuple[str, str, list[dict[str, Any]], dict[str, Any]]:
    """``(suite, model, rows, metrics.json)`` of a finished suite run directory."""
    directory = Path(directory)
    metrics_path = directory / "metrics.json"
    scores_path = directory / "scores.jsonl"
    for p in (metrics_path, scores_path):
        if not p.is_file():
            raise DataError(f"{p}: no such file; is {directory} the --out of a finished `dartkit suite run`?")
    m = read_json(metrics_path)
    if not isinstance(m, dict) or "suite" not in m or "model" not in m:
        raise DataError(f"{metrics_path}: not a suite run's metrics.json (no 'suite' / 'model')")
    return m["suite"], m["model"], read_rows(scores_path), m


def _labels(dirs: Sequence[Path], models: Sequence[str]) -> list[str]:
    """Model specs as labels; directory names where two runs share a spec."""
    if len(set(models)) == len(models):
        return list(models)
    return [f"{m} ({Path(d).name})" for d, m in zip(dirs, models, strict=True)]


def compare_runs(
    dirs: Sequence[Path],
    out: Path | None = None,
    console: Console | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compare finished runs of one suite; returns (and writes to ``out``) ``compare.json``'s content.

    ``labels`` name the models (default: their specs, or directory names where specs repeat).
    """
    if len(dirs) < 2:
        raise DataError("suite compare needs at least two run directories")
    loaded = [load_run(d) for d in dirs]
    suites = {s for s, _, _, _ in loaded}
    if len(suites) > 1:
        raise DataError(
            f"these runs are of different suites ({', '.join(sorted(suites))}); compare one suite at a time"
        )
    suite = get_suite(suites.pop())
    labels = list(labels) if labels is not None else _labels(dirs, [m for _, m, _, _ in loaded])
    runs = {label: rows for label, (_, _, rows, _) in zip(labels, loaded, strict=True)}
    result = {
        "suite": suite.name,
        "runs": {label: str(d) for label, d in zip(labels, dirs, strict=True)},
        "n": {label: len(rows) for label, rows in runs.items()},
        # How each run answered: answers cut at the token limit, the limit, the scorer, the subset.
        "runs_info": {
            label: {
                k: m.get(k)
                for k in ("truncated", "max_new_tokens", "scorer", "judge", "suite_size", "subset")
            }
            for label, (_, _, _, m) in zip(labels, loaded, strict=True)
        },
        "metrics": {label: suite.metrics(rows) for label, rows in runs.items()},
        "tests": suite.compare(runs),
    }
    if out is not None:
        from dartkit.suites.figures import effect_figure, suite_figure

        out = Path(out)
        write_json(out / "compare.json", result)
        first = result["runs_info"][labels[0]]
        items = items_label(suite, len(runs[labels[0]]), first.get("suite_size"), first.get("subset"))
        suite_figure(suite, runs, out / f"{suite.name}_compare.png", items)
        effect_figure(result, out / f"{suite.name}_effects.png", items)
    if console is not None:
        for table in tables(result):
            console.print(table)
    return result


def _num(x: Any, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def pair_table(pair: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """One pairwise test as ``(caption, columns, rows)`` of text cells, for the console and the report."""
    a, b = pair["a"], pair["b"]
    if "groups" in pair:
        caption = (
            f"Mann–Whitney U per group; rank-biserial r > 0 means {a} scores higher; "
            f"Holm-adjusted over {pair['holm_family']} groups."
        )
        columns = ["group", f"n ({a} / {b})", f"mean {a}", f"mean {b}", "r [95% CI]", "p", "p (Holm)"]
        rows = []
        for g, t in pair["groups"].items():
            ci = f" [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}]" if t.get("ci") else ""
            r = "—" if t["rank_biserial"] is None else f"{t['rank_biserial']:+.2f}"
            rows.append(
                [
                    g,
                    f"{t['n_a']} / {t['n_b']}",
                    _num(t["mean_a"]),
                    _num(t["mean_b"]),
                    r + ci,
                    _num(t["p"], 4),
                    _num(t.get("p_holm"), 4),
                ]
            )
        return caption, columns, rows
    m = pair.get("mcnemar") or {}
    caption = f"Exact McNemar on the {pair['n']} items both answered ({pair['measure']})."
    row = [str(m.get("only_a", "—")), str(m.get("only_b", "—")), _num(m.get("p_value"), 4)]
    return caption, [f"only {a}", f"only {b}", "p"], [row]


def tables(result: dict[str, Any]) -> list[Table]:
    """Readable tables of every pairwise test in ``result["tests"]``."""
    out = []
    for name, block in _blocks(result["tests"]):
        for pair in block["pairs"]:
            caption, columns, rows = pair_table(pair)
            t = Table(title=f"{result['suite']} — {name}: {pair['a']} vs {pair['b']}", caption=caption)
            for col in columns:
                t.add_column(col, justify="left" if col == "group" else "right")
            for row in rows:
                t.add_row(*row)
            out.append(t)
    return out


def _blocks(tests: dict[str, Any], prefix: str = ""):
    for k, v in tests.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and "pairs" in v:
            yield name, v
        elif isinstance(v, dict):
            yield from _blocks(v, f"{name} / ")


def _cell(v: Any) -> str:
    """One overall metric as text: a rate with its interval and counts, or a mean with its interval."""
    if isinstance(v, str):
        return v
    if not isinstance(v, dict):
        return "—" if v is None else str(v)
    if "rate" in v:
        if v["rate"] is None:
            return f"— (0/{v['n']})"
        ci = f" [{100 * v['ci'][0]:.0f}–{100 * v['ci'][1]:.0f}]" if v.get("ci") else ""
        return f"{100 * v['rate']:.1f}%{ci} ({v['k']}/{v['n']})"
    if "mean" in v:
        if v["mean"] is None:
            return "— (n=0)"
        ci = f" [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" if v.get("ci") else ""
        return f"{v['mean']:.3f}{ci} (n={v['n']})"
    return "—"


def markdown(result: dict[str, Any], figure: str | None = None, effects_exist: bool = False) -> list[str]:
    """``result`` (of :func:`compare_runs`) as report lines: overall numbers per model, then every test."""
    suite = get_suite(result["suite"])
    models = list(result["metrics"])
    overall = {m: result["metrics"][m].get("overall", {}) for m in models}
    keys = [k for k in next(iter(overall.values()), {}) if k != "n"]
    L = [f"### {suite.name}: {suite.title}", ""]
    if suite.note:
        L += [f"Note: {suite.note}", ""]
    info = result.get("runs_info") or {}
    first = info.get(models[0], {}) if models else {}
    scope = items_label(suite, result["n"][models[0]], first.get("suite_size"), first.get("subset"))
    L += [
        f"Items: {scope}; harm scorer: `{first.get('scorer')}`; judge: {first.get('judge') or 'none'}.",
        "",
        "| model | items | cut at the token limit | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
        "|---|---:|---:|" + "---:|" * len(keys),
    ]
    for m in models:
        cut = info.get(m, {})
        cut_cell = f"{cut.get('truncated')} (at {cut.get('max_new_tokens')} tokens)" if cut else "—"
        L.append(
            f"| {m} | {result['n'][m]} | {cut_cell} | "
            + " | ".join(_cell(overall[m].get(k)) for k in keys)
            + " |"
        )
    L += [
        "",
        "Rates: Wilson 95% interval; means: bootstrap 95% interval over items. An answer cut at the token "
        "limit was scored as written.",
    ]
    for name, block in _blocks(result["tests"]):
        for pair in block["pairs"]:
            caption, columns, rows = pair_table(pair)
            L += [
                "",
                f"#### {name}: {pair['a']} vs {pair['b']}",
                "",
                caption,
                "",
                "| " + " | ".join(columns) + " |",
                "|" + "".join("---|" if c == "group" else "---:|" for c in columns),
                *("| " + " | ".join(row) + " |" for row in rows),
            ]
    if figure:
        L += ["", f"![{suite.name}]({figure})"]
        effects = figure.replace("_compare.png", "_effects.png")
        if effects_exist:
            L += ["", f"![{suite.name}: effect per group]({effects})"]
    return L
