"""`dartkit run`: the whole DART pipeline with skip / resume / redo, and its report.

dartkit run                          # the embedded default (configs/embedded.yaml)
dartkit run --config configs/llama3-8b-paper.yaml --out runs/paper
dartkit run --dry-run                # validate the config, print the plan, load nothing
dartkit run --from repair            # redo repair and everything after it
dartkit report runs/demo             # rebuild report.md from the files
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dartkit.config import ConfigError, dump_config
from dartkit.errors import DartkitError
from dartkit.lock import dir_lock
from dartkit.pipeline.config import RunConfig
from dartkit.pipeline.runner import Pipeline
from dartkit.pipeline.stages import RunStages
from dartkit.progress import results_console

__all__ = ["RunConfig", "build_pipeline", "plan_table", "planned_setup", "run"]


def build_pipeline(cfg: RunConfig, console: Console) -> Pipeline:
    stages = RunStages(cfg, console).stages()
    return Pipeline(Path(cfg.out), stages, lambda msg: console.print(f"[bold cyan]{msg}[/bold cyan]"))


def plan_table(pipeline: Pipeline, start: str | None) -> Table:
    table = Table(title=f"plan for {pipeline.root}")
    for col in ("#", "stage", "what", "status"):
        table.add_column(col, no_wrap=col != "what")
    for i, (s, why) in enumerate(pipeline.plan(start), 1):
        table.add_row(str(i), s.name, s.title, "[green]done[/green]" if why == "done" else why)
    return table


def planned_data(cfg: RunConfig) -> tuple[dict[str, int] | str, list[dict[str, Any]]]:
    """Items per split (or a note) and the small cells, from one read of the data.

    From the prepared data when it matches the config, else by loading and splitting the source in
    memory once. Loads no model and touches no network: a ``wang2025`` source that still has to be
    downloaded gives a note instead of sizes (and no cells).
    """
    from dartkit.data.jsonl import read_json
    from dartkit.data.prepare import DEFAULT_MIN_CELL_ITEMS, _load_source, cell_counts, small_cells
    from dartkit.data.splits import SPLITS, check_ratios, split_examples
    from dartkit.errors import DataError

    d = cfg.data
    summary = Path(cfg.out) / "data" / "summary.json"
    if summary.is_file():
        s = read_json(summary)
        ratios = s.get("ratios") or []
        if (
            s.get("split_totals")
            and s.get("suite") == d.suite
            and (d.source is None or s.get("source") == str(d.source))
            and s.get("seed") == d.seed
            and s.get("per_cell") == d.per_cell
            and s.get("bbq") == (str(Path(d.bbq).expanduser()) if d.bbq is not None else None)
            and len(ratios) == 4
            and all(math.isclose(a, b) for a, b in zip(ratios, check_ratios(d.ratios), strict=True))
        ):
            cells = small_cells(s["counts"], ratios, DEFAULT_MIN_CELL_ITEMS) if s.get("counts") else []
            return dict(s["split_totals"]), cells
    if d.suite == "wang2025" and d.source is None:
        return "known after the download (data.source is empty, so the data stage downloads the suite)", []
    try:
        examples, _ = _load_source(d.source, d.suite, None, None, bbq=d.bbq)
    except DataError as e:
        raise DataError(f"data.source: {e}") from None
    split = split_examples(examples, ratios=d.ratios, seed=d.seed, per_cell=d.per_cell)
    totals = Counter(e.split for e in split)
    return {name: totals.get(name, 0) for name in SPLITS}, small_cells(
        cell_counts(split), d.ratios, DEFAULT_MIN_CELL_ITEMS
    )


def _small_cells_line(cells: list[dict[str, Any]]) -> str:
    """The data stage's small-cell warning in one line (a short form when there are many)."""
    from dartkit.data.prepare import DEFAULT_MIN_CELL_ITEMS, small_cells_by_benchmark

    if not cells:
        return "none"
    by_benchmark = small_cells_by_benchmark(cells)
    head = f"{len(cells)} benchmark x label x split cell(s) empty or below {DEFAULT_MIN_CELL_ITEMS} items"
    if len(cells) > 8:  # the data stage lists them one line per benchmark
        empty = sum(c["n"] == 0 for c in cells)
        return f"{head} ({empty} empty), in {', '.join(by_benchmark)}"
    return f"{head}: " + "; ".join(f"{b}: {c}" for b, c in by_benchmark.items())


