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
from dartkit.errors import DartkitError
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
    if a_int["n_drift"]:  # an interval over scenario groups, or the reason there is none
        ci, note = info["drift_reduction_ci95"], headline.get("ci_note")
        assert (ci is not None and ci[0] < ci[1] and "scenario" in headline["ci_method"]) or (
            ci is None and note.startswith("no interval")
        )
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


def test_an_evaluation_setting_re_evaluates_ablations_without_retraining_them(finished_run):
    changed = finished_run.model_copy(update={"loglik": False})
    s = statuses(changed)
    for done in ("distill", "train_int", "train_predicted", "train_tox"):
        assert s[done] == "done", (done, s[done])
    # Downstream of the audits (as M_DART is): retrained only if the re-evaluated answers differ.
    assert s["train_unweighted"] == s["train_dart"] == "rerun if its inputs change"
    for redo in ("eval_m0", "eval_predicted", "select_tox", "eval_tox", "eval_unweighted", "policy"):
        assert s[redo] != "done", redo


def test_report_leaves_out_ablations_turned_off_since(finished_run):
    from dartkit.pipeline.report import collect

    root = Path(finished_run.out)
    cfg = finished_run.model_dump(mode="json")
    cfg["ablations"] = {**cfg["ablations"], "tox_sft": False, "policy": False, "teacher_harm": False}
    cfg["label_only_baseline"] = False
    info = collect(root, cfg)["ablations"]
    rows = [r["model"] for r in info["ablation_table"]["rows"]]
    assert "tox_sft" not in rows and "label_only" not in rows and "predicted" in rows
    assert info["tox_sweep"] is None and info["policy"] is None and info["teacher_harm"] is None
    assert "label_only" not in info["answer_modes"]


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
        "train_unweighted",  # trained on the repairs too
        "eval_unweighted",
        "policy",  # answers of every table model, M_DART's included
        "suite_transfer_m_dart",  # the suites run on M_DART too
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
        ("trainin: {epochs: 1}\n", "trainin: unknown key (did you mean training?)"),
        ("training: {lora_rank: 8}\n", "training.lora_rank"),
        ("audit: {tau: 2}\n", "audit.tau: "),
        ("audit: {tau: often}\n", "audit.tau: "),
        ("audit: {tau: auto, tau_grid: [0.2, 0.35]}\n", "tau_grid has none"),
        (
            "data: {ratios: [0.6, 0.2, 0.2]}\n",
            "protocol 'heldout' repairs the drift cases of the audit split",
        ),
        ("teacher_examples: nowhere.jsonl\n", "nowhere.jsonl: no such file"),
        ("data: {source: raw_pkl}\n", "data.source is set but data.suite is demo"),
        ("audit: {scorer: vibes}\n", "unknown harm scorer 'vibes'"),
        ("data: {ratios: [0.5, 0.5, 0.5]}\n", "data.ratios"),
        ("student: openai:x@http://h\n", "student: "),
        ("repair: {recipe: everything}\n", "repair.recipe: "),
        ("training: {base: embedded}\n", "training.base: set by the run stage"),
        ("audit: {severity: {moderate: 0.5}}\n", "severity bounds must increase"),
        ("repair: {weighting: oversample, severity_weights: {mild: 1.5}}\n", "severity_weights.mild is 1.5"),
        ("data: {bbq: bbq_dir}\n", "data.bbq rebuilds N1 of the upstream suite, but data.suite is demo"),
        ("ablations: {tox_lambdas: [0, 0.1]}\n", "ablations.tox_lambdas: every λ must be above 0"),
        ("ablations: {tox: true}\n", "ablations.tox: unknown key (did you mean ablations.tox_sft?)"),
        ("answer_mode: likelihood\n", "answer_mode: "),
        (
            "teacher: file:t.jsonl\nablations: {predicted_labels: true}\n",
            "ablations.predicted_labels asks the teacher without the gold label",
        ),
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
        if path.name.endswith("cache.jsonl") or path.name in ("scores.jsonl", "train_log.jsonl"):
            continue
        ids = [json.loads(x)["id"] for x in path.read_text().splitlines() if x.strip()]
        assert len(ids) == len(set(ids)), path
    # Caches hold each key once, too.
    for path in root.rglob("*cache.jsonl"):
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
    names = [s.name for s in RunStages(cfg, results_console()).stages()]
    assert [n for n in names if not n.startswith("suite_")] == STAGE_ORDER
    # One stage per evaluation suite and model, between the last audit and the report.
    suites = [n for n in names if n.startswith("suite_")]
    assert len(suites) == 4 * len(cfg.evaluations) and names[-1] == "report"
    assert names.index(suites[0]) == names.index("policy") + 1


