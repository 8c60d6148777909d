"""Auditing answers logged by other harnesses: lm-evaluation-harness samples files and Inspect logs.

Fixtures (tests/audit/fixtures/harness/): ``data/test.jsonl`` is a four-item prepared split;
``samples_dart_tiny_*.jsonl`` is lm-eval's current layout (two filters, so every doc twice);
``pretrained__*_dart_tiny.jsonl`` is the older JSON-array layout; ``inspect_dart_tiny.json`` is a
hand-written Inspect JSON log (two epochs, an errored sample, a chat input); and
``inspect-0.3.285-zstd.eval`` was written by inspect-ai 0.3.285 itself (mockllm model, Zstandard
members). The .eval built from the JSON log here uses DEFLATE, as older inspect-ai versions did.
"""

import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dartkit.audit import harness
from dartkit.audit.inputs import example_item, prompt_mismatches
from dartkit.cli import app
from dartkit.config import AuditConfig
from dartkit.data.prepare import load_split
from dartkit.errors import DataError
from dartkit.prompts import classification_messages
from dartkit.stages import audit

runner = CliRunner()
FIX = Path(__file__).parent / "fixtures" / "harness"
DATA = FIX / "data"
LM_EVAL = FIX / "samples_dart_tiny_2025-06-02T10-15-30.123456.jsonl"
LM_EVAL_OLD = FIX / "pretrained__org__base-model_dart_tiny.jsonl"
INSPECT_JSON = FIX / "inspect_dart_tiny.json"
INSPECT_ZSTD = FIX / "inspect-0.3.285-zstd.eval"


def build_eval(log: dict, path: Path) -> Path:
    """An Inspect ``.eval`` zip laid out as inspect-ai's EvalRecorder writes it (DEFLATE members)."""
    samples = log.get("samples") or []
    header = {k: v for k, v in log.items() if k != "samples"}
    summaries = [{k: s.get(k) for k in ("id", "epoch", "input", "target")} for s in samples]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("_journal/start.json", json.dumps({k: log[k] for k in ("version", "eval", "plan")}))
        for s in samples:
            z.writestr(f"samples/{s.get('id')}_epoch_{s['epoch']}.json", json.dumps(s, indent=2))
        z.writestr("_journal/summaries/1.json", json.dumps(summaries))
        z.writestr("summaries.json", json.dumps(summaries))
        z.writestr("header.json", json.dumps(header, indent=2))
    return path


def inspect_log() -> dict:
    return json.loads(INSPECT_JSON.read_text())


def items():
    return [example_item(e) for e in load_split(DATA, "test")]


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lm_line(doc_id, prompt: str, answer: str, **extra) -> dict:
    return {
        "doc_id": doc_id,
        "doc": {"q": prompt},
        "target": "NO",
        "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {"until": ["\n\n"]}}},
        "resps": [[answer]],
        "filtered_resps": [answer],
        **extra,
    }


def question(id_: str) -> str:
    return next(e.question for e in load_split(DATA, "test") if e.id == id_)


# --- reading ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (LM_EVAL.name, "lm-eval"),
        (LM_EVAL_OLD.name, "lm-eval"),
        (INSPECT_JSON.name, "inspect"),
        (INSPECT_ZSTD.name, "inspect"),
    ],
)
def test_formats_are_detected_by_content_not_name(tmp_path, name, expected):
    misnamed = shutil.copy(FIX / name, tmp_path / "answers.txt")
    assert harness.detect_format(Path(misnamed)) == expected
    built = build_eval(inspect_log(), tmp_path / "log.jsonl")
    assert harness.detect_format(built) == "inspect"
    dart = write_lines(tmp_path / "gens.jsonl", [{"id": "t1", "text": "x"}])
    assert harness.detect_format(dart) == "dartkit"


def test_a_missing_file_is_named_whatever_the_format(tmp_path):
    for fmt in ("auto", "lm-eval", "inspect"):
        with pytest.raises(DataError, match=r"nope.eval: no such file"):
            harness.load_side(tmp_path / "nope.eval", fmt, None, {})


def test_unknown_format_is_named(tmp_path):
    path = write_lines(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"x.jsonl:1: cannot tell the generations format .*answer, question"):
        harness.detect_format(path)


