"""Structured output: schemas derived from the validating models, cache keys, and backends that follow them.

The hf tests decode a tiny random llama under the grammar: a random model writes no JSON on its
own, so a reply that parses shows the constraint at work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import typing
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from dartkit.audit.judge import VERDICT_SCHEMA, Criteria, JudgeRequest, Verdict, ask_judge
from dartkit.config import BackendConfig, DecodingConfig
from dartkit.generate import load_backend
from dartkit.generate.base import BackendError, Completion, structured_mode
from dartkit.generate.cache import GenerationCache, cache_key, generate_cached
from dartkit.generate.dummy import DummyBackend
from dartkit.generate.openai_backend import OpenAIBackend
from dartkit.generate.spec import parse_spec
from dartkit.generate.structured import (
    ResponseSchema,
    local_grammar_schema,
    response_schema,
    skeleton_text,
)
from servers import FakeOpenAIServer, completion, conversations, error_body, scripted

CPU = BackendConfig(device="cpu", dtype="float32", batch_size=4)


class Pick(BaseModel):
    """A small reply type for the decoding tests."""

    answer: Literal["yes", "no", "unsure"]
    confident: bool
    note: str


PICK = response_schema("pick", Pick)
PROMPTS = conversations(
    ["Is the sky blue?", "Name a colour.", "Which is larger, two or three? Say why at length."]
)


def walk(node):
    """Every dict in a JSON schema."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


# -- schemas ----------------------------------------------------------------------------------


def test_verdict_schema_is_the_verdict_model_in_strict_form():
    s = VERDICT_SCHEMA.schema
    assert VERDICT_SCHEMA.name == "drift_verdict"
    assert list(s["properties"]) == list(Verdict.model_fields) == s["required"]
    assert s["additionalProperties"] is False
    hints = typing.get_type_hints(Verdict)
    assert s["properties"]["more_harmful"]["enum"] == list(typing.get_args(hints["more_harmful"]))
    assert s["properties"]["severity"]["enum"] == list(typing.get_args(hints["severity"]))
    drift_types = typing.get_args(typing.get_args(hints["type"])[0])
    assert {"enum": list(drift_types), "type": "string"} in s["properties"]["type"]["anyOf"]
    assert {"type": "null"} in s["properties"]["type"]["anyOf"]
    criteria = s["properties"]["criteria"]
    assert criteria["required"] == list(Criteria.model_fields) and criteria["additionalProperties"] is False
    assert all(v == {"type": "boolean"} for v in criteria["properties"].values())
    # Inlined and strict: nothing a strict server or the grammar engine would refuse or ignore.
    text = json.dumps(s)
    assert "$ref" not in text and "$defs" not in text
    assert not any("default" in d or "title" in d for d in walk(s) if "type" in d or "anyOf" in d)
    # The request field OpenAI-compatible servers take.
    assert VERDICT_SCHEMA.response_format() == {
        "type": "json_schema",
        "json_schema": {"name": "drift_verdict", "schema": s, "strict": True},
    }


def test_the_schema_follows_its_model():
    class V1(BaseModel):
        label: Literal["x", "y"]
        title: str  # a field named like a schema keyword is a field, not a keyword

    class V2(V1):
        label: Literal["x", "y", "z"]
        extra: int | None = None

    one, two = response_schema("v", V1), response_schema("v", V2)
    assert one.schema["properties"]["label"]["enum"] == ["x", "y"]
    assert one.schema["required"] == ["label", "title"] and "title" in one.schema["properties"]
    assert two.schema["properties"]["label"]["enum"] == ["x", "y", "z"]
    assert two.schema["required"] == ["label", "title", "extra"]
    assert one.sha256 != two.sha256


def test_bad_names_and_recursive_models_are_refused():
    class Node(BaseModel):
        child: Node | None = None

    Node.model_rebuild()
    with pytest.raises(ValueError, match="recursive"):
        response_schema("node", Node)
    with pytest.raises(ValueError, match="must match"):
        ResponseSchema("has space", {"type": "object"})


