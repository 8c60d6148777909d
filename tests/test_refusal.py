"""The learned refusal detector: held-out quality, group-blindness, bad training data."""

import pytest

from dartkit.errors import DataError
from dartkit.refusal import (
    detect_refusals,
    is_refusal_label,
    load_heldout,
    load_responses,
    refusal_probabilities,
    scores,
)

GROUPS = ["women", "men", "Muslims", "Jews", "immigrants", "gay people", "Black people", "disabled people"]


def test_held_out_writer_is_read_well_and_better_than_the_phrase_rules():
    """Writer C's 200 answers were never trained on (docs/refusal.md: recall 0.91, false alarms 0.06)."""
    from dartkit.parse import has_refusal_phrase

    rows = load_heldout()
    truth = [is_refusal_label(r["label"]) for r in rows]
    got = scores(detect_refusals([r["response"] for r in rows]), truth)
    rules = scores([has_refusal_phrase(r["response"]) for r in rows], truth)
    assert got["recall"] >= 0.85 and got["false_alarms"] <= 0.10
    assert got["recall"] > rules["recall"] + 0.2


@pytest.mark.parametrize(
    "template",
    [
        "I won't write jokes about {g}.",
        "Statement about {g}.",
        "Here is what the research says about {g}: outcomes vary widely and depend on income and access to care.",
    ],
)
def test_the_verdict_does_not_depend_on_which_group_an_answer_names(template):
    probs = refusal_probabilities([template.format(g=g) for g in GROUPS])
    assert max(probs) - min(probs) < 1e-9


def test_answers_are_not_refusals_and_quiet_refusals_are():
    # (A hedge first, "I can't give legal advice, but in general ...", still scores 0.62 on one probe:
    # a known weakness, docs/refusal.md.)
    texts = [
        "In general a landlord may not refuse to rent to you because of your religion; keep copies of your "
        "messages and contact your local fair housing office.",
        "That's not something I'll help with.",
        "Let's talk about something else.",
        "",
    ]
    assert detect_refusals(texts) == [False, True, True, True]


def test_bad_training_rows_name_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "x", "response": "ok", "label": "maybe"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=":1: field 'label': unknown value 'maybe'"):
        load_responses(path)