def test_lm_eval_current_layout_reads_prompt_and_raw_generation():
    log = harness.read_lm_eval(LM_EVAL)
    assert log.layout == "gen_args"
    # Each doc is logged once per filter; the answer is read once.
    assert [s.native_id for s in log.samples] == ["0", "1", "2", "3"]
    assert log.skipped == {"filter_repeats": 4}
    first = json.loads(LM_EVAL.read_text().splitlines()[0])
    s = log.samples[0]
    # The full generation, not the filtered (extracted) answer.
    assert s.text == first["resps"][0][0] and s.text.endswith("Conclusion: YES") and len(s.text) > 40
    assert s.messages == [{"role": "user", "content": first["arguments"]["gen_args_0"]["arg_0"]}]
    assert s.ref.endswith(f"{LM_EVAL.name}:1")


def test_lm_eval_older_array_layout_gives_the_same_answers():
    old, new = harness.read_lm_eval(LM_EVAL_OLD), harness.read_lm_eval(LM_EVAL)
    assert old.layout == "list" and len(old.samples) == 4
    assert [(s.text, s.messages) for s in old.samples[:3]] == [(s.text, s.messages) for s in new.samples[:3]]
    assert old.samples[1].ref.endswith("[sample 2]")


def test_inspect_json_and_eval_zip_read_alike(tmp_path):
    from_json = harness.read_inspect(INSPECT_JSON)
    from_zip = harness.read_inspect(build_eval(inspect_log(), tmp_path / "log.eval"))
    view = lambda log: sorted((s.native_id, s.text, json.dumps(s.messages)) for s in log.samples)  # noqa: E731
    assert view(from_json) == view(from_zip)
    assert from_json.layout == "json v2" and from_zip.layout == "eval v2"
    # s1 was answered in two epochs: the first is read; s5 errored without an answer.
    assert from_json.skipped == {"other_epochs": 1, "errored": 1}
    by_id = {s.native_id: s for s in from_json.samples}
    assert sorted(by_id) == ["s1", "s2", "s3", "s4", "s9"]
    assert by_id["s1"].text.startswith("Religion is a genuine requirement")
    # A chat input keeps its system message; text content parts are joined.
    assert [m["role"] for m in by_id["s4"].messages] == ["system", "user"]
    assert "Saudi Arabia" in by_id["s4"].messages[1]["content"]
    assert from_zip.samples[0].ref.split(":")[-1].startswith("samples/")


def test_inspect_answer_falls_back_to_the_last_assistant_message(tmp_path):
    log = inspect_log()
    del log["samples"][0]["output"]
    path = tmp_path / "log.json"
    path.write_text(json.dumps(log))
    s1 = next(s for s in harness.read_inspect(path).samples if s.native_id == "s1")
    assert s1.text == log["samples"][0]["messages"][-1]["content"]


def test_real_zstd_eval_log_written_by_inspect_ai():
    pytest.importorskip("zstandard")
    log = harness.read_inspect(INSPECT_ZSTD)
    with zipfile.ZipFile(INSPECT_ZSTD) as z:  # the members really are Zstandard, unreadable to zipfile here
        assert {i.compress_type for i in z.infolist()} == {harness.ZIP_ZSTANDARD}
    texts = {s.native_id: s.text for s in log.samples}
    assert texts["s1"] == "Religion is a genuine requirement for a rabbi.\nConclusion: YES"
    assert "idiots" in texts["s2"] and sorted(texts) == ["s1", "s2", "s3", "s9"]


def test_zstd_without_the_package_says_what_to_install(monkeypatch):
    if sys.version_info >= (3, 14):
        pytest.skip("zipfile reads Zstandard members itself from Python 3.14")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails as if not installed
    with pytest.raises(DataError) as e:
        harness.read_inspect(INSPECT_ZSTD)
    msg = str(e.value)
    assert "inspect-0.3.285-zstd.eval:" in msg and "Zstandard" in msg
    assert "dartkit[inspect]" in msg and "inspect log convert" in msg


# --- mapping onto dartkit ids -------------------------------------------------------------


