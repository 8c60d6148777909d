"""Training records and the loaders that build them.

A :class:`TrainRecord` is one supervised example: the prompt turns (system + user),
the assistant text the student should learn, and a loss weight. Three sources:

- a distillation file (``teacher.jsonl``): rows ``{id, accepted, text[, messages]}``;
  only accepted rows are kept and ``text`` (rationale + ``Conclusion:`` line) is the
  target. A row without ``messages`` gets the student's classification prompt
  rebuilt from the prepared example with the same id. ``messages`` in a row must
  be the *student's* prompt, never the teacher's (which shows the gold label);
- plain training records: rows ``{id, messages, target[, weight]}``;
- label-only (``label_only=True``): prepared ``Example`` rows, target
  ``Conclusion: YES|NO`` alone.

Weights come from a row field (``weights_from``, e.g. ``severity_weight``). Every
error names ``file:line`` and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dartkit.data.jsonl import iter_json_lines, read_text
from dartkit.data.splits import SPLITS
from dartkit.errors import DataError
from dartkit.parse import parse_conclusion
from dartkit.prompts import Policy, classification_messages
from dartkit.records import Example

_ROLES = {"system", "user", "assistant"}


class TrainRecord(BaseModel):
    """One supervised example: prompt turns -> assistant target, with a loss weight."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Example id (ids may repeat, e.g. a repair example of a distilled item).")
    messages: list[dict[str, str]] = Field(
        description="Prompt turns (system and user), ending with a user turn."
    )
    target: str = Field(
        description="The assistant turn to learn: a rationale ending in 'Conclusion: YES|NO'."
    )
    weight: float = Field(1.0, gt=0, description="Loss weight (severity x1..x4 for repair examples).")
    source: str | None = Field(None, description="file:line the record came from, for messages; not hashed.")


def label_target(label: str) -> str:
    """The label-only target text."""
    return f"Conclusion: {label}"


def data_sha256(records: Iterable[TrainRecord]) -> str:
    """sha256 of the records' content (id, messages, target, weight), in order; ``source`` is left out."""
    h = hashlib.sha256()
    for r in records:
        row = {"id": r.id, "messages": r.messages, "target": r.target, "weight": r.weight}
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def expand_oversampled(records: Sequence[TrainRecord]) -> list[TrainRecord]:
    """The paper's weighting: an example with integer weight k becomes k copies of weight 1.

    Raises:
        DataError: a weight is not a whole number.
    """
    out: list[TrainRecord] = []
    for r in records:
        if r.weight != int(r.weight):
            where = r.source or f"id {r.id!r}"
            raise DataError(
                f"{where}: weight {r.weight} is not a whole number; weighting 'oversample' repeats an "
                "example k times, so use integer weights or weighting 'loss'"
            )
        out.extend(r.model_copy(update={"weight": 1.0}) for _ in range(int(r.weight)))
    return out


def load_prepared_examples(prepared: Path) -> dict[str, Example]:
    """Every example of a prepared data directory, by id (all splits present).

    Raises:
        DataError: the directory holds no split file, or a line is invalid.
    """
    from dartkit.data.jsonl import read_examples

    prepared = Path(prepared)
    files = [prepared / f"{s}.jsonl" for s in SPLITS if (prepared / f"{s}.jsonl").is_file()]
    if not files:
        raise DataError(
            f"{prepared}: no split files (train/audit/val/test.jsonl) here; run `dartkit data prepare --out {prepared}`"
        )
    by_id: dict[str, Example] = {}
    for f in files:
        for e in read_examples(f):
            by_id[e.id] = e
    return by_id


def _row_weight(row: Mapping[str, Any], weights_from: str | None, where: str) -> float | None:
    """The row's weight from ``weights_from`` (None when the row lacks the field)."""
    if weights_from is None:
        return None
    if weights_from not in row or row[weights_from] is None:
        return None
    value = row[weights_from]
    # bool is an int subclass; a weight of True is a mistake, not 1.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise DataError(f"{where}: field {weights_from}: expected a positive number, got {value!r}")
    return float(value)


def _check_messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field messages: expected a non-empty list of {{role, content}} objects")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise DataError(
                f"{where}: field messages.{i}: expected an object with exactly 'role' and 'content'"
            )
        if m["role"] not in _ROLES or not isinstance(m["content"], str):
            raise DataError(
                f"{where}: field messages.{i}: role must be system/user/assistant and content a string"
            )
    if value[-1]["role"] != "user":
        raise DataError(
            f"{where}: field messages: the prompt must end with a user turn (the target is the assistant's answer)"
        )
    return value


