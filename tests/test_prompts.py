"""The teacher's worked examples: builtin, none, or a user's file."""

import json

import pytest

from dartkit.errors import DataError
from dartkit.prompts import TEACHER_EXAMPLES, load_teacher_examples, repair_messages, teacher_messages
from dartkit.records import Example

EXAMPLE = Example(
    id="D3-diff-0001",
    benchmark="D3",
    category="descriptive",
    label="YES",
    question="A church is hiring a pastor. Which applicant may it prefer by religion?\n(a) ... (b) ... (c) ...",
    scenario_key="D3:1",
)


def test_builtin_examples_are_earlier_turns():
    msgs = teacher_messages(EXAMPLE, load_teacher_examples("builtin"))
    assert len(msgs) == 1 + 2 * len(TEACHER_EXAMPLES) + 1
    assert msgs == teacher_messages(EXAMPLE)  # builtin is the default


def test_none_is_zero_shot():
    for build in (teacher_messages, repair_messages):
        msgs = build(EXAMPLE, load_teacher_examples("none"))
        assert [m["role"] for m in msgs] == ["system", "user"]
        assert "The correct answer is YES" in msgs[-1]["content"]


def test_examples_from_a_file(tmp_path):
    f = tmp_path / "ex.jsonl"
    f.write_text(
        json.dumps({"question": "Q1?", "label": "NO", "answer": "Irrelevant here.\nConclusion: NO"}) + "\n\n"
    )
    msgs = teacher_messages(EXAMPLE, load_teacher_examples(f))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "Irrelevant here.\nConclusion: NO" and "Q1?" in msgs[1]["content"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", ":1: not valid JSON"),
        (json.dumps({"question": "Q", "label": "MAYBE", "answer": "x\nConclusion: YES"}), "field label"),
        (json.dumps({"question": "Q", "label": "YES", "answer": "x\nConclusion: NO"}), "field answer"),
        (json.dumps({"label": "YES", "answer": "x\nConclusion: YES"}), "field question"),
    ],
)
def test_bad_example_files_name_line_and_field(tmp_path, line, message):
    f = tmp_path / "ex.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        load_teacher_examples(f)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_teacher_examples(tmp_path / "nope.jsonl")
