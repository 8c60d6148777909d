"""``dartkit data``: prepare benchmark splits.

Example::

    dartkit data prepare --out runs/x/data --source ../shared/data/difference_awareness/raw_pkl
    dartkit data prepare --out runs/demo/data --suite demo
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dartkit.data.prepare import prepare_data
from dartkit.data.splits import DEFAULT_RATIOS, SPLITS
from dartkit.errors import DataError

data_app = typer.Typer(
    help="Prepare the difference-awareness benchmarks: load safely, split by scenario and twin, write JSONL.",
    no_args_is_help=True,
)


class SuiteChoice(str, Enum):
    """Benchmark sources ``data prepare`` understands."""

    wang2025 = "wang2025"
    demo = "demo"
    jsonl = "jsonl"


@data_app.callback()
def _data() -> None:
    """Prepare the difference-awareness benchmarks: load safely, split by scenario and twin, write JSONL."""


def _parse_ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise DataError(
            f"--ratios: expected comma-separated numbers like 0.5,0.1,0.2,0.2 (train,audit,val,test), got {text!r}"
        ) from None


def _print_summary(summary: dict, out: Path) -> None:
    console = Console()
    table = Table(
        title=f"{summary['suite']} split by scenario and twin question (seed {summary['seed']}), YES/NO items"
    )
    table.add_column("benchmark")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_column("scenarios", justify="right")
    table.add_column("twin merges", justify="right")
    for benchmark, by_label in summary["counts"].items():
        cells = [f"{by_label['YES'][s]}/{by_label['NO'][s]}" for s in SPLITS]
        table.add_row(
            benchmark,
            *cells,
            str(summary["scenario_keys"][benchmark]),
            str(summary["twin_groups_merged"][benchmark]),
        )
    table.add_row("total", *(str(summary["split_totals"][s]) for s in SPLITS), "", "", end_section=True)
    console.print(table)
    absent = summary.get("absent") or []
    console.print(f"absent: {', '.join(absent) if absent else 'none'}")
    console.print(f"twin questions in more than one split: {summary['cross_split_twins']}")
    console.print(f"wrote {', '.join(f'{s}.jsonl' for s in SPLITS)} and summary.json to {out}")


@data_app.command("prepare")
def prepare(
    out: Path = typer.Option(
        ...,
        "--out",
        help="Directory to write train.jsonl, audit.jsonl, val.jsonl, test.jsonl and summary.json.",
    ),
    source: Path | None = typer.Option(
        None,
        "--source",
        help="Directory holding the upstream <B>_1k.pkl files, or a .jsonl file / directory of your own "
        "Example JSONL. Without it, --suite wang2025 downloads the files into --cache-dir.",
    ),
    suite: SuiteChoice = typer.Option(
        SuiteChoice.wang2025,
        "--suite",
        help="wang2025: the Wang et al. 2025 suite; demo: the small packaged demo suite; "
        "jsonl: your own Example JSONL given by --source.",
    ),
    per_cell: int | None = typer.Option(
        None,
        "--per-cell",
        help="Keep only N items per benchmark x label (whole scenario/twin groups) before splitting.",
    ),
    seed: int = typer.Option(42, "--seed", help="Seed for subsampling and splitting."),
    ratios: str = typer.Option(
        ",".join(f"{r:g}" for r in DEFAULT_RATIOS),
        "--ratios",
        help="Train,audit,val,test fractions summing to 1; three numbers mean train,val,test and no audit split.",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where downloaded files are kept (default $DARTKIT_CACHE/wang2025 or ~/.cache/dartkit/wang2025).",
    ),
    url: str | None = typer.Option(
        None,
        "--url",
        help="Folder URL holding <B>_1k.pkl to download from (default $DARTKIT_WANG2025_URL or the upstream GitHub repo).",
    ),
) -> None:
    """Load a benchmark suite, split it by scenario and twin question (stratified by benchmark x label), write JSONL."""
    try:
        summary = prepare_data(
            out,
            source=source,
            suite=suite.value,
            per_cell=per_cell,
            seed=seed,
            ratios=_parse_ratios(ratios),
            cache_dir=cache_dir,
            base_url=url,
        )
    except DataError as exc:
        # One line, so the message stays readable in logs and nothing leaks a traceback.
        message = " ".join(str(exc).split())
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from None
    _print_summary(summary, out)
