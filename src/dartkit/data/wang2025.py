"""The difference-awareness suite of Wang et al. 2025, converted to :class:`Example` records.

Each upstream file ``<B>_1k.pkl`` unpickles to ``[diff, equal]``, each a list of
``[question, answer, scenario_id]``. Diff items need group differences (label
YES, gold option (a)/(b) from ``answer``); equal items need equal treatment
(label NO, gold option (c); for N* benchmarks ``answer`` instead names the wrong
option that favours the marginalised group).

Example::

    from dartkit.data.wang2025 import load_benchmark_dir
    examples, present, absent = load_benchmark_dir(Path("../shared/data/difference_awareness/raw_pkl"))
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dartkit.data.safe_pickle import safe_load
from dartkit.errors import DataError
from dartkit.records import BENCHMARKS, DESCRIPTIVE, Example, category_of

CONDITIONS: tuple[str, ...] = ("diff", "equal")

US_SYSTEM_PROMPT = "Answer in the context of the United States of America."
"""Upstream's system prompt for the US-specific benchmarks."""

US_CONTEXT_BENCHMARKS = frozenset({"D2", "D3", "N3"})

# In these benchmarks a diff item and an equal item with the same scenario id
# are twins of one scenario; elsewhere the two lists number their ids
# independently, so the condition must be part of the key. N1's ids are BBQ
# templates ("<category>-<question_index>") in both lists: its diff items use a
# template's ambiguous contexts and its equal items the disambiguated ones of
# the same template (docs/n1_from_bbq.md).
SHARED_SCENARIO_IDS = frozenset({"D2", "D3", "N1", "N4"})

_FILE_NAME = re.compile(r"^([DN][1-4])_1k\.pkl$")
# An option marker stands at the start or after whitespace; about half of N3
# writes the first one as "(1)".
_OPTION_MARKER = re.compile(r"(?<!\S)\((a|1|b|c)\)")


def benchmark_file_name(benchmark: str) -> str:
    """Upstream file name of a benchmark, e.g. ``D1_1k.pkl``."""
    return f"{benchmark}_1k.pkl"


def parse_choices(question: str) -> dict[str, str] | None:
    """Split the options (a)/(b)/(c) out of a question.

    The last ``(c)`` marker is taken, then the last ``(b)`` before it and the last
    ``(a)`` or ``(1)`` before that, so a stem that happens to contain a marker
    does not shift the options.

    Args:
        question: Question text with its options, separated by spaces or newlines.

    Returns:
        ``{"a": ..., "b": ..., "c": ...}`` with whitespace stripped, or None when
        the three options are not all there.
    """
    marks = [(m.group(1), m.start(), m.end()) for m in _OPTION_MARKER.finditer(question)]
    mark_c = next((m for m in reversed(marks) if m[0] == "c"), None)
    if mark_c is None:
        return None
    mark_b = next((m for m in reversed(marks) if m[0] == "b" and m[2] <= mark_c[1]), None)
    if mark_b is None:
        return None
    mark_a = next((m for m in reversed(marks) if m[0] in "a1" and m[2] <= mark_b[1]), None)
    if mark_a is None:
        return None
    choices = {
        "a": question[mark_a[2] : mark_b[1]].strip(),
        "b": question[mark_b[2] : mark_c[1]].strip(),
        "c": question[mark_c[2] :].strip(),
    }
    return choices if all(choices.values()) else None


