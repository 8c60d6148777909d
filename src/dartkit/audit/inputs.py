"""What an audit reads: prompt files and generation files, validated line by line.

Prompt files are either a prepared split (``dartkit data prepare``) or any JSONL
with ``id``, ``prompt`` or ``question``, and an optional ``label``. A line with a
``question`` is asked with dartkit's classification prompt; a line with only a
``prompt`` is sent as it is, as one user message.

Generation files are JSONL with ``id`` and ``text`` and optional ``prompt``,
``question``, ``label`` (or ``gold``, as ``dartkit eval`` writes) and
``benchmark``; every ``generations.jsonl`` dartkit writes qualifies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dartkit.data.jsonl import iter_json_lines, read_text
from dartkit.data.splits import stratified_order
from dartkit.errors import DataError
from dartkit.generate.base import Messages
from dartkit.prompts import Policy, classification_messages
from dartkit.records import Example, category_of

LABELS = ("YES", "NO")


@dataclass
class AuditItem:
    """One prompt both models answer."""

    id: str
    messages: Messages
    question: str
    label: str | None = None
    benchmark: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    scenario_key: str | None = None


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = list(iter_json_lines(read_text(Path(path)), str(path)))
    if not rows:
        raise DataError(f"{path}: no records")
    return rows


def _string(path: Path, n: int, row: dict[str, Any], key: str, required: bool = True) -> str | None:
    v = row.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or (required and not v.strip()):
        what = "is missing" if v is None else "must be a non-empty string"
        raise DataError(f"{path}:{n}: field '{key}' {what}")
    return v


def _label(path: Path, n: int, row: dict[str, Any]) -> str | None:
    for key in ("label", "gold"):
        v = row.get(key)
        if v is None:
            continue
        if not isinstance(v, str) or v.strip().upper() not in LABELS:
            raise DataError(f"{path}:{n}: field '{key}' must be YES or NO, got {v!r}")
        return v.strip().upper()
    return None


def _optional_key(row: dict[str, Any]) -> str | None:
    """The row's ``scenario_key`` when it is a non-empty string (what the intervals cluster on)."""
    key = row.get("scenario_key")
    return key if isinstance(key, str) and key.strip() else None


def load_prompt_items(path: Path, policy: Policy = "off", limit: int | None = None) -> list[AuditItem]:
    """Audit items from a prompt JSONL file (see the module docstring).

    Raises:
        DataError: naming the file, line and field of the first bad record, or a repeated id.
    """
    rows = _read_jsonl(path)
    seen: dict[str, int] = {}
    examples: list[Example] = []
    labels: dict[str, str | None] = {}
    raw: list[AuditItem] = []
    for n, row in rows:
        id_ = _string(path, n, row, "id")
        if id_ in seen:
            raise DataError(f"{path}:{n}: id '{id_}' repeats line {seen[id_]}")
        seen[id_] = n
        label = _label(path, n, row)
        if "question" in row:
            question = _string(path, n, row, "question")
            benchmark = row.get("benchmark") or "custom"
            fields = {k: v for k, v in row.items() if k in Example.model_fields}
            fields.update(
                id=id_,
                question=question,
                label=label or "NO",
                benchmark=benchmark,
                category=row.get("category") or category_of(benchmark),
                scenario_key=row.get("scenario_key") or id_,
            )
            try:
                ex = Example.model_validate(fields)
            except ValueError as e:
                raise DataError(f"{path}:{n}: {str(e).splitlines()[0]}") from None
            labels[id_] = label
            examples.append(ex)
        elif "prompt" in row:
            prompt = _string(path, n, row, "prompt")
            raw.append(
                AuditItem(
                    id=id_,
                    messages=[{"role": "user", "content": prompt}],
                    question=prompt,
                    label=label,
                    benchmark=row.get("benchmark"),
                    scenario_key=_optional_key(row),
                )
            )
        else:
            raise DataError(f"{path}:{n}: needs a field 'prompt' or 'question'")
    if examples and raw:
        raise DataError(f"{path}: mixes 'question' lines and 'prompt'-only lines; use one kind per file")
    if examples:
        ordered = stratified_order(examples) if all(labels.values()) else examples
        items = [example_item(e, policy, labels[e.id]) for e in ordered]
        # A file without scenario keys leaves the grouping unknown (not one group per item).
        keyed = {row["id"] for _, row in rows if _optional_key(row)}
        for item in items:
            if item.id not in keyed:
                item.scenario_key = None
    else:
        items = raw
    return items[:limit] if limit else items


