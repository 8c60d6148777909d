"""``prepare_data`` end to end: split files, summary, twin checks, determinism, users' own JSONL."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from dartkit.data import prepare as prepare_module
from dartkit.data.jsonl import read_examples, write_jsonl
from dartkit.data.prepare import default_cache_dir, load_split, prepare_data
from dartkit.data.splits import SPLITS, cross_split_twins, split_examples, twin_key
from dartkit.errors import DataError


@pytest.fixture(scope="module")
def prepared(raw_pkl_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared")
    return out, prepare_data(out, source=raw_pkl_dir)


def test_writes_four_splits_and_summary(prepared, raw_pkl_dir: Path) -> None:
    out, summary = prepared
    assert sorted(p.name for p in out.iterdir()) == [
        "audit.jsonl",
        "summary.json",
        "test.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["absent"] == ["N1"] and summary["present"] == ["D1", "D2", "D3", "D4", "N2", "N3", "N4"]
    assert (summary["seed"], summary["ratios"], summary["per_cell"]) == (42, [0.5, 0.1, 0.2, 0.2], None)
    assert summary["source"] == str(raw_pkl_dir) and summary["total"] == 14000
    assert (
        summary["source_sha256"]["N2_1k.pkl"]
        == hashlib.sha256((raw_pkl_dir / "N2_1k.pkl").read_bytes()).hexdigest()
    )
    assert summary["scenario_keys"] == {
        "D1": 2000,
        "D2": 1670,
        "D3": 66,
        "D4": 1419,
        "N2": 2000,
        "N3": 382,
        "N4": 67,
    }
    assert sum(summary["split_totals"].values()) == 14000
    assert summary["counts"]["D1"]["YES"] == {"train": 500, "audit": 100, "val": 200, "test": 200}
    # D2 asks one occupation question for several years under different scenario ids;
    # nine N2 pairs are the same two phrases in the other order.
    assert summary["twin_groups_merged"] == {"D1": 0, "D2": 645, "D3": 0, "D4": 0, "N2": 9, "N3": 0, "N4": 0}
    assert summary["cross_split_twins"] == 0


def test_split_files_on_disk_share_no_scenario_and_no_twin(prepared) -> None:
    out, summary = prepared
    where: dict[str, set[str]] = defaultdict(set)
    twins: dict[str, set[str]] = defaultdict(set)
    for split in SPLITS:
        examples = load_split(out, split)
        assert {e.split for e in examples} == {split}
        assert len(examples) == summary["split_totals"][split]
        for e in examples:
            where[e.scenario_key].add(split)
            twins[twin_key(e)].add(split)
    assert all(len(s) == 1 for s in where.values())
    assert all(len(s) == 1 for s in twins.values())


def test_paper_settings_have_no_cross_split_twins(raw_pkl_dir: Path, tmp_path: Path) -> None:
    """Issue 9: at 500 per cell, seed 42, 28 of 200 D2 test items had a train twin differing only in the year."""
    started = time.perf_counter()
    summary = prepare_data(tmp_path / "p500", source=raw_pkl_dir, per_cell=500, seed=42)
    elapsed = time.perf_counter() - started
    assert summary["cross_split_twins"] == 0
    assert summary["twin_groups_merged"] == {"D1": 0, "D2": 336, "D3": 0, "D4": 0, "N2": 4, "N3": 0, "N4": 0}
    written = [e for split in SPLITS for e in load_split(tmp_path / "p500", split)]
    assert cross_split_twins(written) == {}
    # Twins are kept, not dropped: many D2 questions appear in several years, all in one split.
    repeated = Counter(twin_key(e) for e in written if e.benchmark == "D2")
    assert sum(n for n in repeated.values() if n > 1) > 300
    for split, share in zip(SPLITS, (0.5, 0.1, 0.2, 0.2), strict=True):
        assert summary["counts"]["D1"]["NO"][split] == 500 * share
    assert elapsed < 30


def test_same_seed_same_bytes_other_seed_differs(prepared, raw_pkl_dir: Path, tmp_path: Path) -> None:
    out, _ = prepared
    prepare_data(tmp_path / "again", source=raw_pkl_dir, seed=42)
    for split in SPLITS:
        assert (tmp_path / "again" / f"{split}.jsonl").read_bytes() == (out / f"{split}.jsonl").read_bytes()
    prepare_data(tmp_path / "other", source=raw_pkl_dir, seed=43)
    assert (tmp_path / "other" / "test.jsonl").read_bytes() != (out / "test.jsonl").read_bytes()


def test_per_cell(raw_pkl_dir: Path, tmp_path: Path) -> None:
    summary = prepare_data(tmp_path / "small", source=raw_pkl_dir, per_cell=50, ratios=(0.5, 0.25, 0.25))
    assert summary["total"] == 7 * 2 * 50 and summary["per_cell"] == 50
    # Three ratios are train, val, test: the audit split is written, empty.
    assert summary["ratios"] == [0.5, 0.0, 0.25, 0.25] and summary["split_totals"]["audit"] == 0
    assert (tmp_path / "small" / "audit.jsonl").read_text() == ""
    assert load_split(tmp_path / "small", "audit") == []
    for benchmark, by_label in summary["counts"].items():
        for label, by_split in by_label.items():
            assert sum(by_split.values()) == 50, (benchmark, label)


def test_users_own_jsonl_is_resplit(prepared, tmp_path: Path) -> None:
    out, _ = prepared
    mine = tmp_path / "mine.jsonl"
    chosen = [e for e in read_examples(out / "test.jsonl") if e.benchmark in ("D1", "N4")]
    write_jsonl(mine, chosen)
    summary = prepare_data(tmp_path / "resplit", source=mine)
    assert summary["suite"] == "jsonl" and summary["present"] == ["D1", "N4"] and summary["absent"] == []
    assert summary["total"] == len(chosen)
    # The "test" these items carried is ignored: they are spread over all four splits again.
    assert summary["counts"]["D1"]["YES"] == {"train": 100, "audit": 20, "val": 40, "test": 40}
    assert list(summary["source_sha256"]) == ["mine.jsonl"]


def test_directory_of_jsonl_and_duplicate_ids(prepared, tmp_path: Path) -> None:
    out, _ = prepared
    users = tmp_path / "users"
    users.mkdir()
    val = read_examples(out / "val.jsonl")
    write_jsonl(users / "a.jsonl", val[:100])
    write_jsonl(users / "b.jsonl", val[100:150])
    assert prepare_data(tmp_path / "o1", source=users, suite="jsonl")["total"] == 150
    write_jsonl(users / "c.jsonl", val[:1])
    with pytest.raises(DataError, match=rf"c\.jsonl: id {val[0].id} also appears in .*a\.jsonl"):
        prepare_data(tmp_path / "o2", source=users)


def test_demo_suite(tmp_path: Path) -> None:
    summary = prepare_data(tmp_path / "demo", suite="demo")
    assert summary["suite"] == "demo" and summary["total"] > 0
    assert "demo_suite.jsonl" in summary["source_sha256"]


def test_argument_errors(tmp_path: Path, raw_pkl_dir: Path) -> None:
    with pytest.raises(DataError, match="cannot be combined with --suite demo"):
        prepare_data(tmp_path, source=raw_pkl_dir, suite="demo")
    with pytest.raises(DataError, match="needs --source"):
        prepare_data(tmp_path, suite="jsonl")
    with pytest.raises(DataError, match="no such file or directory"):
        prepare_data(tmp_path, source=tmp_path / "nope")
    with pytest.raises(DataError, match="sum to 1"):
        prepare_data(tmp_path, source=raw_pkl_dir, ratios=(0.5, 0.2, 0.2))
    assert not (tmp_path / "train.jsonl").exists()


def test_load_split_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.jsonl: no such file; run `dartkit data prepare"):
        load_split(tmp_path, "train")
    with pytest.raises(DataError, match="expected one of train, audit, val, test"):
        load_split(tmp_path, "dev")


def test_old_data_dir_without_audit_split_says_prepare_again(prepared, tmp_path: Path) -> None:
    out, _ = prepared
    old = tmp_path / "old"
    old.mkdir()
    for split in ("train", "val", "test"):
        (old / f"{split}.jsonl").write_bytes((out / f"{split}.jsonl").read_bytes())
    assert len(load_split(old, "train")) > 0
    with pytest.raises(
        DataError,
        match=r"audit\.jsonl: no such file; .* before dartkit had an audit split, re-run `dartkit data prepare --out",
    ):
        load_split(old, "audit")


def test_a_leak_in_the_written_files_fails_and_leaves_no_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The check after writing groups by question text alone, so a grouping bug cannot slip a twin through."""

    def leaky_split(examples, **kwargs):
        result = split_examples(examples, **kwargs)
        # A copy of a train item under its own id and scenario, placed in test: only its question ties it.
        original = next(e for e in result if e.split == "train")
        copy = original.model_copy(update={"id": "copy", "scenario_key": "elsewhere", "split": "test"})
        return [*result, copy]

    prepare_data(tmp_path / "out", suite="demo")
    monkeypatch.setattr(prepare_module, "split_examples", leaky_split)
    with pytest.raises(DataError, match=r"twin leak: 1 question\(s\) .* in more than one split: .*\(test\)"):
        prepare_data(tmp_path / "out", suite="demo")
    assert not (tmp_path / "out" / "summary.json").exists()


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DARTKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "wang2025"
    monkeypatch.delenv("DARTKIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "dartkit" / "wang2025"


def test_counts_match_the_files(prepared) -> None:
    out, summary = prepared
    for split in SPLITS:
        counts = Counter((e.benchmark, e.label) for e in load_split(out, split))
        for (benchmark, label), n in counts.items():
            assert summary["counts"][benchmark][label][split] == n


def test_small_cells_are_warned_about_and_recorded(raw_pkl_dir: Path, tmp_path: Path) -> None:
    """The issue's trial: 12 items per cell, grouped by scenario, left test cells empty without a word."""
    summary = prepare_data(tmp_path / "small", source=raw_pkl_dir, per_cell=12, ratios=(0.6, 0.2, 0.2))
    assert summary["min_cell_items"] == 5
    warnings = summary["warnings"]
    for expected in ("D3 YES test: empty", "N3 NO test: empty", "N4 NO test: 1 item, below 5"):
        assert expected in warnings, warnings
    # Every warned cell is small, every small cell is warned about, and the audit split (ratio 0) is not.
    small = {
        (b, label, s)
        for b, by_label in summary["counts"].items()
        for label, by_split in by_label.items()
        for s, n in by_split.items()
        if n < 5 and s != "audit"
    }
    assert {(c["benchmark"], c["label"], c["split"]) for c in summary["small_cells"]} == small
    assert json.loads((tmp_path / "small" / "summary.json").read_text())["warnings"] == warnings


def test_full_suite_has_no_small_cells(prepared) -> None:
    _, summary = prepared
    assert summary["warnings"] == [] and summary["small_cells"] == []


def test_min_cell_items_sets_the_threshold(tmp_path: Path) -> None:
    summary = prepare_data(tmp_path / "demo", suite="demo", min_cell_items=2)
    cells = {(c["benchmark"], c["label"], c["split"]): c["n"] for c in summary["small_cells"]}
    assert cells and all(n < 2 for n in cells.values())
    assert all(
        (b, label, s) in cells
        for b, by_label in summary["counts"].items()
        for label, by_split in by_label.items()
        for s, n in by_split.items()
        if n < 2
    )
    assert prepare_data(tmp_path / "none", suite="demo", min_cell_items=0)["warnings"] == []
    with pytest.raises(DataError, match="min_cell_items: expected 0 or more"):
        prepare_data(tmp_path / "bad", suite="demo", min_cell_items=-1)
    assert not (tmp_path / "bad").exists()


def test_cli_prints_the_small_cells(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dartkit.data.cli import data_app

    res = CliRunner().invoke(data_app, ["prepare", "--suite", "demo", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    out = " ".join(res.output.split())
    assert f"warning: {len(summary['small_cells'])} benchmark x label x split cell(s)" in out
    first = summary["small_cells"][0]
    assert f"{first['benchmark']}: {first['label']} {first['split']} {first['n']}" in out
    res = CliRunner().invoke(
        data_app, ["prepare", "--suite", "demo", "--out", str(tmp_path / "e"), "--min-cell-items", "0"]
    )
    assert res.exit_code == 0 and "warning" not in res.output