def test_maps_by_exact_user_prompt_and_by_containment(tmp_path):
    log = inspect_log()
    t1 = next(e for e in load_split(DATA, "test") if e.id == "t1")
    # s1 is sent exactly dartkit's own conversation (system + user message) for t1.
    sent(log["samples"][0], classification_messages(t1))
    path = tmp_path / "log.json"
    path.write_text(json.dumps(log))
    rows, report = harness.map_log(harness.read_inspect(path), items(), None)
    assert {i: r.prompt_match for i, r in rows.items()} == {
        "t1": "exact",
        "t2": "contains",
        "t3": "contains",
        "t4": "contains",
    }
    assert report["prompt_match"] == {"exact": 1, "contains": 3} and report["mapped_by"] == "prompt"
    # The unmapped sample (a question outside the split) is named, not silently dropped.
    assert report["unmapped"] == 1 and report["unmapped_samples"] == [f"{path} samples[5]"]
    assert rows["t2"].question == example_item(load_split(DATA, "test")[1]).question
    assert rows["t2"].label == "NO" and rows["t2"].benchmark == "D3"


def test_a_prompt_containing_two_questions_is_refused(tmp_path):
    # A few-shot prompt whose worked example is another audited question.
    shot = f"Question: {question('t1')}\nAnswer: Conclusion: YES\n\nQuestion: {question('t3')}\nAnswer:"
    path = write_lines(tmp_path / "s.jsonl", [lm_line(0, shot, "Conclusion: NO"), lm_line(1, "Hello?", "Hi")])
    with pytest.raises(DataError) as e:
        harness.map_log(harness.read_lm_eval(path), items(), None)
    msg = str(e.value)
    assert (
        "s.jsonl:1" in msg and "2 dartkit ids ('t1', 't3')" in msg and "1 log sample(s) are ambiguous" in msg
    )
    assert "--id-field" in msg


def test_two_samples_on_one_question_are_refused(tmp_path):
    p = f"Question: {question('t3')}\nAnswer:"
    path = write_lines(
        tmp_path / "s.jsonl", [lm_line(0, p, "a"), lm_line(1, "Other?", "b"), lm_line(2, "  " + p, "c")]
    )
    with pytest.raises(DataError) as e:
        harness.map_log(harness.read_lm_eval(path), items(), None)
    msg = str(e.value)
    assert "2 log samples map onto dartkit id 't3' by prompt (" in msg
    assert "s.jsonl:1 and " in msg and "s.jsonl:3)" in msg and "1 id(s) are claimed more than once" in msg


def test_a_question_inside_a_longer_question_is_not_ambiguous(tmp_path):
    prompts = write_lines(
        tmp_path / "p.jsonl",
        [
            {"id": "short", "prompt": "Should the bank charge women more?"},
            {"id": "long", "prompt": "Should the bank charge women more? Answer for a small town."},
        ],
    )
    from dartkit.audit.inputs import load_prompt_items

    path = write_lines(
        tmp_path / "s.jsonl",
        [
            lm_line(0, "Be brief.\nShould the bank charge women more? Answer for a small town.", "No."),
            lm_line(1, "Be brief.\nShould the bank charge women more?", "No!"),
        ],
    )
    rows, _ = harness.map_log(harness.read_lm_eval(path), load_prompt_items(prompts), None)
    assert rows["long"].text == "No." and rows["short"].text == "No!"


def test_maps_by_an_id_field(tmp_path):
    rows, report = harness.map_log(harness.read_lm_eval(LM_EVAL), items(), "doc.id")
    # doc x9 is not one of the audited prompts: left unmapped.
    assert sorted(rows) == ["t1", "t2", "t3"] and report["unmapped"] == 1
    assert report["mapped_by"] == "field doc.id" and report["prompt_match"] == {"contains": 3}
    # Without prompts to check against, every id the field holds is taken.
    rows, report = harness.map_log(harness.read_lm_eval(LM_EVAL), None, "doc.id")
    assert sorted(rows) == ["t1", "t2", "t3", "x9"] and report["prompt_match"] == {}
    with pytest.raises(DataError, match=r":1: field 'doc.nope' \(--id-field\) is missing"):
        harness.map_log(harness.read_lm_eval(LM_EVAL), items(), "doc.nope")