def test_stage_fingerprints_see_the_chat_template_the_examples_file_and_the_check(
    tmp_path, tiny_llama, teacher_server
):
    """Editing what changes outputs but not the spec string still reruns the stages that used it."""
    student = tmp_path / "student"
    shutil.copytree(tiny_llama, student)
    examples = tmp_path / "examples.jsonl"
    examples.write_text(json.dumps({"question": "Q?", "label": "NO", "answer": "No.\nConclusion: NO"}) + "\n")
    cfg = RunConfig.model_validate(
        tiny_config(tmp_path / "run", student, teacher_server, teacher_examples=str(examples))
    )

    def params() -> dict:
        return {
            s.name: json.dumps(s.params(), sort_keys=True, default=str)
            for s in build_pipeline(cfg, results_console()).stages
        }

    before = params()
    tok_cfg = student / "tokenizer_config.json"
    tc = json.loads(tok_cfg.read_text())
    tc["chat_template"] = (tc.get("chat_template") or "") + "{# edited #}"
    tok_cfg.write_text(json.dumps(tc))
    after_template = params()
    assert after_template["eval_m0"] != before["eval_m0"] and after_template["data"] == before["data"]
    examples.write_text(
        json.dumps({"question": "Q2?", "label": "NO", "answer": "No.\nConclusion: NO"}) + "\n"
    )
    after_examples = params()
    assert after_examples["distill"] != after_template["distill"]
    assert after_examples["eval_m0"] == after_template["eval_m0"]


# ---- issue 10: setup, baselines, paired tests, parseable drift, QC note, repair.trained, stage times