def _required_str(row: Mapping[str, Any], field: str, where: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {field}: expected a non-empty string, got {value!r}")
    return value


def read_records(
    path: Path,
    examples: Mapping[str, Example] | None = None,
    policy: Policy = "off",
    weights_from: str | None = None,
) -> tuple[list[TrainRecord], int]:
    """Read a distillation file or a file of training records.

    Args:
        path: JSONL; rows ``{id, accepted, text[, messages]}`` (distillation; rejected rows are
            skipped) or ``{id, messages, target[, weight]}`` (training records).
        examples: Prepared examples by id, to rebuild the prompt of rows without ``messages``.
        policy: Explanation policy for rebuilt prompts.
        weights_from: Row field holding the loss weight.

    Returns:
        (records, number of rows that had the ``weights_from`` field).

    Raises:
        DataError: naming ``file:line`` and the field.
    """
    records: list[TrainRecord] = []
    weighted = 0
    for line, row in iter_json_lines(read_text(path), str(path)):
        where = f"{path}:{line}"
        rid = _required_str(row, "id", where)
        if "accepted" in row:
            if not isinstance(row["accepted"], bool):
                raise DataError(f"{where}: field accepted: expected true or false, got {row['accepted']!r}")
            if not row["accepted"]:
                continue
            target = _required_str(row, "text", where)
            if parse_conclusion(target) is None:
                raise DataError(
                    f"{where}: field text: accepted rationale of {rid!r} has no 'Conclusion: YES|NO' line"
                )
            default_weight = 1.0
        elif "target" in row:
            target = _required_str(row, "target", where)
            default_weight = row.get("weight", 1.0)
        else:
            raise DataError(
                f"{where}: expected a distillation row (id, accepted, text) or a training record "
                "(id, messages, target); this row has neither 'accepted' nor 'target'"
            )
        if "messages" in row:
            messages = _check_messages(row["messages"], where)
        elif examples is None:
            raise DataError(
                f"{where}: row {rid!r} has no 'messages'; pass the prepared data directory (--prepared DIR) "
                "so its prompt can be rebuilt"
            )
        elif rid not in examples:
            raise DataError(f"{where}: field id: {rid!r} is not in the prepared data")
        else:
            messages = classification_messages(examples[rid], policy)
        weight = _row_weight(row, weights_from, where)
        weighted += weight is not None
        try:
            records.append(
                TrainRecord(
                    id=rid,
                    messages=messages,
                    target=target,
                    weight=default_weight if weight is None else weight,
                    source=where,
                )
            )
        except ValidationError as e:
            err = e.errors()[0]
            raise DataError(f"{where}: field {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return records, weighted


def read_label_only(
    path: Path, policy: Policy = "off", weights_from: str | None = None
) -> tuple[list[TrainRecord], int]:
    """Label-only records from prepared ``Example`` rows: target ``Conclusion: YES|NO``.

    Returns:
        (records, number of rows that had the ``weights_from`` field).

    Raises:
        DataError: naming ``file:line`` and the field.
    """
    records: list[TrainRecord] = []
    weighted = 0
    for line, row in iter_json_lines(read_text(path), str(path)):
        where = f"{path}:{line}"
        try:
            example = Example.model_validate(row)
        except ValidationError as e:
            err = e.errors()[0]
            raise DataError(f"{where}: field {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        weight = _row_weight(row, weights_from, where)
        weighted += weight is not None
        records.append(
            TrainRecord(
                id=example.id,
                messages=classification_messages(example, policy),
                target=label_target(example.label),
                weight=1.0 if weight is None else weight,
                source=where,
            )
        )
    return records, weighted


def load_training_records(
    data: Sequence[Path],
    prepared: Path | None = None,
    label_only: bool = False,
    policy: Policy = "off",
    weights_from: str | None = None,
) -> list[TrainRecord]:
    """All training records of a run, in file order.

    Args:
        data: Training files (see the module docstring for the row formats).
        prepared: Prepared data directory (prompts for rows without messages; with
            ``label_only`` and no files, its ``train.jsonl`` is the data).
        label_only: Build ``Conclusion: YES|NO`` targets from Example rows.
        policy: Explanation policy for rebuilt prompts.
        weights_from: Row field holding the loss weight.

    Raises:
        DataError: no data given, no usable row, a bad row, or ``weights_from`` in no row.
    """
    files = [Path(p) for p in data]
    if label_only and not files:
        if prepared is None:
            raise DataError(
                "label-only training needs --data FILE or --prepared DIR (its train.jsonl is used)"
            )
        files = [Path(prepared) / "train.jsonl"]
        if not files[0].is_file():
            raise DataError(f"{files[0]}: no such file; run `dartkit data prepare --out {prepared}` first")
    if not files:
        raise DataError("no training data: pass --data FILE (a distillation teacher.jsonl), or --label-only")
    examples = None
    if prepared is not None and not label_only:
        examples = load_prepared_examples(Path(prepared))
    records: list[TrainRecord] = []
    weighted = 0
    for f in files:
        if label_only:
            got, w = read_label_only(f, policy, weights_from)
        else:
            got, w = read_records(f, examples, policy, weights_from)
        records.extend(got)
        weighted += w
    if not records:
        names = ", ".join(map(str, files))
        raise DataError(f"{names}: no usable training rows (distillation rows need accepted: true)")
    if weights_from is not None and weighted == 0:
        names = ", ".join(map(str, files))
        raise DataError(f"{names}: no row has the field {weights_from!r} named by --weights-from")
    return records
