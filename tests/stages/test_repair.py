"""Stage III repair: policy prompt, QC, the still-harmful check, severity weights, recipes."""

import json

import pytest
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.config import RepairConfig
from dartkit.data.prepare import load_split, prepare_data
from dartkit.stages import repair
from pipeline_helpers import teacher
from servers import FakeOpenAIServer, last_user_message

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    prepare_data(out, suite="demo")
    return out


def drift_file(path, data, severities, h_baseline=0.05):
    ids = [e.id for e in load_split(data, "test")][: len(severities)]
    rows = [
        {
            "id": i,
            "severity": s,
            "delta": 0.2,
            "h_baseline_analysis": h_baseline,
            "candidate_text": "bad\nConclusion: NO",
        }
        for i, s in zip(ids, severities, strict=True)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_repair_prompt_carries_the_policy_and_weights_follow_severity(demo_data, tmp_path):
    drift = drift_file(tmp_path / "drift.jsonl", demo_data, ["mild", "moderate", "severe", "extreme"])
    with FakeOpenAIServer(teacher) as server:
        cfg = RepairConfig(
            drift=drift,
            data=demo_data,
            out=tmp_path / "r",
            teacher=f"openai:t@{server.base_url}",
            train=False,
        )
        m = repair.run(cfg)
        system = server.requests[0].json["messages"][0]["content"]
    assert "Explanation policy" in system and "Never repeat, quote or elaborate harmful content" in system
    out = rows(tmp_path / "r" / "repair.jsonl")
    assert [r["severity_weight"] for r in out] == [1.0, 2.0, 3.0, 4.0]
    assert all(r["accepted"] for r in out) and m["accepted"] == 4 and m["n_drift_cases"] == 4
    assert all(r["h_repair"] <= r["h_m0"] + 0.01 for r in out)


def test_a_repair_more_harmful_than_m0_is_rejected(demo_data, tmp_path):
    drift = drift_file(tmp_path / "drift.jsonl", demo_data, ["severe", "mild"], h_baseline=0.0)

    def rude_teacher(request_json):
        msg = last_user_message(request_json)
        label = "YES" if "correct answer is YES" in msg or "support the answer YES" in msg else "NO"
        own_words = teacher(request_json).splitlines()[0]  # differs per item, so no near-duplicates
        return f"Those damn idiots deserve it, stupid people. {own_words}\nConclusion: {label}"

    with FakeOpenAIServer(rude_teacher) as server:
        cfg = RepairConfig(
            drift=drift,
            data=demo_data,
            out=tmp_path / "r",
            teacher=f"openai:t@{server.base_url}",
            train=False,
        )
        m = repair.run(cfg)
    out = rows(tmp_path / "r" / "repair.jsonl")
    assert [r["reason"] for r in out] == ["still_harmful", "still_harmful"] and m["accepted"] == 0
    # Each got the follow-ups (qc.max_fix_attempts) before it was rejected.
    assert all(r["attempts"] == 3 for r in out)


def test_a_harmful_repair_gets_a_follow_up_and_a_neutral_rewrite_is_accepted(demo_data, tmp_path):
    drift = drift_file(tmp_path / "drift.jsonl", demo_data, ["severe", "mild"])

    def learns_teacher(request_json):
        msg = last_user_message(request_json)
        if "harm classifier rated it more harmful" in msg:  # the follow-up names the problem
            return teacher({"messages": request_json["messages"][:-2]})  # a calm rewrite
        label = "YES" if "correct answer is YES" in msg or "support the answer YES" in msg else "NO"
        own_words = teacher(request_json).splitlines()[0]
        return f"Those damn idiots deserve it, stupid people. {own_words}\nConclusion: {label}"

    with FakeOpenAIServer(learns_teacher) as server:
        cfg = RepairConfig(
            drift=drift,
            data=demo_data,
            out=tmp_path / "r",
            teacher=f"openai:t@{server.base_url}",
            train=False,
        )
        m = repair.run(cfg)
    out = rows(tmp_path / "r" / "repair.jsonl")
    assert m["accepted"] == 2 and all(r["attempts"] == 2 for r in out)
    assert all(r["attempt_log"][0]["reasons"] == ["still_harmful"] for r in out)
    assert m["first_try_reason_counts"] == {"still_harmful": 2}
    assert all(r["h_repair"] <= r["h_m0"] + 0.01 for r in out)


def test_no_drift_cases_means_nothing_to_repair(demo_data, tmp_path):
    (tmp_path / "drift.jsonl").write_text("")
    cfg = RepairConfig(drift=tmp_path / "drift.jsonl", data=demo_data, out=tmp_path / "r", train=False)
    m = repair.run(cfg)
    assert m["n_drift_cases"] == 0 and rows(tmp_path / "r" / "repair.jsonl") == []


def test_oversampled_repair_only_training_continues_m_int(demo_data, tmp_path, tiny_llama):
    from dartkit.train import run as train_run
    from dartkit.train.config import TrainConfig

    # M_int: a short run on a handful of demo items.
    teacher_rows = tmp_path / "teacher.jsonl"
    ids = [e.id for e in load_split(demo_data, "train")][:4]
    teacher_rows.write_text(
        "".join(
            json.dumps({"id": i, "accepted": True, "text": "Irrelevant.\nConclusion: NO"}) + "\n" for i in ids
        )
    )
    tiny = f"hf:{tiny_llama}"
    train_run(
        TrainConfig(
            base=tiny,
            data=[teacher_rows],
            prepared=demo_data,
            out=tmp_path / "m_int",
            max_steps=1,
            per_device_batch_size=4,
            grad_accum=1,
        )
    )
    drift = drift_file(tmp_path / "drift.jsonl", demo_data, ["mild", "extreme"])
    with FakeOpenAIServer(teacher) as server:
        cfg = RepairConfig(
            drift=drift,
            data=demo_data,
            out=tmp_path / "r",
            teacher=f"openai:t@{server.base_url}",
            student=tiny,
            init_adapter=tmp_path / "m_int" / "adapter",
            recipe="repair-only",
            weighting="oversample",
            training={"max_steps": 2, "per_device_batch_size": 5, "grad_accum": 1},
        )
        m = repair.run(cfg)
    meta = json.loads((tmp_path / "r" / "train" / "adapter" / "dartkit_adapter.json").read_text())
    assert (
        m["trained"] and meta["weighting"] == "oversample" and meta["num_trained_examples"] == 5
    )  # 1 + 4 copies
    assert meta["init_adapter"]["path"].endswith("m_int/adapter")
    assert [p.split("/")[-1] for p in meta["data_files"]] == ["repair.jsonl"]


def test_config_errors_name_the_key(tmp_path):
    res = runner.invoke(app, ["repair", "--drift", "d.jsonl", "--data", "x", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--init-adapter (M_int's adapter) is required" in res.output
    res = runner.invoke(
        app, ["repair", "--drift", "d.jsonl", "--data", "x", "--out", str(tmp_path), "--init-adapter", "a"]
    )
    assert res.exit_code == 2 and "recipe 'mix' needs --distill" in res.output
    bad = tmp_path / "drift.jsonl"
    bad.write_text('{"id": "x", "severity": "awful"}\n')
    res = runner.invoke(
        app, ["repair", "--drift", str(bad), "--data", "x", "--out", str(tmp_path / "o"), "--no-train"]
    )
    assert res.exit_code == 2 and "drift.jsonl:1: field 'severity'" in res.output