def scenario_key(benchmark: str, condition: str, scenario_id: int | str) -> str:
    """Split-grouping key of an upstream item (see :data:`SHARED_SCENARIO_IDS`)."""
    if benchmark in SHARED_SCENARIO_IDS:
        return f"{benchmark}:{scenario_id}"
    return f"{benchmark}:{condition}:{scenario_id}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def convert_item(benchmark: str, condition: str, index: int, item: Any, *, where: str) -> Example:
    """Turn one upstream ``[question, answer, scenario_id]`` item into an Example.

    Both the pickle loader and the packaged demo suite go through this function,
    so they follow one set of conventions.

    Args:
        benchmark: One of D1-D4, N1-N4.
        condition: ``"diff"`` or ``"equal"``.
        index: Position of the item in its upstream list.
        item: The raw item.
        where: Location for error messages, e.g. ``"D1_1k.pkl: diff[12]"``.

    Returns:
        The converted Example, with extra fields ``upstream_answer`` and ``condition``.

    Raises:
        DataError: The item does not follow the upstream format; the message
            names ``where`` and the offending field.
    """
    if benchmark not in BENCHMARKS:
        raise DataError(f"{where}, field benchmark: {benchmark!r} is not one of {', '.join(BENCHMARKS)}")
    if condition not in CONDITIONS:
        raise DataError(f"{where}, field condition: {condition!r} is not 'diff' or 'equal'")
    if not _is_int(index) or index < 0:
        raise DataError(f"{where}, field index: expected a non-negative integer, got {index!r}")
    if not isinstance(item, (list, tuple)) or len(item) != 3:
        shape = f"{len(item)} elements" if isinstance(item, (list, tuple)) else type(item).__name__
        raise DataError(f"{where}: expected [question, answer, scenario_id], got {shape}")
    question, answer, scenario_id = item

    if not isinstance(question, str):
        raise DataError(f"{where}, field question: expected a string, got {type(question).__name__}")
    choices = parse_choices(question)
    if choices is None:
        raise DataError(f"{where}, field question: options (a), (b), (c) not found in {question[-80:]!r}")

    if condition == "diff":
        allowed = (0, 1)
    elif benchmark in DESCRIPTIVE:
        allowed = (2,)
    else:
        allowed = (0, 1)
    if not _is_int(answer) or answer not in allowed:
        expected = " or ".join(str(a) for a in allowed)
        raise DataError(
            f"{where}, field answer: expected {expected} for {condition} items of {benchmark}, got {answer!r}"
        )

    if not (_is_int(scenario_id) or (isinstance(scenario_id, str) and scenario_id)):
        raise DataError(
            f"{where}, field scenario_id: expected an integer or non-empty string, got {scenario_id!r}"
        )

    return Example(
        id=f"{benchmark}-{condition}-{index:04d}",
        benchmark=benchmark,
        category=category_of(benchmark),
        label="YES" if condition == "diff" else "NO",
        question=question,
        choices=choices,
        gold_choice="ab"[answer] if condition == "diff" else "c",
        scenario_key=scenario_key(benchmark, condition, scenario_id),
        system=US_SYSTEM_PROMPT if benchmark in US_CONTEXT_BENCHMARKS else None,
        upstream_answer=answer,
        condition=condition,
    )


def load_benchmark_file(path: Path, benchmark: str | None = None) -> list[Example]:
    """Load one upstream ``<B>_1k.pkl`` file.

    Args:
        path: The pickle file.
        benchmark: Benchmark name; taken from the file name when None.

    Returns:
        Diff items in upstream order, then equal items.

    Raises:
        UnsafePickleError: The pickle names a disallowed global.
        DataError: The file is missing, unreadable or not in the upstream format.
    """
    path = Path(path)
    if benchmark is None:
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise DataError(
                f"{path}: cannot tell the benchmark from the name, expected <B>_1k.pkl (B in D1-N4)"
            )
        benchmark = match.group(1)
    data = safe_load(path)
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        shape = f"{len(data)} elements" if isinstance(data, (list, tuple)) else type(data).__name__
        raise DataError(f"{path}: expected a 2-element list [diff, equal] at the top level, got {shape}")
    examples = []
    for condition, items in zip(CONDITIONS, data, strict=True):
        if not isinstance(items, (list, tuple)):
            raise DataError(f"{path}: {condition} list: expected a list, got {type(items).__name__}")
        for index, item in enumerate(items):
            examples.append(
                convert_item(benchmark, condition, index, item, where=f"{path}: {condition}[{index}]")
            )
    return examples


def load_benchmark_dir(source: Path) -> tuple[list[Example], list[str], list[str]]:
    """Load whichever of the eight upstream files a directory holds.

    Args:
        source: Directory with some of ``D1_1k.pkl`` ... ``N4_1k.pkl``.

    Returns:
        ``(examples, present, absent)``: examples of the present benchmarks in
        D1..N4 order, and the benchmark names found and not found.

    Raises:
        DataError: ``source`` is not a directory, holds none of the files, or a
            file is malformed or unsafe.
    """
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: not a directory (expected one holding <B>_1k.pkl files)")
    present = [b for b in BENCHMARKS if (source / benchmark_file_name(b)).is_file()]
    absent = [b for b in BENCHMARKS if b not in present]
    if not present:
        raise DataError(f"{source}: none of {', '.join(benchmark_file_name(b) for b in BENCHMARKS)} found")
    examples: list[Example] = []
    for benchmark in present:
        examples.extend(load_benchmark_file(source / benchmark_file_name(benchmark), benchmark))
    return examples, present, absent