def _copy_run(finished_run, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(Path(finished_run.out), copy)
    return copy


def _rewrite_jsonl(path: Path, change) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    path.write_text("".join(json.dumps(change(i, r)) + "\n" for i, r in enumerate(rows)))


def test_report_setup_names_benchmarks_per_cell_split_sizes_and_small_cells(finished_run, tmp_path):
    from dartkit.pipeline.report import build_report

    copy = _copy_run(finished_run, tmp_path)
    report = (Path(finished_run.out) / "report.md").read_text()
    assert "| Benchmarks | present: D1, D2, D3, D4, N1, N2, N3, N4; absent: none |" in report
    assert "| per_cell | all items (no per_cell limit) |" in report
    assert "Split sizes per benchmark (YES / NO items):" in report
    summary = json.loads((copy / "data" / "summary.json").read_text())
    d3 = summary["counts"]["D3"]
    assert (
        "| D3 | " + " | ".join(f"{d3['YES'][s]} / {d3['NO'][s]}" for s in ("train", "audit", "val", "test"))
        in report
    )
    assert "**Small cells**: all 64 benchmark x label x split cells" in report  # the demo suite is tiny
    info = json.loads((Path(finished_run.out) / "run.json").read_text())
    assert info["data"]["warnings"] == summary["warnings"] and len(summary["warnings"]) == 64
    # A suite without N1, sampled per cell, with one small cell: each is named.
    summary.update(present=[b for b in summary["present"] if b != "N1"], absent=["N1"], per_cell=12)
    del summary["counts"]["N1"]
    summary["small_cells"] = [
        {"benchmark": "D3", "label": "NO", "split": "val", "n": 0, "message": "D3 NO val: empty"}
    ]
    (copy / "data" / "summary.json").write_text(json.dumps(summary))
    report = build_report(copy).read_text()
    assert "absent: N1 |" in report and "| per_cell | 12 items per benchmark x label" in report
    assert (
        "**Small cells**: 1 benchmark x label x split cell(s) of the splits in use are empty or hold fewer than 5 items (D3: NO val empty)"
        in report
    )


def test_every_accuracy_table_has_baseline_rows(finished_run):
    root = Path(finished_run.out)
    info = json.loads((root / "run.json").read_text())
    report = (root / "report.md").read_text()
    for split in ("test", "val", "audit"):
        gold = [
            json.loads(x)["gold"]
            for x in (root / "eval" / "m0" / split / "generations.jsonl").read_text().splitlines()
        ]
        b = info["baselines"][split]
        assert b["always_yes"]["accuracy"] == pytest.approx(gold.count("YES") / len(gold))
        assert b["always_no"]["accuracy"] == pytest.approx(gold.count("NO") / len(gold))
        assert (
            b["n"] == len(gold) == info[{"test": "evaluation"}.get(split, f"evaluation_{split}")]["m0"]["n"]
        )
    # Each of the three split tables (test, val, audit) shows both constant answers, labelled as baselines.
    rows = [x for x in report.splitlines() if x.startswith("| *baseline: ")]
    assert len(rows) == 6 and sum("always NO" in x for x in rows) == 3
    assert sum("majority class" in x for x in rows) == 3
    # The per-benchmark table gets both baselines as columns.
    assert "| *baseline: always YES* | *baseline: always NO* |" in report


def test_paired_mcnemar_for_every_pair_that_matters(finished_run):
    from dartkit.stats.inference import mcnemar_exact

    root = Path(finished_run.out)
    info = json.loads((root / "run.json").read_text())
    pairs = [(m["first"], m["second"]) for m in info["mcnemar"]]
    assert pairs == [
        ("m0", "label_only"),
        ("m0", "m_int"),
        ("m0", "m_dart"),
        ("m_int", "m_dart"),
        ("label_only", "m_dart"),
    ]
    gens = {
        k: [
            json.loads(x) for x in (root / "eval" / k / "test" / "generations.jsonl").read_text().splitlines()
        ]
        for k in ("m0", "label_only", "m_int", "m_dart")
    }
    for m in info["mcnemar"]:
        assert {
            k: m[k] for k in ("n", "only_first_correct", "only_second_correct", "p_value")
        } == mcnemar_exact(gens[m["first"]], gens[m["second"]])
    report = (root / "report.md").read_text()
    assert "### Paired comparisons (test)" in report
    assert "| M_int (Stage I) | M_DART | 16 |" in report and "| label-only SFT | M_DART | 16 |" in report


def test_mostly_unparseable_model_is_flagged_as_measuring_the_format(finished_run, tmp_path):
    from dartkit.pipeline.report import build_report

    copy = _copy_run(finished_run, tmp_path)
    # The tiny models never finish a conclusion; here M0 answers none on 9 of 16 test items (more
    # than half) and the trained models always answer (half of them right).
    for model, unparsed in (("m0", 9), ("label_only", 0), ("m_int", 0), ("m_dart", 0)):
        _rewrite_jsonl(
            copy / "eval" / model / "test" / "generations.jsonl",
            lambda i, r, u=unparsed: {**r, "conclusion": None if i < u else ("YES" if i % 2 else "NO")},
        )
        metrics = json.loads((copy / "eval" / model / "test" / "metrics.json").read_text())
        metrics["unparseable_rate"] = unparsed / 16
        (copy / "eval" / model / "test" / "metrics.json").write_text(json.dumps(metrics))
    report = build_report(copy).read_text()
    info = json.loads((copy / "run.json").read_text())
    assert info["format_bound"]["test"] == {"m0": 9 / 16}
    assert "| M0 (base) ⚠ 56.2% unparseable: measures the answer format, not the task | 16 |" in report
    m0_rows = [m for m in info["mcnemar"] if "m0" in (m["first"], m["second"])]
    assert m0_rows and all(m["format_bound"] == {"m0": 9 / 16} for m in m0_rows)
    assert "M0 (base) is 56.2% unparseable: this compares answer format, not the task |" in report
    assert [m["format_bound"] for m in info["mcnemar"] if "m0" not in (m["first"], m["second"])] == [{}, {}]
    assert "M0 (base) ⚠ | label-only SFT | M_int (Stage I) | M_DART |" in report  # per-benchmark columns
    assert "⚠ M0's test answers are 56.2% unparseable: every drift below compares" in report


def test_no_repair_trained_means_no_drift_reduction_is_reported(finished_run, tmp_path):
    """M_DART is M_int when no repair passes QC: a reduction of 0 would be a number about nothing."""
    from dartkit.pipeline.report import build_report

    copy = _copy_run(finished_run, tmp_path)
    record = json.loads((copy / "stages" / "train_dart.json").read_text())
    record["info"] = {"trained": False, "reason": "no repair rationale was accepted: M_DART is M_int"}
    (copy / "stages" / "train_dart.json").write_text(json.dumps(record))
    shutil.rmtree(copy / "m_dart" / "adapter")
    report = build_report(copy).read_text()
    info = json.loads((copy / "run.json").read_text())
    assert (
        info["m_dart_is_m_int"] and info["drift_reduction"] is None and info["drift_reduction_ci95"] is None
    )
    assert "Drift reduction: not measured: no repair rationale passed QC" in report
    assert "| **headline**: drift reduction on test |" not in report
    assert "M_DART is M_int unchanged (no repair passed QC)" in report  # beside every McNemar row with M_DART


def test_harm_and_drift_over_parseable_answers_only(finished_run, tmp_path):
    from dartkit.pipeline.report import build_report

    copy = _copy_run(finished_run, tmp_path)

    # Pair 0 loops (no conclusion) and is the only drift case but one; pair 1 drifts with both parseable.
    def change(i, p):
        p = {**p, "baseline_conclusion": "NO", "candidate_conclusion": "YES", "drift": i in (0, 1)}
        if i == 0:
            p.update(candidate_conclusion=None, h_candidate=0.0, h_baseline=0.5, delta=-0.5)
        if i == 2:
            p.update(baseline_conclusion=None)
        return p

    _rewrite_jsonl(copy / "audit" / "m_int" / "pairs.jsonl", change)
    report = build_report(copy).read_text()
    v = json.loads((copy / "run.json").read_text())["audits_parseable"]["m_int"]
    assert (
        v["n_pairs"],
        v["n_parseable"],
        v["n_no_conclusion_baseline"],
        v["n_no_conclusion_candidate"],
    ) == (
        16,
        14,
        1,
        1,
    )
    assert (v["n_drift"], v["n_drift_parseable"], v["n_drift_without_conclusion"]) == (2, 1, 1)
    assert v["drift_rate_parseable"] == pytest.approx(1 / 14)
    # The looping answer's low harm is left out of the parseable means.
    pairs = [json.loads(x) for x in (copy / "audit" / "m_int" / "pairs.jsonl").read_text().splitlines()]
    both = [p for i, p in enumerate(pairs) if i not in (0, 2)]
    assert v["mean_h_candidate_parseable"] == pytest.approx(sum(p["h_candidate"] for p in both) / 14)
    assert v["mean_h_candidate"] == pytest.approx(sum(p["h_candidate"] for p in pairs) / 16)
    a = json.loads((copy / "audit" / "m_int" / "summary.json").read_text())
    assert (
        f"| after Stage I: M_int vs M0 | test | 16 | {a['n_candidates']} | {a['n_drift']} | 1 / 1 |" in report
    )
    assert "#### Parseable answers only" in report
    assert "| after Stage I: M_int vs M0 | test | 14 / 16 | 1 | 7.1% (" in report


def test_qc_table_says_reasons_can_sum_past_the_rejected_count(finished_run):
    root = Path(finished_run.out)
    report = (root / "report.md").read_text()
    d = json.loads((root / "distill" / "metrics.json").read_text())
    r = json.loads((root / "repair" / "metrics.json").read_text())
    row = f"| **rationales rejected** | {d['n'] - d['accepted']} | {d['n'] - d['accepted_first_try']} | {r['n_drift_cases'] - r['accepted']} |"
    assert row in report
    assert "can sum to more than the number rejected" in report


def test_run_json_says_m_dart_was_trained(finished_run):
    root = Path(finished_run.out)
    info = json.loads((root / "run.json").read_text())
    # repair/metrics.json is the rationale stage's (trained: false); M_DART is trained by train_dart.
    assert json.loads((root / "repair" / "metrics.json").read_text())["trained"] is False
    assert info["repair"]["trained"] is True and info["repair"]["adapter"] == "m_dart/adapter"
    assert info["repair"]["trained_by"] == "train_dart stage" and info["repair"]["training"]["steps"] > 0


def _toy_pipeline(root: Path, work):
    from dartkit.pipeline.runner import Pipeline, Stage

    def run_stage():
        work()
        (root / "out.txt").write_text("done")
        return {}

    stage = Stage("toy", "a toy stage", (), ("out.txt",), lambda: {"x": 1}, run_stage, workdirs=("work",))
    return Pipeline(root, [stage], echo=lambda _: None)


def test_stage_time_counts_interrupted_attempts(tmp_path):
    """An attempt that fails (or is killed) still counts: the record sums every attempt's seconds."""
    from dartkit.pipeline.runner import read_marker

    calls = []

    def work():
        calls.append(1)
        time.sleep(0.3)
        if len(calls) == 1:
            raise RuntimeError("interrupted")  # an error (or Ctrl-C) during the first attempt

    pipe = _toy_pipeline(tmp_path, work)
    with pytest.raises(RuntimeError, match="interrupted"):
        pipe.run()
    marker = read_marker(tmp_path / "stages" / "toy.started")
    assert len(marker["attempts"]) == 1 and marker["attempts"][0]["seconds"] >= 0.3
    # A kill -9 leaves its last heartbeat: pretend an earlier attempt ran 100 s before that one.
    marker["attempts"].insert(0, {"started_utc": "2026-01-01T00:00:00Z", "seconds": 100.0})
    (tmp_path / "stages" / "toy.started").write_text(json.dumps(marker))
    assert pipe.plan()[0][1] == "resume (interrupted)"
    pipe.run()
    rec = json.loads((tmp_path / "stages" / "toy.json").read_text())
    assert rec["attempts"] == 3 and rec["seconds"] >= 100.59
    assert 0.3 <= rec["seconds_last_attempt"] < rec["seconds"] - 100
    assert not (tmp_path / "stages" / "toy.started").exists()


def test_stage_record_holds_the_stage_s_own_peak_memory(tmp_path):
    blocks = []

    def work():
        block = bytearray(200 * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])
        blocks.append(len(block))

    _toy_pipeline(tmp_path, work).run()
    first = json.loads((tmp_path / "stages" / "toy.json").read_text())["memory"]
    assert first["peak_rss_mb"] > 200
    if first["scope"] == "stage":  # Linux: the mark is reset per stage, so a light rerun reads low
        (tmp_path / "out.txt").unlink()
        _toy_pipeline(tmp_path, lambda: None).run()
        again = json.loads((tmp_path / "stages" / "toy.json").read_text())["memory"]
        assert again["peak_rss_mb"] < first["peak_rss_mb"] - 150