def test_id_field_spec_per_format():
    assert harness.parse_id_fields("doc.id") == {"lm-eval": "doc.id", "inspect": "doc.id"}
    assert harness.parse_id_fields("lm-eval:doc.id, inspect:metadata.dartkit_id") == {
        "lm-eval": "doc.id",
        "inspect": "metadata.dartkit_id",
    }
    with pytest.raises(ValueError, match="unknown log format 'helm'"):
        harness.parse_id_fields("helm:doc.id")
    with pytest.raises(ValueError, match="not a dotted field path"):
        harness.parse_id_fields("doc..id")


def test_a_log_without_prompts_or_id_field_cannot_be_mapped():
    with pytest.raises(
        DataError, match=r"an lm-eval log carries no dartkit ids: .*--data/--split or --prompts"
    ):
        harness.map_log(harness.read_lm_eval(LM_EVAL), None, None)


def test_harness_prompts_compare_with_whitespace_normalised(tmp_path):
    log = inspect_log()
    for s in log["samples"]:
        for m in s["messages"]:
            if m["role"] == "user" and isinstance(m["content"], str):
                m["content"] = m["content"].replace("\n\nQuestion: ", "\n \n  Question:\n")
    path = tmp_path / "log.json"
    path.write_text(json.dumps(log))
    base, _ = harness.map_log(harness.read_lm_eval(LM_EVAL), items(), None)
    cand, _ = harness.map_log(harness.read_inspect(path), items(), None)
    assert prompt_mismatches(base, cand) == ([], 0)
    cand["t3"].prompt = cand["t3"].prompt.replace("Answer the question", "Answer this question")
    assert prompt_mismatches(base, cand) == (["t3"], 0)


# --- the audit ----------------------------------------------------------------------------


def audit_args(base, cand, out, *extra):
    return [
        "audit",
        "--baseline-generations",
        str(base),
        "--candidate-generations",
        str(cand),
        "--data",
        str(DATA),
        "--split",
        "test",
        "--out",
        str(out),
        *extra,
    ]


def test_cli_audits_an_lm_eval_baseline_against_an_inspect_candidate(tmp_path):
    cand = build_eval(inspect_log(), tmp_path / "tuned.eval")
    res = runner.invoke(app, audit_args(LM_EVAL, cand, tmp_path / "a", "--scorer", "profanity"))
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "baseline: lm-eval log (gen_args)" in out
    assert "8 records → 4 sample(s) (4 filter repeats skipped), 3 mapped onto dartkit ids by prompt" in out
    assert "candidate: inspect log (eval v2)" in out
    assert "7 records → 5 sample(s) (1 other epochs, 1 errored skipped), 4 mapped" in out
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["n_pairs"] == 3 and s["n_drift"] == 1
    drift = [json.loads(x) for x in (tmp_path / "a" / "drift.jsonl").read_text().splitlines()]
    assert [d["id"] for d in drift] == ["t2"] and drift[0]["gold"] == "NO"
    assert "bus driver" in drift[0]["question"]  # the question comes from the prepared split
    um = s["unmatched"]
    assert um["baseline_only"] == [] and um["candidate_only"] == ["t4"]
    assert um["baseline_log"]["unmapped"] == 1 and um["baseline_log"]["unmapped_samples"][0].endswith(":4")
    assert um["candidate_log"]["unmapped_samples"] == [f"{cand}:samples/s9_epoch_1.json"]
    pc = s["prompt_check"]
    assert pc["mismatched"] == 0 and pc["unchecked"] == 0
    assert pc["contains"] == 3 and pc["contains_ids"] == ["t1", "t2", "t3"]
    assert pc["mapped_by"] == {"baseline": "prompt", "candidate": "prompt"}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["models"]["candidate"]["format"] == "inspect"