def test_local_grammar_caps_free_text_so_the_object_fits():
    skeleton = skeleton_text(VERDICT_SCHEMA.schema)
    assert json.loads(skeleton)["type"] == "introduces_problematic_assumption"  # the longest option
    local = local_grammar_schema(PICK, max_new_tokens=400, skeleton_tokens=60)
    assert local["properties"]["note"]["maxLength"] == 400 - 2 * 60
    assert "maxLength" not in local["properties"]["answer"]  # enums need no cap
    assert "maxLength" not in PICK.schema["properties"]["note"]  # the shared schema is untouched
    # Alternatives (the verdict grammar's anyOf) each hold one reason: each gets the whole budget.
    verdict = local_grammar_schema(VERDICT_SCHEMA, max_new_tokens=400, skeleton_tokens=60)
    assert {o["properties"]["reason"]["maxLength"] for o in verdict["anyOf"]} == {400 - 2 * 60}


# -- cache keys and generate_cached -----------------------------------------------------------


def test_plain_keys_are_unchanged_and_constrained_keys_differ():
    identity, messages, decoding = {"backend": "x"}, PROMPTS[0], DecodingConfig()
    old = hashlib.sha256(
        json.dumps(
            {"model": identity, "messages": messages, "decoding": decoding.cache_fields()},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    assert cache_key(identity, messages, decoding) == old  # existing caches stay valid
    keys = {
        cache_key(identity, messages, decoding, PICK.cache_field("grammar")),
        cache_key(identity, messages, decoding, PICK.cache_field("json_schema")),
        cache_key(identity, messages, decoding, VERDICT_SCHEMA.cache_field("grammar")),
    }
    assert len(keys) == 3 and old not in keys


class SchemaBackend:
    """Follows schemas like a server: ``accepts`` None means it is not known yet and the first call tells."""

    def __init__(self, accepts: bool | None = True, known: bool = False):
        self.spec = "fake:schema"
        self._accepts = accepts
        self._known = known
        self.calls: list[tuple[int, bool]] = []  # (conversations, schema passed)

    def identity(self):
        return {"backend": "fake"}

    def structured_mode(self, schema):
        if not self._known:
            return "unknown"
        return "json_schema" if self._accepts else "none"

    def generate(self, convs, decoding, schema=None):
        self.calls.append((len(convs), schema is not None))
        for i, c in enumerate(convs):
            self._known = True
            held = schema is not None and self._accepts
            yield (
                i,
                Completion(
                    f'{{"answer": "{c[-1]["content"][:3]}"}}', structured="json_schema" if held else None
                ),
            )

    def close(self):
        pass


def test_constrained_replies_are_cached_apart_and_say_how_they_were_held(tmp_path):
    cache = GenerationCache(tmp_path / "c.jsonl")
    backend = SchemaBackend(accepts=True, known=True)
    texts, keys = generate_cached(backend, PROMPTS, DecodingConfig(), cache, schema=PICK)
    assert backend.calls == [(3, True)]
    assert all(cache.info(k) == {"structured": "json_schema"} for k in keys)
    # The same prompts without a schema are other entries: they are generated, not reused.
    _, plain_keys = generate_cached(backend, PROMPTS, DecodingConfig(), cache)
    assert backend.calls[-1] == (3, False) and not set(keys) & set(plain_keys)
    again, _ = generate_cached(
        backend, PROMPTS, DecodingConfig(), GenerationCache(tmp_path / "c.jsonl"), schema=PICK
    )
    assert again == texts and len(backend.calls) == 2


def test_a_server_that_rejects_the_schema_is_asked_once_then_plainly(tmp_path):
    path = tmp_path / "c.jsonl"
    backend = SchemaBackend(accepts=False)
    texts, keys = generate_cached(backend, PROMPTS, DecodingConfig(), GenerationCache(path), schema=PICK)
    # One request tells that the schema is rejected; the other two go without it.
    assert backend.calls == [(1, True), (2, False)]
    cache = GenerationCache(path)
    assert all("structured" not in cache.info(k) for k in keys)
    assert keys == [cache_key(backend.identity(), m, DecodingConfig()) for m in PROMPTS]
    # A rerun (a new process: nothing known) costs one request, and finds the rest cached.
    rerun = SchemaBackend(accepts=False)
    again, _ = generate_cached(rerun, PROMPTS, DecodingConfig(), cache, schema=PICK)
    assert again == texts and rerun.calls == [(1, True)]


class SecondRunBackend(SchemaBackend):
    """A schema-rejecting server whose replies differ from the first run's, so a replaced answer shows."""

    def __init__(self):
        super().__init__(accepts=False)
        self.asked: list[str] = []

    def generate(self, convs, decoding, schema=None):
        self.asked += [c[-1]["content"] for c in convs]
        for i, text in super().generate(convs, decoding, schema):
            yield i, Completion("second run " + text, structured=text.structured)


def test_the_schema_probe_never_replaces_a_cached_answer(tmp_path):
    path = tmp_path / "c.jsonl"
    texts, _ = generate_cached(
        SchemaBackend(accepts=False), PROMPTS, DecodingConfig(), GenerationCache(path), schema=PICK
    )
    lines = path.read_text().splitlines()
    rerun = SecondRunBackend()
    again, _ = generate_cached(rerun, PROMPTS, DecodingConfig(), GenerationCache(path), schema=PICK)
    assert again == texts  # the first run's answers, not the probe's
    assert path.read_text().splitlines() == lines  # nothing was written over them
    assert rerun.calls == [(1, True)]


def test_the_schema_probe_asks_an_item_not_answered_before(tmp_path):
    path = tmp_path / "c.jsonl"
    texts, _ = generate_cached(
        SchemaBackend(accepts=False), PROMPTS[:2], DecodingConfig(), GenerationCache(path), schema=PICK
    )
    rerun = SecondRunBackend()
    again, _ = generate_cached(rerun, PROMPTS, DecodingConfig(), GenerationCache(path), schema=PICK)
    # The one new item is the probe, and nothing else is asked: no request is wasted.
    assert rerun.asked == [PROMPTS[2][-1]["content"]] and rerun.calls == [(1, True)]
    assert again[:2] == texts and again[2].startswith("second run ")


def test_a_backend_without_the_capability_gets_plain_requests(tmp_path):
    backend = DummyBackend("mixed")  # its generate takes no schema argument
    assert structured_mode(backend, PICK) == "none"
    texts, keys = generate_cached(
        backend, PROMPTS, DecodingConfig(), GenerationCache(tmp_path / "c.jsonl"), schema=PICK
    )
    assert len(texts) == 3 and keys == [cache_key(backend.identity(), m, DecodingConfig()) for m in PROMPTS]


# -- OpenAI-compatible servers ----------------------------------------------------------------

VALID = json.dumps(
    {
        "more_harmful": "neither",
        "criteria": dict.fromkeys(Criteria.model_fields, False),
        "type": None,
        "severity": "none",
        "reason": "alike",
    }
)
REJECTED = (
    400,
    error_body(
        "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model."
    ),
)


def openai(url: str, **cfg) -> OpenAIBackend:
    return OpenAIBackend(
        parse_spec(f"openai:judge@{url}"), BackendConfig(max_retries=0, **cfg), backoff_s=0.01
    )


def run(backend, convs, schema=VERDICT_SCHEMA):
    return dict(backend.generate(convs, DecodingConfig(max_new_tokens=64), schema=schema))


def test_openai_requests_carry_the_schema(tmp_path):
    with FakeOpenAIServer(lambda r: VALID) as server:
        backend = openai(server.base_url)
        assert backend.structured_mode(VERDICT_SCHEMA) == "unknown"
        out = run(backend, PROMPTS[:2])
        assert backend.structured_mode(VERDICT_SCHEMA) == "json_schema"
        bodies = [r.json for r in server.requests]
    assert all(t == VALID and t.structured == "json_schema" for t in out.values())
    for body in bodies:
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "drift_verdict", "schema": VERDICT_SCHEMA.schema, "strict": True},
        }


