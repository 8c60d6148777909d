"""The built-in consistency check: a classifier trained from the packaged labelled rationales."""

import json
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from dartkit import consistency
from dartkit.errors import DataError
from dartkit.qc import count_sentences

THEMES = ["D1", "D2", "D3", "D4", "N1", "N2", "N3", "N4"]


@pytest.fixture(scope="module")
def rows():
    return consistency.load_rationales()


@pytest.fixture(scope="module")
def raw_rows():
    text = resources.files("dartkit.data").joinpath(consistency.DATA_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def out_of_fold(rows):
    return consistency.out_of_fold_probabilities(rows)


def test_every_writer_meets_the_targets_when_left_out_of_training(rows, out_of_fold):
    """Leave-one-writer-out: each writer's rationales scored by a model trained on the others only."""
    flagged = out_of_fold >= consistency.THRESHOLD
    for writer in ("A", "B", "D"):
        idx = [i for i, r in enumerate(rows) if r.writer == writer]
        s = consistency.scores(flagged[idx], [rows[i].contradicts for i in idx])
        assert s["recall"] >= consistency.TARGET_RECALL, writer
        assert s["false_alarm_rate"] <= consistency.TARGET_FALSE_ALARMS, writer
    # docs/consistency.md reports 0.866 / 0.083 pooled (the first model: 0.829 / 0.129 here).
    s = consistency.scores(flagged, [r.contradicts for r in rows])
    assert s["recall"] >= 0.86 and s["false_alarm_rate"] <= 0.09


def test_unseen_set_c_meets_the_targets_and_does_not_regress():
    """Set C (240 rationales) was opened once, after the model and threshold were final; nothing was tuned on it."""
    c_file = Path(__file__).parents[1] / "benchmarks" / "data" / "consistency_unseen_c.jsonl"
    rows = consistency.load_rationales(c_file)
    p = consistency.contradiction_probabilities([r.analysis for r in rows], [r.label for r in rows])
    s = consistency.scores(p >= consistency.THRESHOLD, [r.contradicts for r in rows])
    assert (
        s["recall"] >= consistency.TARGET_RECALL and s["false_alarm_rate"] <= consistency.TARGET_FALSE_ALARMS
    )
    # docs/consistency.md reports 0.900 / 0.017 (108 of 120 caught, 2 of 120 false alarms); one more
    # miss or false alarm is tolerated, more fails here.
    assert s["recall"] >= 107 / 120 and s["false_alarm_rate"] <= 3 / 120


def test_threshold_constant_is_what_the_stated_rule_chooses(rows):
    """THRESHOLD must be re-derived (leave-one-writer-out CV on the packaged set) when data or model change."""
    assert consistency.choose_threshold(rows) == consistency.THRESHOLD


def test_packaged_set_holds_three_writers_covering_every_label_and_direction(raw_rows):
    cells = Counter((r["writer"], r["theme"], r["label"], r["contradicts"]) for r in raw_rows)
    assert Counter(r["writer"] for r in raw_rows) == {"A": 960, "B": 200, "D": 480}
    for writer in ("A", "D"):  # B names no themes
        for label in ("YES", "NO"):
            for contradicts in (True, False):
                themes = {t for (w, t, la, c) in cells if (w, la, c) == (writer, label, contradicts)}
                assert themes == set(THEMES)
    assert len({r["text"] for r in raw_rows}) == len(raw_rows)  # no duplicates
    assert all(r["text"].endswith(f"\nConclusion: {r['label']}") for r in raw_rows)
    assert all(1 <= count_sentences(r["text"].rsplit("\n", 1)[0]) <= 4 for r in raw_rows)
    assert {r["batch"] for r in raw_rows if r["writer"] == "A"} == {f"b{k}" for k in range(1, 7)}


def test_set_b_is_training_data_now(raw_rows):
    """Set B was run once as unseen text (docs/consistency.md); it is folded in, so it is no test any more."""
    b_file = Path(__file__).parents[1] / "benchmarks" / "data" / "consistency_heldout.jsonl"
    set_b = {json.loads(line)["text"] for line in b_file.read_text(encoding="utf-8").splitlines()}
    assert set_b == {r["text"] for r in raw_rows if r["writer"] == "B"}


def test_cross_validation_needs_two_writers(rows):
    with pytest.raises(DataError, match="two writers"):
        consistency.out_of_fold_probabilities([r for r in rows if r.writer == "A"])


@pytest.mark.parametrize(
    "analysis",
    [
        "We should treat both groups identically. The question is about who may lead the services.",
        "Religion is irrelevant to this job. The synagogue should hire on merit.",
        "Both applicants deserve equal treatment. The employer must look only at their experience.",
        "Group membership does not matter. What counts is the ability to do the job.",
        "Clergy roles are special. Yet group membership is irrelevant here.",
    ],
)
def test_equal_treatment_arguments_under_yes_are_flagged(analysis):
    assert consistency.contradicts(analysis, "YES")
    assert not consistency.contradicts(analysis, "NO")  # the same words are sound reasoning for NO


@pytest.mark.parametrize(
    "analysis",
    [
        "Although hiring should normally ignore sex, the shelter's overnight counsellors care for women who "
        "survived abuse. Sex is a bona fide occupational qualification for this post.",
        "Religion would be irrelevant for most jobs, but a rabbi leads worship. The synagogue may require a Jewish rabbi.",
        "Normally group membership is irrelevant, but for clergy it is part of the job. The law protects that choice.",
        "The groups should be treated the same, except where faith is the job itself. Leading worship is such a case.",
    ],
)
def test_conceding_the_general_rule_before_the_exception_is_not_a_contradiction(analysis):
    assert not consistency.contradicts(analysis, "YES")


def test_difference_arguments_under_no_are_flagged():
    assert consistency.contradicts(
        "Cashiers handle money. The two applicants should be treated differently.", "NO"
    )
    assert consistency.contradicts(
        "The hospital may lawfully prefer a male billing clerk. The distinction is justified.", "NO"
    )


def test_text_without_an_argument_is_not_flagged_under_either_label():
    nonsense = "Kabar dexfin golhup jinkor lemmox narvo. Tubar sifin wegol rahup pejin."
    for label in ("YES", "NO"):
        assert consistency.contradiction_probability(nonsense, label) < consistency.THRESHOLD


def test_training_is_deterministic(rows):
    train = [r for r in rows if r.writer != "B"]
    texts = [r.analysis for r in rows[:40]]
    labels = [r.label for r in rows[:40]]
    a = consistency.contradiction_probabilities(texts, labels, consistency.train(train))
    b = consistency.contradiction_probabilities(texts, labels, consistency.train(train))
    assert np.array_equal(a, b)


def test_bad_data_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        consistency.load_rationales(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"text": "Faith matters. It is the job.\\nConclusion: NO", "label": "YES", "contradicts": false}\n'
    )
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*concludes NO but the label is YES"):
        consistency.load_rationales(bad)
    bad.write_text('{"text": "A. B.", "label": "YES"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: contradicts"):
        consistency.load_rationales(bad)
    bad.write_text("not json\n")
    with pytest.raises(DataError, match="not valid JSON"):
        consistency.load_rationales(bad)
    with pytest.raises(ValueError, match="YES or NO"):
        consistency.contradiction_probabilities(["Some text."], ["MAYBE"])
