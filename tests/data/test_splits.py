"""Scenario-grouped, stratified splits; per-cell subsampling; the fixed interleaved order."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from dartkit.data.splits import (
    SPLITS,
    check_disjoint_scenarios,
    split_examples,
    stratified_order,
    subsample_per_cell,
)
from dartkit.errors import DataError
from dartkit.records import Example

# Benchmarks whose cells have hundreds of scenario groups; D3 and N4 have ~66 large ones.
MANY_SCENARIOS = ("D1", "D2", "D4", "N2", "N3")


def _splits_by_key(examples) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for e in examples:
        found[e.scenario_key].add(e.split)
    return found


@pytest.fixture(scope="module")
def default_split(real_suite):
    examples, _, _ = real_suite
    return split_examples(examples)


def test_no_scenario_key_in_two_splits(default_split) -> None:
    assert all(len(splits) == 1 for splits in _splits_by_key(default_split).values())
    assert {e.split for e in default_split} == set(SPLITS)


def test_proportions_per_benchmark_and_label(default_split) -> None:
    counts = Counter((e.benchmark, e.label, e.split) for e in default_split)
    for (benchmark, label), total in Counter((e.benchmark, e.label) for e in default_split).items():
        # Cells of many small scenarios hit 60/20/20 almost exactly; D3/N4 move in groups of ~16.
        tolerance = 0.01 if benchmark in MANY_SCENARIOS else 0.03
        for split, ratio in zip(SPLITS, (0.6, 0.2, 0.2), strict=True):
            share = counts[(benchmark, label, split)] / total
            assert abs(share - ratio) <= tolerance, (benchmark, label, split, share)


def test_same_seed_same_split_other_seed_differs(real_suite, default_split) -> None:
    examples, _, _ = real_suite
    again = split_examples(examples, seed=42)
    assert [(e.id, e.split) for e in again] == [(e.id, e.split) for e in default_split]
    other = split_examples(examples, seed=7)
    changed = {e.benchmark for e, o in zip(default_split, other, strict=True) if e.split != o.split}
    assert changed == {"D1", "D2", "D3", "D4", "N2", "N3", "N4"}


def test_input_order_kept_and_inputs_untouched(real_suite, default_split) -> None:
    examples, _, _ = real_suite
    assert [e.id for e in default_split] == [e.id for e in examples]
    assert all(e.split is None for e in examples)


def test_per_cell_subsamples_whole_scenarios(real_suite) -> None:
    examples, _, _ = real_suite
    sampled = split_examples(examples, seed=3, per_cell=100)
    assert Counter((e.benchmark, e.label) for e in sampled) == {
        (b, label): 100 for b in ("D1", "D2", "D3", "D4", "N2", "N3", "N4") for label in ("YES", "NO")
    }
    assert all(len(s) == 1 for s in _splits_by_key(sampled).values())
    full_size = Counter(e.scenario_key for e in examples)
    kept_size = Counter(e.scenario_key for e in sampled)
    # Only the top-up at the end of each cell may take part of a group.
    partial = Counter(key.split(":")[0] for key, n in kept_size.items() if n < full_size[key])
    assert all(n <= 2 for n in partial.values()), partial
    assert sampled != split_examples(examples, seed=4, per_cell=100)


def _twin_examples(n_scenarios: int, per_scenario: int = 1) -> list[Example]:
    """Diff/equal twins sharing a key, as in D3/N4, with a few singletons of another benchmark."""
    examples = []
    for s in range(n_scenarios):
        for condition, label in (("diff", "YES"), ("equal", "NO")):
            for k in range(per_scenario):
                examples.append(
                    Example(
                        id=f"T-{condition}-{s:03d}-{k}",
                        benchmark="T",
                        category="normative",
                        label=label,
                        question="q",
                        scenario_key=f"T:{s}",
                    )
                )
    return examples


def test_twins_stay_together_and_cells_stay_balanced() -> None:
    examples = _twin_examples(50, per_scenario=3)
    result = split_examples(examples, ratios=(0.6, 0.2, 0.2), seed=1)
    assert all(len(s) == 1 for s in _splits_by_key(result).values())
    counts = Counter((e.label, e.split) for e in result)
    assert counts[("YES", "train")] == counts[("NO", "train")] == 90
    assert counts[("YES", "val")] == counts[("YES", "test")] == 30


def test_per_cell_keeps_twins_whole_when_they_fit() -> None:
    examples = _twin_examples(40)
    kept = subsample_per_cell(examples, per_cell=10, seed=0)
    sizes = Counter(e.scenario_key for e in kept)
    assert len(kept) == 20 and set(sizes.values()) == {2}


def test_per_cell_larger_than_cell_keeps_everything() -> None:
    examples = _twin_examples(5)
    assert subsample_per_cell(examples, per_cell=100) == examples


@pytest.mark.parametrize(
    ("ratios", "pattern"),
    [((0.5, 0.5), "three numbers"), ((0.7, 0.2, 0.2), "sum to 1"), ((1.2, -0.1, -0.1), "non-negative")],
)
def test_bad_ratios(ratios, pattern) -> None:
    with pytest.raises(DataError, match=pattern):
        split_examples(_twin_examples(3), ratios=ratios)


def test_zero_ratio_split_stays_empty() -> None:
    result = split_examples(_twin_examples(30), ratios=(0.8, 0.2, 0.0))
    assert Counter(e.split for e in result) == {"train": 48, "val": 12}


def test_leak_check_catches_a_shared_key() -> None:
    a, b = _twin_examples(1)
    with pytest.raises(DataError, match=r"scenario leak: 1 scenario key\(s\) in more than one split: T:0"):
        check_disjoint_scenarios(
            [a.model_copy(update={"split": "train"}), b.model_copy(update={"split": "test"})]
        )


def test_stratified_order_round_robin(default_split) -> None:
    test = [e for e in default_split if e.split == "test"]
    ordered = stratified_order(test)
    assert sorted(e.id for e in ordered) == sorted(e.id for e in test)
    first = ordered[:14]
    assert [(e.benchmark, e.label) for e in first] == [
        (b, label) for b in ("D1", "D2", "D3", "D4", "N2", "N3", "N4") for label in ("YES", "NO")
    ]
    per_cell = defaultdict(list)
    for e in ordered:
        per_cell[(e.benchmark, e.label)].append(e.id)
    assert all(ids == sorted(ids) for ids in per_cell.values())
    assert stratified_order(list(reversed(test))) == ordered
