"""`dartkit run`: the whole DART pipeline with skip / resume / redo, and its report.

dartkit run                          # the embedded default (configs/embedded.yaml)
dartkit run --config configs/llama3-8b-paper.yaml --out runs/paper
dartkit run --dry-run                # validate the config, print the plan, load nothing
dartkit run --from repair            # redo repair and everything after it
dartkit report runs/demo             # rebuild report.md from the files
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dartkit.config import dump_config
from dartkit.pipeline.config import RunConfig
from dartkit.pipeline.runner import Pipeline
from dartkit.pipeline.stages import RunStages
from dartkit.progress import results_console

__all__ = ["RunConfig", "build_pipeline", "plan_table", "run"]


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


def run(
    cfg: RunConfig, start: str | None = None, dry_run: bool = False, console: Console | None = None
) -> dict[str, Any]:
    """Run (or, with ``dry_run``, only plan) every stage that is not already done."""
    console = console or results_console()
    pipeline = build_pipeline(cfg, console)
    pipeline.check_start(start)
    if dry_run:
        console.print(plan_table(pipeline, start))
        console.print("dry run: config is valid; nothing was loaded or run")
        return {"dry_run": True, "plan": [(s.name, why) for s, why in pipeline.plan(start)]}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "run_config.yaml")
    t0 = time.perf_counter()
    records = pipeline.run(start)
    console.print(f"run finished in {time.perf_counter() - t0:.0f} s; report: {out / 'report.md'}")
    return {"records": records, "report": str(out / "report.md")}
