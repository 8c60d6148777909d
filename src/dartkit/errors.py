"""Errors that the CLI turns into a one-line message and exit code 2 (no traceback)."""


class DartkitError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class DataError(DartkitError, ValueError):
    """Bad input data: the message names the file, and the line/field/global where it can."""


class UnsafePickleError(DataError):
    """A pickle names a global outside the allow-list; nothing in it was executed."""
