"""Stage I distillation: QC, format-fix follow-ups, file teachers, judge consistency, resumability."""

import hashlib
import json
import random
import re

import pytest
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.config import DistillConfig
from dartkit.data.prepare import prepare_data
from dartkit.stages import distill
from servers import FakeOpenAIServer, last_user_message

runner = CliRunner()
WORDS = [
    f"{a}{b}"
    for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu", "vo", "we")
    for b in ("bar", "dex", "fin", "gol", "hup", "jin", "kor", "lem", "mox", "nar")
]


def rationale(seed_text: str, label: str) -> str:
    rng = random.Random(hashlib.sha256(seed_text.encode()).hexdigest())
    s1 = " ".join(rng.sample(WORDS, 8)).capitalize() + "."
    s2 = " ".join(rng.sample(WORDS, 8)).capitalize() + "."
    return f"{s1} {s2}\nConclusion: {label}"


def fixing_teacher(request_json):
    """Fails QC on the first try (no conclusion line), answers properly when told what was wrong."""
    msg = last_user_message(request_json)
    if "cannot be used yet" in msg:
        label = re.search(r"support the answer (YES|NO)", msg).group(1)
        question = request_json["messages"][-3]["content"]
        return rationale(question, label)
    return "Too short"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    prepare_data(out, suite="demo")
    return out


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_format_fix_follow_up_repairs_rationales(demo_data, tmp_path):
    with FakeOpenAIServer(fixing_teacher) as server:
        cfg = DistillConfig(
            data=demo_data, out=tmp_path / "d", teacher=f"openai:t@{server.base_url}", limit=8, train=False
        )
        metrics = distill.run(cfg)
        first, retries = server.requests[:8], server.requests[8:]
        assert len(retries) == 8
        # the follow-up states the problem and samples rather than repeating greedy decoding
        assert all("did not end with a line" in r.json["messages"][-1]["content"] for r in retries)
        assert all(r.json.get("temperature", 0) > 0 for r in retries)
        assert all(r.json.get("temperature", 0) == 0 for r in first)
    out = rows(tmp_path / "d" / "teacher.jsonl")
    assert len(out) == 8 and all(r["accepted"] and r["attempts"] == 2 and r["reason"] is None for r in out)
    assert metrics["acceptance_rate"] == 1.0
    assert metrics["first_try_reason_counts"]["no_conclusion"] == 8


def test_retry_may_reuse_its_own_sentences(demo_data, tmp_path):
    """A fix that keeps the first answer's sentences is not 'copying the prompt'."""

    def teacher(req):
        label = re.search(r"(?:correct answer is|support the answer) (YES|NO)", last_user_message(req)).group(
            1
        )
        body = rationale(req["messages"][5]["content"], label).rsplit("\n", 1)[0]
        if "cannot be used yet" in last_user_message(req):
            return f"{body}\nConclusion: {label}"
        return f"{body}\nAnswer: {label}"

    with FakeOpenAIServer(teacher) as server:
        cfg = DistillConfig(
            data=demo_data, out=tmp_path / "d", teacher=f"openai:t@{server.base_url}", limit=4, train=False
        )
        distill.run(cfg)
    out = rows(tmp_path / "d" / "teacher.jsonl")
    assert all(r["accepted"] and r["attempts"] == 2 for r in out), [r["reason"] for r in out]


def test_rejected_items_are_kept_with_their_reason(demo_data, tmp_path):
    with FakeOpenAIServer(lambda req: "Too short") as server:
        cfg = DistillConfig(
            data=demo_data, out=tmp_path / "d", teacher=f"openai:t@{server.base_url}", limit=4, train=False
        )
        metrics = distill.run(cfg)
        assert len(server.requests) == 4 * 3  # first try + 2 follow-ups each
    out = rows(tmp_path / "d" / "teacher.jsonl")
    assert all(not r["accepted"] and "no_conclusion" in r["reason"] and r["attempts"] == 3 for r in out)
    assert metrics["accepted"] == 0 and metrics["reason_counts"]["no_conclusion"] == 4


