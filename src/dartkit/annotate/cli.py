"""``dartkit annotate export | serve | agreement``: people check the audit.

dartkit annotate export runs/demo/audit/m_dart --n 40 --annotators 2 --out runs/demo/annotate/m_dart
dartkit annotate serve runs/demo/annotate/m_dart
dartkit annotate agreement runs/demo/annotate/m_dart
"""

from __future__ import annotations

from pathlib import Path

import typer

from dartkit.cli_support import user_errors

annotate_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)


@annotate_app.command("export")
@user_errors
def export_command(
    audit_dir: Path = typer.Argument(..., help="An audit's output directory (pairs.jsonl, summary.json)."),
    out: Path = typer.Option(..., "--out", help="Export directory to create (served by `annotate serve`)."),
    n: int = typer.Option(
        40,
        "--n",
        help="Items to sample, spread equally over the strata (drift by severity, judge-rejected, screened-out).",
    ),
    annotators: int = typer.Option(
        2, "--annotators", help="Number of annotators (pseudonymous ids a1 … aK)."
    ),
    overlap: float = typer.Option(
        1.0,
        "--overlap",
        help="Share of the items every annotator sees (agreement is measured on these); the rest go to one annotator each.",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seeds the sample, the A/B letters, item ids and queue orders."
    ),
    key: Path | None = typer.Option(
        None,
        "--key",
        help="Where to write the key (items → pairs, letters → models); default <OUT>.key.json beside OUT, never inside it.",
    ),
) -> None:
    """Write a blinded, stratified A/B sample of an audit's pairs for people to annotate."""
    from dartkit.annotate.export import describe, export

    result = export(audit_dir, out, n=n, annotators=annotators, overlap=overlap, seed=seed, key=key)
    typer.echo(describe(result))
    typer.echo(f"next: dartkit annotate serve {result.out}")