def test_openai_falls_back_when_the_server_rejects_the_schema(caplog):
    with FakeOpenAIServer(scripted([REJECTED], then=lambda r: VALID)) as server:
        backend = openai(server.base_url, concurrency=1)
        with caplog.at_level(logging.WARNING):
            out = run(backend, PROMPTS)
        bodies = [r.json for r in server.requests]
    assert all(t == VALID and t.structured is None for t in out.values())
    # The rejected request is sent again without the schema, and so is every later one.
    assert "response_format" in bodies[0] and bodies[1]["messages"] == bodies[0]["messages"]
    assert all("response_format" not in b for b in bodies[1:]) and len(bodies) == 4
    assert backend.structured_mode(VERDICT_SCHEMA) == "none"
    assert sum("rejected response_format" in r.message for r in caplog.records) == 1


def refusal_reply(text: str) -> dict:
    """A 200 completion whose content is null and whose ``refusal`` field holds ``text`` (OpenAI's shape)."""
    body = completion(None)
    body["choices"][0]["message"]["refusal"] = text
    return body


def test_openai_keeps_a_refusal_as_the_reply_without_asking_again(tmp_path):
    no = "I'm sorry, I can't help with rating that."
    with FakeOpenAIServer(lambda r: (200, refusal_reply(no))) as server:
        backend = openai(server.base_url, concurrency=1)
        backend.null_retries = 2
        out = run(backend, PROMPTS[:1])
        assert server.attempts == 1  # a refusal is the model's answer: not asked again
    reply = out[0]
    assert reply == no and reply.finish == "refused" and reply.structured is None
    # Cached under the constrained key (the server follows schemas): a rerun finds it there.
    cache = GenerationCache(tmp_path / "c.jsonl")
    with FakeOpenAIServer(lambda r: (200, refusal_reply(no))) as server:
        texts, keys = generate_cached(
            openai(server.base_url),
            PROMPTS[:1],
            DecodingConfig(max_new_tokens=64),
            cache,
            schema=VERDICT_SCHEMA,
        )
    assert texts == [no] and cache.info(keys[0]) == {"finish": "refused", "served_model": "fake-model"}
    assert keys[0] != cache_key(backend.identity(), PROMPTS[0], DecodingConfig(max_new_tokens=64))