def test_rerun_is_served_from_cache(demo_data, tmp_path):
    with FakeOpenAIServer(fixing_teacher) as server:
        cfg = DistillConfig(
            data=demo_data, out=tmp_path / "d", teacher=f"openai:t@{server.base_url}", limit=4, train=False
        )
        distill.run(cfg)
        n = len(server.requests)
        distill.run(cfg)
        assert len(server.requests) == n


def test_file_teacher_goes_through_the_same_qc(demo_data, tmp_path):
    train = rows(demo_data / "train.jsonl")[:4]
    f = tmp_path / "rationales.jsonl"
    lines = [
        {"id": train[0]["id"], "text": rationale(train[0]["question"], train[0]["label"])},
        {
            "id": train[1]["id"],
            "text": rationale(train[1]["question"], "NO" if train[1]["label"] == "YES" else "YES"),
        },
        {"id": train[2]["id"], "text": train[2]["question"] + "\nConclusion: " + train[2]["label"]},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines))
    ids = {x["id"] for x in train}
    cfg = DistillConfig(data=demo_data, out=tmp_path / "d", teacher=f"file:{f}", train=False)
    distill.run(cfg)
    got = {r["id"]: r for r in rows(tmp_path / "d" / "teacher.jsonl") if r["id"] in ids}
    assert got[train[0]["id"]]["accepted"]
    assert "wrong_conclusion" in got[train[1]["id"]]["reason"]
    assert "copies_prompt" in got[train[2]["id"]]["reason"]
    assert got[train[3]["id"]]["reason"] == "empty"
    assert all(r["attempts"] == 1 for r in got.values())


def test_judge_consistency_check_rejects(demo_data, tmp_path):
    def teacher(req):
        return rationale(
            req["messages"][-1]["content"],
            re.search(r"correct answer is (YES|NO)", last_user_message(req)).group(1),
        )

    def judge(req):
        return "CONTRADICTS" if "Conclusion: YES" in last_user_message(req) else "CONSISTENT"

    with FakeOpenAIServer(teacher) as t, FakeOpenAIServer(judge) as j:
        cfg = DistillConfig(  # with a judge that answers, the built-in classifier is not applied
            data=demo_data,
            out=tmp_path / "d",
            teacher=f"openai:t@{t.base_url}",
            judge=f"openai:j@{j.base_url}",
            limit=8,
            train=False,
            qc={"max_fix_attempts": 0},
        )
        distill.run(cfg)
        assert len(j.requests) == 8
    out = rows(tmp_path / "d" / "teacher.jsonl")
    for r in out:
        assert r["accepted"] == (r["gold"] == "NO")
        if r["gold"] == "YES":
            assert r["reason"] == "contradicts_conclusion"


def equal_treatment_teacher(req):
    """An answer that argues for identical treatment, whatever the label it is asked to support."""
    msg = last_user_message(req)
    label = re.search(r"correct answer is (YES|NO)", msg).group(1)
    first = rationale(msg, label).split(".")[0]
    return f"{first}. Both applicants deserve equal treatment, so religion is irrelevant here.\nConclusion: {label}"


def judge_run(demo_data, tmp_path, judge, **qc):
    with FakeOpenAIServer(equal_treatment_teacher) as t, FakeOpenAIServer(judge) as j:
        cfg = DistillConfig(
            data=demo_data,
            out=tmp_path / "d",
            teacher=f"openai:t@{t.base_url}",
            judge=f"openai:j@{j.base_url}",
            limit=8,
            train=False,
            qc={"max_fix_attempts": 0, "reject_near_duplicates": False, **qc},
        )
        metrics = distill.run(cfg)
        judge_requests = [r.json for r in j.requests]
    return metrics, rows(tmp_path / "d" / "teacher.jsonl"), judge_requests