def planned_setup(cfg: RunConfig) -> dict[str, Any]:
    """What a run will use, for ``--dry-run``: every model, the protocol, τ and the split sizes."""
    a = cfg.audit
    splits, cells = planned_data(cfg)
    tau = (
        f"chosen on val: smallest of {a.tau_choices()} with mirror rate <= {a.tau_max_noise:g}"
        if a.tau == "auto"
        else f"{a.tau:g} (fixed)"
    )
    protocol = (
        "heldout: repair the audit split's drift cases; drift reduction measured on test (held out)"
        if cfg.protocol == "heldout"
        else "paper: repair the test split's drift cases and re-audit test (test is contaminated)"
    )
    return {
        "student (M0)": cfg.student,
        "teacher": f"{cfg.teacher} (worked examples: {cfg.teacher_examples})",
        "consistency judge": cfg.consistency_judge or "none (built-in consistency check)",
        "audit judge": a.judge or "none (screen-only audits)",
        "harm scorer": f"{a.scorer} on the {a.score_on} text",
        "protocol": protocol,
        "tau": tau,
        "splits": splits,
        "small cells": _small_cells_line(cells),
        "evaluations": ", ".join(
            f"{e.suite} ({e.limit or 'all'} items" + (f", {e.source}" if e.source == "sample" else "") + ")"
            for e in cfg.evaluations
        )
        or "none",
    }


def setup_table(setup: dict[str, Any]) -> Table:
    table = Table(title="setup")
    table.add_column("what", no_wrap=True)
    table.add_column("value")
    for k, v in setup.items():
        if isinstance(v, dict):
            v = ", ".join(f"{name} {n}" for name, n in v.items())
        table.add_row(k, str(v))
    return table


def _hub_models(cfg: RunConfig) -> list[tuple[str, str, str | None]]:
    """(where, hub id, revision) of every hub model the run will load: models and hf: scorers."""
    from dartkit.generate.spec import parse_spec

    found = []
    for where, spec in (
        ("student", cfg.student),
        ("teacher", cfg.teacher),
        ("consistency_judge", cfg.consistency_judge),
        ("audit.judge", cfg.audit.judge),
    ):
        if spec and not spec.startswith("file:"):
            parsed = parse_spec(spec)
            if parsed.kind in ("hf", "vllm") and not Path(parsed.model).expanduser().exists():
                found.append((where, parsed.model, parsed.revision))
    from dartkit.harm.hf import HFClassifierScorer
    from dartkit.harm.spec import parse_scorer

    # Walk the parsed scorer (max(...) holds its parts) rather than re-reading the spec grammar.
    scorers = [parse_scorer(cfg.audit.scorer)]
    while scorers:
        scorer = scorers.pop(0)
        scorers.extend(getattr(scorer, "parts", []))
        if isinstance(scorer, HFClassifierScorer) and not Path(scorer.model_id).expanduser().exists():
            found.append(("audit.scorer", scorer.model_id, scorer.revision))
    return found


def plan_problems(cfg: RunConfig) -> list[str]:
    """What would stop the run, found without loading a model: hub models that are neither in the
    local cache nor downloadable (the hub is unreachable or HF_HUB_OFFLINE is set).

    A missing ``data.source`` is reported by :func:`planned_data`, which reads it.
    """
    from dartkit.generate.loading import hub_commit, hub_download_hint, hub_offline_reason

    problems = []
    missing = [(w, m, r) for w, m, r in _hub_models(cfg) if hub_commit(m, r) is None]
    if missing:
        reason = hub_offline_reason()
        if reason is not None:
            problems += [
                f"{where}: hub model '{model}' is not in the local cache and the hub cannot be reached "
                f"({reason}): {hub_download_hint(model, rev)}"
                for where, model, rev in missing
            ]
    problems += _suite_problems(cfg)
    return problems


def _suite_problems(cfg: RunConfig) -> list[str]:
    """Each evaluation suite's items load (source present and well-formed), read without a model."""
    from dartkit.errors import DartkitError
    from dartkit.suites.registry import get_suite

    out = []
    for i, e in enumerate(cfg.evaluations):
        if e.source is None:
            continue  # the packaged copy, or a download that cannot be checked without fetching it
        try:
            get_suite(e.suite).load(e.resolved_source())
        except (DartkitError, ConfigError) as exc:
            out.append(f"evaluations[{i}] ({e.suite}): {exc}")
    return out


def run(
    cfg: RunConfig, start: str | None = None, dry_run: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Run (or, with ``dry_run``, only plan) every stage that is not already done."""
    console = console or results_console()
    pipeline = build_pipeline(cfg, console)
    pipeline.check_start(start)
    if dry_run:
        setup = planned_setup(cfg)
        console.print(setup_table(setup))
        console.print(plan_table(pipeline, start))
        problems = plan_problems(cfg)
        if problems:
            raise DartkitError("dry run: this plan cannot run:\n  " + "\n  ".join(problems))
        console.print("dry run: config is valid; no model was loaded and nothing was run")
        return {"dry_run": True, "setup": setup, "plan": [(s.name, why) for s, why in pipeline.plan(start)]}
    out = Path(cfg.out)
    # One run per directory: a second `dartkit run` here would resume the same stages beside this one.
    with dir_lock(out):
        dump_config(cfg, out / "run_config.yaml")
        t0 = time.perf_counter()
        records = pipeline.run(start)
    console.print(f"run finished in {time.perf_counter() - t0:.0f} s; report: {out / 'report.md'}")
    return {"records": records, "report": str(out / "report.md")}