def test_cli_refuses_harness_answers_to_different_prompts(tmp_path):
    log = inspect_log()
    s1 = log["samples"][0]
    # A system_message solver: the system prompt is in what was sent, not in the dataset input.
    sent(s1, [{"role": "system", "content": "Be terse."}, s1["messages"][0]])
    cand = build_eval(log, tmp_path / "tuned.eval")
    res = runner.invoke(app, audit_args(LM_EVAL, cand, tmp_path / "a"))
    assert res.exit_code == 2, res.output
    assert (
        "1 of the 3 id(s) both sides answered were answered with different prompt texts" in res.output
        and "t1" in res.output
    )
    res = runner.invoke(app, audit_args(LM_EVAL, cand, tmp_path / "b", "--allow-prompt-mismatch"))
    assert res.exit_code == 0, res.output
    pc = json.loads((tmp_path / "b" / "summary.json").read_text())["prompt_check"]
    assert pc["mismatched_ids"] == ["t1"] and pc["allowed"]


def test_audit_by_id_field_per_format_and_its_prompt_check(tmp_path):
    cfg = AuditConfig(
        baseline_generations=LM_EVAL,
        candidate_generations=INSPECT_JSON,
        data=DATA,
        id_field="lm-eval:doc.id,inspect:metadata.dartkit_id",
        out=tmp_path / "a",
    )
    s = audit.run(cfg)
    assert s["n_pairs"] == 3 and s["prompt_check"]["mapped_by"]["candidate"] == "field metadata.dartkit_id"
    assert s["prompt_check"]["mapped_by"]["baseline"] == "field doc.id"
    # x9 (baseline doc 3, candidate s9) is not in the split.
    assert s["unmatched"]["baseline_log"]["unmapped"] == s["unmatched"]["candidate_log"]["unmapped"] == 1
    # An id field pointing at the wrong question is caught by the prompt check.
    log = inspect_log()
    log["samples"][3]["metadata"]["dartkit_id"] = "t1"  # s3 answered t3's question
    log["samples"][0]["metadata"]["dartkit_id"] = "t3"
    path = tmp_path / "swapped.json"
    path.write_text(json.dumps(log))
    wrong = cfg.model_copy(update={"candidate_generations": path, "out": tmp_path / "b"})
    with pytest.raises(DataError, match=r"answered with different prompt texts"):
        audit.run(wrong)
    # Both sides agreeing is not enough: their prompts must contain dartkit's question for the id.
    null = wrong.model_copy(
        update={
            "baseline_generations": path,
            "candidate_generations": None,
            "null": True,
            "out": tmp_path / "n",
        }
    )
    with pytest.raises(
        DataError, match=r"2 id\(s\) mapped by --id-field were answered to a prompt that does "
    ):
        audit.run(null)
    # With the sides' prompt check allowed, the id-field check still names the ids.
    s = audit.run(wrong.model_copy(update={"allow_prompt_mismatch": True, "out": tmp_path / "c"}))
    assert s["prompt_check"]["differs"] == 2 and s["prompt_check"]["differs_ids"] == ["t1", "t3"]


def test_generations_format_flag_is_applied_to_both_sides(tmp_path):
    res = runner.invoke(
        app, audit_args(LM_EVAL, INSPECT_JSON, tmp_path / "a", "--generations-format", "inspect")
    )
    assert res.exit_code == 2 and "not an Inspect log" in res.output, res.output
    res = runner.invoke(
        app, audit_args(LM_EVAL, LM_EVAL_OLD, tmp_path / "b", "--generations-format", "lm-eval")
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, audit_args(LM_EVAL, LM_EVAL, tmp_path / "c", "--generations-format", "dartkit"))
    assert res.exit_code == 2 and "field 'id' is missing" in res.output
    res = runner.invoke(app, audit_args(LM_EVAL, LM_EVAL, tmp_path / "d", "--generations-format", "helm"))
    assert res.exit_code == 2 and "helm" in res.output


def test_a_bad_id_field_is_a_config_error(tmp_path):
    res = runner.invoke(app, audit_args(LM_EVAL, INSPECT_JSON, tmp_path / "a", "--id-field", "helm:doc.id"))
    assert res.exit_code == 2 and "--id-field: unknown log format 'helm'" in res.output


# --- bad input ----------------------------------------------------------------------------

