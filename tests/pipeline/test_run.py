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
    assert {"m_int", "m_dart", "null", "m_int_val", "m_int_audit", "m_dart_audit"} <= set(info["audits"])
    a_int, a_dart = info["audits"]["m_int"], info["audits"]["m_dart"]
    assert a_int["n_pairs"] == a_dart["n_pairs"] == 16
    if a_int["drift_rate"]:
        assert info["drift_reduction"] == pytest.approx(1 - a_dart["drift_rate"] / a_int["drift_rate"])
    assert info["mcnemar_m0_vs_m_dart"]["n"] == 16
    # Held out: the repaired items come from the audit split, and none of them is in test.
    assert info["protocol"] == "heldout" and info["repaired_in_test"] == 0 and not info["test_contaminated"]
    test_ids = {json.loads(x)["id"] for x in (root / "data" / "test.jsonl").read_text().splitlines()}
    audit_ids = {json.loads(x)["id"] for x in (root / "data" / "audit.jsonl").read_text().splitlines()}
    assert info["repaired_ids"] and set(info["repaired_ids"]) <= audit_ids
    assert not set(info["repaired_ids"]) & test_ids
    headline = info["drift_test"]
    assert headline["split"] == "test" and headline["held_out"] and headline["n"] == 16
    assert headline["n_drift_a"] == a_int["n_drift"] and headline["n_drift_b"] == a_dart["n_drift"]
    assert set(headline["mcnemar"]) >= {"only_a", "only_b", "p_value"}
    if a_int["n_drift"]:
        assert info["drift_reduction_ci95"] is not None and "scenario" in headline["ci_method"]
    repaired = info["drift_repaired_items"]
    assert repaired["split"] == "audit" and not repaired["held_out"]
    assert repaired["n"] == len(info["repaired_ids"]) and repaired["n_drift_a"] == repaired["n"]
    assert info["evaluation_test_unrepaired"] == {}
    report = (root / "report.md").read_text()
    assert report.startswith("# DART run report\n\n> **Protocol: heldout.**")
    assert (
        "**headline**: drift reduction on test" in report and "on the repaired items (paper-style)" in report
    )
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
    assert (
        "Consistency check (does the analysis argue against its own conclusion?): the built-in classifier"
        in report
    )
    assert (root / "figures" / "accuracy.png").is_file() and (root / "figures" / "delta_h.png").is_file()
    # Repair saw every drift case of M_int's audit on the audit split and trained M_DART from M_int.
    repair = json.loads((root / "repair" / "metrics.json").read_text())
    assert repair["n_drift_cases"] == info["audits"]["m_int_audit"]["n_drift"]
    assert repair["accepted"] > 0  # this tiny setup drifts, so repair and M_DART training really run
    meta = json.loads((root / "m_dart" / "adapter" / "dartkit_adapter.json").read_text())
    assert meta["init_adapter"]["path"].endswith("m_int/adapter")  # continued from M_int
    assert meta["weights_from"] == "severity_weight" and meta["weighting"] == "loss"
    assert [Path(f).name for f in meta["data_files"]] == ["teacher.jsonl", "repair.jsonl"]  # recipe mix
    rows = [json.loads(x) for x in (root / "repair" / "repair.jsonl").read_text().splitlines()]
    weights = {"mild": 1.0, "moderate": 2.0, "severe": 3.0, "extreme": 4.0}
    assert all(r["severity_weight"] == weights[r["severity"]] for r in rows)
    assert (
        "## Drift cases and their repairs (audit split" in report and "Repair rationale (accepted" in report
    )
    assert len(info["repaired_ids"]) == repair["accepted"]


