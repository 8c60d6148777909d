"""Progress for long work, on stderr so that stdout stays clean for results.

On a terminal this is a rich progress bar. Anywhere else (a log file, a pipe, a batch job)
rich draws the bar only once the step has finished, so the log says nothing while it runs;
there a plain line is printed every few seconds instead.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

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
from dartkit.generate.structured import ResponseSchema

#: Seconds between two plain progress lines.
PLAIN_INTERVAL_S = 5.0
# Widths the bar's other columns take (bar, done/total, elapsed, remaining, gaps), by terminal width.
_NARROW_BAR, _WIDE_BAR, _OTHER_COLUMNS = 20, 40, 30


def results_console() -> Console:
    """Console for result tables: at least 110 columns when output is piped, so no column is cut."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 110))


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, keeping its start and end (``baseline answers (hf:m…/adapter)``)."""
    if len(text) <= width:
        return text
    if width < 5:
        return text[:width]
    head = (width - 1) * 2 // 3
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float
    last_time: float
    last_completed: float
    finished: bool = False
    rate: float | None = None


class PlainProgress:
    """The part of rich's ``Progress`` dartkit uses, printed as plain lines for logs.

    One line when a task starts, then at most one every ``interval`` seconds, and one when it
    finishes: ``baseline answers (embedded): 48/128 (38%), 0:00:31 elapsed, about 0:00:52 left``.
    The time left comes from the speed since the previous line, so answers served from the
    cache at the start (counted as done at once) do not make the estimate wildly optimistic.

    Args:
        console: Where lines go (stderr by default).
        extra: A format string over the task, as for rich's ``TextColumn`` (``"loss {task.fields[loss]:.4f}"``).
        interval: Seconds between lines.
        disable: Print nothing (e.g. on the non-main processes of a multi-GPU run).
        clock: Time source, for tests.
    """

    def __init__(
        self,
        console: Console | None = None,
        extra: str | None = None,
        interval: float = PLAIN_INTERVAL_S,
        disable: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.console = console or Console(stderr=True)
        self.extra = extra
        self.interval = interval
        self.disable = disable
        self.clock = clock
        self.tasks: list[_Task] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        now = self.clock()
        for task in self.tasks:
            if not task.finished and task.completed > task.last_completed:
                self._print(task, now)  # where an interrupted or unsized task got to

    def add_task(
        self, description: str, total: float | None = None, completed: float = 0, **fields: Any
    ) -> int:
        now = self.clock()
        task = _Task(description, total, completed, dict(fields), now, now, completed)
        self.tasks.append(task)
        self._print(task, now)
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self, task_id: int, *, advance: float | None = None, completed: float | None = None, **fields: Any
    ) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task.completed = completed
        if advance:
            task.completed += advance
        task.fields.update(fields)
        now = self.clock()
        done = task.total is not None and task.completed >= task.total
        if done and not task.finished:
            task.finished = True
            self._print(task, now)
        elif not done and now - task.last_time >= self.interval:
            self._print(task, now)

    def _print(self, task: _Task, now: float) -> None:
        if task.completed > task.last_completed and now > task.last_time:
            task.rate = (task.completed - task.last_completed) / (now - task.last_time)
        task.last_time, task.last_completed = now, task.completed
        if self.disable:
            return
        parts = [f"{task.completed:g}" + (f"/{task.total:g}" if task.total is not None else "")]
        if task.total:
            parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
        if task.finished:
            parts.append(f"done in {_clock(now - task.started)}")
        else:
            parts.append(f"{_clock(now - task.started)} elapsed")
            if task.total is not None and task.rate:
                parts.append(f"about {_clock((task.total - task.completed) / task.rate)} left")
        # A field may not be set yet (no loss before the first step, or a NaN placeholder): leave it out.
        unset = any(isinstance(v, float) and math.isnan(v) for v in task.fields.values())
        if self.extra and not unset:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                parts.append(self.extra.format(task=SimpleNamespace(fields=task.fields)))
        line = f"{task.description}: " + ", ".join(parts)
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


class _ShortProgress(Progress):
    """A rich bar whose description is cut to fit, so a long model name cannot squash the bar."""

    def __init__(self, *columns: Any, description_width: int, **kwargs: Any):
        super().__init__(*columns, **kwargs)
        self.description_width = description_width

    def add_task(self, description: str, *args: Any, **kwargs: Any):  # type: ignore[override]
        return super().add_task(shorten(description, self.description_width), *args, **kwargs)


def progress_bar(
    console: Console | None = None, extra: str | None = None, disable: bool = False
) -> Progress | PlainProgress:
    """A progress display for ``console`` (stderr by default): a bar on a terminal, plain lines elsewhere.

    Args:
        console: Where to draw.
        extra: Format string of an extra column over the task, e.g. ``"loss {task.fields[loss]:.4f}"``.
        disable: Show nothing.

    Returns:
        Either display; both offer ``add_task``, ``advance``, ``update`` and the ``with`` block.
    """
    console = console or Console(stderr=True)
    if not (console.is_terminal or console.is_jupyter):
        return PlainProgress(console, extra=extra, disable=disable)
    bar = _NARROW_BAR if console.width < 100 else _WIDE_BAR
    extra_width = 14 if extra else 0
    # The description is shown as typed (no markup): a spec or path may hold brackets.
    columns: list[Any] = [
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(bar_width=bar),
    ]
    columns.append(MofNCompleteColumn())
    if extra:
        columns.append(TextColumn(extra))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return _ShortProgress(
        *columns,
        console=console,
        disable=disable,
        description_width=max(16, console.width - bar - _OTHER_COLUMNS - extra_width),
    )


def generate_with_progress(
    backend: Backend,
    conversations: Sequence[Messages],
    decoding: DecodingConfig,
    cache: GenerationCache,
    description: str,
    schema: ResponseSchema | None = None,
) -> tuple[list[str], list[str]]:
    """``generate_cached`` with a progress display that counts cached answers as done."""
    with progress_bar() as progress:
        task = progress.add_task(f"{description} ({backend.spec})", total=len(conversations))
        return generate_cached(
            backend, conversations, decoding, cache, lambda k: progress.advance(task, k), schema=schema
        )