GOOD = lm_line(0, "Q?", "A.")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([json.dumps(GOOD), "{not json"], r"s.jsonl:2: malformed JSON"),
        ([json.dumps({**GOOD, "doc_id": None})], r"s.jsonl:1: field 'doc_id' is missing"),
        (
            [json.dumps({**GOOD, "arguments": {"gen_args_0": {}}})],
            r"s.jsonl:1: field 'arguments.gen_args_0.arg_0' is missing",
        ),
        (
            [json.dumps({**GOOD, "arguments": [[7]]})],
            r"s.jsonl:1: field 'arguments\[0\]\[0\]' must be a string, got int",
        ),
        ([json.dumps({**GOOD, "resps": []})], r"s.jsonl:1: field 'resps\[0\]\[0\]' is missing"),
        (
            [json.dumps({**GOOD, "resps": [[[-1.5, False]], [[-0.2, True]]]})],
            r"s.jsonl:1: field 'resps' holds log-likelihood scores, not generated text",
        ),
        (
            [json.dumps(GOOD), json.dumps({**GOOD, "resps": [["other"]]})],
            r"s.jsonl:2: doc_id 0 repeats .*s.jsonl:1 with a different response",
        ),
    ],
)
def test_bad_lm_eval_lines_name_file_line_and_field(tmp_path, lines, message):
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    res = runner.invoke(
        app, audit_args(tmp_path / "s.jsonl", LM_EVAL, tmp_path / "a", "--generations-format", "lm-eval")
    )
    assert res.exit_code == 2, res.output
    assert re.search(message, res.output) and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def _broken_sample(s):
    s["output"] = {"model": "m", "choices": [], "completion": ""}
    s["messages"] = s["messages"][:1]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda s: s.pop("id"), r"log.eval:samples/None_epoch_1.json: field 'id' is missing"),
        (
            lambda s: s.update(input=None, messages=None),
            r"log.eval:samples/s1_epoch_1.json: field 'input' is missing \(and 'messages' is missing\)",
        ),
        (
            lambda s: s.update(input=[{"role": "system", "content": "x"}], messages=None),
            r"s1_epoch_1.json: field 'input' has no user message",
        ),
        (
            lambda s: s.update(messages=[{"role": "system", "content": "x"}, *s["messages"][1:]]),
            r"s1_epoch_1.json: field 'messages' has no user message before the answer",
        ),
        (lambda s: s.update(messages="hi"), r"s1_epoch_1.json: field 'messages' must be a list"),
        (_broken_sample, r"s1_epoch_1.json: field 'output.completion' is missing"),
        (
            lambda s: s["messages"][0].update(content="attachment://abc"),
            r"s1_epoch_1.json: field 'messages\[0\].content' refers to attachment://abc",
        ),
    ],
)
def test_bad_inspect_samples_name_member_and_field(tmp_path, breakage, message):
    log = inspect_log()
    breakage(log["samples"][0])
    path = build_eval(log, tmp_path / "log.eval")
    res = runner.invoke(app, audit_args(LM_EVAL, path, tmp_path / "a"))
    assert res.exit_code == 2, res.output
    assert re.search(message, res.output) and "Traceback" not in res.output, res.output


def test_unreadable_eval_zips_are_named(tmp_path):
    good = build_eval(inspect_log(), tmp_path / "good.eval").read_bytes()
    truncated = tmp_path / "cut.eval"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut.eval: not a readable .eval \(zip\) file"):
        harness.read_inspect(truncated)
    bad_member = tmp_path / "member.eval"
    with zipfile.ZipFile(bad_member, "w") as z:
        z.writestr("header.json", "{}")
        z.writestr("samples/s1_epoch_1.json", "{oops")
    with pytest.raises(DataError, match=r"member.eval:samples/s1_epoch_1.json: malformed JSON \(line 1"):
        harness.read_inspect(bad_member)
    empty = tmp_path / "empty.eval"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("header.json", json.dumps({"version": 2, "status": "success"}))
    with pytest.raises(DataError, match=r"empty.eval: no samples/\*.json members"):
        harness.read_inspect(empty)
    # A corrupted member (CRC) is named too.
    corrupt = bytearray(good)
    at = corrupt.find(b"samples/s2_epoch_1.json") + len("samples/s2_epoch_1.json") + 5
    corrupt[at] ^= 0xFF
    (tmp_path / "crc.eval").write_bytes(bytes(corrupt))
    with pytest.raises(
        DataError, match=r"crc.eval:samples/s2_epoch_1.json: (unreadable zip member|malformed JSON)"
    ):
        harness.read_inspect(tmp_path / "crc.eval")


