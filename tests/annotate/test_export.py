"""The blinded, stratified export: what annotators get, what only the key holds."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotate_helpers import make_audit
from dartkit.annotate.export import allocate, export, load_key
from dartkit.cli import app
from dartkit.errors import DataError


def _queues(out: Path) -> dict[str, list[dict]]:
    return {
        p.stem: [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted((out / "queues").glob("*.jsonl"))
    }


def test_allocation_is_equal_then_spreads_what_small_strata_cannot_take():
    assert allocate({"a": 3, "b": 2, "c": 1, "d": 4, "e": 20}, 12) == {"a": 3, "b": 2, "c": 1, "d": 3, "e": 3}
    assert allocate({"a": 1, "b": 50}, 10) == {"a": 1, "b": 9}
    assert allocate({"a": 2, "b": 3}, 100) == {"a": 2, "b": 3}  # fewer pairs than asked for


def test_sample_covers_every_stratum_and_the_key_records_population(export_result):
    key = load_key(export_result.key)
    assert set(key["strata"]) == {
        "drift:mild",
        "drift:moderate",
        "drift:severe",
        "judge_rejected",
        "screened_out",
    }
    assert key["strata"]["screened_out"] == {"population": 20, "sampled": 3}
    assert key["strata"]["judge_rejected"]["population"] == 4
    assert key["identical_excluded"] == 1
    assert key["audit"]["judged"] is True
    assert sum(v["sampled"] for v in key["strata"].values()) == len(key["items"]) == 12
    for item in key["items"]:
        assert item["stratum"].startswith("drift:") == item["drift"]
        assert (item["stratum"] == "judge_rejected") == (item["is_candidate"] and not item["drift"])


def test_letters_unblind_to_the_right_answer_and_are_random_per_annotator(export_result, audit_dir):
    pairs = {
        json.loads(line)["id"]: json.loads(line)
        for line in (audit_dir / "pairs.jsonl").read_text().splitlines()
    }
    key = {i["item_id"]: i for i in load_key(export_result.key)["items"]}
    queues = _queues(export_result.out)
    letters_seen = set()
    differ = 0
    for annotator, queue in queues.items():
        for row in queue:
            item = key[row["item_id"]]
            pair = pairs[item["pair_id"]]
            letter = item["candidate_letter"][annotator]
            letters_seen.add(letter)
            cand, base = (
                (row["answer_a"], row["answer_b"]) if letter == "A" else (row["answer_b"], row["answer_a"])
            )
            assert (cand, base) == (pair["candidate_text"], pair["baseline_text"])
            assert row["question"] == pair["question"] and row["gold"] == pair["gold"]
    for item in key.values():
        if len(item["candidate_letter"]) == 2:
            differ += len(set(item["candidate_letter"].values())) == 2
    assert letters_seen == {"A", "B"}
    assert differ >= 1  # at least one shared item shows the candidate under different letters


def test_overlap_items_go_to_everyone_and_the_rest_to_one_annotator_each(export_result):
    key = load_key(export_result.key)["items"]
    shared = [i for i in key if len(i["candidate_letter"]) == 2]
    single = [i for i in key if len(i["candidate_letter"]) == 1]
    assert len(shared) == export_result.n_overlap == 6 and len(single) == 6
    queues = _queues(export_result.out)
    assert [len(q) for q in queues.values()] == [9, 9]
    # the overlap keeps the sample's mix: drift cases and non-drift pairs both appear in it
    assert {i["drift"] for i in shared} == {True, False}


def test_served_files_hold_nothing_that_maps_back_to_models(export_result, audit_dir):
    out = export_result.out
    assert not (out / "key.json").exists() and export_result.key.parent == out.parent
    served = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    for secret in ("D1-diff-", "D1:diff", "candidate_letter", "m_dart", str(audit_dir), "pair_id", "stratum"):
        assert secret not in served
    rows = [r for q in _queues(out).values() for r in q]
    assert set(rows[0]) == {"item_id", "question", "gold", "answer_a", "answer_b"}
    assert all(r["item_id"].startswith("i-") and len(r["item_id"]) == 10 for r in rows)


def test_tokens_are_private_distinct_and_long(export_result):
    path = export_result.out / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tokens = json.loads(path.read_text())
    assert set(tokens) == {"a1", "a2"} and len(set(tokens.values())) == 2
    assert all(len(t) >= 40 for t in tokens.values())


def test_same_seed_same_sample_and_letters_new_seed_differs(tmp_path, audit_dir):
    a = export(audit_dir, tmp_path / "a", n=12, annotators=2, overlap=0.5, seed=3)
    b = export(audit_dir, tmp_path / "b", n=12, annotators=2, overlap=0.5, seed=3)
    c = export(audit_dir, tmp_path / "c", n=12, annotators=2, overlap=0.5, seed=4)
    assert load_key(a.key)["items"] == load_key(b.key)["items"] and _queues(a.out) == _queues(b.out)
    assert load_key(a.key)["items"] != load_key(c.key)["items"]
    assert json.loads((a.out / "tokens.json").read_text()) != json.loads((b.out / "tokens.json").read_text())


def test_screen_only_audit_has_no_judge_rejected_stratum(tmp_path):
    audit = make_audit(tmp_path / "audit", judged=False)
    r = export(audit, tmp_path / "ann", n=8, annotators=1, overlap=0.0, seed=0)
    key = load_key(r.key)
    assert key["audit"]["judged"] is False
    assert "judge_rejected" not in key["strata"]
    assert all(i["judge_status"] is None for i in key["items"])
    assert r.n_overlap == 8  # one annotator sees everything


def test_refuses_to_overwrite_work_or_to_put_the_key_where_it_is_served(tmp_path, audit_dir, export_result):
    with pytest.raises(DataError, match="not empty"):
        export(audit_dir, export_result.out)
    with pytest.raises(DataError, match="outside the export directory"):
        export(audit_dir, tmp_path / "new", key=tmp_path / "new" / "key.json")
    with pytest.raises(DataError, match="overlap"):
        export(audit_dir, tmp_path / "x", overlap=1.5)
    with pytest.raises(DataError, match="not an audit directory"):
        export(tmp_path, tmp_path / "y")


def test_malformed_pair_is_named_by_file_line_and_field(tmp_path, audit_dir):
    lines = (audit_dir / "pairs.jsonl").read_text().splitlines()
    bad = json.loads(lines[2])
    del bad["delta"]
    lines[2] = json.dumps(bad)
    (audit_dir / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl:3: field delta"):
        export(audit_dir, tmp_path / "z")


def test_cli_export_and_one_line_errors(tmp_path, audit_dir):
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(
        app, ["annotate", "export", str(audit_dir), "--n", "6", "--annotators", "3", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "6 items" in r.output and "cli.key.json" in r.output and "annotate serve" in r.output
    assert len(_queues(out)) == 3
    r = runner.invoke(
        app, ["annotate", "export", str(audit_dir), "--overlap", "2", "--out", str(tmp_path / "o")]
    )
    assert (
        r.exit_code == 2 and "Traceback" not in r.output and "--overlap must be between 0 and 1" in r.output
    )


def test_default_out_for_a_run_audit_is_where_the_report_looks(tmp_path):
    audit = make_audit(tmp_path / "run" / "audit" / "m_dart")
    r = CliRunner().invoke(app, ["annotate", "export", str(audit), "--n", "4"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "annotate" / "m_dart" / "manifest.json").is_file()
    assert (tmp_path / "run" / "annotate" / "m_dart.key.json").is_file()
    other = make_audit(tmp_path / "elsewhere")
    r = CliRunner().invoke(app, ["annotate", "export", str(other)])
    assert r.exit_code == 2 and "--out" in r.output


def test_a_relative_audit_path_still_exports_where_the_report_looks(tmp_path, monkeypatch):
    audit = make_audit(tmp_path / "run" / "audit" / "m_dart")
    monkeypatch.chdir(audit)
    r = CliRunner().invoke(app, ["annotate", "export", ".", "--n", "4"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "annotate" / "m_dart" / "manifest.json").is_file()
    assert (tmp_path / "run" / "annotate" / "m_dart.key.json").is_file()


def test_a_key_that_cannot_be_written_leaves_no_servable_export(tmp_path, audit_dir):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the key's folder should be")
    with pytest.raises(DataError):
        export(audit_dir, tmp_path / "ann", key=blocked / "k.json")
    assert not (tmp_path / "ann").exists()
    # and the same --out works once the key can be written
    assert export(audit_dir, tmp_path / "ann", n=4).n_items == 4


def test_shared_items_are_random_within_a_stratum(tmp_path, audit_dir):
    shared_first = set()
    for seed in range(6):
        r = export(audit_dir, tmp_path / f"s{seed}", n=12, annotators=2, overlap=0.5, seed=seed)
        items = load_key(r.key)["items"]
        # drift:mild is sampled whole (3 of 3) under every seed: only the choice of shared ones varies
        mild = [i for i in items if i["stratum"] == "drift:mild"]
        shared_first.add(tuple(sorted(i["pair_id"] for i in mild if len(i["candidate_letter"]) == 2)))
    assert len(shared_first) > 1


def test_item_ids_differ_between_audits_under_the_same_seed(tmp_path):
    a = make_audit(tmp_path / "run" / "audit" / "m_int")
    b = make_audit(tmp_path / "run" / "audit" / "m_dart")
    (b / "pairs.jsonl").write_text(
        (b / "pairs.jsonl").read_text().replace("Candidate answer", "Tuned answer")
    )
    ka = load_key(export(a, tmp_path / "ea", n=8, seed=0).key)
    kb = load_key(export(b, tmp_path / "eb", n=8, seed=0).key)
    assert not {i["item_id"] for i in ka["items"]} & {i["item_id"] for i in kb["items"]}
    assert ka["export_id"] != kb["export_id"]
    manifest = json.loads((tmp_path / "ea" / "manifest.json").read_text())
    assert manifest["export_id"] == ka["export_id"]


def test_designs_that_cannot_measure_something_are_warned_about(tmp_path, audit_dir):
    r = export(audit_dir, tmp_path / "a", n=100, annotators=2, overlap=0.0)
    text = "\n".join(r.warnings)
    assert "asked for 100 items" in text and "agreement between people cannot be measured" in text
    r = export(audit_dir, tmp_path / "b", n=4, annotators=2, overlap=1.0)
    assert any("screened_out has 20 pairs but none was sampled" in w for w in r.warnings)
    assert any("only 4 item(s) shared" in w for w in r.warnings)
    out = CliRunner().invoke(
        app, ["annotate", "export", str(audit_dir), "--overlap", "0", "--out", str(tmp_path / "c")]
    )
    assert out.exit_code == 0 and "warning: no item is shared" in out.output
