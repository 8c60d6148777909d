"""``dartkit data``: prepare benchmark splits.

Example::

    dartkit data prepare --out runs/x/data --source ../shared/data/difference_awareness/raw_pkl
    dartkit data prepare --out runs/demo/data --suite demo
    dartkit data build-n1 --bbq ../shared/data/difference_awareness/bbq --out runs/n1_rebuilt.jsonl
    dartkit data prepare --out runs/x/data --source ../shared/data/difference_awareness/raw_pkl \
        --bbq runs/n1_rebuilt.jsonl
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dartkit.cli_support import Group, fail
from dartkit.data.bbq import DEFAULT_N, DEFAULT_SEED
from dartkit.data.prepare import DEFAULT_MIN_CELL_ITEMS, prepare_data, small_cells_warning
from dartkit.data.splits import DEFAULT_RATIOS, SPLITS
from dartkit.errors import DartkitError, DataError
from dartkit.lock import check_same_inputs, dir_lock

data_app = typer.Typer(
    cls=Group,
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
    rebuilt = summary.get("rebuilt") or {}
    for benchmark, by_label in summary["counts"].items():
        cells = [f"{by_label['YES'][s]}/{by_label['NO'][s]}" for s in SPLITS]
        table.add_row(
            f"{benchmark} (rebuilt)" if benchmark in rebuilt else benchmark,
            *cells,
            str(summary["scenario_keys"][benchmark]),
            str(summary["twin_groups_merged"][benchmark]),
        )
    table.add_row("total", *(str(summary["split_totals"][s]) for s in SPLITS), "", "", end_section=True)
    console.print(table)
    absent = summary.get("absent") or []
    console.print(f"absent: {', '.join(absent) if absent else 'none'}")
    console.print(f"twin questions in more than one split: {summary['cross_split_twins']}")
    for note in summary.get("notes") or []:
        console.print(f"note: {note}", highlight=False)
    _print_small_cells(console, summary)
    console.print(f"wrote {', '.join(f'{s}.jsonl' for s in SPLITS)} and summary.json to {out}")


def _print_small_cells(console: Console, summary: dict) -> None:
    """One warning line per benchmark with empty or small cells (``summary["small_cells"]``)."""
    remedy = "more items: a larger --per-cell; fewer warnings: --min-cell-items"
    for line in small_cells_warning(summary, remedy):
        console.print(f"[yellow]{line}[/yellow]", highlight=False)


def _check_prepared_inputs(
    out: Path,
    source: Path | None,
    suite: str,
    per_cell: int | None,
    seed: int,
    ratios: str,
    cache_dir: Path | None,
    force: bool,
    bbq: Path | None = None,
) -> None:
    """Refuse to overwrite splits in ``out`` that ``summary.json`` says came from other inputs."""
    from dartkit.data.jsonl import read_json
    from dartkit.data.prepare import default_cache_dir
    from dartkit.data.splits import check_ratios

    def inputs(src: str | Path | None, suite: str, seed, ratios, per_cell, bbq) -> dict:
        # The packaged demo suite has no path of its own; any other source is compared resolved.
        where = "packaged demo suite" if suite == "demo" else str(Path(src).expanduser().resolve())
        found = {"source": where, "seed": seed, "ratios": [round(r, 9) for r in ratios], "per_cell": per_cell}
        if bbq:  # only when given, so splits prepared before --bbq existed compare as before
            found["bbq"] = str(Path(bbq).expanduser().resolve())
        return found

    current = inputs(
        source if source is not None else (cache_dir or default_cache_dir()),
        suite,
        seed,
        check_ratios(_parse_ratios(ratios)),
        per_cell,
        bbq,
    )
    summary_path = Path(out) / "summary.json"
    previous = None
    if summary_path.is_file():
        s = read_json(summary_path)
        previous = inputs(
            s.get("source", ""),
            s.get("suite", ""),
            s.get("seed"),
            s.get("ratios", []),
            s.get("per_cell"),
            s.get("bbq"),
        )
    check_same_inputs(
        out,
        ["summary.json", *(f"{split}.jsonl" for split in SPLITS)],
        previous,
        current,
        record="summary.json",
        force=force,
    )


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
    min_cell_items: int = typer.Option(
        DEFAULT_MIN_CELL_ITEMS,
        "--min-cell-items",
        help="Warn about every benchmark x label x split cell that is empty or holds fewer items than this.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite splits in --out that were prepared from other inputs."
    ),
    bbq: Path | None = typer.Option(
        None,
        "--bbq",
        help="When N1_1k.pkl is absent, rebuild N1 from BBQ: BBQ's data/ folder (<category>.jsonl files) "
        "or a file from `dartkit data build-n1`. Rebuilt items are marked as rebuilt; an upstream N1 file wins.",
    ),
) -> None:
    """Load a benchmark suite, split it by scenario and twin question (stratified by benchmark x label), write JSONL."""
    try:
        with dir_lock(out):
            _check_prepared_inputs(out, source, suite.value, per_cell, seed, ratios, cache_dir, force, bbq)
            summary = prepare_data(
                out,
                source=source,
                suite=suite.value,
                per_cell=per_cell,
                seed=seed,
                ratios=_parse_ratios(ratios),
                cache_dir=cache_dir,
                base_url=url,
                min_cell_items=min_cell_items,
                bbq=bbq,
            )
    except DartkitError as exc:
        # One line, so the message stays readable in logs and nothing leaks a traceback; the
        # library names its settings as config fields, the command line as flags.
        message = " ".join(str(exc).split())
        for field_name, flag in (("ratios:", "--ratios:"), ("per_cell:", "--per-cell:")):
            if message.startswith(field_name):
                message = flag + message.removeprefix(field_name)
        fail(message)
    _print_summary(summary, out)


@data_app.command("build-n1")
def build_n1_command(
    bbq: Path = typer.Option(
        ..., "--bbq", help="BBQ's data/ folder holding some of its nine <category>.jsonl files."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="JSONL file to write: one Example a line, marked as rebuilt; pass it to `data prepare --bbq`.",
    ),
    seed: int = typer.Option(DEFAULT_SEED, "--seed", help="Seed for every random choice of the build."),
    n: int = typer.Option(
        DEFAULT_N,
        "--n",
        help="Items per condition (YES and NO); fewer when the BBQ files do not hold enough.",
    ),
) -> None:
    """Rebuild the missing N1 benchmark from BBQ (deterministic for a seed), stratified over the BBQ categories given."""
    from dartkit.data.bbq import build_n1, counts_table, describe, write_n1_file

    try:
        build = build_n1(bbq, seed=seed, n=n)
        write_n1_file(out, build)
    except DartkitError as exc:
        fail(" ".join(str(exc).split()))
    info = build.info
    console = Console()
    table = Table(title=f"N1 rebuilt from BBQ (seed {seed}): items per category, of the candidates found")
    for column in ("BBQ category", "YES (diff)", "NO (equal)"):
        table.add_column(column, justify="left" if column.startswith("BBQ") else "right")
    for category, n_diff, n_equal in counts_table(info):
        table.add_row(
            category,
            f"{n_diff} of {info['available']['diff'][category]}",
            f"{n_equal} of {info['available']['equal'][category]}",
        )
    console.print(table)
    missing = info["bbq_categories_missing"]
    console.print(f"BBQ categories missing: {', '.join(missing) if missing else 'none'}", highlight=False)
    totals = {c: sum(info["counts"][c].values()) for c in ("diff", "equal")}
    for condition, label in (("diff", "YES"), ("equal", "NO")):
        if totals[condition] < n:
            console.print(
                f"[yellow]warning: only {totals[condition]} {label} items of the {n} asked for[/yellow]",
                highlight=False,
            )
    console.print(describe(info), highlight=False)
    console.print(f"wrote {out}")