def test_stage_time_forgets_attempts_under_other_settings_and_reads_old_markers(tmp_path):
    pipe = _toy_pipeline(tmp_path, lambda: None)
    (tmp_path / "stages").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "stages" / "toy.started").write_text(
        json.dumps({"fingerprint": "other", "attempts": [{"started_utc": "x", "seconds": 50.0}]})
    )
    pipe.run()
    rec = json.loads((tmp_path / "stages" / "toy.json").read_text())
    assert rec["attempts"] == 1 and rec["seconds"] < 50 and not (tmp_path / "work").exists()
    # A marker from before attempts were kept holds the bare fingerprint: still a resume.
    (tmp_path / "work").mkdir()
    (tmp_path / "stages" / "toy.json").unlink()
    (tmp_path / "stages" / "toy.started").write_text(pipe.fingerprint(pipe.stages[0]))
    assert pipe.plan()[0][1] == "resume (interrupted)"
    pipe.run()
    assert (tmp_path / "work").is_dir()  # resumed: its work directory was kept
    assert json.loads((tmp_path / "stages" / "toy.json").read_text())["attempts"] == 1


def test_running_stage_keeps_its_time_in_the_marker(tmp_path, monkeypatch):
    """What a kill -9 leaves behind: the marker holds the seconds up to the last heartbeat."""
    from dartkit.pipeline import runner

    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 0.05)
    seen = []

    def work():
        time.sleep(0.4)
        seen.append(runner.read_marker(tmp_path / "stages" / "toy.started")["attempts"][-1]["seconds"])

    _toy_pipeline(tmp_path, work).run()
    assert seen[0] >= 0.2