def is_consistency_question(req):
    return "CONSISTENT or CONTRADICTS" in req["messages"][0]["content"]


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("CONTRADICTS", True),
        ("consistent", False),
        ("**Answer:** Contradicts.", True),
        ("Answer: CONSISTENT", False),
        ("Verdict - *contradicts*", True),
        ("The explanation is consistent with its conclusion.", False),
        ("It does not contradict the conclusion.", False),
        ("Inconsistent.", True),
        ("No, it contradicts the conclusion.", True),
        ("No. CONTRADICTS", True),
        ("Yes; consistent.", False),
        ("CONSISTENT or CONTRADICTS", None),
        ("I am not sure.", None),
        ("", None),
    ],
)
def test_judge_reply_parsing_is_lenient(reply, verdict):
    assert distill.parse_consistency_reply(reply) is verdict


def test_judge_reply_with_a_leading_word_and_markdown_counts(demo_data, tmp_path):
    """Old code read only the first word ("**Answer:**"), found no verdict and accepted the rationale."""

    def judge(req):
        label = re.search(r"Conclusion: (YES|NO)", last_user_message(req)).group(1)
        return "**Answer:** Contradicts." if label == "YES" else "Answer: consistent."

    metrics, out, requests = judge_run(demo_data, tmp_path, judge)
    assert len(requests) == 8  # every reply parsed: no follow-ups
    assert {r["gold"] for r in out} == {"YES", "NO"}
    for r in out:
        assert r["accepted"] == (r["gold"] == "NO")
    assert metrics["judge_asked"] == 8 and metrics["judge_retried"] == 0 and metrics["judge_unparsed"] == 0


def test_unparsed_judge_reply_gets_one_follow_up(demo_data, tmp_path):
    def judge(req):
        if "exactly one word" in last_user_message(req):
            return "CONTRADICTS" if "Conclusion: YES" in req["messages"][0]["content"] else "CONSISTENT"
        return "Let me think about this explanation carefully."

    metrics, out, requests = judge_run(demo_data, tmp_path, judge)
    assert len(requests) == 16 and all(is_consistency_question(r) for r in requests)
    assert all(len(r["messages"]) == 3 for r in requests[8:])  # question, first reply, follow-up
    for r in out:
        assert r["accepted"] == (r["gold"] == "NO")
        assert r["attempt_log"][0]["judge"]["replies"] == 2
    assert metrics["judge_retried"] == 8 and metrics["judge_unparsed"] == 0


def test_judge_that_never_answers_falls_back_to_the_builtin_check(demo_data, tmp_path):
    """Old code counted an unreadable reply as consistent, so a YES rationale arguing for equal
    treatment was accepted with the built-in check switched off."""
    metrics, out, requests = judge_run(demo_data, tmp_path, lambda req: "I am not sure.")
    assert len(requests) == 16  # one follow-up each, then no more
    for r in out:
        assert r["accepted"] == (r["gold"] == "NO"), r
        assert r["attempt_log"][0]["judge"] == {"verdict": None, "replies": 2}
        if r["gold"] == "YES":
            assert r["reason"] == "contradicts_conclusion"
    assert metrics["judge_asked"] == 8 and metrics["judge_unparsed"] == 8
    saved = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert saved["judge_unparsed"] == 8


def test_builtin_consistency_ignores_a_configured_judge(demo_data, tmp_path):
    """qc.consistency 'builtin' with a judge configured: old code switched both checks off."""
    metrics, out, requests = judge_run(demo_data, tmp_path, lambda req: "CONSISTENT", consistency="builtin")
    for r in out:
        assert r["accepted"] == (r["gold"] == "NO")
    assert requests == [] and metrics["judge_asked"] == 0


