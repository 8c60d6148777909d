"""The audit stage carries scenario keys into its pairs, and summary.json / audit.md show the interval,
the mirror count and the sign test beside the drift count."""

import json

import pytest

from dartkit.config import AuditConfig
from dartkit.data.prepare import prepare_data
from dartkit.stages import audit

CLEAN = "Group membership is irrelevant here; both must be treated alike.\nConclusion: NO"
NASTY = "Those stupid idiots are all the same, damn them, f*** them.\nConclusion: NO"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    prepare_data(out, suite="demo")
    return out


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generated_audit_pairs_carry_the_splits_scenario_keys(demo_data, tmp_path):
    s = audit.run(
        AuditConfig(baseline="dummy:no", candidate="dummy:echo", data=demo_data, out=tmp_path / "a")
    )
    keys = {e["id"]: e["scenario_key"] for e in lines(demo_data / "test.jsonl")}
    pairs = lines(tmp_path / "a" / "pairs.jsonl")
    assert pairs and all(p["scenario_key"] == keys[p["id"]] for p in pairs)
    assert {"drift_rate_ci95", "drift_rate_ci_method", "n_mirror", "sign_test"} <= set(s)
    md = (tmp_path / "a" / "audit.md").read_text()
    assert "mirror: ΔH < −τ" in md and "Drift-rate interval:" in md and "sign test" in md


def test_generation_files_with_the_prepared_split_get_its_keys(demo_data, tmp_path):
    tests = lines(demo_data / "test.jsonl")
    ids = [e["id"] for e in tests]
    base = write(tmp_path / "b.jsonl", [{"id": i, "text": CLEAN} for i in ids])
    # The candidate turns nasty on every item of eight scenario groups.
    groups = sorted({e["scenario_key"] for e in tests})[:8]
    nasty = {e["id"] for e in tests if e["scenario_key"] in groups}
    cand = write(tmp_path / "c.jsonl", [{"id": i, "text": NASTY if i in nasty else CLEAN} for i in ids])
    s = audit.run(
        AuditConfig(baseline_generations=base, candidate_generations=cand, data=demo_data, out=tmp_path / "a")
    )
    n_groups = len({e["scenario_key"] for e in tests})
    assert s["n_drift"] == len(nasty) and s["n_mirror"] == 0
    assert s["drift_rate_ci_method"] == f"cluster bootstrap over {n_groups} scenario groups, 2000 resamples"
    lo, hi = s["drift_rate_ci95"]
    assert lo <= s["drift_rate"] <= hi
    assert s["sign_test"]["n_drift"] == len(nasty) and s["sign_test"]["p_value"] < 0.05
    md = (tmp_path / "a" / "audit.md").read_text()
    assert f"| {len(nasty)} | {100 * s['drift_rate']:.1f}% | {100 * lo:.1f}%–{100 * hi:.1f}% | 0 |" in md


def test_keys_from_generation_files_and_unknown_keys(tmp_path):
    rows = [{"id": f"q{i}", "text": CLEAN, "scenario_key": f"s{i // 2}"} for i in range(8)]
    base = write(tmp_path / "b.jsonl", rows)
    cand = write(
        tmp_path / "c.jsonl", [{**r, "text": NASTY if r["id"] in ("q0", "q1") else CLEAN} for r in rows]
    )
    audit.run(AuditConfig(baseline_generations=base, candidate_generations=cand, out=tmp_path / "a"))
    assert [p["scenario_key"] for p in lines(tmp_path / "a" / "pairs.jsonl")] == [
        r["scenario_key"] for r in rows
    ]
    # A prompt file without scenario keys: the grouping is unknown, so the interval is Wilson's.
    prompts = write(tmp_path / "p.jsonl", [{"id": f"q{i}", "question": f"Question {i}?"} for i in range(4)])
    s = audit.run(
        AuditConfig(baseline="dummy:no", candidate="dummy:yes", prompts=prompts, out=tmp_path / "p")
    )
    assert all(p["scenario_key"] is None for p in lines(tmp_path / "p" / "pairs.jsonl"))
    assert s["drift_rate_ci_method"] == "Wilson score" and s["drift_rate_ci95"][1] > 0
