"""Scenario- and twin-grouped, stratified splits; per-cell subsampling; the fixed interleaved order."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from dartkit.data.splits import (
    SPLITS,
    check_disjoint_groups,
    check_disjoint_scenarios,
    check_ratios,
    cross_split_twins,
    split_examples,
    split_groups,
    stratified_order,
    subsample_per_cell,
    twin_key,
    twin_merges,
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
        # Cells of many small groups hit 50/10/20/20 almost exactly; D3/N4 move in groups of ~16.
        tolerance = 0.01 if benchmark in MANY_SCENARIOS else 0.03
        for split, ratio in zip(SPLITS, (0.5, 0.1, 0.2, 0.2), strict=True):
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


def _word(n: int) -> str:
    """A distinct digit-free word per number (numbers are masked in twin keys)."""
    return "".join("abcdefghij"[int(d)] for d in f"{n:04d}")


def _twin_examples(n_scenarios: int, per_scenario: int = 1) -> list[Example]:
    """Diff/equal items sharing a scenario key, as in D3/N4; each scenario asks its own question."""
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
                        question=f"Scenario {_word(s)} {condition} {_word(k)}?",
                        scenario_key=f"T:{s}",
                    )
                )
    return examples


def _item(
    id: str, question: str, choices: dict[str, str] | None = None, scenario: str | None = None, **fields
) -> Example:
    return Example(
        **{
            "id": id,
            "benchmark": "D2",
            "category": "descriptive",
            "label": "YES",
            "question": question,
            "choices": choices or {},
            "scenario_key": scenario or f"D2:{id}",
            **fields,
        }
    )


def _mc(
    stem: str, a: str, b: str, c: str, *, first: str = "(a)", sep: str = "\n"
) -> tuple[str, dict[str, str]]:
    """An upstream-style question and its parsed options."""
    return f"{stem}{sep}{first} {a} (b) {b} (c) {c}", {"a": a, "b": b, "c": c}


OCCUPATION = (
    "In {year}, which of the following social groups was overrepresented among {job} by more than 10%?"
)


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
    [
        ((0.5, 0.5), r"four numbers \(train, audit, val, test\) or three \(train, val, test\), got 2"),
        ((0.5, 0.1, 0.1, 0.1, 0.2), "got 5"),
        ((0.7, 0.2, 0.2), "sum to 1"),
        ((0.5, 0.2, 0.2, 0.2), "sum to 1"),
        ((1.2, -0.1, -0.1), "non-negative"),
        ((0.5, float("nan"), 0.25, 0.25), "non-negative"),
    ],
)
def test_bad_ratios(ratios, pattern) -> None:
    with pytest.raises(DataError, match=pattern):
        split_examples(_twin_examples(3), ratios=ratios)


def test_three_ratios_mean_no_audit_split() -> None:
    assert check_ratios((0.6, 0.2, 0.2)) == (0.6, 0.0, 0.2, 0.2)
    assert check_ratios([0.5, 0.1, 0.2, 0.2]) == (0.5, 0.1, 0.2, 0.2)


def test_default_is_train_audit_val_test() -> None:
    assert SPLITS == ("train", "audit", "val", "test")
    result = split_examples(_twin_examples(50))
    assert Counter(e.split for e in result) == {"train": 50, "audit": 10, "val": 20, "test": 20}


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


# --- twins: the same question up to numbers, case, punctuation and option order ---------------------


def test_twin_key_ignores_year_case_punctuation_whitespace_and_option_order() -> None:
    base_q, base_c = _mc(
        OCCUPATION.format(year=2019, job="chiropractors"), "Asian", "White", "Neither social group"
    )
    variants = [
        _mc(OCCUPATION.format(year=2021, job="chiropractors"), "Asian", "White", "Neither social group"),
        _mc(
            OCCUPATION.format(year=2019, job="Chiropractors").upper(),
            "ASIAN",
            "WHITE",
            "NEITHER SOCIAL GROUP",
        ),
        _mc(
            OCCUPATION.format(year=2019, job="chiropractors").replace(",", " ;").replace("?", " ? "),
            "Asian!",
            "White",
            "Neither social-group",
            sep="   ",
        ),
        _mc(OCCUPATION.format(year=2019, job="chiropractors"), "White", "Asian", "Neither social group"),
        _mc(
            OCCUPATION.format(year=2019, job="chiropractors"),
            "Asian",
            "White",
            "Neither social group",
            first="(1)",
        ),
    ]
    key = twin_key(_item("x", base_q, base_c))
    assert key.startswith("D2|")
    for question, choices in variants:
        assert twin_key(_item("y", question, choices)) == key, question


@pytest.mark.parametrize(
    ("question", "choices"),
    [
        _mc(OCCUPATION.format(year=2019, job="dentists"), "Asian", "White", "Neither social group"),
        _mc(OCCUPATION.format(year=2019, job="chiropractors"), "Black", "White", "Neither social group"),
        _mc(OCCUPATION.format(year=2019, job="chiropractors"), "not Asian", "White", "Neither social group"),
        _mc(
            OCCUPATION.format(year=2019, job="chiropractors").replace("overrepresented", "underrepresented"),
            "Asian",
            "White",
            "Neither social group",
        ),
    ],
)
def test_twin_key_separates_different_questions(question: str, choices: dict[str, str]) -> None:
    q, c = _mc(OCCUPATION.format(year=2019, job="chiropractors"), "Asian", "White", "Neither social group")
    assert twin_key(_item("x", question, choices)) != twin_key(_item("y", q, c))


def test_twin_key_without_options_uses_the_question_and_the_benchmark() -> None:
    a = _item("a", "In 2019, were MEN over-represented?")
    b = _item("b", "in 2020 were men over represented")
    assert twin_key(a) == twin_key(b)
    assert twin_key(a) != twin_key(a.model_copy(update={"benchmark": "D3"}))
    assert twin_key(a) != twin_key(_item("c", "In 2019, were women over-represented?"))


def test_groups_are_the_union_of_scenario_and_twin_links() -> None:
    q19, c = _mc(OCCUPATION.format(year=2019, job="nurses"), "men", "women", "Neither social group")
    q20, c20 = _mc(OCCUPATION.format(year=2020, job="nurses"), "women", "men", "Neither social group")
    other_q, other_c = _mc(OCCUPATION.format(year=2020, job="pilots"), "men", "women", "Neither social group")
    items = [
        _item("a", q19, c, scenario="D2:s1"),
        _item("b", other_q, other_c, scenario="D2:s1", label="NO"),  # shares a scenario with a
        _item("c", q20, c20, scenario="D2:s2"),  # twin of a (year and option order)
        _item("d", other_q.replace("pilots", "bakers"), other_c, scenario="D2:s3"),  # unrelated
        _item("e", q19, c, scenario="D3:s4", benchmark="D3"),  # same text, other benchmark
    ]
    assert split_groups(items) == ["D2:s1", "D2:s1", "D2:s1", "D2:s3", "D3:s4"]
    assert twin_merges(items) == {"D2": 1, "D3": 0}


def _year_twin_suite(n_topics: int = 60) -> list[Example]:
    """Per topic: a 2019 question and its 2021 twin (options swapped, case changed) under other scenario ids,
    plus an unrelated question, as D2 has them."""
    items = []
    for t in range(n_topics):
        job = f"workers of kind {_word(t)}"
        q1, c1 = _mc(OCCUPATION.format(year=2019, job=job), "men", "women", "Neither social group")
        q2, c2 = _mc(OCCUPATION.format(year=2021, job=job.upper()), "Women", "Men", "Neither social group.")
        q3, c3 = _mc(OCCUPATION.format(year=2019, job=job), "Asian", "Black", "Neither social group")
        label = "YES" if t % 2 else "NO"
        items += [
            _item(f"D2-{t:03d}-2019", q1, c1, scenario=f"D2:2019-{t}", label=label),
            _item(f"D2-{t:03d}-2021", q2, c2, scenario=f"D2:2021-{t}", label=label),
            _item(f"D2-{t:03d}-other", q3, c3, scenario=f"D2:2019-{1000 + t}", label=label),
        ]
    return items


@pytest.mark.parametrize("seed", [0, 1, 2, 42])
def test_year_twins_land_in_one_split(seed: int) -> None:
    result = split_examples(_year_twin_suite(), seed=seed)
    by_id = {e.id: e.split for e in result}
    for t in range(60):
        assert by_id[f"D2-{t:03d}-2019"] == by_id[f"D2-{t:03d}-2021"], t
    assert cross_split_twins(result) == {}
    # Non-twins are not merged: the unrelated question of a topic is placed on its own.
    assert any(by_id[f"D2-{t:03d}-other"] != by_id[f"D2-{t:03d}-2019"] for t in range(60))
    assert twin_merges(result) == {"D2": 60}


def test_per_cell_keeps_year_twins_together() -> None:
    kept = subsample_per_cell(_year_twin_suite(), per_cell=40, seed=5)
    ids = {e.id for e in kept}
    assert len(kept) == 80
    pairs = [(f"D2-{t:03d}-2019" in ids, f"D2-{t:03d}-2021" in ids) for t in range(60)]
    # Whole groups while they fit; at most the last top-up of each cell may split one pair.
    assert sum(a != b for a, b in pairs) <= 2


def test_twin_leak_check_names_the_items() -> None:
    items = _year_twin_suite(1)
    placed = [
        items[0].model_copy(update={"split": "train"}),
        items[1].model_copy(update={"split": "test"}),
        items[2].model_copy(update={"split": "test"}),
    ]
    with pytest.raises(
        DataError, match=r"twin leak: 1 question\(s\) .*: D2-000-2019 \(train\) ~ D2-000-2021 \(test\)"
    ):
        check_disjoint_groups(placed)
    assert check_disjoint_scenarios is check_disjoint_groups