def example_item(example: Example, policy: Policy = "off", label: str | None = "from-example") -> AuditItem:
    """The audit item for a prepared example (asked with the classification prompt)."""
    return AuditItem(
        id=example.id,
        messages=classification_messages(example, policy),
        question=(f"{example.system.strip()}\n" if example.system else "") + example.question.strip(),
        label=example.label if label == "from-example" else label,
        benchmark=example.benchmark,
        scenario_key=example.group_key or example.scenario_key,  # the cluster unit of intervals
        extra={"question": example.question.strip()},  # what a harness prompt must contain (audit.harness)
    )


@dataclass
class GenerationRow:
    """One answer read from a generation file."""

    id: str
    text: str
    prompt: str | None = None
    question: str | None = None
    label: str | None = None
    benchmark: str | None = None
    conclusion: str | None = None
    scenario_key: str | None = None
    source: str | None = None  # the harness whose log it came from (audit.harness); None: a dartkit file
    prompt_match: str | None = None  # how a harness prompt relates to dartkit's: exact, contains, differs
    ref: str | None = None  # where in the harness log it was read


def load_generations(path: Path) -> dict[str, GenerationRow]:
    """Answers keyed by id from a generation JSONL file.

    Raises:
        DataError: naming the file, line and field of the first bad record, or a repeated id.
    """
    out: dict[str, GenerationRow] = {}
    lines: dict[str, int] = {}
    for n, row in _read_jsonl(path):
        id_ = _string(path, n, row, "id")
        if id_ in out:
            raise DataError(f"{path}:{n}: id '{id_}' repeats line {lines[id_]}")
        text = row.get("text")
        if not isinstance(text, str):
            raise DataError(
                f"{path}:{n}: field 'text' {'is missing' if text is None else 'must be a string'}"
            )
        lines[id_] = n
        out[id_] = GenerationRow(
            id=id_,
            text=text,
            prompt=_string(path, n, row, "prompt", required=False),
            question=_string(path, n, row, "question", required=False),
            label=_label(path, n, row),
            benchmark=row.get("benchmark") if isinstance(row.get("benchmark"), str) else None,
            scenario_key=_optional_key(row),
        )
    return out


def prompt_mismatches(
    base: dict[str, GenerationRow], cand: dict[str, GenerationRow]
) -> tuple[list[str], int]:
    """Ids whose two answers were given to different prompt texts, and how many pairs had no prompt to compare.

    A paired audit compares two answers to the *same* prompt; generation files made with another
    prompt template, policy or data version pair answers to different questions. Prompts read from
    another harness's log are compared with whitespace normalised (logs re-wrap and re-indent text).
    """
    mismatched, unchecked = [], 0
    for id_, b in base.items():
        c = cand.get(id_)
        if c is None:
            continue
        if b.prompt is None or c.prompt is None:
            unchecked += 1
        elif b.source or c.source:
            if " ".join(b.prompt.split()) != " ".join(c.prompt.split()):
                mismatched.append(id_)
        elif b.prompt.strip() != c.prompt.strip():
            mismatched.append(id_)
    return mismatched, unchecked


def describe_mismatch(id_: str, a: str, b: str, width: int = 60) -> str:
    """``id: baseline and candidate prompts differ at character N: baseline '...' vs candidate '...'``
    for an error message (``a`` the baseline's prompt, ``b`` the candidate's); a system turn on one
    side only is said so."""
    a, b = a.strip(), b.strip()
    sys_a, sys_b = a.startswith("[system]"), b.startswith("[system]")
    if sys_a != sys_b:
        side = "baseline" if sys_a else "candidate"
        return f"{id_}: only the {side}'s prompt has a system turn"
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return (
        f"{id_}: prompts differ at character {at}: baseline {a[at : at + width]!r} vs candidate "
        f"{b[at : at + width]!r}"
    )
