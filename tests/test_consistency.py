"""The built-in consistency check: a classifier trained from the packaged labelled rationales."""

import json
import random
from collections import Counter
from importlib import resources

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


def test_heldout_part_meets_the_targets_and_does_not_regress(rows):
    heldout = [r for r in rows if r.split == "heldout"]
    p = consistency.contradiction_probabilities([r.analysis for r in heldout], [r.label for r in heldout])
    s = consistency.scores(p >= consistency.THRESHOLD, [r.contradicts for r in heldout])
    assert (
        s["recall"] >= consistency.TARGET_RECALL and s["false_alarm_rate"] <= consistency.TARGET_FALSE_ALARMS
    )
    # docs/consistency.md reports 0.958 / 0.025 / 0.975; a change that loses much of that fails here.
    assert s["recall"] >= 0.93 and s["false_alarm_rate"] <= 0.05 and s["precision"] >= 0.93


def test_threshold_constant_is_what_the_stated_rule_chooses(rows):
    """THRESHOLD must be re-derived (leave-one-theme-out CV on the training part) when data or model change."""
    assert consistency.choose_threshold([r for r in rows if r.split == "train"]) == consistency.THRESHOLD


def test_packaged_set_covers_every_theme_label_and_direction_in_both_splits(raw_rows):
    cells = Counter((r["split"], r["theme"], r["label"], r["contradicts"]) for r in raw_rows)
    for split in ("train", "heldout"):
        for label in ("YES", "NO"):
            for contradicts in (True, False):
                themes = {t for (s, t, la, c) in cells if (s, la, c) == (split, label, contradicts)}
                assert themes == set(THEMES) if split == "train" else len(themes) >= 6
    assert len({r["text"] for r in raw_rows}) == len(raw_rows) >= 500  # no duplicates
    assert all(r["text"].endswith(f"\nConclusion: {r['label']}") for r in raw_rows)
    assert all(2 <= count_sentences(r["text"].rsplit("\n", 1)[0]) <= 4 for r in raw_rows)


def test_heldout_split_is_whole_writing_batches_drawn_by_the_seeded_rule(raw_rows):
    """For each writing batch, two of the eight themes are held out: random.Random(f"2026:{batch}")."""
    for r in raw_rows:
        held = random.Random(f"2026:{r['batch']}").sample(THEMES, 2)
        assert r["split"] == ("heldout" if r["theme"] in held else "train")
    share = sum(r["split"] == "heldout" for r in raw_rows) / len(raw_rows)
    assert share == pytest.approx(0.25)


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
    train = [r for r in rows if r.split == "train"]
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