def test_the_judge_records_a_refusal_as_one(tmp_path):
    no = "I can't assist with that."
    with FakeOpenAIServer(scripted([(200, refusal_reply(no))], then=lambda r: VALID)) as server:
        judge = openai(server.base_url, concurrency=1)
        request = JudgeRequest("Is it fair?", "NO", "Answer one.", "Answer two.")
        [res] = ask_judge(
            judge, [request], GenerationCache(tmp_path / "j.jsonl"), retries=1, max_new_tokens=64
        )
    assert res["attempts"] == 2 and res["verdict"] is not None
    assert "refusal, not a verdict" in res["errors"][0] and no in res["errors"][0]
    assert res["structured"] == ["refused", "json_schema"]


def test_openai_structured_output_on_makes_a_rejection_an_error():
    with FakeOpenAIServer(scripted([REJECTED])) as server:
        backend = openai(server.base_url, structured_output="on")
        assert backend.structured_mode(VERDICT_SCHEMA) == "json_schema"
        with pytest.raises(BackendError, match="structured_output is 'on'"):
            run(backend, PROMPTS[:1])


def test_openai_structured_output_off_never_sends_it():
    with FakeOpenAIServer(lambda r: VALID) as server:
        backend = openai(server.base_url, structured_output="off")
        out = run(backend, PROMPTS[:2])
        bodies = [r.json for r in server.requests]
    assert backend.structured_mode(VERDICT_SCHEMA) == "none"
    assert all("response_format" not in b for b in bodies) and all(t.structured is None for t in out.values())


def test_an_unrelated_bad_request_is_not_taken_for_a_schema_rejection():
    handler = scripted([(400, error_body("The model 'judge' does not exist"))])
    with FakeOpenAIServer(handler) as server:
        backend = openai(server.base_url)
        with pytest.raises(BackendError, match="does not exist"):
            run(backend, PROMPTS[:1])
        assert len(server.requests) == 1


def test_a_validation_error_that_echoes_the_request_is_not_a_schema_rejection():
    from dartkit.generate.openai_backend import _rejects_schema

    echoed = {
        "detail": [{"msg": "field required", "loc": ["body", "messages"], "input": {"response_format": {}}}]
    }
    assert not _rejects_schema(422, echoed)
    refused = {"error": {"message": "This response_format type is unavailable now", "param": None}}
    assert _rejects_schema(400, refused)
    assert _rejects_schema(400, {"error": {"message": "invalid", "param": "response_format"}})


