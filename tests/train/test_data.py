"""Training-data loaders: distillation rows, label-only targets, weights, and errors naming file:line."""

from __future__ import annotations

import json

import pytest

from dartkit.data.demo import load_demo_suite
from dartkit.data.jsonl import write_jsonl
from dartkit.errors import DataError
from dartkit.prompts import classification_messages
from dartkit.train.data import data_sha256, expand_oversampled, load_training_records

RATIONALE = "Group membership is irrelevant to this question.\nConclusion: NO"


@pytest.fixture()
def prepared(tmp_path):
    examples = load_demo_suite()
    out = tmp_path / "data"
    write_jsonl(out / "train.jsonl", examples[:6])
    write_jsonl(out / "test.jsonl", examples[6:10])
    return out, examples[:10]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_teacher_rows_keep_accepted_ones_and_rebuild_prompts_from_any_split(prepared, tmp_path):
    data_dir, examples = prepared
    teacher = write_rows(
        tmp_path / "teacher.jsonl",
        [
            {"id": examples[0].id, "accepted": True, "text": RATIONALE, "qc": "ok"},
            {"id": examples[1].id, "accepted": False, "text": "no conclusion", "qc": "format"},
            {"id": examples[7].id, "accepted": True, "text": RATIONALE},  # a test-split id (repair data)
        ],
    )
    records = load_training_records([teacher], prepared=data_dir, policy="on")
    assert [r.id for r in records] == [examples[0].id, examples[7].id]
    assert records[0].messages == classification_messages(examples[0], "on")
    assert records[0].target == RATIONALE and records[0].weight == 1.0
    assert records[0].source == f"{teacher}:1"


def test_rows_with_messages_need_no_prepared_dir(tmp_path):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    path = write_rows(
        tmp_path / "r.jsonl",
        [
            {"id": "a", "accepted": True, "text": RATIONALE, "messages": msgs},
            {"id": "b", "messages": msgs, "target": "Conclusion: YES", "weight": 2},
        ],
    )
    records = load_training_records([path])
    assert [(r.id, r.target, r.weight) for r in records] == [
        ("a", RATIONALE, 1.0),
        ("b", "Conclusion: YES", 2.0),
    ]


def test_label_only_targets_are_the_conclusion_line(prepared):
    data_dir, examples = prepared
    records = load_training_records([], prepared=data_dir, label_only=True)
    assert len(records) == 6
    for record, example in zip(records, examples[:6], strict=True):
        assert record.target == f"Conclusion: {example.label}"
        assert record.messages == classification_messages(example)
    assert {r.target for r in records} <= {"Conclusion: YES", "Conclusion: NO"}


def test_weights_from_a_field(prepared, tmp_path):
    data_dir, examples = prepared
    rows = [
        {"id": examples[0].id, "accepted": True, "text": RATIONALE, "severity_weight": 3},
        {"id": examples[1].id, "accepted": True, "text": RATIONALE},  # distillation row: weight 1
    ]
    path = write_rows(tmp_path / "t.jsonl", rows)
    records = load_training_records([path], prepared=data_dir, weights_from="severity_weight")
    assert [r.weight for r in records] == [3.0, 1.0]
    assert [r.weight for r in expand_oversampled(records)] == [1.0] * 4
    with pytest.raises(DataError, match="no row has the field 'severity'"):
        load_training_records([path], prepared=data_dir, weights_from="severity")
    rows[0]["severity_weight"] = "high"
    write_rows(path, rows)
    with pytest.raises(DataError, match=r"t\.jsonl:1: field severity_weight: expected a positive number"):
        load_training_records([path], prepared=data_dir, weights_from="severity_weight")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"accepted": True, "text": RATIONALE}, r"bad\.jsonl:2: field id"),
        ({"id": "X", "accepted": "yes", "text": RATIONALE}, r"bad\.jsonl:2: field accepted"),
        (
            {"id": "X", "accepted": True, "text": "No conclusion here."},
            r"bad\.jsonl:2: field text: .*Conclusion",
        ),
        (
            {"id": "nope", "accepted": True, "text": RATIONALE},
            r"bad\.jsonl:2: field id: 'nope' is not in the prepared",
        ),
        ({"id": "X", "question": "?"}, r"bad\.jsonl:2: expected a distillation row"),
        (
            {"id": "X", "target": "Conclusion: NO", "messages": [{"role": "assistant", "content": "hi"}]},
            r"bad\.jsonl:2: field messages: the prompt must end with a user turn",
        ),
        (
            {
                "id": "X",
                "target": "Conclusion: NO",
                "weight": -1,
                "messages": [{"role": "user", "content": "q"}],
            },
            r"bad\.jsonl:2: field weight",
        ),
    ],
)
def test_bad_rows_are_reported_with_file_line_and_field(prepared, tmp_path, row, message):
    data_dir, examples = prepared
    good = {"id": examples[0].id, "accepted": True, "text": RATIONALE}
    row = {k: (examples[0].id if v == "X" else v) for k, v in row.items()}
    path = write_rows(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DataError, match=message):
        load_training_records([path], prepared=data_dir)


def test_missing_prompt_source_and_empty_data_are_explained(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", [{"id": "a", "accepted": True, "text": RATIONALE}])
    with pytest.raises(DataError, match="--prepared DIR"):
        load_training_records([path])
    write_rows(path, [{"id": "a", "accepted": False, "text": "x"}])
    with pytest.raises(DataError, match="no usable training rows"):
        load_training_records([path])  # rejected rows need no prompt
    with pytest.raises(DataError, match="no training data"):
        load_training_records([])
    (tmp_path / "broken.jsonl").write_text('{"id": "a"\n')
    with pytest.raises(DataError, match=r"broken\.jsonl:1: malformed JSON"):
        load_training_records([tmp_path / "broken.jsonl"], label_only=True)


def test_data_hash_follows_content_not_location(prepared, tmp_path):
    data_dir, examples = prepared
    rows = [{"id": examples[0].id, "accepted": True, "text": RATIONALE}]
    a = load_training_records([write_rows(tmp_path / "a.jsonl", rows)], prepared=data_dir)
    b = load_training_records([write_rows(tmp_path / "b.jsonl", rows)], prepared=data_dir)
    assert data_sha256(a) == data_sha256(b)
    rows[0]["text"] = RATIONALE.replace("irrelevant", "not relevant")
    c = load_training_records([write_rows(tmp_path / "c.jsonl", rows)], prepared=data_dir)
    assert data_sha256(a) != data_sha256(c)
