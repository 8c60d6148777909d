"""``dartkit annotate export | serve | agreement``: people check the audit.

dartkit annotate export runs/demo/audit/m_dart --n 40 --annotators 2 --out runs/demo/annotate/m_dart
dartkit annotate serve runs/demo/annotate/m_dart
dartkit annotate agreement runs/demo/annotate/m_dart
"""

from __future__ import annotations

from pathlib import Path

import typer

from dartkit.cli_support import Group, user_errors

annotate_app = typer.Typer(cls=Group, no_args_is_help=True, rich_markup_mode=None)


@annotate_app.command("export")
@user_errors
def export_command(
    audit_dir: Path = typer.Argument(..., help="An audit's output directory (pairs.jsonl, summary.json)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Export directory to create (served by `annotate serve`); default for an audit inside a run "
        "(RUN/audit/NAME): RUN/annotate/NAME, where the run's report finds its agreement.json.",
    ),
    n: int = typer.Option(
        40,
        "--n",
        help="Items to sample, spread equally over the strata (drift by severity, judge-rejected, screened-out).",
    ),
    annotators: int = typer.Option(
        2, "--annotators", help="Number of annotators (pseudonymous ids a1, a2, ..., aK)."
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
    from dartkit.annotate.export import default_export_dir, describe, export

    out = out or default_export_dir(audit_dir)
    result = export(audit_dir, out, n=n, annotators=annotators, overlap=overlap, seed=seed, key=key)
    typer.echo(describe(result))
    typer.echo(f"next: dartkit annotate serve {result.out}")


@annotate_app.command("agreement")
@user_errors
def agreement_command(
    source: Path = typer.Argument(
        ...,
        help="An export directory (reads its annotations.sqlite) or a CSV: item_id, annotator, drift (0/1), "
        "severity (none/mild/moderate/severe/extreme) and optionally which (A/B, needs the key).",
    ),
    key: Path | None = typer.Option(
        None,
        "--key",
        help="The export's key; default <DIR>.key.json beside DIR (required for a DIR). "
        "Optional for a CSV: without it only agreement between people is computed.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Where to write agreement.json (agreement.md beside it); default DIR/agreement.json, or beside the CSV.",
    ),
    resamples: int = typer.Option(
        2000, "--resamples", min=100, help="Bootstrap resamples for every interval."
    ),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Agreement between annotators (κ, α) and the auditor's precision / recall against them."""
    from dartkit.annotate.agreement import RESULT_NAME, check_output, compute, print_summary, write

    target = out or (source / RESULT_NAME if source.is_dir() else source.parent / RESULT_NAME)
    check_output(target)
    result = compute(source, key, n_resamples=resamples, seed=seed)
    json_path, md_path = write(result, target)
    print_summary(result)
    typer.echo(f"wrote {json_path} and {md_path}")


@annotate_app.command("serve")
@user_errors
def serve_command(
    export_dir: Path = typer.Argument(..., help="An export directory (from `dartkit annotate export`)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="TCP port to listen on."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Interface to bind to. Anything but loopback (127.0.0.1, ::1, localhost) needs --allow-remote.",
    ),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="Allow a non-loopback --host (annotators on other machines; links travel unencrypted: use a trusted network or a tunnel).",
    ),
) -> None:
    """Serve the annotation page: prints one private link per annotator; answers are saved to DIR/annotations.sqlite as they are given."""
    from dartkit.annotate.server import serve

    serve(export_dir, host=host, port=port, allow_remote=allow_remote, echo=typer.echo)
