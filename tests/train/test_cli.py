"""`train_command` (mounted as `dartkit train`, and `python -m dartkit.train`)."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from dartkit.data.demo import load_demo_suite
from dartkit.data.jsonl import write_jsonl
from dartkit.generate.adapters import ADAPTER_META
from dartkit.train.cli import train_command

app = typer.Typer()
app.command()(train_command)
runner = CliRunner()


def test_label_only_training_from_a_prepared_dir(tiny_llama, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", load_demo_suite()[:6])
    args = ["--label-only", "--prepared", str(tmp_path / "data"), "--base", f"hf:{tiny_llama}"]
    args += ["--out", str(tmp_path / "out"), "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["steps"] == 2 and metrics["examples"] == 6
    meta = json.loads((tmp_path / "out" / "adapter" / ADAPTER_META).read_text())
    assert meta["label_only"] is True
    assert meta["train_config"]["per_device_batch_size"] == 2 and meta["train_config"]["max_steps"] == 2


def test_config_file_with_flag_overrides(tiny_llama, tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", load_demo_suite()[:4])
    (tmp_path / "train.yaml").write_text(
        f"base: hf:{tiny_llama}\nlabel_only: true\nprepared: {tmp_path / 'data'}\nlora_r: 2\nmax_steps: 5\n"
        "per_device_batch_size: 4\ngrad_accum: 1\n"
    )
    result = runner.invoke(
        app, ["--config", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "o"), "--max-steps", "1"]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "o" / "adapter" / ADAPTER_META).read_text())
    assert meta["lora"]["r"] == 2 and meta["steps"] == 1


def test_user_errors_are_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "teacher.jsonl"
    bad.write_text('{"id": "a", "accepted": "maybe", "text": "x"}\n')
    result = runner.invoke(app, ["--data", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {bad}:1: field accepted: expected true or false, got 'maybe'"

    (tmp_path / "c.yaml").write_text("lora_rank: 8\n")
    result = runner.invoke(app, ["--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "lora_rank: unknown key (did you mean lora_r?)" in result.stderr

    result = runner.invoke(app, ["--data", str(bad)])
    assert result.exit_code == 2 and result.stderr.strip() == "error: missing --out"

    result = runner.invoke(app, ["--data", str(bad), "--out", "o", "--base", "openai:gpt@https://x.y/v1"])
    assert result.exit_code == 2 and "only embedded or hf: models can be fine-tuned" in result.stderr
