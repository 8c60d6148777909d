"""Reading users' own Example JSONL and writing JSONL atomically."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from dartkit.data.jsonl import read_examples, write_json, write_jsonl, write_text
from dartkit.errors import DataError
from dartkit.records import Example


def _example(i: int, **extra) -> Example:
    return Example(
        id=f"mine-{i}",
        benchmark="MINE",
        category="normative",
        label="YES" if i % 2 else "NO",
        question=f"Question {i}? (a) x (b) y (c) z",
        scenario_key=f"MINE:{i // 2}",
        **extra,
    )


def _line(**fields) -> str:
    base = {
        "id": "u-1",
        "benchmark": "U",
        "category": "normative",
        "label": "NO",
        "question": "Q?",
        "scenario_key": "U:1",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


def test_round_trip_keeps_extra_fields(tmp_path: Path) -> None:
    records = [_example(i, upstream_answer=i, note="é ü") for i in range(4)]
    path = tmp_path / "nested" / "mine.jsonl"
    write_jsonl(path, records)
    assert read_examples(path) == records
    assert read_examples(path)[1].upstream_answer == 1
    assert [p.name for p in path.parent.iterdir()] == ["mine.jsonl"]  # no temp files left behind


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text("\n" + _line() + "\n   \n" + _line(id="u-2") + "\n\n")
    assert [e.id for e in read_examples(path)] == ["u-1", "u-2"]


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(_line() + "\n\n{not json\n")
    with pytest.raises(DataError, match=rf"^{path}:3: malformed JSON"):
        read_examples(path)


def test_non_object_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=rf"^{path}:1: expected a JSON object, got list"):
        read_examples(path)


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        (_line(label="MAYBE"), r":2: field label: Input should be 'YES' or 'NO'"),
        (_line(scenario_key=None), r":2: field scenario_key: Field required"),
        (_line(choices={"a": 1}), r":2: field choices\.a: Input should be a valid string"),
        (_line(split="dev"), r":2: field split:"),
    ],
)
def test_validation_errors_name_file_line_and_field(tmp_path: Path, line: str, pattern: str) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(_line() + "\n" + line + "\n")
    with pytest.raises(DataError, match=pattern) as info:
        read_examples(path)
    assert str(info.value).startswith(f"{path}:2:")


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "absent.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="not UTF-8"):
        read_examples(path)


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, [_example(0)])
    before = path.read_bytes()

    def broken():
        yield _example(1)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def test_write_into_unwritable_place_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot write"):
        write_jsonl(blocker / "train.jsonl", [_example(0)])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask_like_any_other_tool(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        write_jsonl(tmp_path / "a.jsonl", [_example(1)])
        write_json(tmp_path / "b.json", {"x": 1})
        write_text(tmp_path / "b.json", "over an existing file\n")
    finally:
        os.umask(previous)
    for name in ("a.jsonl", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
