"""Error handling shared by every dartkit command: bad input gets one line and exit code 2."""

from __future__ import annotations

import functools
import sys

import typer
from typer.core import TyperGroup

from dartkit.config import ConfigError
from dartkit.errors import DartkitError
from dartkit.generate.base import BackendError
from dartkit.generate.spec import SpecError


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit (no traceback: the input was wrong, not the code)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn errors caused by input or environment into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DartkitError, ConfigError, SpecError, BackendError) as e:
            fail(str(e))
        except KeyboardInterrupt:
            typer.echo(
                "interrupted: finished generations are cached; rerun the same command to continue", err=True
            )
            sys.exit(130)

    return wrapper


class Group(TyperGroup):
    """dartkit's command groups: a bad option value reads as click writes it, without the
    ``Value error, `` prefix that typer's pydantic-based choices put before the message."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except typer.BadParameter as e:  # click's (or typer's vendored click's) BadParameter
            e.message = e.message.removeprefix("Value error, ")
            raise