def test_near_duplicates_rejected(demo_data, tmp_path):
    with FakeOpenAIServer(
        lambda req: (
            "Alpha beta gamma delta. Epsilon zeta eta theta.\nConclusion: "
            + re.search(r"correct answer is (YES|NO)", last_user_message(req)).group(1)
        )
    ) as s:
        cfg = DistillConfig(
            data=demo_data, out=tmp_path / "d", teacher=f"openai:t@{s.base_url}", limit=4, train=False
        )
        metrics = distill.run(cfg)
    out = rows(tmp_path / "d" / "teacher.jsonl")
    assert out[0]["accepted"] and not any(r["accepted"] for r in out[1:])
    assert all(r["flags"][0] == f"near_duplicate_of:{out[0]['id']}" for r in out[1:])
    assert metrics["reason_counts"] == {"near_duplicate": 3}


def test_cli_rejects_bad_teacher_file(demo_data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "ok"}\n{"id": 3}\n')
    r = runner.invoke(
        app,
        [
            "distill",
            "--data",
            str(demo_data),
            "--teacher",
            f"file:{bad}",
            "--out",
            str(tmp_path / "d"),
            "--no-train",
        ],
    )
    assert r.exit_code == 2
    assert f"{bad}:2" in r.stderr


def test_distill_trains_and_evaluates_m_int(demo_data, tmp_path):
    """The whole stage: rationales -> LoRA on a tiny local student -> M_int evaluated on the val split."""
    from train.train_helpers import save_tiny_llama

    student = save_tiny_llama(tmp_path / "tiny", seed=0)
    with FakeOpenAIServer(fixing_teacher) as server:
        cfg = DistillConfig(
            data=demo_data,
            out=tmp_path / "d",
            teacher=f"openai:t@{server.base_url}",
            student=f"hf:{student}",
            limit=8,
            training={"max_steps": 2, "per_device_batch_size": 4, "save_every": 1},
            student_decoding={"max_new_tokens": 8},
        )
        metrics = distill.run(cfg)
    adapter = tmp_path / "d" / "train" / "adapter"
    assert (adapter / "adapter_config.json").exists()
    meta = json.loads((adapter / "dartkit_adapter.json").read_text())
    assert meta["base"]["model"] == str(student)
    assert metrics["training"]["steps"] == 2 and metrics["training"]["examples"] == 8
    val = rows(demo_data / "val.jsonl")
    gens = rows(tmp_path / "d" / "eval_val" / "generations.jsonl")
    assert {g["id"] for g in gens} == {v["id"] for v in val}
    assert all(g["model"].endswith(f"+adapter={adapter}") for g in gens)
    assert metrics["eval_val"]["n"] == len(val)


def test_teacher_examples_setting_reaches_the_teacher(demo_data, tmp_path):
    """teacher_examples none sends the question alone (the paper's zero-shot teacher); builtin adds two turns."""
    answer = lambda r: rationale(last_user_message(r), "YES" if "is YES" in last_user_message(r) else "NO")  # noqa: E731
    with FakeOpenAIServer(answer) as server:
        for setting, roles in (
            ("none", ["system", "user"]),
            ("builtin", ["system", "user", "assistant", "user", "assistant", "user"]),
        ):
            server.requests.clear()
            res = runner.invoke(
                app,
                [
                    "distill",
                    "--data",
                    str(demo_data),
                    "--teacher",
                    f"openai:t@{server.base_url}",
                    "--limit",
                    "2",
                    "--no-train",
                    "--teacher-examples",
                    setting,
                    "--out",
                    str(tmp_path / setting),
                ],
            )
            assert res.exit_code == 0, res.output
            assert [m["role"] for m in server.requests[0].json["messages"]] == roles