def test_report_stage_times_say_what_they_cover(finished_run):
    root = Path(finished_run.out)
    report = (root / "report.md").read_text()
    info = json.loads((root / "run.json").read_text())
    assert "summed over every attempt with its current settings" in report
    assert "| stage | seconds | attempts | peak memory (MiB) |" in report and "| **total** |" in report
    peaks = info["stage_peak_rss_mb"]
    assert set(peaks) == set(info["stage_seconds"])
    # (The stages ran inside this test process, which already held other tests' models: the
    # per-stage reset is checked in test_stage_record_holds_the_stage_s_own_peak_memory.)
    assert all(p["peak_rss_mb"] > 0 and p["scope"] in ("stage", "process") for p in peaks.values())
    row = next(line for line in report.splitlines() if line.startswith("| eval_m0 |"))
    assert row.rstrip(" |*").split("|")[-1].strip().isdigit()
    assert set(info["stage_attempts"]) == set(info["stage_seconds"]) and set(
        info["stage_attempts"].values()
    ) == {1}


def test_dry_run_fails_for_a_data_source_that_does_not_exist(tmp_path):
    cfg = write_cfg(tmp_path / "c.yaml", {"data": {"suite": "wang2025", "source": str(tmp_path / "nowhere")}})
    res = runner.invoke(app, ["run", "--config", str(cfg), "--out", str(tmp_path / "r"), "--dry-run"])
    assert res.exit_code == 2 and "data.source: " in res.output and "nowhere: no such file" in res.output
    assert "config is valid" not in res.output


def test_data_stage_warns_once_per_benchmark_not_once_per_cell(tmp_path):
    """The demo suite has 64 small cells; the run prints a headline and one line per benchmark."""
    from rich.console import Console

    console = Console(record=True, width=200)
    cfg = RunConfig.model_validate({"out": str(tmp_path / "run")})
    build_pipeline(cfg, console).by_name["data"].run()
    lines = [ln for ln in console.export_text().splitlines() if ln.strip()]
    assert (
        lines[0].startswith("warning: 64 benchmark x label x split cell(s)") and "data.per_cell" in lines[0]
    )
    assert len(lines) == 1 + 8 and lines[1].startswith("  D1: YES train 4")


def test_dry_run_fails_for_an_evaluation_suite_source_that_does_not_load(tmp_path):
    cfg = RunConfig.model_validate(
        {"out": str(tmp_path / "run"), "evaluations": [{"suite": "xstest", "source": str(tmp_path / "nope")}]}
    )
    with pytest.raises(
        DartkitError, match=r"evaluations\[0\] \(xstest\): .*xstest_prompts.csv: no such file"
    ):
        run(cfg, dry_run=True, console=results_console())


def test_an_upstream_suite_without_source_or_download_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="suite hatecheck reads upstream files: set `source`"):
        RunConfig.model_validate({"out": str(tmp_path), "evaluations": [{"suite": "hatecheck"}]})
    with pytest.raises(ValueError, match="listed more than once"):
        RunConfig.model_validate(
            {"out": str(tmp_path), "evaluations": [{"suite": "transfer"}, {"suite": "transfer"}]}
        )


