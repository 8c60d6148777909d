"""Progress bars for long work, on stderr so that stdout stays clean for results."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dartkit.config import DecodingConfig
from dartkit.generate.base import Backend, Messages
from dartkit.generate.cache import GenerationCache, generate_cached


def results_console() -> Console:
    """Console for result tables: at least 110 columns when output is piped, so no column is cut."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 110))


def progress_bar(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
    )


def generate_with_progress(
    backend: Backend,
    conversations: Sequence[Messages],
    decoding: DecodingConfig,
    cache: GenerationCache,
    description: str,
) -> tuple[list[str], list[str]]:
    """``generate_cached`` with a progress bar that counts cached answers as done."""
    with progress_bar() as progress:
        task = progress.add_task(f"{description} ({backend.spec})", total=len(conversations))
        return generate_cached(backend, conversations, decoding, cache, lambda k: progress.advance(task, k))
