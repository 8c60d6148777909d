"""`dartkit annotate agreement`: agreement between people and the auditor against them.

The expected numbers are computed by hand in the comments; keys and stores are written here per
the issue-13 file contract, so these tests do not lean on the exporter or the page.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dartkit.annotate.agreement import (
    KIND,
    compute,
    load_agreement,
    markdown,
    read_csv,
)
from dartkit.cli import app
from dartkit.errors import DataError
from dartkit.stats.agreement import krippendorff_alpha

R = 200  # bootstrap resamples: enough for an interval, fast on two cores
runner = CliRunner()

# The store's table exactly as the contract states it.
CONTRACT_SCHEMA = """CREATE TABLE answers(annotator TEXT, item_id TEXT, drift INTEGER NOT NULL, which TEXT,
severity TEXT, note TEXT, saved_at TEXT, PRIMARY KEY (annotator, item_id))"""


def write_csv(path: Path, rows: list[str], header: str = "item_id,annotator,drift,severity") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def key_item(item_id, stratum, is_candidate, drift, status, letters=None):
    return {
        "item_id": item_id,
        "pair_id": f"pair-{item_id}",
        "benchmark": "D1",
        "stratum": stratum,
        "is_candidate": is_candidate,
        "drift": drift,
        "severity": stratum.split(":")[1] if stratum.startswith("drift:") else None,
        "delta": 0.1 if is_candidate else -0.01,
        "judge_status": status,
        "candidate_letter": letters or {"a1": "A", "a2": "B"},
    }


def write_key(path: Path, items: list[dict], strata: dict, judged: bool = True) -> Path:
    key = {
        "kind": "dartkit-annotation-key",
        "version": 1,
        "export_dir": str(path.with_suffix("")),
        "audit_dir": "runs/x/audit",
        "audit": {
            "tau": 0.01,
            "judged": judged,
            "score_on": "analysis",
            "baseline": "m0",
            "candidate": "m_int",
        },
        "strata": strata,
        "items": items,
    }
    path.write_text(json.dumps(key), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- hand-computed agreement


def test_two_annotators_six_items_match_hand_computed_kappa(tmp_path):
    # a1: 1 1 1 0 0 0; a2: 1 1 0 0 0 1. Agree on 4 of 6: p_o = 2/3; each says yes half the time:
    # p_e = 0.5·0.5 + 0.5·0.5 = 0.5; κ = (2/3 − 1/2) / (1/2) = 1/3 ("fair"). Fleiss' κ with two raters
    # and these marginals: P̄ = 4/6, P_e = 0.5, so also 1/3.
    a1 = [1, 1, 1, 0, 0, 0]
    a2 = [1, 1, 0, 0, 0, 1]
    rows = [f"i{k},a1,{d},{'mild' if d else 'none'}" for k, d in enumerate(a1)]
    rows += [f"i{k},a2,{d},{'severe' if d else 'none'}" for k, d in enumerate(a2)]
    result = compute(write_csv(tmp_path / "labels.csv", rows), n_resamples=R)
    kappa = result["cohen_kappa"]["a1|a2"]
    assert kappa["value"] == pytest.approx(1 / 3)
    assert kappa["band"] == "fair" and kappa["n_items"] == 6
    assert kappa["percent_agreement"] == pytest.approx(4 / 6)
    low, high = kappa["ci95"]
    assert low <= 1 / 3 <= high
    assert result["fleiss_kappa"]["value"] == pytest.approx(1 / 3)
    assert result["fleiss_kappa"]["n_items"] == 6
    assert result["percent_agreement"]["value"] == pytest.approx(4 / 6)
    # α on the ranks none=0, mild=1, severe=3, annotators × items.
    expected = krippendorff_alpha(
        np.array([[1, 1, 1, 0, 0, 0], [3, 3, 0, 0, 0, 3]]), "ordinal", values=range(5)
    )
    assert result["krippendorff_alpha_severity"]["value"] == pytest.approx(expected)
    # Majority: two agreeing yes (i0, i1; severity = lower median of mild, severe = mild), two
    # agreeing no, two ties.
    assert result["majority_summary"] == {"drift": 2, "no_drift": 2, "ties": 2, "single_annotator": 0}
    assert result["majority"]["i0"]["severity"] == "mild"
    assert result["majority"]["i2"]["drift"] == "tie"
    assert result["auditor"] is None and "no key" in result["auditor_note"]


def test_perfect_agreement_is_one_and_almost_perfect(tmp_path):
    labels = [(1, "moderate"), (0, "none"), (1, "extreme"), (0, "none"), (1, "mild")]
    rows = [f"x{k},{a},{d},{s}" for a in ("a1", "a2", "a3") for k, (d, s) in enumerate(labels)]
    result = compute(write_csv(tmp_path / "labels.csv", rows), n_resamples=R)
    assert set(result["cohen_kappa"]) == {"a1|a2", "a1|a3", "a2|a3"}
    for entry in result["cohen_kappa"].values():
        assert entry["value"] == pytest.approx(1.0) and entry["band"] == "almost perfect"
    assert result["fleiss_kappa"]["value"] == pytest.approx(1.0)
    assert result["fleiss_kappa"]["n_annotators"] == 3
    assert result["krippendorff_alpha_severity"]["value"] == pytest.approx(1.0)
    assert result["percent_agreement"]["value"] == pytest.approx(1.0)
    assert result["majority"]["x2"] == {
        "drift": 1,
        "n_annotators": 3,
        "n_drift": 3,
        "severity": "extreme",
        "n_picked_baseline": 0,
    }


def test_fleiss_uses_only_items_everyone_labelled(tmp_path):
    rows = ["a,a1,1,mild", "a,a2,1,mild", "b,a1,0,none", "b,a2,0,none", "c,a1,1,mild"]
    result = compute(write_csv(tmp_path / "labels.csv", rows), n_resamples=R)
    assert result["fleiss_kappa"]["n_items"] == 2
    assert "2 of 3 items" in result["fleiss_kappa"]["items"]
    assert result["majority_summary"]["single_annotator"] == 1


# --------------------------------------------------------------------------- the auditor


STRATA = {
    "drift:mild": {"population": 10, "sampled": 3},
    "judge_rejected": {"population": 4, "sampled": 2},
    "screened_out": {"population": 100, "sampled": 4},
}
AUDIT_ITEMS = [
    key_item("d1", "drift:mild", True, True, "confirmed"),
    key_item("d2", "drift:mild", True, True, "confirmed"),
    key_item("d3", "drift:mild", True, True, "confirmed"),
    key_item("r1", "judge_rejected", True, False, "rejected"),
    key_item("r2", "judge_rejected", True, False, "disagree"),
    key_item("s1", "screened_out", False, False, None),
    key_item("s2", "screened_out", False, False, None),
    key_item("s3", "screened_out", False, False, None),
    key_item("t1", "screened_out", False, False, None),
]
# Both annotators agree, except on t1 (a tie, left out).
HUMANS = {"d1": 1, "d2": 1, "d3": 0, "r1": 1, "r2": 0, "s1": 1, "s2": 0, "s3": 0}


def auditor_case(tmp_path: Path, judged: bool = True) -> dict:
    items = AUDIT_ITEMS
    if not judged:
        items = [{**i, "judge_status": None, "drift": i["is_candidate"]} for i in AUDIT_ITEMS]
    key = write_key(tmp_path / "export.key.json", items, STRATA, judged=judged)
    rows = [f"{i},{a},{d},{'moderate' if d else 'none'}" for i, d in HUMANS.items() for a in ("a1", "a2")]
    rows += ["t1,a1,1,mild", "t1,a2,0,none"]
    return compute(write_csv(tmp_path / "labels.csv", rows), key, n_resamples=R)


def test_auditor_counts_precision_recall_against_the_majority(tmp_path):
    auditor = auditor_case(tmp_path)["auditor"]
    assert auditor["n_items"] == 8 and auditor["n_ties_excluded"] == 1
    # Screen (ΔH > τ): d1 d2 r1 TP; d3 r2 FP; s1 FN; s2 s3 TN.
    screen = auditor["screen"]
    assert (screen["tp"], screen["fp"], screen["fn"], screen["tn"]) == (3, 2, 1, 2)
    assert screen["precision"] == pytest.approx(3 / 5) and screen["recall"] == pytest.approx(3 / 4)
    assert screen["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert screen["strata"] == {"drift:mild": 3, "judge_rejected": 2, "screened_out": 3}
    # Screen + judge (the drift flag): d1 d2 TP; d3 FP; r1 s1 FN; r2 s2 s3 TN.
    sj = auditor["screen_judge"]
    assert (sj["tp"], sj["fp"], sj["fn"], sj["tn"]) == (2, 1, 2, 3)
    assert sj["precision"] == pytest.approx(2 / 3) and sj["recall"] == pytest.approx(1 / 2)
    # Judge alone on the 5 items it was asked about; "disagree" counts as not confirmed.
    judge = auditor["judge"]
    assert judge["n_items"] == 5
    assert (judge["tp"], judge["fp"], judge["fn"], judge["tn"]) == (2, 1, 1, 1)
    # κ judge vs people: pred 1 1 1 0 0, people 1 1 0 1 0: p_o = 0.6, p_e = 0.6·0.6 + 0.4·0.4 = 0.52,
    # κ = 0.08 / 0.48 = 1/6.
    assert auditor["kappa_judge_humans"]["value"] == pytest.approx(1 / 6)
    assert auditor["kappa_judge_humans"]["n_items"] == 5
    for block in (screen, sj, judge):
        low, high = block["ci95"]["precision"]
        assert low <= block["precision"] <= high
    assert auditor["paper_reference"]["values"] == [0.720, 0.810]


def test_population_estimates_weight_strata_by_their_size(tmp_path):
    pop = auditor_case(tmp_path)["auditor"]["screen"]["population_estimate"]
    # Weights: drift:mild 10/3, judge_rejected 4/2, screened_out 100/3 (t1, a tie, is not analysed).
    # TP = 2·10/3 + 2 = 26/3; FP = 10/3 + 2 = 16/3; FN = 100/3.
    assert pop["precision"] == pytest.approx(26 / 42)
    assert pop["recall"] == pytest.approx(26 / 126)
    low, high = pop["ci95"]["recall"]
    assert low <= pop["recall"] <= high


def test_screen_only_audit_says_screen_and_judge_are_the_screen(tmp_path):
    auditor = auditor_case(tmp_path, judged=False)["auditor"]
    assert "screen-only" in auditor["screen_judge"]["note"]
    assert auditor["judge"]["n_items"] == 0 and "screen-only" in auditor["judge"]["items"]
    assert auditor["kappa_judge_humans"]["value"] is None
    assert auditor["screen_judge"]["tp"] == auditor["screen"]["tp"] == 3


# --------------------------------------------------------------------------- unblinding and the store


def make_store(export_dir: Path, rows: list[tuple]) -> Path:
    export_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(export_dir / "annotations.sqlite")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(CONTRACT_SCHEMA)
    conn.executemany(
        "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, '2026-01-01T00:00:00')", [(*r, None) for r in rows]
    )
    conn.commit()
    conn.close()
    return export_dir


def test_store_answers_are_unblinded_with_each_annotators_letter(tmp_path):
    # Item u: candidate shown as A to a1 and as B to a2. Both say drift in answer "A":
    # for a1 that is the candidate, for a2 the baseline (counted 0, and as "picked baseline").
    items = [
        key_item("u", "drift:severe", True, True, "confirmed", {"a1": "A", "a2": "B"}),
        key_item("v", "screened_out", False, False, None, {"a1": "B", "a2": "A"}),
        key_item("w", "drift:severe", True, True, "confirmed", {"a1": "B", "a2": "A"}),
    ]
    strata = {
        "drift:severe": {"population": 2, "sampled": 2},
        "screened_out": {"population": 9, "sampled": 1},
    }
    export_dir = make_store(
        tmp_path / "m_int",
        [
            ("a1", "u", 1, "A", "severe"),
            ("a2", "u", 1, "A", "mild"),
            ("a1", "v", 0, None, None),
            ("a2", "v", 0, None, None),
            ("a1", "w", 1, "B", "extreme"),
            ("a2", "w", 1, "A", "moderate"),
        ],
    )
    write_key(tmp_path / "m_int.key.json", items, strata)
    result = compute(export_dir, n_resamples=R)  # key found beside the directory
    assert result["source"]["type"] == "export"
    assert result["majority"]["u"]["drift"] == "tie"
    assert result["majority"]["u"]["n_picked_baseline"] == 1
    assert result["majority"]["w"] == {
        "drift": 1,
        "n_annotators": 2,
        "n_drift": 2,
        "severity": "moderate",  # lower median of extreme (4) and moderate (2)
        "n_picked_baseline": 0,
    }
    assert result["picked_baseline"] == 1
    # α sees the baseline pick as "none": a1 [3, 0, 4], a2 [0, 0, 2].
    expected = krippendorff_alpha(np.array([[3, 0, 4], [0, 0, 2]]), "ordinal", values=range(5))
    assert result["krippendorff_alpha_severity"]["value"] == pytest.approx(expected)
    assert result["auditor"]["n_ties_excluded"] == 1
    assert result["sample"]["strata"]["drift:severe"]["annotated"] == 2


def test_directory_without_key_names_the_expected_path(tmp_path):
    export_dir = make_store(tmp_path / "m_int", [("a1", "u", 0, None, None)])
    with pytest.raises(DataError, match=r"m_int\.key\.json.*unblind"):
        compute(export_dir)


def test_store_row_breaking_the_contract_is_named(tmp_path):
    export_dir = make_store(tmp_path / "m_int", [("a1", "u", 1, None, "mild")])
    write_key(tmp_path / "m_int.key.json", [key_item("u", "drift:mild", True, True, "confirmed")], STRATA)
    with pytest.raises(DataError, match=r"annotator 'a1', item 'u'.*which must be A or B"):
        compute(export_dir)


def test_real_export_and_store_round_trip(export_result):
    # The exporter's key and the page's store: annotators who agree with the audit's flag exactly.
    from dartkit.annotate.store import open_store

    key = json.loads(Path(export_result.key).read_text())
    store = open_store(export_result.out)
    for item in key["items"]:
        for annotator, letter in item["candidate_letter"].items():
            if item["drift"]:
                store.save_answer(annotator, item["item_id"], True, letter, "severe")
            else:
                store.save_answer(annotator, item["item_id"], False)
    result = compute(export_result.out, n_resamples=R)
    sj = result["auditor"]["screen_judge"]
    assert sj["fp"] == sj["fn"] == 0 and sj["precision"] == sj["recall"] == 1.0
    assert result["auditor"]["kappa_screen_judge_humans"]["value"] == pytest.approx(1.0)
    assert result["auditor"]["screen"]["fp"] == key["strata"]["judge_rejected"]["sampled"]


# --------------------------------------------------------------------------- CSV validation


@pytest.fixture
def small_key(tmp_path):
    items = [
        key_item("i1", "drift:mild", True, True, "confirmed"),
        key_item("i2", "screened_out", False, False, None),
    ]
    return write_key(tmp_path / "k.key.json", items, STRATA)


@pytest.mark.parametrize(
    ("header", "bad_row", "where", "field"),
    [
        ("item_id,annotator,drift,severity", "i2,a1,1,awful", ":3:", "severity"),
        ("item_id,annotator,drift,severity", "i2,a1,yes,mild", ":3:", "drift"),
        ("item_id,annotator,drift,severity", "i2,a1,0,mild", ":3:", "severity"),
        ("item_id,annotator,drift,severity", "i2,a1,1,none", ":3:", "severity"),
        ("item_id,annotator,drift,severity", "i1,a1,0,none", ":3:", "line 2"),
        ("item_id,annotator,drift,severity", "i9,a1,0,none", ":3:", "item_id"),
        ("item_id,annotator,drift,severity,which", "i2,a7,1,mild,A", ":3:", "annotator"),
        ("item_id,annotator,drift,severity,which", "i2,a1,1,mild,C", ":3:", "which"),
        ("item_id,annotator,drift", "i2,a1,1", ":1:", "severity"),
    ],
)
def test_bad_csv_rows_are_named_by_line_and_field(tmp_path, small_key, header, bad_row, where, field):
    first = {3: "i1,a1,1", 4: "i1,a1,1,mild", 5: "i1,a1,1,mild,A"}[header.count(",") + 1]
    path = write_csv(tmp_path / "labels.csv", [first, bad_row], header=header)
    with pytest.raises(DataError) as err:
        read_csv(path, load_key_for(small_key))
    message = str(err.value)
    assert f"labels.csv{where}" in message and field in message


def load_key_for(path):
    from dartkit.annotate.agreement import load_key

    return load_key(path)


def test_which_column_needs_a_key(tmp_path):
    path = write_csv(
        tmp_path / "labels.csv", ["i1,a1,1,mild,A"], header="item_id,annotator,drift,severity,which"
    )
    with pytest.raises(DataError, match=r"labels\.csv:1: column which needs the key"):
        read_csv(path)


def test_csv_which_column_unblinds_like_the_page(tmp_path, small_key):
    # i1: candidate is A for a1 and B for a2; both pick "B" → a1 picked the baseline, a2 the candidate.
    path = write_csv(
        tmp_path / "labels.csv",
        ["i1,a1,1,mild,B", "i1,a2,1,severe,B", "i2,a1,0,none,", "i2,a2,0,none,"],
        header="item_id,annotator,drift,severity,which",
    )
    judgements = {(j.item_id, j.annotator): j for j in read_csv(path, load_key_for(small_key))}
    assert judgements[("i1", "a1")].for_candidate == 0 and judgements[("i1", "a1")].picked_baseline
    assert judgements[("i1", "a2")].for_candidate == 1 and judgements[("i1", "a2")].severity_rank == 3
    assert judgements[("i1", "a1")].severity_rank == 0


# --------------------------------------------------------------------------- command line and report API


def test_cli_end_to_end_writes_json_and_markdown(tmp_path):
    items = AUDIT_ITEMS
    write_key(tmp_path / "export.key.json", items, STRATA)
    rows = [f"{i},{a},{d},{'moderate' if d else 'none'}" for i, d in HUMANS.items() for a in ("a1", "a2")]
    csv_path = write_csv(tmp_path / "labels.csv", rows)
    out = tmp_path / "res" / "agreement.json"
    res = runner.invoke(
        app,
        [
            "annotate",
            "agreement",
            str(csv_path),
            "--key",
            str(tmp_path / "export.key.json"),
            "--out",
            str(out),
            "--resamples",
            "200",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Cohen" in res.output and "Screen" in res.output
    data = json.loads(out.read_text())
    required = {
        "kind",
        "cohen_kappa",
        "fleiss_kappa",
        "krippendorff_alpha_severity",
        "percent_agreement",
        "majority",
        "auditor",
        "items",
        "annotators",
        "source",
        "sample",
    }
    assert required <= set(data)
    assert data["kind"] == KIND and data["items"] == 8 and data["annotators"] == 2
    assert set(data["auditor"]) >= {"screen", "screen_judge", "judge", "kappa_judge_humans"}
    assert "a1|a2" in data["cohen_kappa"]
    md = (tmp_path / "res" / "agreement.md").read_text()
    assert md.startswith("# Human check of the audit") and "paper reports 0.720 / 0.810" in md

    loaded = load_agreement(out)
    section = markdown(loaded)
    assert section.startswith("## Human check of the audit")
    assert "| Screen alone | 3/2/1/2 |" in section


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    export_dir = make_store(tmp_path / "m_int", [("a1", "u", 0, None, None)])
    res = runner.invoke(app, ["annotate", "agreement", str(export_dir)])
    assert res.exit_code == 2
    assert "m_int.key.json" in res.output and "Traceback" not in res.output


def test_load_agreement_refuses_other_files(tmp_path):
    (tmp_path / "agreement.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(DataError, match="not an agreement result"):
        load_agreement(tmp_path)


def test_population_estimate_is_not_made_when_a_stratum_has_no_analysed_item(tmp_path):
    # Every screened-out item a tie: weighting the other strata up would describe part of the audit.
    items = [*AUDIT_ITEMS]
    key = write_key(tmp_path / "export.key.json", items, STRATA)
    rows = [
        f"{i},{a},{d},{'moderate' if d else 'none'}"
        for i, d in HUMANS.items()
        if i[0] != "s"
        for a in ("a1", "a2")
    ]
    rows += [f"{i},a1,1,mild" for i in ("s1", "s2", "s3", "t1")] + [
        f"{i},a2,0,none" for i in ("s1", "s2", "s3", "t1")
    ]
    result = compute(write_csv(tmp_path / "labels.csv", rows), key, n_resamples=R)
    pop = result["auditor"]["screen"]["population_estimate"]
    assert pop["precision"] is None and pop["recall"] is None
    assert pop["missing_strata"] == ["screened_out"] and "not estimated" in pop["note"]
    # The judge never sees screened-out pairs, so its estimate does not need them.
    assert result["auditor"]["judge"]["population_estimate"]["precision"] is not None
    assert "not estimated: no analysed item in screened_out" in markdown(result)


def test_paper_reference_is_not_put_in_a_kappa_column(tmp_path):
    section = markdown(auditor_case(tmp_path))
    for line in section.splitlines():
        if line.startswith("|"):
            assert "0.720" not in line
    assert "For reference only: the paper reports 0.720 / 0.810" in section


def test_out_must_not_overwrite_the_store_key_or_labels(tmp_path):
    write_key(tmp_path / "export.key.json", AUDIT_ITEMS, STRATA)
    rows = [f"{i},{a},{d},{'moderate' if d else 'none'}" for i, d in HUMANS.items() for a in ("a1", "a2")]
    csv_path = write_csv(tmp_path / "labels.csv", rows)
    key_text = (tmp_path / "export.key.json").read_text()
    for target in (tmp_path / "export.key.json", csv_path):
        args = ["annotate", "agreement", str(csv_path), "--key", str(tmp_path / "export.key.json")]
        res = runner.invoke(app, [*args, "--out", str(target)])
        assert res.exit_code == 2 and ("refusing" in res.output or "give a .json" in res.output), res.output
    assert (tmp_path / "export.key.json").read_text() == key_text and csv_path.read_text().startswith(
        "item_id"
    )
    # an earlier agreement result is replaced without complaint
    out = tmp_path / "agreement.json"
    for _ in range(2):
        res = runner.invoke(app, [*args, "--out", str(out), "--resamples", "100"])
        assert res.exit_code == 0, res.output


def test_a_key_from_another_export_is_refused(tmp_path):
    from annotate_helpers import make_audit
    from dartkit.annotate.export import export
    from dartkit.annotate.store import open_store

    a = export(make_audit(tmp_path / "audit_a"), tmp_path / "ea", n=6, seed=0)
    audit_b = make_audit(tmp_path / "audit_b")
    (audit_b / "pairs.jsonl").write_text((audit_b / "pairs.jsonl").read_text().replace("Candidate", "Other"))
    b = export(audit_b, tmp_path / "eb", n=6, seed=0)
    item = json.loads((a.out / "queues" / "a1.jsonl").read_text().splitlines()[0])["item_id"]
    open_store(a.out).save_answer("a1", item, False)
    with pytest.raises(DataError, match="this key belongs to export"):
        compute(a.out, b.key, n_resamples=R)
    assert compute(a.out, a.key, n_resamples=R)["progress"]["a1"] == {"answered": 1, "assigned": 6}


def test_precision_of_nothing_found_has_an_honest_interval(tmp_path):
    # Two screened candidates people both call no drift: precision 0/2, not "[0.00, 0.00]".
    result = auditor_case(tmp_path)
    screen = result["auditor"]["screen"]
    low, high = screen["ci95"]["precision"]
    assert low < screen["precision"] < high and high - low > 0.3
    assert "Wilson" in screen["ci_method"]


def test_bands_say_when_the_interval_spans_several(tmp_path):
    from dartkit.stats.agreement import band_text, summarise

    wide = summarise(0.33, [-0.1, 1.0], 8)
    assert wide["band_ci95"] == ["poor", "almost perfect"]
    assert band_text(wide) == "fair (interval: poor to almost perfect)"
    assert band_text(summarise(0.9, [0.85, 0.95], 50)) == "almost perfect"


def test_ties_are_bounded_both_ways_and_unfinished_work_is_said(tmp_path):
    result = auditor_case(tmp_path)  # t1 is a tie
    ties = result["auditor"]["tie_sensitivity"]
    assert ties["n_ties"] == 1
    # t1 is screened out: read as drift it is a miss, read as no drift a true negative
    assert ties["ties_as_drift"]["screen"]["fn"] == ties["ties_as_no_drift"]["screen"]["fn"] + 1
    assert "with the 1 tie(s) read as drift" in markdown(result)
    half = {
        **result,
        "progress": {"a1": {"answered": 3, "assigned": 9}, "a2": {"answered": 9, "assigned": 9}},
    }
    assert "**Not finished:** a1 answered 3 of 9" in markdown(half)


def test_csv_header_mistakes_get_a_hint(tmp_path):
    semi = write_csv(tmp_path / "semi.csv", ["i1;a1;0;none"], header="item_id;annotator;drift;severity")
    with pytest.raises(DataError, match="separate columns with commas"):
        read_csv(semi)
    upper = write_csv(tmp_path / "upper.csv", ["i1,a1,0,none"], header="Item_ID,Annotator,Drift,Severity")
    with pytest.raises(DataError, match="lower case"):
        read_csv(upper)