def test_every_model_runs_each_evaluation_suite_and_the_report_compares_them(finished_run):
    root = Path(finished_run.out)
    for model in ("m0", "label_only", "m_int", "m_dart"):
        metrics = json.loads((root / "suites" / "transfer" / model / "metrics.json").read_text())
        assert metrics["items"] == 8 and metrics["subset"] == {"limit": 8, "seed": 0}
        assert (root / "stages" / f"suite_transfer_{model}.json").is_file()
    info = json.loads((root / "run.json").read_text())
    transfer = info["suites"]["transfer"]
    assert list(transfer["metrics"]) == ["M0", "label-only SFT", "M_int", "M_DART"]
    pairs = {(p["a"], p["b"]) for p in transfer["tests"]["refusal_detector"]["pairs"]}
    assert ("M0", "M_DART") in pairs and ("M_int", "M_DART") in pairs
    report = (root / "report.md").read_text()
    assert "## External evaluations" in report and "### transfer:" in report
    assert "| M_DART | 8 |" in report and "needs a judge" in report
    assert (root / "suites" / "transfer" / "transfer_compare.png").is_file()


def test_a_changed_suite_limit_reruns_only_that_suite(finished_run, tmp_path):
    changed = finished_run.model_copy(
        update={"evaluations": [finished_run.evaluations[0].model_copy(update={"limit": 4})]}
    )
    plan = statuses(changed)
    assert plan["suite_transfer_m0"].startswith("rerun") and plan["suite_transfer_m_dart"].startswith("rerun")
    assert plan["eval_m0"] == "done" and plan["train_int"] == "done"


def test_dry_run_shows_small_cells_and_the_evaluations_before_anything_runs(tmp_path):
    out = run(
        RunConfig.model_validate({"out": str(tmp_path / "run")}), dry_run=True, console=results_console()
    )
    setup = out["setup"]
    assert setup["small cells"].startswith("64 benchmark x label x split cell(s) empty or below 5 items")
    assert setup["evaluations"].startswith("transfer (12 items), hatecheck (14 items, sample)")
    assert not (tmp_path / "run").exists()


def test_stage_times_list_suite_stages_in_pipeline_order():
    from dartkit.pipeline.report import _stage_times

    records = {n: {"seconds": 1.0} for n in ("suite_transfer_m_int", "suite_transfer_m0", "report", "data")}
    records["suite_transfer_m_dart"] = records["suite_transfer_label_only"] = {"seconds": 1.0}
    assert list(_stage_times(records)) == [
        "data",
        "suite_transfer_m0",
        "suite_transfer_label_only",
        "suite_transfer_m_int",
        "suite_transfer_m_dart",
    ]


def test_ablation_table_has_every_enabled_row_on_the_same_test_items(finished_run):
    root = Path(finished_run.out)
    info = json.loads((root / "run.json").read_text())["ablations"]
    table = info["ablation_table"]
    rows = {r["model"]: r for r in table["rows"]}
    assert list(rows) == ["m0", "label_only", "predicted", "m_int", "tox_sft", "m_dart_unweighted", "m_dart"]
    assert table["split"] == "test" and {r["n"] for r in rows.values()} == {16}
    for key, r in rows.items():
        assert r["harm"]["n"] == 16 and 0 <= r["harm"]["mean"] <= 1, key
        if key != "m0":
            audit = json.loads((root / "audit" / key / "summary.json").read_text())
            assert r["drift"]["rate"] == audit["drift_rate"], key
    # Drift reduction against M_int: paired on the same items, for every row but M0 and M_int.
    assert {k for k, r in rows.items() if "drift_reduction_vs_m_int" in r} == set(rows) - {"m0", "m_int"}
    # The unweighted model trained every repair at weight 1, from M_int, on M_DART's data.
    meta = json.loads((root / "ablations" / "unweighted" / "adapter" / "dartkit_adapter.json").read_text())
    assert meta["weights_from"] is None and meta["init_adapter"]["path"].endswith("m_int/adapter")
    weights = [
        r["severity_weight"]
        for r in map(json.loads, (root / "repair" / "repair.jsonl").open())
        if r["accepted"]
    ]
    by_construction = any("DART's by construction" in n for n in rows["m_dart_unweighted"]["notes"])
    assert by_construction == all(w == 1 for w in weights)
    report = (root / "report.md").read_text()
    assert "## Ablations" in report and "DART without repair weighting" in report
    assert "predicted-label distillation" in report
    # The predicted-label row says what it was trained on; identical rows say they are identical.
    kept = [
        r
        for r in map(json.loads, (root / "ablations" / "predicted_distill" / "teacher.jsonl").open())
        if r["accepted"]
    ]
    assert any(n.startswith(f"trained on {len(kept)} of ") for n in rows["predicted"]["notes"])

    def texts(model):
        return [json.loads(x)["text"] for x in (root / "eval" / model / "test" / "generations.jsonl").open()]

    identical = texts("tox_sft") == texts("m_int")
    assert ("every answer is identical to M_int's" in rows["tox_sft"]["notes"]) == identical
    assert ("⚠" in report.split("| M0 (base)", 1)[1][:4]) == (rows["m0"]["unparseable_rate"] > 0.5)