# --- Inspect: the prompt is what the model was sent (``messages``), not the dataset ``input`` ----


def sent(sample: dict, conversation: list[dict]) -> None:
    """What an Inspect solver (``system_message``, ``prompt_template``) leaves in a sample:
    ``messages`` holds the conversation sent, then the reply; ``input`` stays the dataset's."""
    replies = [m for m in sample["messages"] if m["role"] == "assistant"]
    sample["messages"] = [*conversation, *replies]


def dartkit_generations(path: Path) -> Path:
    """A dartkit generation file for the fixture split, made with dartkit's own prompts."""
    from dartkit.prompts import render_messages

    rows = [
        {"id": e.id, "prompt": render_messages(classification_messages(e)), "text": "Fine.\nConclusion: NO"}
        for e in load_split(DATA, "test")
    ]
    return write_lines(path, rows)


def dartkit_sent_log(tmp_path: Path) -> dict:
    """The fixture log as if run with dartkit's prompts by a ``system_message`` solver: each
    sample's dataset input is the bare question, its messages dartkit's system + user turn."""
    log = inspect_log()
    by_sample = {"s1": "t1", "s2": "t2", "s3": "t3", "s4": "t4", "s5": "t3"}
    examples = {e.id: e for e in load_split(DATA, "test")}
    for s in log["samples"]:
        if s["id"] in by_sample:
            e = examples[by_sample[s["id"]]]
            s["input"] = e.question
            sent(s, classification_messages(e))
    return log


def test_inspect_system_message_identical_to_dartkits_is_accepted(tmp_path):
    base = dartkit_generations(tmp_path / "gens.jsonl")
    cand = tmp_path / "sent.json"
    cand.write_text(json.dumps(dartkit_sent_log(tmp_path)))
    res = runner.invoke(app, audit_args(base, cand, tmp_path / "a"))
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["n_pairs"] == 4 and s["prompt_check"]["mismatched"] == 0
    assert s["prompt_check"]["prompt_match"]["candidate"] == {"exact": 4}


def test_inspect_system_message_different_from_dartkits_is_a_mismatch(tmp_path):
    base = dartkit_generations(tmp_path / "gens.jsonl")
    log = dartkit_sent_log(tmp_path)
    s2 = next(s for s in log["samples"] if s["id"] == "s2")
    s2["messages"][0]["content"] = "You are an edgy assistant."  # another system prompt, same user turn
    cand = tmp_path / "sent.json"
    cand.write_text(json.dumps(log))
    res = runner.invoke(app, audit_args(base, cand, tmp_path / "a"))
    assert res.exit_code == 2, res.output
    assert (
        "1 of the 4 id(s) both sides answered were answered with different prompt texts" in res.output
        and "t2" in res.output
    )
    res = runner.invoke(app, audit_args(base, cand, tmp_path / "b", "--allow-prompt-mismatch"))
    assert res.exit_code == 0, res.output
    pc = json.loads((tmp_path / "b" / "summary.json").read_text())["prompt_check"]
    assert pc["mismatched_ids"] == ["t2"] and pc["allowed"]
    # Not dartkit's prompt, so not "exact", though its user turn is.
    assert pc["prompt_match"]["candidate"] == {"exact": 3, "contains": 1} and pc["contains_ids"] == ["t2"]


def test_inspect_prompt_template_wrapping_is_contains_not_exact(tmp_path):
    log = dartkit_sent_log(tmp_path)
    s1 = log["samples"][0]
    system, user = s1["messages"][0], s1["messages"][1]
    s1["input"] = user["content"]  # the dataset input is dartkit's own user prompt ...
    wrapped = {"role": "user", "content": f"Reply in English.\n\n{user['content']}\n\nThink step by step."}
    sent(s1, [system, wrapped])  # ... which prompt_template wrapped before sending
    path = tmp_path / "tmpl.json"
    path.write_text(json.dumps(log))
    rows, report = harness.map_log(harness.read_inspect(path), items(), None)
    assert rows["t1"].prompt_match == "contains" and rows["t2"].prompt_match == "exact"
    assert "Think step by step." in rows["t1"].prompt and rows["t1"].prompt.startswith("[system]\n")
    assert report["prompt_match"] == {"exact": 3, "contains": 1}


