"""Reading a suite's upstream files with errors that name the file, the line and the field."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dartkit.data.jsonl import iter_json_lines, read_text
from dartkit.errors import DataError


def locate(source: Path, name: str, suite: str) -> Path:
    """``source`` itself when it is the file, else ``source/name``; a clear error when neither exists."""
    source = Path(source)
    if source.is_file():
        return source
    path = source / name
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; --source for suite {suite} is a directory holding {name} "
            "(or that file itself)"
        )
    return path


def csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for each data row of a CSV file with a header.

    Raises:
        DataError: the file is empty, lacks a required column, or a row has the wrong number of cells.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        if not header:
            raise DataError(f"{path}: empty file (expected a CSV header with {', '.join(required)})")
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}:1: missing column(s) {', '.join(missing)} (has: {', '.join(header)})")
        n = 0
        for row in reader:
            n += 1
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{path}:{reader.line_num}: expected {len(header)} cells")
            yield reader.line_num, row
        if n == 0:
            raise DataError(f"{path}: no rows after the header")


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file.

    Raises:
        DataError: a line is not a JSON object, or the file has none.
    """
    rows = list(iter_json_lines(read_text(path), str(path)))
    if not rows:
        raise DataError(f"{path}: empty file (expected one JSON object per line)")
    yield from rows


def field(path: Path, line: int, row: dict[str, Any], name: str, allowed: Sequence[str] | None = None) -> str:
    """A required non-empty text field of a row, optionally from a fixed set of values."""
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}:{line}: field '{name}' is missing or empty")
    value = value.strip()
    if allowed is not None and value not in allowed:
        raise DataError(
            f"{path}:{line}: field '{name}': unknown value {value!r} (expected one of {', '.join(allowed)})"
        )
    return value