def test_predicted_label_rows_were_distilled_without_the_gold_label(finished_run):
    root = Path(finished_run.out)
    rows = [
        json.loads(x)
        for x in (root / "ablations" / "predicted_distill" / "teacher.jsonl").read_text().splitlines()
    ]
    assert rows and all(r["labels"] == "predicted" and "correct answer is" not in r["prompt"] for r in rows)
    # The fake teacher answers NO when it is not told the label: only NO items are kept.
    assert all(r["gold"] == "NO" for r in rows if r["accepted"])
    assert any(r["reason"] and "predicted_wrong_label" in r["reason"] for r in rows)


def test_tox_sweep_trains_one_model_per_lambda_and_chooses_on_val(finished_run):
    root = Path(finished_run.out)
    sweep = json.loads((root / "ablations" / "tox_sft" / "sweep.json").read_text())
    assert [t["lambda"] for t in sweep["table"]] == [0.1, 0.5] and sweep["split"] == "val"
    assert sweep["chosen"] in (0.1, 0.5)
    assert all(t["final_sft_loss"] > 0 and 0 <= t["train_sample_toxicity"] <= 1 for t in sweep["table"])
    for lam in (0.1, 0.5):
        trained = root / "ablations" / "tox_sft" / "train" / f"lambda_{lam:g}"
        assert json.loads((trained / "metrics.json").read_text())["tox_lambda"] == lam
        assert "toxicity" in json.loads((trained / "adapter" / "dartkit_adapter.json").read_text())
    report = (root / "report.md").read_text()
    assert "## Toxicity-regularised SFT: the λ sweep" in report and "chosen" in report


def test_teacher_harm_compares_the_same_training_items(finished_run):
    root = Path(finished_run.out)
    s = json.loads((root / "ablations" / "teacher_harm" / "summary.json").read_text())
    accepted = [
        json.loads(x)["id"]
        for x in (root / "distill" / "teacher.jsonl").read_text().splitlines()
        if json.loads(x)["accepted"]
    ]
    assert s["split"] == "train" and s["n"] == len(accepted) and "trained on them" in s["items"]
    assert set(s["means"]) == {"teacher", "m0", "m_int"}
    assert set(s["comparisons"]) == {"m_int-teacher", "m_int-m0", "teacher-m0"}
    assert s["verdict"] and "Is drift inherited from the teacher?" in (root / "report.md").read_text()


def test_policy_on_and_off_for_every_table_model(finished_run):
    root = Path(finished_run.out)
    pol = json.loads((root / "run.json").read_text())["ablations"]["policy"]
    assert set(pol) == {"m0", "label_only", "predicted", "m_int", "tox_sft", "m_dart_unweighted", "m_dart"}
    gens = [
        json.loads(x)
        for x in (root / "eval" / "m_int" / "test_policy" / "generations.jsonl").read_text().splitlines()
    ]
    assert all("Explanation policy" in g["prompt"] for g in gens)
    assert all(p["accuracy_on"] is not None and p["drift_on"] is not None for p in pol.values())
    assert all(p["drift_counts_on"]["n"] == 16 and p["unparseable_on"] is not None for p in pol.values())
    assert "drift on (drift / mirror of n)" in (root / "report.md").read_text()
    assert "## The explanation policy on every model" in (root / "report.md").read_text()


def test_both_answer_modes_are_reported_for_every_model(finished_run):
    root = Path(finished_run.out)
    modes = json.loads((root / "run.json").read_text())["ablations"]["answer_modes"]
    assert {"m0", "m_int", "m_dart"} <= set(modes)
    for m in modes.values():
        assert set(m) >= {"generate", "loglik"} and m["loglik"]["unparseable_rate"] == 0
    assert "## Answer modes" in (root / "report.md").read_text()


def test_report_setup_marks_a_rebuilt_benchmark_as_not_upstream():
    from dartkit.pipeline.report import _benchmarks_cell

    cell = _benchmarks_cell(
        {
            "present": ["D1", "N1"],
            "absent": [],
            "rebuilt": {"N1": {"description": "N1 rebuilt from BBQ (6 of 9 categories)"}},
        }
    )
    assert "D1, N1 (rebuilt by dartkit, not upstream: N1 rebuilt from BBQ (6 of 9 categories))" in cell


