"""``dartkit data prepare`` as a user sees it: a table on success, one ``error:`` line and exit 2 on bad data."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dartkit.data.cli import data_app

SYSTEM_GLOBAL = f"{os.system.__module__}.{os.system.__name__}"


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _invoke(*args: str):
    return CliRunner().invoke(data_app, ["prepare", *args])


def _assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def test_success_prints_table_and_absent(raw_pkl_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("D3_1k.pkl", "N4_1k.pkl"):
        shutil.copy(raw_pkl_dir / name, source / name)
    result = _invoke(
        "--source", str(source), "--out", str(tmp_path / "out"), "--per-cell", "200", "--seed", "5"
    )
    assert result.exit_code == 0, result.output
    assert "D3" in result.stdout and "N4" in result.stdout and "train" in result.stdout
    assert "audit" in result.stdout and "twin merges" in result.stdout
    assert "absent: D1, D2, D4, N1, N2, N3" in result.stdout
    assert "twin questions in more than one split: 0" in result.stdout
    assert "wrote train.jsonl, audit.jsonl, val.jsonl, test.jsonl and summary.json" in result.stdout
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["ratios"] == [0.5, 0.1, 0.2, 0.2]
    assert (tmp_path / "out" / "audit.jsonl").stat().st_size > 0


def test_three_ratios_write_an_empty_audit_split(raw_pkl_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(raw_pkl_dir / "D3_1k.pkl", source / "D3_1k.pkl")
    result = _invoke("--source", str(source), "--out", str(tmp_path / "out"), "--ratios", "0.6,0.2,0.2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "audit.jsonl").read_text() == ""
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["ratios"] == [0.6, 0.0, 0.2, 0.2]


def test_poisoned_pickle_is_refused_without_running(tmp_path: Path) -> None:
    sentinel = tmp_path / "SENTINEL"
    source = tmp_path / "src"
    source.mkdir()
    evil = [[["Q? (a) x (b) y (c) z", _RunsShell(f"touch {sentinel}"), 0]], []]
    (source / "D1_1k.pkl").write_bytes(pickle.dumps(evil, protocol=4))
    result = _invoke("--source", str(source), "--out", str(tmp_path / "out"))
    _assert_one_line_error(result, str(source / "D1_1k.pkl"), SYSTEM_GLOBAL)
    assert not sentinel.exists()
    assert not (tmp_path / "out").exists()


def test_truncated_file(raw_pkl_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "N2_1k.pkl").write_bytes((raw_pkl_dir / "N2_1k.pkl").read_bytes()[:100_000])
    _assert_one_line_error(
        _invoke("--source", str(source), "--out", str(tmp_path / "out")), "N2_1k.pkl", "truncated"
    )


def test_wrong_structure(tmp_path: Path, write_pickle) -> None:
    write_pickle(tmp_path / "src" / "D2_1k.pkl", {"diff": [], "equal": []})
    _assert_one_line_error(
        _invoke("--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")),
        "D2_1k.pkl",
        "2-element list",
    )


def test_wrong_answer_value(tmp_path: Path, upstream_lists, write_pickle) -> None:
    data = upstream_lists()
    data[1][2][1] = 1  # D* equal items must have answer 2
    write_pickle(tmp_path / "src" / "D4_1k.pkl", data)
    _assert_one_line_error(
        _invoke("--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")),
        "D4_1k.pkl: equal[2], field answer: expected 2",
    )


def test_missing_source(tmp_path: Path) -> None:
    _assert_one_line_error(
        _invoke("--source", str(tmp_path / "nope"), "--out", str(tmp_path / "out")), "nope"
    )


def test_empty_source_dir(tmp_path: Path) -> None:
    _assert_one_line_error(
        _invoke("--source", str(tmp_path), "--out", str(tmp_path / "out")), "none of D1_1k.pkl"
    )


def test_bad_ratios(raw_pkl_dir: Path, tmp_path: Path) -> None:
    _assert_one_line_error(
        _invoke("--source", str(raw_pkl_dir), "--out", str(tmp_path / "out"), "--ratios", "0.6,0.2,x"),
        "--ratios",
        "0.5,0.1,0.2,0.2",
    )
    _assert_one_line_error(
        _invoke("--source", str(raw_pkl_dir), "--out", str(tmp_path / "out"), "--ratios", "0.5,0.5"),
        "four numbers (train, audit, val, test) or three (train, val, test)",
    )


def test_offline_download_points_to_source(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _invoke(
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--url",
        f"http://127.0.0.1:{port}",
    )
    _assert_one_line_error(result, "download of", "--source DIR")


def test_malformed_user_jsonl(tmp_path: Path) -> None:
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"id": "x"}\n')
    line = _assert_one_line_error(_invoke("--source", str(mine), "--out", str(tmp_path / "out")), f"{mine}:1")
    assert "field" in line


def test_help_text_on_every_option() -> None:
    result = CliRunner().invoke(data_app, ["prepare", "--help"])
    assert result.exit_code == 0
    for option in (
        "--source",
        "--suite",
        "--out",
        "--per-cell",
        "--seed",
        "--ratios",
        "--cache-dir",
        "--url",
    ):
        assert option in result.stdout


@pytest.mark.parametrize("suite", ["demo"])
def test_demo_suite_via_cli(tmp_path: Path, suite: str) -> None:
    result = _invoke("--suite", suite, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "train.jsonl").is_file()


def test_non_positive_per_cell(raw_pkl_dir: Path, tmp_path: Path) -> None:
    result = _invoke("--source", str(raw_pkl_dir), "--out", str(tmp_path / "out"), "--per-cell", "0")
    _assert_one_line_error(result, "--per-cell:")
