"""The packaged demo suite: a small upstream-format sample that needs no download.

``demo_suite.jsonl`` holds one upstream item a line::

    {"benchmark": "D1", "condition": "diff", "index": 0, "question": "...", "answer": 1, "scenario_id": 7}

and each line goes through :func:`dartkit.data.wang2025.convert_item`, the same
conversion the pickle files get.

Example::

    from dartkit.data.demo import load_demo_suite
    examples = load_demo_suite()
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from dartkit.data.jsonl import iter_json_lines, read_text
from dartkit.data.wang2025 import convert_item
from dartkit.errors import DataError
from dartkit.records import Example

DEMO_SUITE_RESOURCE = "demo_suite.jsonl"
_UPSTREAM_FIELDS = ("benchmark", "condition", "index", "question", "answer", "scenario_id")


def parse_upstream_jsonl(text: str, source: str) -> list[Example]:
    """Convert upstream-format JSONL text into Examples.

    Args:
        text: JSONL text, one ``{benchmark, condition, index, question, answer,
            scenario_id}`` object a line; blank lines are skipped.
        source: File name for error messages.

    Returns:
        The examples in file order.

    Raises:
        DataError: A line is malformed, misses a field, breaks the upstream
            answer conventions, or repeats an id; the message names ``file:line``.
    """
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for line_number, obj in iter_json_lines(text, source):
        where = f"{source}:{line_number}"
        missing = [field for field in _UPSTREAM_FIELDS if field not in obj]
        if missing:
            raise DataError(f"{where}, field {missing[0]}: missing")
        example = convert_item(
            obj["benchmark"],
            obj["condition"],
            obj["index"],
            [obj["question"], obj["answer"], obj["scenario_id"]],
            where=where,
        )
        if example.id in seen:
            raise DataError(f"{where}, field index: id {example.id} already used on line {seen[example.id]}")
        seen[example.id] = line_number
        examples.append(example)
    return examples


def read_upstream_jsonl(path: Path) -> list[Example]:
    """Read an upstream-format JSONL file (the demo suite's format) into Examples.

    Args:
        path: The file.

    Raises:
        DataError: As for :func:`parse_upstream_jsonl`, or the file is missing.
    """
    path = Path(path)
    return parse_upstream_jsonl(read_text(path), str(path))


def _demo_resource():
    resource = resources.files("dartkit.data").joinpath(DEMO_SUITE_RESOURCE)
    if not resource.is_file():
        raise DataError(
            f"the packaged demo suite dartkit/data/{DEMO_SUITE_RESOURCE} is missing from this install"
        )
    return resource


def load_demo_suite() -> list[Example]:
    """Load the packaged demo suite.

    Returns:
        The demo examples, converted exactly as the upstream pickles are.

    Raises:
        DataError: The resource is missing or malformed.
    """
    resource = _demo_resource()
    return parse_upstream_jsonl(resource.read_text(encoding="utf-8"), f"dartkit/data/{DEMO_SUITE_RESOURCE}")


def demo_suite_sha256() -> str:
    """SHA-256 of the packaged demo suite file, for run summaries."""
    return hashlib.sha256(_demo_resource().read_bytes()).hexdigest()