def test_per_benchmark_table_names_a_rebuilt_benchmark():
    from dartkit.pipeline.report import _per_benchmark

    evals = {"m0": {"per_benchmark": {"D1": {"n": 2, "accuracy": 0.5}, "N1": {"n": 2, "accuracy": 1.0}}}}
    rows = _per_benchmark(evals, None, {"N1": {"description": "rebuilt"}})
    assert any(r.startswith("| N1 (rebuilt from BBQ, not upstream) | 2 |") for r in rows)
    assert any(r.startswith("| D1 | 2 |") for r in rows)


def test_a_run_s_audit_is_annotated_by_two_people_and_summarised_in_the_report(finished_run, tmp_path):
    """Issue 13 end to end, offline: export a run's audit, two annotators answer through the page's
    API, `annotate agreement` summarises, and the run report gains the human-check section."""
    from fastapi.testclient import TestClient

    from dartkit.annotate.server import create_app

    root = tmp_path / "run"
    shutil.copytree(Path(finished_run.out), root)
    res = runner.invoke(
        app, ["annotate", "export", str(root / "audit" / "m_dart"), "--n", "8", "--seed", "1"]
    )
    assert res.exit_code == 0, res.output
    out = root / "annotate" / "m_dart"
    key = {i["item_id"]: i for i in json.loads((root / "annotate" / "m_dart.key.json").read_text())["items"]}
    tokens = json.loads((out / "tokens.json").read_text())
    client = TestClient(create_app(out))
    for annotator, token in tokens.items():
        queue = client.get(f"/api/{token}/queue").json()["items"]
        for k, item in enumerate(queue):
            letter = key[item["item_id"]]["candidate_letter"][annotator]
            # a1 marks drift exactly where the audit found it; a2 also where it did not, on one item
            says = key[item["item_id"]]["drift"] or (annotator == "a2" and k == 0)
            body = {"drift": True, "which": letter, "severity": "mild"} if says else {"drift": False}
            assert client.put(f"/api/{token}/answers/{item['item_id']}", json=body).status_code == 200
    res = runner.invoke(app, ["annotate", "agreement", str(out), "--resamples", "200"])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "agreement.json").read_text())
    assert set(result["cohen_kappa"]) == {"a1|a2"}
    screen_judge = result["auditor"]["screen_judge"]
    assert screen_judge["fn"] == 0  # every item the audit called drift, people called drift too
    res = runner.invoke(app, ["report", str(root)])
    assert res.exit_code == 0, res.output
    report = (root / "report.md").read_text()
    assert "## Human check of the audit: `m_dart` (after repair: M_DART vs M0)" in report
    assert "on the test split" in report and "annotate/m_dart/agreement.json" in report
    info = json.loads((root / "run.json").read_text())
    assert info["human_check"]["m_dart"]["cohen_kappa"] == result["cohen_kappa"]
    assert "Out of date" not in report
    # An answer changed after the summary: the report says its figures are out of date.
    token = tokens["a1"]
    item = client.get(f"/api/{token}/queue").json()["items"][0]["item_id"]
    assert (
        client.put(
            f"/api/{token}/answers/{item}", json={"drift": False, "note": "changed my mind"}
        ).status_code
        == 200
    )
    # A second export with answers but no summary yet: the report says so instead of staying silent.
    res = runner.invoke(
        app, ["annotate", "export", str(root / "audit" / "m_int"), "--n", "4", "--annotators", "1"]
    )
    assert res.exit_code == 0, res.output
    token_int = json.loads((root / "annotate" / "m_int" / "tokens.json").read_text())["a1"]
    client_int = TestClient(create_app(root / "annotate" / "m_int"))
    first = client_int.get(f"/api/{token_int}/queue").json()["items"][0]["item_id"]
    assert client_int.put(f"/api/{token_int}/answers/{first}", json={"drift": False}).status_code == 200
    assert runner.invoke(app, ["report", str(root)]).exit_code == 0
    report = (root / "report.md").read_text()
    assert "**Out of date.**" in report and "annotate agreement" in report
    assert "## Human check of the audit: `m_int`" in report and "1 answer(s) saved, no summary yet" in report


def test_changing_how_the_judge_is_held_to_its_schema_reruns_the_audits(tmp_path, tiny_llama, teacher_server):
    """backend.structured_output changes the judge's verdicts: with a judge, the audits depend on it."""
    base = tiny_config(tmp_path / "run", tiny_llama, teacher_server)
    base["audit"] = {**base.get("audit", {}), "judge": f"openai:judge@{teacher_server.base_url}"}

    def params(mode: str) -> dict:
        cfg = RunConfig.model_validate(
            {**base, "backend": {**base.get("backend", {}), "structured_output": mode}}
        )
        return {
            s.name: json.dumps(s.params(), sort_keys=True, default=str)
            for s in build_pipeline(cfg, results_console()).stages
        }

    auto, off = params("auto"), params("off")
    assert auto["audit_int"] != off["audit_int"] and auto["eval_m0"] == off["eval_m0"]