def test_inspect_prompt_ends_before_the_answer_and_falls_back_to_input(tmp_path):
    log = inspect_log()
    s2 = log["samples"][2]
    # A few-shot solver logged its example as earlier turns: the prompt answered is everything
    # before the last assistant message (the answer), and the real question maps the sample.
    shot = [
        {"role": "user", "content": "Example: is the sky green?"},
        {"role": "assistant", "content": "No.\nConclusion: NO"},
    ]
    first_user = next(i for i, m in enumerate(s2["messages"]) if m["role"] == "user")
    s2["messages"][first_user:first_user] = shot
    s3 = log["samples"][3]
    del s3["messages"]  # no messages logged: the dataset input is what was sent
    s3["input"] = "Q: " + s3["input"]
    path = tmp_path / "log.json"
    path.write_text(json.dumps(log))
    rows, _ = harness.map_log(harness.read_inspect(path), items(), None)
    assert "Example: is the sky green?" in rows["t2"].prompt  # the few-shot turns were sent too
    assert rows["t2"].prompt.rstrip().endswith(s2["messages"][-2]["content"].rstrip())
    assert rows["t3"].prompt.startswith("[user]\nQ: Answer the question.")
    s2["messages"] = [m for m in s2["messages"] if m["role"] != "user"]
    path.write_text(json.dumps(log))
    with pytest.raises(DataError, match=r"samples\[2\]: field 'messages' has no user message before"):
        harness.read_inspect(path)


# --- the audit's reports --------------------------------------------------------------------


def test_no_matched_ids_shows_each_sides_mapping_and_what_to_check(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(DATA / "test.jsonl", data / "test.jsonl")
    write_lines(
        data / "val.jsonl",
        [
            {
                **json.loads((DATA / "test.jsonl").read_text().splitlines()[0]),
                "id": "v1",
                "split": "val",
                "question": "Who should pay more tax?\n(a) A (b) B",
            }
        ],
    )
    args = audit_args(LM_EVAL, INSPECT_JSON, tmp_path / "a")
    args[args.index("--data") + 1] = str(data)
    args[args.index("--split") + 1] = "val"
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "no ids matched" in out
    assert "baseline: lm-eval log (gen_args)" in out
    assert (
        "8 records → 4 sample(s) (4 filter repeats skipped), 0 mapped onto dartkit ids by prompt, 4 unmapped"
        in out
    )
    assert "candidate: inspect log (json v2)" in out and "5 sample(s)" in out and "0 mapped" in out
    assert "5 unmapped" in out and f"--data {data} --split val" in out
    assert "--split" in out and "--data" in out and "--id-field" in out


def test_audit_md_says_how_harness_logs_were_read(tmp_path):
    cand = build_eval(inspect_log(), tmp_path / "tuned.eval")
    res = runner.invoke(app, audit_args(LM_EVAL, cand, tmp_path / "a", "--scorer", "profanity"))
    assert res.exit_code == 0, res.output
    md = (tmp_path / "a" / "audit.md").read_text()
    assert "## Harness logs" in md
    block = md.split("## Harness logs", 1)[1].split("\n## ", 1)[0]
    assert f"baseline: lm-eval log `{LM_EVAL}`" in block
    assert "4 samples → 3 mapped by prompt (3 contains), 1 unmapped; skipped 4 filter repeats" in block
    assert f"candidate: inspect log `{cand}`" in block and "skipped 1 other epochs, 1 errored" in block
    assert "3 pair(s)" in block and "contains dartkit's question" in block
    # The console line counts the records read, not only the samples kept.
    out = " ".join(res.output.split())
    assert "8 records → 4 sample(s) (4 filter repeats skipped)" in out
    # A run from two dartkit files has no such block.
    gens = dartkit_generations(tmp_path / "gens.jsonl")
    res = runner.invoke(app, audit_args(gens, gens, tmp_path / "b", "--scorer", "profanity"))
    assert res.exit_code == 0, res.output
    assert "## Harness logs" not in (tmp_path / "b" / "audit.md").read_text()
