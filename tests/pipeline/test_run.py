"""`dartkit run` end to end on a tiny student: outputs, skip / resume / redo, --from, --dry-run, report."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.pipeline import RunConfig, build_pipeline, run
from dartkit.progress import results_console
from pipeline_helpers import tiny_config

runner = CliRunner()
EVAL_KEYS = {
    "n",
    "accuracy",
    "accuracy_equal",
    "accuracy_diff",
    "yes_rate",
    "no_rate",
    "unparseable_rate",
    "refusal_rate",
    "macro_f1",
    "accuracy_ci95",
    "per_benchmark",
}


def write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def statuses(cfg: RunConfig, start=None) -> dict[str, str]:
    return {s.name: why for s, why in build_pipeline(cfg, results_console()).plan(start)}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_llama, teacher_server):
    root = tmp_path_factory.mktemp("run")
    cfg = RunConfig.model_validate(tiny_config(root / "run", tiny_llama, teacher_server))
    run(cfg)
    return cfg


def test_run_writes_every_stage_and_the_report(finished_run):
    root = Path(finished_run.out)
    info = json.loads((root / "run.json").read_text())
    assert set(info["evaluation"]) == {"m0", "label_only", "m_int", "m_dart"}
    for metrics in [*info["evaluation"].values(), *info["evaluation_val"].values()]:
        assert set(metrics) >= EVAL_KEYS
    assert set(info["evaluation_val"]) == {"m0", "label_only", "m_int", "m_dart"}  # the never-audited split
    assert {"m_int", "m_dart", "null", "m_int_val"} <= set(info["audits"])
    a_int, a_dart = info["audits"]["m_int"], info["audits"]["m_dart"]
    assert a_int["n_pairs"] == a_dart["n_pairs"] == 16
    if a_int["drift_rate"]:
        assert info["drift_reduction"] == pytest.approx(1 - a_dart["drift_rate"] / a_int["drift_rate"])
    assert info["mcnemar_m0_vs_m_dart"]["n"] == 16
    report = (root / "report.md").read_text()
    for section in (
        "## Setup",
        "## Accuracy on the test split",
        "McNemar",
        "## Harm drift",
        "null audit",
        "## Validation split",
        "## Teacher quality control",
        "τ sweep",
    ):
        assert section in report, section
    assert "Screen-only audits" in report
    assert (root / "figures" / "accuracy.png").is_file() and (root / "figures" / "delta_h.png").is_file()
    # Repair saw every drift case of the M_int audit and trained M_DART from M_int.
    repair = json.loads((root / "repair" / "metrics.json").read_text())
    assert repair["n_drift_cases"] == a_int["n_drift"]
    assert repair["accepted"] > 0  # this tiny setup drifts, so repair and M_DART training really run
    meta = json.loads((root / "m_dart" / "adapter" / "dartkit_adapter.json").read_text())
    assert meta["init_adapter"]["path"].endswith("m_int/adapter")  # continued from M_int
    assert meta["weights_from"] == "severity_weight" and meta["weighting"] == "loss"
    assert [Path(f).name for f in meta["data_files"]] == ["teacher.jsonl", "repair.jsonl"]  # recipe mix
    rows = [json.loads(x) for x in (root / "repair" / "repair.jsonl").read_text().splitlines()]
    weights = {"mild": 1.0, "moderate": 2.0, "severe": 3.0, "extreme": 4.0}
    assert all(r["severity_weight"] == weights[r["severity"]] for r in rows)
    assert "## Drift cases and their repairs" in report and "Repair rationale (accepted" in report
    # Repaired test items are trained on: the report also shows the test items that were not.
    assert len(info["repaired_test_ids"]) == repair["accepted"]
    assert info["evaluation_test_unrepaired"]["m_dart"]["n"] == 16 - repair["accepted"]
    assert "not fully held out for M_DART" in report


def test_report_leaves_out_stages_turned_off_since(finished_run):
    from dartkit.pipeline.report import collect

    root = Path(finished_run.out)
    cfg = finished_run.model_dump(mode="json")
    assert "label_only" in collect(root, cfg)["evaluation"]
    cfg["label_only_baseline"] = False
    cfg["audit"]["null_temperature"] = 0
    info = collect(root, cfg)
    assert "label_only" not in info["evaluation"] and "null" not in info["audits"]


def test_second_run_skips_everything(finished_run):
    root = Path(finished_run.out)
    before = {p.name: p.stat().st_mtime_ns for p in (root / "stages").glob("*.json")}
    assert set(statuses(finished_run).values()) == {"done"}
    run(finished_run)
    after = {p.name: p.stat().st_mtime_ns for p in (root / "stages").glob("*.json")}
    assert before == after


def test_changed_setting_reruns_only_what_depends_on_it(finished_run):
    changed = finished_run.model_copy(update={"audit": finished_run.audit.model_copy(update={"tau": 0.05})})
    s = statuses(changed)
    for done in ("data", "eval_m0", "distill", "train_int", "eval_int"):
        assert s[done] == "done", (done, s[done])
    assert s["audit_int"].startswith("rerun") and s["null_audit"].startswith("rerun")


def test_corrupted_output_is_detected_and_redone(finished_run, tmp_path):
    root = Path(finished_run.out)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    cfg = finished_run.model_copy(update={"out": copy})
    # Paths inside records are relative, so the copy is a complete run too.
    assert set(statuses(cfg).values()) == {"done"}
    metrics = copy / "eval" / "m0" / "test" / "metrics.json"
    original = metrics.read_text()
    metrics.write_text(original[: len(original) // 2])  # a torn write
    s = statuses(cfg)
    assert s["eval_m0"] == "redo (eval/m0/test/metrics.json changed or is corrupted)"
    assert s["data"] == "done"
    run(cfg)
    redone, before = json.loads(metrics.read_text()), json.loads(original)
    assert {**redone, "data": None} == {**before, "data": None}  # cached answers, same metrics
    assert set(statuses(cfg).values()) == {"done"}


def test_from_redoes_a_stage_and_everything_after(finished_run):
    s = statuses(finished_run, start="repair")
    assert [k for k, v in s.items() if v != "done"] == [
        "repair",
        "train_dart",
        "eval_dart",
        "audit_dart",
        "report",
    ]


def test_report_command_rebuilds_from_files(finished_run):
    root = Path(finished_run.out)
    original = (root / "report.md").read_text()
    (root / "report.md").unlink()
    res = runner.invoke(app, ["report", str(root)])
    assert res.exit_code == 0, res.output
    assert (root / "report.md").read_text() == original
    res = runner.invoke(app, ["report", str(root / "data")])
    assert res.exit_code == 2 and "not a dartkit run directory" in res.output


def test_dry_run_validates_and_loads_nothing(tmp_path):
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "r"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "train_int" in res.output and "nothing was loaded" in res.output
    assert not (tmp_path / "r").exists()
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "r"), "--dry-run", "--from", "nope"])
    assert res.exit_code == 2 and "unknown stage 'nope'" in res.output


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("trainin: {epochs: 1}\n", "unknown key 'trainin'"),
        ("training: {lora_rank: 8}\n", "training.lora_rank"),
        ("audit: {tau: 2}\n", "'audit.tau'"),
        ("audit: {scorer: vibes}\n", "unknown harm scorer 'vibes'"),
        ("data: {ratios: [0.5, 0.5, 0.5]}\n", "data.ratios"),
        ("student: openai:x@http://h\n", "'student'"),
        ("repair: {recipe: everything}\n", "'repair.recipe'"),
        ("training: {base: embedded}\n", "training.base is set by the run stage"),
        ("audit: {severity: {moderate: 0.5}}\n", "severity bounds must increase"),
        ("repair: {weighting: oversample, severity_weights: {mild: 1.5}}\n", "severity_weights.mild is 1.5"),
    ],
)
def test_bad_config_is_rejected_before_anything_runs(tmp_path, yaml_text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    res = runner.invoke(app, ["run", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert message in res.output, res.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_with_nothing_lost(tmp_path, tiny_llama, teacher_server):
    """SIGKILL the real CLI mid-run (after Stage I finished, during later stages), then rerun."""
    root = tmp_path / "run"
    cfg = write_cfg(tmp_path / "c.yaml", tiny_config(root, tiny_llama, teacher_server))
    cmd = [sys.executable, "-m", "dartkit.cli", "run", "--config", str(cfg)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while (
        not (root / "stages" / "train_int.json").exists() and time.time() < deadline and proc.poll() is None
    ):
        time.sleep(0.05)
    time.sleep(0.5)  # into eval_int: generations in flight
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.stem for p in (root / "stages").glob("*.json")}
    assert {"data", "eval_m0", "distill", "train_int"} <= done_before
    teacher_mtime = (root / "distill" / "teacher.jsonl").stat().st_mtime_ns
    record_mtime = (root / "stages" / "distill.json").stat().st_mtime_ns
    n_requests = len(teacher_server.requests)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done, skipped" in res.stdout
    assert (root / "stages" / "distill.json").stat().st_mtime_ns == record_mtime
    assert (root / "distill" / "teacher.jsonl").stat().st_mtime_ns == teacher_mtime  # finished work kept
    assert (root / "report.md").is_file()
    # Every JSONL output holds each id once (no duplicated records after the resume).
    for path in root.rglob("*.jsonl"):
        if path.name in ("cache.jsonl", "scores.jsonl", "train_log.jsonl"):
            continue
        ids = [json.loads(x)["id"] for x in path.read_text().splitlines() if x.strip()]
        assert len(ids) == len(set(ids)), path
    # Caches hold each key once, too.
    for path in root.rglob("cache.jsonl"):
        keys = [json.loads(x)["key"] for x in path.read_text().splitlines() if x.strip().endswith("}")]
        assert len(keys) == len(set(keys)), path
    # The teacher was not asked again for what Stage I had finished (only repair calls since).
    assert len(teacher_server.requests) - n_requests <= 40


def test_train_launcher_runs_training_in_a_subprocess(tmp_path, tiny_llama, teacher_server):
    """train_launcher 'python' runs `python -m dartkit.train --config <dir>/train_config.yaml`."""
    from dartkit.data.prepare import prepare_data
    from dartkit.pipeline.stages import RunStages
    from dartkit.train.config import TrainConfig

    cfg = RunConfig.model_validate(
        tiny_config(tmp_path / "run", tiny_llama, teacher_server, train_launcher="python")
    )
    stages = RunStages(cfg, results_console())
    prepare_data(stages.data_dir, suite="demo")
    tc = TrainConfig(
        base=cfg.student,
        prepared=stages.data_dir,
        label_only=True,
        out=tmp_path / "t",
        max_steps=1,
        per_device_batch_size=2,
        grad_accum=1,
    )
    info = stages._launch(tc)
    assert info["steps"] == 1
    assert (tmp_path / "t" / "train_config.yaml").is_file() and (tmp_path / "t" / "adapter").is_dir()


def test_report_knows_every_stage():
    from dartkit.pipeline.report import STAGE_ORDER
    from dartkit.pipeline.stages import RunStages

    cfg = RunConfig(label_only_baseline=True)
    assert [s.name for s in RunStages(cfg, results_console()).stages()] == STAGE_ORDER
