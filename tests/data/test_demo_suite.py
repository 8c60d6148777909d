"""Upstream-format JSONL (the demo suite's format) goes through the same conversion as the pickles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dartkit.data.demo as demo
from dartkit.data.demo import load_demo_suite, read_upstream_jsonl
from dartkit.data.wang2025 import load_benchmark_file
from dartkit.errors import DataError


def _write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_same_examples_as_the_pickle_path(tmp_path: Path, raw_pkl_dir: Path) -> None:
    from_pickle = [e for e in load_benchmark_file(raw_pkl_dir / "N3_1k.pkl")]
    diff, equal = (from_pickle[:1000], from_pickle[1000:])
    picked = diff[:3] + equal[:3]
    rows = []
    for e in picked:
        scenario_id = int(e.scenario_key.rsplit(":", 1)[1])
        index = int(e.id.rsplit("-", 1)[1])
        rows.append(
            {
                "benchmark": "N3",
                "condition": e.condition,
                "index": index,
                "question": e.question,
                "answer": e.upstream_answer,
                "scenario_id": scenario_id,
            }
        )
    path = _write_lines(tmp_path / "demo.jsonl", rows)
    assert read_upstream_jsonl(path) == picked


def _row(**fields) -> dict:
    row = {
        "benchmark": "D1",
        "condition": "equal",
        "index": 0,
        "question": "Which is larger? (a) A (b) B (c) Both are about equal",
        "answer": 2,
        "scenario_id": 5,
    }
    row.update(fields)
    return row


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ({"answer": 0}, r":2, field answer: expected 2 for equal items of D1, got 0"),
        ({"benchmark": "X9"}, r":2, field benchmark"),
        ({"condition": "same"}, r":2, field condition"),
        ({"index": -1}, r":2, field index"),
        ({"question": "no options"}, r":2, field question"),
        ({"index": 0}, r":2, field index: id D1-equal-0000 already used on line 1"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, bad: dict, pattern: str) -> None:
    path = _write_lines(
        tmp_path / "demo.jsonl", [_row(), _row(index=1, **bad) if "index" not in bad else _row(**bad)]
    )
    with pytest.raises(DataError, match=pattern) as info:
        read_upstream_jsonl(path)
    assert str(info.value).startswith(f"{path}:2")


def test_missing_field(tmp_path: Path) -> None:
    row = _row()
    del row["scenario_id"]
    path = _write_lines(tmp_path / "demo.jsonl", [row])
    with pytest.raises(DataError, match=r":1, field scenario_id: missing"):
        read_upstream_jsonl(path)


def test_missing_resource_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "DEMO_SUITE_RESOURCE", "no_such_suite.jsonl")
    with pytest.raises(DataError, match="no_such_suite.jsonl is missing"):
        load_demo_suite()


def test_packaged_demo_suite_loads() -> None:
    if not (Path(demo.__file__).parent / demo.DEMO_SUITE_RESOURCE).is_file():
        pytest.skip("demo_suite.jsonl is not written yet")
    examples = load_demo_suite()
    assert examples
    assert len({e.id for e in examples}) == len(examples)
    assert {e.label for e in examples} == {"YES", "NO"}