def test_teacher_replies_cut_at_the_token_limit_are_counted(demo_data, tmp_path):
    from servers import reply

    def cut_teacher(request_json):
        msg = last_user_message(request_json)
        label = "YES" if "is YES" in msg or "answer YES" in msg else "NO"
        return reply(rationale(msg, label)[:30], finish_reason="length")  # truncated mid-sentence

    with FakeOpenAIServer(cut_teacher) as server:
        cfg = DistillConfig(
            data=demo_data, out=tmp_path / "d", teacher=f"openai:t@{server.base_url}", limit=4, train=False
        )
        metrics = distill.run(cfg)
    # Every attempt (first try and the follow-ups) was cut off, and the metrics say so.
    assert metrics["teacher_truncated"] == sum(r["attempts"] for r in rows(tmp_path / "d" / "teacher.jsonl"))
    assert metrics["teacher_truncated"] >= 4 and metrics["accepted"] == 0


def guessing_teacher(request_json):
    """Answers from the question alone: YES when the question mentions 'law', else NO (sometimes wrong)."""
    msg = last_user_message(request_json)
    if "cannot be used yet" in msg:
        question = request_json["messages"][-3]["content"]
        return rationale(question, "YES" if "law" in question.lower() else "NO")
    if "Decide whether answering this correctly" not in msg:
        return rationale(msg, "NO")
    # The first reply to every third question lacks its conclusion line, to exercise the follow-up.
    if int(hashlib.sha256(msg.encode()).hexdigest(), 16) % 3 == 0:
        return "Too short"
    return rationale(msg, "YES" if "law" in msg.lower() else "NO")


def test_predicted_labels_never_show_the_gold_label_and_keep_only_matching(demo_data, tmp_path):
    with FakeOpenAIServer(guessing_teacher) as server:
        cfg = DistillConfig(
            data=demo_data,
            out=tmp_path / "d",
            teacher=f"openai:t@{server.base_url}",
            limit=24,
            train=False,
            labels="predicted",
        )
        metrics = distill.run(cfg)
        sent = [m["content"] for r in server.requests for m in r.json["messages"]]
    # Neither the question prompt nor a follow-up states a label to support.
    assert not any("correct answer is" in t or "support the answer" in t for t in sent)
    assert any("cannot be used yet" in t for t in sent)  # form problems still get a follow-up
    out = rows(tmp_path / "d" / "teacher.jsonl")
    wrong = [r for r in out if r["teacher_conclusion"] not in (None, r["gold"])]
    assert wrong, "the fixture teacher must get some items wrong"
    # A wrong guess is final: rejected, not retried until it matches.
    assert all(not r["accepted"] and "predicted_wrong_label" in r["reason"] for r in wrong)
    assert all(r["attempt_log"][-1]["text"] == r["text"] for r in wrong)
    assert all(r["teacher_conclusion"] == r["gold"] for r in out if r["accepted"])
    assert all(r["labels"] == "predicted" for r in out)
    assert metrics["labels"] == "predicted" and 0 < metrics["teacher_first_answer_accuracy"] < 1


def test_predicted_labels_keep_all_trains_on_the_teachers_own_conclusions(demo_data, tmp_path):
    with FakeOpenAIServer(guessing_teacher) as server:
        cfg = DistillConfig(
            data=demo_data,
            out=tmp_path / "d",
            teacher=f"openai:t@{server.base_url}",
            limit=24,
            train=False,
            labels="predicted",
            keep="all",
        )
        distill.run(cfg)
    out = rows(tmp_path / "d" / "teacher.jsonl")
    accepted = [r for r in out if r["accepted"]]
    assert any(r["teacher_conclusion"] != r["gold"] for r in accepted)
    assert all(r["text"].rstrip().endswith(f"Conclusion: {r['teacher_conclusion']}") for r in accepted)


def test_keep_all_needs_predicted_labels(demo_data, tmp_path):
    result = runner.invoke(
        app,
        ["distill", "--data", str(demo_data), "--out", str(tmp_path / "d"), "--keep", "all", "--no-train"],
    )
    assert result.exit_code == 2 and "--keep all applies to --labels predicted" in result.output
