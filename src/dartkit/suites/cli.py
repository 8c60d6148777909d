"""``dartkit suite list | run | compare``: the external evaluation suites.

dartkit suite list
dartkit suite run hatecheck --model embedded --source ../shared/data/hatecheck --limit 200 --out runs/hc/m0
dartkit suite compare runs/hc/m0 runs/hc/m_dart --out runs/hc/compare
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dartkit.cli_support import Group, user_errors
from dartkit.config import cli_flags, load_config

suite_app = typer.Typer(cls=Group, no_args_is_help=True, rich_markup_mode=None)


@suite_app.command("list")
@user_errors
def list_command() -> None:
    """Show the suites with their size, source, licence and answer length."""
    from dartkit.progress import results_console
    from dartkit.suites.registry import SUITES

    table = Table(title="evaluation suites")
    for col in ("name", "what it measures", "size", "source", "licence", "tokens"):
        table.add_column(col, overflow="fold")
    for s in SUITES.values():
        size = s.size
        if s.name == "transfer":
            from dartkit.suites.transfer import load

            items = load(None)
            size = f"{len(items)} queries, {len({i.group for i in items})} domains (packaged)"
        table.add_row(s.name, s.title, size, s.source, s.licence, str(s.max_new_tokens))
    results_console().print(table)


@suite_app.command("run")
@user_errors
def run_command(
    name: str = typer.Argument(..., help="Suite name (dartkit suite list)."),
    model: str = typer.Option(None, "--model", help="Model spec (default: embedded)."),
    out: Path = typer.Option(None, "--out", help="Output directory."),
    source: str = typer.Option(
        None,
        "--source",
        help="Your copy of the suite's upstream files (a directory or the file); for transfer, your own "
        "query JSONL {id, domain, query, stance, note}; 'sample': dartkit's small packaged sample "
        "(hatecheck, xstest, bold). Default: the packaged set (transfer only).",
    ),
    download: bool = typer.Option(
        False,
        "--download",
        help="Without --source: fetch the upstream files into the dartkit cache (sha256-pinned).",
    ),
    limit: int = typer.Option(
        None, "--limit", min=1, help="A seeded subset of N items, stratified by group."
    ),
    seed: int = typer.Option(None, "--seed", help="Seed of the --limit subset (default 0)."),
    scorer: str = typer.Option(None, "--scorer", help="Harm scorer spec (default: profanity)."),
    judge: str = typer.Option(None, "--judge", help="Judge model spec (transfer, xstest)."),
    max_new_tokens: int = typer.Option(
        None, "--max-new-tokens", min=1, help="Answer length (default: the suite's, see dartkit suite list)."
    ),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="hf backend batch size (default 16)."),
    device: str = typer.Option(None, "--device", help="hf backend device: auto, cpu, cuda, mps."),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML file with SuiteRunConfig fields; flags override it."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite results in --out made with other settings."),
) -> None:
    """Answer one suite with one model; writes generations, scores, metrics and a figure."""
    from dartkit.suites.run import SuiteRunConfig, run

    overrides = {
        "suite": name,
        "model": model or ("embedded" if not config else None),
        "out": out,
        "source": source,
        "download": download or None,
        "limit": limit,
        "seed": seed,
        "scorer": scorer,
        "judge": judge,
        "max_new_tokens": max_new_tokens,
        "backend.batch_size": batch_size,
        "backend.device": device,
    }
    cfg = load_config(SuiteRunConfig, config, overrides, cli_flags(overrides))
    metrics = run(cfg, force=force)
    typer.echo(
        f"{metrics['items']} items; results in {cfg.out} (metrics.json, scores.jsonl, {metrics['suite']}.png)"
    )


@suite_app.command("compare")
@user_errors
def compare_command(
    dirs: list[Path] = typer.Argument(
        ..., help="Two or more finished `dartkit suite run` directories of one suite."
    ),
    out: Path = typer.Option(None, "--out", help="Write compare.json and a figure here."),
) -> None:
    """Put models side by side on one suite, with paired and per-group tests."""
    from dartkit.progress import results_console
    from dartkit.suites.compare import compare_runs

    compare_runs(dirs, out, results_console())
    if out:
        typer.echo(f"written: {out / 'compare.json'}")
