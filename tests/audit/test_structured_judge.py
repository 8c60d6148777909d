"""The drift judge asked for its verdict schema: sent to servers, enforced locally, recorded per reply."""

from __future__ import annotations

import itertools
import json

from lmformatenforcer import JsonSchemaParser
from pydantic import ValidationError
from test_audit_stage import gen_files, harm_judge, lines  # noqa: F401  (gen_files is a fixture)

from dartkit.audit.judge import VERDICT_SCHEMA, Criteria, JudgeRequest, Verdict, ask_judge, parse_verdict
from dartkit.config import AuditConfig, BackendConfig
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache
from dartkit.generate.structured import lmfe_schema, local_grammar_schema
from dartkit.stages import audit
from servers import FakeOpenAIServer, error_body, scripted

NO_SCHEMAS = (400, error_body("This response_format type is unavailable now"))


def audit_cfg(base, cand, out, url, **extra) -> AuditConfig:
    return AuditConfig(
        baseline_generations=base,
        candidate_generations=cand,
        out=out,
        judge=f"openai:j@{url}",
        backend={"concurrency": 1, **extra.pop("backend", {})},
        **extra,
    )


def test_the_judge_is_sent_the_verdict_schema_and_the_summary_says_so(gen_files, tmp_path):  # noqa: F811
    base, cand = gen_files
    with FakeOpenAIServer(harm_judge) as server:
        s = audit.run(audit_cfg(base, cand, tmp_path / "a", server.base_url))
        bodies = [r.json for r in server.requests]
    assert len(bodies) == 3
    assert all(b["response_format"]["json_schema"]["schema"] == VERDICT_SCHEMA.schema for b in bodies)
    assert s["judge_structured_output"] == {"json_schema": 3}
    judged = [p for p in lines(tmp_path / "a" / "pairs.jsonl") if p["judge"]]
    assert all(p["judge"]["structured"] == [["json_schema"]] for p in judged)
    assert s["judge_status_counts"] == {"confirmed": 3}


def test_a_server_without_schemas_gets_the_validate_and_retry_path(gen_files, tmp_path):  # noqa: F811
    base, cand = gen_files

    def judge_first_question(body):  # a retry's last message is the follow-up, not the question
        return harm_judge({**body, "messages": body["messages"][:2]})

    plain = scripted(["no idea"], then=judge_first_question)

    def handler(body):
        return NO_SCHEMAS if "response_format" in body else plain(body)

    with FakeOpenAIServer(handler) as server:
        s = audit.run(audit_cfg(base, cand, tmp_path / "a", server.base_url, judge_retries=1))
        bodies = [r.json for r in server.requests]
    # One request learns that the server takes no schema; the rest are plain, and the malformed
    # first reply is retried with the reason it was rejected.
    assert "response_format" in bodies[0] and all("response_format" not in b for b in bodies[1:])
    assert "cannot be used" in bodies[-1]["messages"][-1]["content"] and len(bodies) == 5
    assert s["judge_status_counts"] == {"confirmed": 3}
    assert s["judge_structured_output"] == {"none": 4}  # 3 first replies + 1 retry, none held to the schema


def test_structured_output_off_in_the_audit_config(gen_files, tmp_path):  # noqa: F811
    base, cand = gen_files
    with FakeOpenAIServer(harm_judge) as server:
        s = audit.run(
            audit_cfg(base, cand, tmp_path / "a", server.base_url, backend={"structured_output": "off"})
        )
        bodies = [r.json for r in server.requests]
    assert all("response_format" not in b for b in bodies)
    assert s["judge_structured_output"] == {"none": 3}


def test_a_local_judge_under_the_grammar_writes_parseable_verdicts(tiny_llama, tmp_path):
    """A tiny random model writes no JSON unconstrained; under the grammar every reply is a verdict object."""
    judge = load_backend(f"hf:{tiny_llama}", BackendConfig(device="cpu", dtype="float32"))
    requests = [
        JudgeRequest("Is it fair?", "NO", "Both alike.\nConclusion: NO", "They differ.\nConclusion: YES"),
        JudgeRequest("Can they apply?", None, "Yes, anyone.\nConclusion: NO", "Only some.\nConclusion: YES"),
    ]
    try:
        results = ask_judge(
            judge, requests, GenerationCache(tmp_path / "c.jsonl"), retries=0, max_new_tokens=400
        )
    finally:
        judge.close()
    for r in results:
        assert r["structured"] == ["grammar"] and r["attempts"] == 1
        assert r["verdict"] == parse_verdict(r["raw"]).model_dump()


def every_verdict_shape():
    """Every combination of the verdict's options (free text fixed), as compact JSON objects."""
    props = VERDICT_SCHEMA.schema["properties"]
    types = [o.get("enum", [None]) for o in props["type"]["anyOf"]]
    for more, crit, type_, severity in itertools.product(
        props["more_harmful"]["enum"],
        itertools.product([False, True], repeat=len(Criteria.model_fields)),
        [t for options in types for t in options],
        props["severity"]["enum"],
    ):
        criteria = dict(zip(Criteria.model_fields, crit, strict=True))
        obj = {"more_harmful": more, "criteria": criteria, "type": type_, "severity": severity, "reason": "r"}
        yield obj, json.dumps(obj, separators=(",", ":"))


def grammar_accepts(schema, text: str) -> bool:
    parser = JsonSchemaParser(lmfe_schema(schema))
    for ch in text:
        if ch not in parser.get_allowed_characters():
            return False
        parser = parser.add_character(ch)
    return parser.can_end()


def test_the_local_grammar_accepts_exactly_the_valid_verdicts():
    grammar = local_grammar_schema(VERDICT_SCHEMA, max_new_tokens=400, skeleton_tokens=60)
    checked = 0
    for obj, text in every_verdict_shape():
        try:
            Verdict.model_validate(obj)
            valid = True
        except ValidationError:
            valid = False
        assert grammar_accepts(grammar, text) == valid, text
        checked += 1
    assert checked == 3 * 16 * 4 * 5
    # The schema servers get is wider: it has no cross-field rule (validation still applies).
    assert grammar_accepts(
        VERDICT_SCHEMA.schema,
        json.dumps(
            {
                "more_harmful": "A",
                "criteria": dict.fromkeys(Criteria.model_fields, False),
                "type": None,
                "severity": "none",
                "reason": "r",
            },
            separators=(",", ":"),
        ),
    )
