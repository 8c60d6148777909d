"""What a user sees from the command line: help at 80 columns, --version, errors that say what to do."""

from __future__ import annotations

import importlib.metadata
import json
import re

import pytest
import typer
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.config import DEFAULT_MAX_NEW_TOKENS

runner = CliRunner()


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    if hasattr(command, "commands"):  # a group (typer's own vendored click)
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


@pytest.mark.parametrize(
    "path", [p for p, _ in _commands(typer.main.get_command(app))], ids=lambda p: " ".join(p) or "dartkit"
)
def test_help_shows_every_flag_whole_at_80_columns(path):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, prog_name="dartkit")
    assert res.exit_code == 0, res.output
    flags = [opt for p in command.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")]
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", res.output), f"{flag} cut:\n{res.output}"
    assert "…" not in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80


def test_version_prints_the_package_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"dartkit {importlib.metadata.version('dartkit')}"


def test_eval_help_states_the_shared_default_answer_length():
    res = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert f"Longest answer in tokens (default {DEFAULT_MAX_NEW_TOKENS})" in res.output


def test_eval_on_raw_pickles_points_to_source_and_a_separate_out(tmp_path):
    raw = tmp_path / "raw_pkl"
    raw.mkdir()
    (raw / "D1_1k.pkl").write_bytes(b"not read")
    res = runner.invoke(app, ["eval", "--model", "dummy", "--data", str(raw), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert f"--source {raw} --out <a new directory>" in res.stderr
    assert f"--out {raw}" not in res.stderr  # following the hint must not write splits among the pickles


def test_flag_errors_name_flags(tmp_path):
    res = runner.invoke(app, ["eval", "--data", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.strip() == "error: missing --out"
    res = runner.invoke(app, ["audit", "--candidate-generations", "c.jsonl", "--out", str(tmp_path / "a")])
    assert res.stderr.strip() == "error: --candidate-generations needs --baseline-generations too"
    args = ["repair", "--drift", "d.jsonl", "--data", "d", "--out", "o", "--init-adapter", "a"]
    res = runner.invoke(app, args)
    assert res.stderr.strip() == (
        "error: recipe 'mix' needs --distill (Stage I teacher.jsonl); or use --recipe repair-only"
    )
    res = runner.invoke(app, ["eval", "--model", "dummy:yes+adapter=x", "--data", "d", "--out", "o"])
    assert res.exit_code == 2 and "takes no +adapter=" in res.stderr


def test_audit_with_no_matched_ids_fails_without_any_gate(tmp_path):
    base, cand = tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    base.write_text("".join(json.dumps({"id": i, "text": "x\nConclusion: NO"}) + "\n" for i in ("a", "b")))
    cand.write_text(json.dumps({"id": "z", "text": "x\nConclusion: NO"}) + "\n")
    args = ["audit", "--baseline-generations", str(base), "--candidate-generations", str(cand)]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert res.exit_code == 2
    assert "the baseline has 2 id(s), the candidate 1, none in common" in res.stderr
    assert "baseline e.g. 'a', 'b'; candidate e.g. 'z'" in res.stderr


def test_eval_on_one_raw_pickle_points_to_its_folder_as_source(tmp_path):
    raw = tmp_path / "raw_pkl"
    raw.mkdir()
    pkl = raw / "D1_1k.pkl"
    pkl.write_bytes(b"not read")
    res = runner.invoke(app, ["eval", "--model", "dummy", "--data", str(pkl), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert f"{pkl}: a file, not a prepared data directory" in res.stderr
    assert f"--source {raw} --out <a new directory>" in res.stderr
    assert f"--out {pkl}" not in res.stderr


@pytest.mark.parametrize(
    ("args", "option", "choices"),
    [
        (["eval", "--model", "dummy", "--data", "d", "--out", "o", "--split", "tset"], "--split", "'test'"),
        (["data", "prepare", "--suite", "nope", "--out", "o"], "--suite", "'demo'"),
    ],
)
def test_a_bad_choice_names_the_option_and_the_choices_without_pydantic_noise(args, option, choices):
    res = runner.invoke(app, args, prog_name="dartkit")
    assert res.exit_code == 2
    [line] = [x for x in res.output.splitlines() if x.startswith("Error:")]
    assert f"Invalid value for '{option}'" in line and choices in line
    assert "Value error" not in res.output


def test_data_prepare_names_its_flags_in_errors(tmp_path):
    for args, flag in (
        (["--ratios", "0.5,0.5,0.5"], "--ratios: must sum to 1"),
        (["--per-cell", "-1"], "--per-cell: "),
    ):
        res = runner.invoke(app, ["data", "prepare", "--suite", "demo", "--out", str(tmp_path / "d"), *args])
        assert res.exit_code == 2 and f"error: {flag}" in res.output
