"""JSONL reading and atomic writing for :class:`Example` records.

Users can bring their own questions as JSONL with the Example fields, one object
a line; every line is validated, and a bad one is reported as ``file:line`` with
the field that failed.

Example::

    from dartkit.data.jsonl import read_examples, write_jsonl
    write_jsonl(Path("runs/x/data/train.jsonl"), read_examples(Path("my_questions.jsonl")))
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from dartkit.errors import DataError
from dartkit.records import Example

M = TypeVar("M", bound=BaseModel)


def _describe_validation_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "(record)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"field {field}: {first['msg']}{more}"


def iter_json_lines(text: str, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of JSONL text.

    Args:
        text: The file's text.
        source: File name for error messages.

    Raises:
        DataError: A line is not valid JSON or not a JSON object.
    """
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{source}:{line_number}: malformed JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"{source}:{line_number}: expected a JSON object, got {type(obj).__name__}")
        yield line_number, obj


def read_text(path: Path) -> str:
    """Read a UTF-8 text file, turning OS and decoding errors into DataError."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every object of a JSONL file a stage wrote, ``[]`` when the file does not exist (yet).

    Raises:
        DataError: A line is not valid JSON or not a JSON object (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        return []
    return [row for _, row in iter_json_lines(read_text(path), str(path))]


def read_records(path: Path, model: type[M]) -> list[M]:
    """Read one pydantic record a line from a JSONL file.

    Args:
        path: JSONL file; blank lines are skipped.
        model: The record type every line must validate as.

    Returns:
        The validated records in file order.

    Raises:
        DataError: The file is missing or unreadable, or a line is malformed or
            fails validation; the message names ``file:line`` and the field.
    """
    path = Path(path)
    records = []
    for line_number, obj in iter_json_lines(read_text(path), str(path)):
        try:
            records.append(model.model_validate(obj))
        except ValidationError as exc:
            raise DataError(f"{path}:{line_number}: {_describe_validation_error(exc)}") from None
    return records


def read_examples(path: Path) -> list[Example]:
    """Read Example records from a JSONL file (see ``read_records``)."""
    return read_records(path, Example)


def current_umask() -> int:
    """This process's umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # Elsewhere the only way to read it is to set it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def chmod_like_new_file(fd: int) -> None:
    """Give a file made by ``tempfile.mkstemp`` (always 0600) the mode ``open()`` would have given it.

    Results are read by colleagues, web servers and other tools like any other file the user
    writes, so they follow the umask (0644 under the usual 022) instead of being private.
    """
    if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
        os.fchmod(fd, 0o666 & ~current_umask())


def _write_atomic(path: Path, chunks: Iterable[str]) -> None:
    # Writing beside the target and renaming means a reader never sees half a
    # file, and a crash leaves the previous version in place.
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            chmod_like_new_file(fd)
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DataError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


def write_jsonl(path: Path, records: Iterable[BaseModel | dict[str, Any]]) -> None:
    """Write records as JSONL, atomically (temporary file, then ``os.replace``).

    Args:
        path: Target file; parent directories are created.
        records: Pydantic models (extra fields included) or plain dicts.

    Raises:
        DataError: The file cannot be written.
    """

    def lines() -> Iterator[str]:
        for record in records:
            obj = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
            yield json.dumps(obj, ensure_ascii=False) + "\n"

    _write_atomic(path, lines())


def write_json(path: Path, obj: Any) -> None:
    """Write one JSON document (indented), atomically.

    Args:
        path: Target file; parent directories are created.
        obj: JSON-serialisable object.

    Raises:
        DataError: The file cannot be written.
    """
    # default=str: manifests and metrics may hold paths or dtypes; they are written as text.
    _write_atomic(path, [json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n"])


def read_json(path: Path) -> Any:
    """Read one JSON file.

    Raises:
        DataError: the file is missing or is not valid JSON (naming the file).
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temporary file, fsync, then ``os.replace``)."""
    _write_atomic(path, [text])


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically, so a killed run never leaves half an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
