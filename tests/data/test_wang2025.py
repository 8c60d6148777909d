"""Converting the upstream pickles into Examples, on the real files and on malformed ones."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from dartkit.data.wang2025 import US_SYSTEM_PROMPT, load_benchmark_dir, load_benchmark_file, parse_choices
from dartkit.errors import DataError

# Unique scenario ids per benchmark, diff / equal (shared/data/README.md).
README_SCENARIOS = {
    "D1": (1000, 1000),
    "D2": (1000, 1000),
    "D3": (66, 66),
    "D4": (419, 1000),
    "N2": (1000, 1000),
    "N3": (240, 142),
    "N4": (67, 67),
}


def test_present_absent_and_counts(real_suite) -> None:
    examples, present, absent = real_suite
    assert present == ["D1", "D2", "D3", "D4", "N2", "N3", "N4"]
    assert absent == ["N1"]
    counts = Counter((e.benchmark, e.label) for e in examples)
    assert counts == {(b, label): 1000 for b in present for label in ("YES", "NO")}
    assert len({e.id for e in examples}) == 14000


def test_scenario_key_counts_match_readme(real_suite) -> None:
    examples, present, _ = real_suite
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in examples:
        keys[(e.benchmark, e.label)].add(e.scenario_key)
    for benchmark, (n_diff, n_equal) in README_SCENARIOS.items():
        assert (len(keys[(benchmark, "YES")]), len(keys[(benchmark, "NO")])) == (n_diff, n_equal), benchmark
    # D3 and N4 equal items are twins of diff scenarios: they share keys.
    for benchmark in ("D3", "N4"):
        assert keys[(benchmark, "YES")] == keys[(benchmark, "NO")]
    # D2 shares the id namespace, so the 330 ids found in both lists are one scenario each.
    assert len(keys[("D2", "YES")] & keys[("D2", "NO")]) == 330
    # Elsewhere the same integer in diff and equal is a different scenario: no shared key.
    for benchmark in ("D1", "D4", "N2", "N3"):
        assert not keys[(benchmark, "YES")] & keys[(benchmark, "NO")], benchmark


def test_record_fields(real_suite) -> None:
    examples, _, _ = real_suite
    by_id = {e.id: e for e in examples}
    d3 = by_id["D3-equal-0064"]
    assert (d3.benchmark, d3.category, d3.label, d3.gold_choice) == ("D3", "descriptive", "NO", "c")
    assert d3.condition == "equal" and d3.upstream_answer == 2
    assert d3.system == US_SYSTEM_PROMPT
    n4 = by_id["N4-diff-0000"]
    assert n4.category == "normative" and n4.system is None
    assert n4.gold_choice == "ab"[n4.upstream_answer]
    assert n4.scenario_key.startswith("N4:0-[")
    assert by_id["D1-diff-0000"].scenario_key == "D1:diff:0"
    for e in examples:
        assert e.question.endswith(e.choices["c"])
        if e.label == "YES":
            assert e.gold_choice == "ab"[e.upstream_answer]
        else:
            assert e.gold_choice == "c"
            assert e.upstream_answer in ((2,) if e.benchmark.startswith("D") else (0, 1))
        assert (e.system == US_SYSTEM_PROMPT) == (e.benchmark in {"D2", "D3", "N3"})


def test_n3_first_option_written_as_1(real_suite) -> None:
    examples, _, _ = real_suite
    trap = [e for e in examples if e.benchmark == "N3" and "\n(1) " in e.question]
    assert len(trap) > 900  # about half of N3's 2000
    for e in trap:
        assert set(e.choices) == {"a", "b", "c"}
        assert e.choices["a"] and not e.choices["a"].startswith("(")
        assert f"(1) {e.choices['a']} (b) {e.choices['b']} (c) {e.choices['c']}" in e.question


def test_parse_choices_variants() -> None:
    assert parse_choices("Q?\n(a) x (b) y (c) z") == {"a": "x", "b": "y", "c": "z"}
    assert parse_choices("Q? (1) x\n(b) y\n(c) z") == {"a": "x", "b": "y", "c": "z"}
    # N2 options can span lines.
    assert parse_choices("Q? (a) one.\ntwo. (b) y (c) z")["a"] == "one.\ntwo."
    # A marker inside the stem does not shift the options.
    assert parse_choices("Pick (a) or (b)? (a) x (b) y (c) z") == {"a": "x", "b": "y", "c": "z"}
    assert parse_choices("Q? (a) x (b) y") is None
    assert parse_choices("Q? (a) x (c) z") is None
    assert parse_choices("Q? (a) x (b) y (c) ") is None


def test_load_dir_with_a_subset(tmp_path: Path, raw_pkl_dir: Path) -> None:
    (tmp_path / "D3_1k.pkl").write_bytes((raw_pkl_dir / "D3_1k.pkl").read_bytes())
    examples, present, absent = load_benchmark_dir(tmp_path)
    assert present == ["D3"] and len(absent) == 7 and len(examples) == 2000


def test_load_dir_without_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="none of D1_1k.pkl"):
        load_benchmark_dir(tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        load_benchmark_dir(tmp_path / "nope")


@pytest.mark.parametrize(
    ("benchmark", "mutate", "pattern"),
    [
        (
            "D1",
            lambda data: data[:1],
            r"expected a 2-element list \[diff, equal\] at the top level, got 1 elements",
        ),
        ("D1", lambda data: {"diff": data[0]}, r"top level, got dict"),
        ("D1", lambda data: [data[0], "x"], r"equal list: expected a list, got str"),
        (
            "D1",
            lambda data: [data[0][:1] + [data[0][1][:2]], data[1]],
            r"diff\[1\]: expected \[question, answer, scenario_id\], got 2 elements",
        ),
        (
            "D1",
            lambda data: [data[0], data[1][:2] + [[7, 2, 2]]],
            r"equal\[2\], field question: expected a string, got int",
        ),
        (
            "D1",
            lambda data: [[["no options here", 0, 0]], data[1]],
            r"diff\[0\], field question: options \(a\), \(b\), \(c\) not found",
        ),
        (
            "D1",
            lambda data: [[[data[0][0][0], 2, 0]], data[1]],
            r"diff\[0\], field answer: expected 0 or 1 for diff items of D1, got 2",
        ),
        (
            "D1",
            lambda data: [data[0], data[1][:1] + [[data[1][1][0], 0, 1]]],
            r"equal\[1\], field answer: expected 2 for equal items of D1, got 0",
        ),
        ("N2", lambda data: data, r"equal\[0\], field answer: expected 0 or 1 for equal items of N2, got 2"),
        ("D1", lambda data: [[[data[0][0][0], True, 0]], data[1]], r"diff\[0\], field answer"),
        ("D1", lambda data: [[[data[0][0][0], 1, None]], data[1]], r"diff\[0\], field scenario_id"),
    ],
)
def test_structure_errors_name_file_list_index_field(
    tmp_path: Path, upstream_lists, write_pickle, benchmark, mutate, pattern
) -> None:
    path = write_pickle(tmp_path / f"{benchmark}_1k.pkl", mutate(upstream_lists()))
    with pytest.raises(DataError, match=pattern) as info:
        load_benchmark_file(path)
    assert str(info.value).startswith(str(path))


def test_unrecognised_file_name(tmp_path: Path, upstream_lists, write_pickle) -> None:
    path = write_pickle(tmp_path / "suite.pkl", upstream_lists())
    with pytest.raises(DataError, match="cannot tell the benchmark"):
        load_benchmark_file(path)
    assert len(load_benchmark_file(path, benchmark="D2")) == 6