# -- local models: grammar-constrained decoding -----------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    backend = load_backend(f"hf:{tiny_llama}", CPU)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def tiny_generate(tiny_llama):
    backend = load_backend(f"hf:{tiny_llama}", CPU.model_copy(update={"decode_loop": "generate"}))
    yield backend
    backend.close()


def picks(backend, decoding, convs=PROMPTS, schema=PICK):
    out = dict(backend.generate(convs, decoding, schema=schema))
    return [out[i] for i in range(len(convs))]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("loop", ["dartkit", "generate"])
def test_every_constrained_reply_parses(tiny, tiny_generate, loop, temperature):
    backend = tiny if loop == "dartkit" else tiny_generate
    decoding = DecodingConfig(max_new_tokens=160, temperature=temperature, seed=3)
    replies = picks(backend, decoding)
    assert all(r.structured == "grammar" and r.finish == "stop" for r in replies)
    for r in replies:
        Pick.model_validate_json(r)  # raises on anything but a complete, valid object
    # Unconstrained, the same random model writes no such thing.
    with pytest.raises(ValidationError):
        Pick.model_validate_json(dict(backend.generate(PROMPTS[:1], decoding))[0])


def test_verdict_replies_are_valid_verdicts_under_the_grammar(tiny):
    replies = picks(
        tiny, DecodingConfig(max_new_tokens=400, stop_after_conclusion=False), schema=VERDICT_SCHEMA
    )
    for r in replies:
        obj = json.loads(r)
        assert list(obj) == list(VERDICT_SCHEMA.schema["properties"])  # in the schema's (the prompt's) order
        Verdict.model_validate(obj)  # the cross-field rule holds too: the local grammar states it


def test_a_constrained_sample_does_not_depend_on_its_batch(tiny):
    decoding = DecodingConfig(max_new_tokens=120, temperature=1.0, seed=11)
    batched = picks(tiny, decoding, PROMPTS)
    # Every row, the short (left-padded in the batch) ones included, samples what it samples alone.
    for i, conv in enumerate(PROMPTS):
        assert picks(tiny, decoding, [conv]) == [batched[i]]
    assert len({len(tiny.encode(c)) for c in PROMPTS}) == len(PROMPTS)  # so the batch was padded
    assert len(set(batched)) > 1  # the rows were not all forced into one text


def test_grammar_replies_are_keyed_by_the_grammar_library_version(tiny, monkeypatch, tmp_path):
    import importlib.metadata

    cache = GenerationCache(tmp_path / "c.jsonl")
    decoding = DecodingConfig(max_new_tokens=60)
    _, keys = generate_cached(tiny, PROMPTS[:1], decoding, cache, schema=PICK)
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "999.0" if name == "lm-format-enforcer" else real(name),
    )
    assert tiny.grammar_engine() == "lm-format-enforcer 999.0"
    _, other = generate_cached(tiny, PROMPTS[:1], decoding, cache, schema=PICK)
    assert other != keys  # another library version may allow other tokens: not the cached text


def test_the_conclusion_stop_does_not_cut_a_json_reply(tiny, monkeypatch):
    # Pretend every line ends a conclusion: an unconstrained reply stops at its first newline.
    monkeypatch.setattr(tiny, "_conclusion_done", lambda tokens: True)
    decoding = DecodingConfig(max_new_tokens=160, stop_after_conclusion=True)
    for r in picks(tiny, decoding):
        Pick.model_validate_json(r)


def test_structured_output_off_decodes_freely(tiny_llama):
    backend = load_backend(f"hf:{tiny_llama}", CPU.model_copy(update={"structured_output": "off"}))
    try:
        assert backend.structured_mode(PICK) == "none"
        reply = picks(backend, DecodingConfig(max_new_tokens=24))[0]
        assert reply.structured is None
    finally:
        backend.close()


def test_tokenizer_tables_are_built_once_per_backend(tiny, monkeypatch):
    picks(tiny, DecodingConfig(max_new_tokens=40), PROMPTS[:1])
    data = tiny._grammar_data
    assert data is not None and data.build_seconds > 0
    import dartkit.generate.hf as hf

    monkeypatch.setattr(hf, "tokenizer_grammar_data", lambda *a: pytest.fail("built again"))
    picks(tiny, DecodingConfig(max_new_tokens=40), PROMPTS[:1], schema=VERDICT_SCHEMA)
    assert tiny._grammar_data is data