def test_paper_protocol_repairs_test_and_says_it_is_contaminated(tmp_path, tiny_llama, teacher_server):
    """protocol paper: the test split's drift cases are repaired and test is re-audited (labelled so)."""
    cfg = RunConfig.model_validate(
        tiny_config(
            tmp_path / "run",
            tiny_llama,
            teacher_server,
            protocol="paper",
            data={"ratios": [0.6, 0.2, 0.2]},
            label_only_baseline=False,
            audit={"tau_sweep": False, "null_temperature": 0},
        )
    )
    run(cfg)
    root = Path(cfg.out)
    info = json.loads((root / "run.json").read_text())
    repair = json.loads((root / "repair" / "metrics.json").read_text())
    assert repair["n_drift_cases"] == info["audits"]["m_int"]["n_drift"]
    assert info["protocol"] == "paper" and info["test_contaminated"]
    assert info["repaired_in_test"] == repair["accepted"] > 0
    assert info["drift_reduction_split"].startswith("test (contaminated")
    assert info["drift_repaired_items"]["split"] == "test" and not info["drift_test"]["held_out"]
    assert info["evaluation_test_unrepaired"]["m_dart"]["n"] == 16 - repair["accepted"]
    assert not (root / "data" / "audit.jsonl").read_text().strip()  # ratio 0: no audit split
    report = (root / "report.md").read_text()
    assert report.startswith("# DART run report\n\n> **Protocol: paper — the test split is contaminated.**")
    assert "not held out for M_DART" in report


def test_tau_auto_is_chosen_on_val_and_used_by_every_audit(finished_run, tmp_path):
    """tau 'auto': the val audit chooses τ by the stated rule; the other audits use it."""
    root = Path(finished_run.out)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    cfg = finished_run.model_copy(
        update={"out": copy, "audit": finished_run.audit.model_copy(update={"tau": "auto"})}
    )
    s = statuses(cfg)
    assert s["train_int"] == "done" and s["audit_val"].startswith("rerun")
    run(cfg)
    chosen = json.loads((copy / "audit" / "tau.json").read_text())
    assert "mirror rate" in chosen["rule"] and chosen["tau"] in cfg.audit.tau_choices()
    for name in ("m_int", "m_int_audit", "m_dart", "null"):
        assert json.loads((copy / "audit" / name / "summary.json").read_text())["tau"] == chosen["tau"]
    info = json.loads((copy / "run.json").read_text())
    assert info["tau"]["tau"] == chosen["tau"]
    assert "chosen on the validation split by the rule" in (copy / "report.md").read_text()


def test_choose_tau_takes_the_smallest_value_within_the_noise_bound():
    from dartkit.pipeline.stages import choose_tau

    deltas = [-0.3, -0.04, -0.015, 0.0, 0.0, 0.02, 0.05, 0.2] + [0.0] * 12  # 20 pairs
    got = choose_tau(deltas, [0.0, 0.01, 0.02, 0.05], max_noise=0.05)
    # mirror rates: 0.0 -> 3/20, 0.01 -> 3/20, 0.02 -> 2/20, 0.05 -> 1/20 (<= 0.05)
    assert got["tau"] == 0.05 and got["rule_met"]
    assert [r["mirror_rate"] for r in got["table"]] == [0.15, 0.15, 0.10, 0.05]
    none_ok = choose_tau([-0.5] * 5, [0.0, 0.01], max_noise=0.05)
    assert none_ok["tau"] == 0.01 and not none_ok["rule_met"]


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
    assert "train_int" in res.output and "nothing was run" in res.output
    # The plan names every model and the split sizes before anything runs.
    for what in ("student (M0)", "teacher", "consistency judge", "audit judge", "harm scorer", "protocol"):
        assert what in res.output, what
    assert "train 64, audit 16, val 24, test 24" in res.output
    assert not (tmp_path / "r").exists()
    res = runner.invoke(app, ["run", "--out", str(tmp_path / "r"), "--dry-run", "--from", "nope"])
    assert res.exit_code == 2 and "unknown stage 'nope'" in res.output


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("trainin: {epochs: 1}\n", "unknown key 'trainin'"),
        ("training: {lora_rank: 8}\n", "training.lora_rank"),
        ("audit: {tau: 2}\n", "'audit.tau'"),
        ("audit: {tau: often}\n", "'audit.tau'"),
        ("audit: {tau: auto, tau_grid: [0.2, 0.35]}\n", "tau_grid has none"),
        (
            "data: {ratios: [0.6, 0.2, 0.2]}\n",
            "protocol 'heldout' repairs the drift cases of the audit split",
        ),
        ("teacher_examples: nowhere.jsonl\n", "nowhere.jsonl: no such file"),
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
