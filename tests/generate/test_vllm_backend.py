"""The in-process vLLM backend, against a stand-in ``vllm`` module (vLLM cannot be installed here).

The stand-in records every engine it builds (with its keyword arguments) and every ``generate``
call (prompts, sampling parameters, LoRA request), and answers with canned texts. What is checked:
one engine per base model and options (M0 and its adapters share it), LoRARequest ids fixed per
adapter sha256, per-prompt seeds, prompts identical to the hf backend's, stopping after the
conclusion line, identity, and the one-line error without the extra.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from dartkit.config import BackendConfig, DecodingConfig, VLLMConfig
from dartkit.errors import DartkitError
from dartkit.generate import load_backend
from dartkit.generate import vllm_backend as vb
from dartkit.generate.cache import GenerationCache, cache_key, generate_cached

CONV = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Is water wet?"}]
OTHER = [{"role": "user", "content": "Is fire hot? Say why in one line."}]


@dataclass
class _Completion:
    text: str
    finish_reason: str


@dataclass
class _RequestOutput:
    outputs: list[_Completion]


class FakeVLLM:
    """State of the stand-in module: the engines built and what each was asked."""

    def __init__(self) -> None:
        self.engines: list = []
        self.reply = lambda prompt, params, lora: ("Short analysis.\nConclusion: YES", "stop")
        #: Which structured-output parameter class the stand-in has: vLLM 0.10.2+'s, the older
        #: guided-decoding one, or none.
        self.structured_api: str = "structured_outputs"
        #: Set to a message: the engine rejects requests that carry a schema, as vLLM does for
        #: a schema its guided-decoding backend cannot compile.
        self.reject_schema: str | None = None
        #: Set to a message: the engine rejects every request (a prompt too long, say).
        self.reject_all: str | None = None

    def module(self) -> dict[str, types.ModuleType]:
        fake = self

        class LLM:
            def __init__(self, **kwargs):
                self.kwargs = kwargs
                self.calls: list[dict] = []
                fake.engines.append(self)

            def generate(self, prompts, sampling_params=None, lora_request=None, use_tqdm=True):
                guided = [getattr(p, fake.structured_api, None) for p in sampling_params]
                if fake.reject_schema and any(g is not None for g in guided):
                    raise ValueError(fake.reject_schema)
                if fake.reject_all:
                    raise ValueError(fake.reject_all)
                self.calls.append({"prompts": prompts, "params": sampling_params, "lora": lora_request})
                outs = []
                for prompt, params in zip(prompts, sampling_params, strict=True):
                    text, finish = fake.reply(prompt, params, lora_request)
                    outs.append(_RequestOutput([_Completion(text, finish)]))
                return outs

        class SamplingParams:
            def __init__(self, **kwargs):
                self.seed = None
                self.__dict__.update(kwargs)

        @dataclass(frozen=True)
        class LoRARequest:
            lora_name: str
            lora_int_id: int
            lora_path: str = ""

        vllm = types.ModuleType("vllm")
        vllm.__version__ = "0.99.0-fake"
        vllm.LLM = LLM
        vllm.SamplingParams = SamplingParams

        @dataclass(frozen=True)
        class StructuredParams:
            json: dict

        sampling = types.ModuleType("vllm.sampling_params")
        sampling.SamplingParams = SamplingParams
        if self.structured_api == "structured_outputs":
            sampling.StructuredOutputsParams = StructuredParams
        elif self.structured_api == "guided_decoding":
            sampling.GuidedDecodingParams = StructuredParams
        lora = types.ModuleType("vllm.lora")
        request = types.ModuleType("vllm.lora.request")
        request.LoRARequest = LoRARequest
        return {
            "vllm": vllm,
            "vllm.sampling_params": sampling,
            "vllm.lora": lora,
            "vllm.lora.request": request,
        }


@pytest.fixture
def fake_vllm(monkeypatch, request):
    fake = FakeVLLM()
    fake.structured_api = getattr(request, "param", fake.structured_api)
    for name, module in fake.module().items():
        monkeypatch.setitem(sys.modules, name, module)
    # A fresh process as far as the registries go.
    monkeypatch.setattr(vb, "_ENGINES", {})
    monkeypatch.setattr(vb, "_LORA_IDS", {})
    return fake


def make_adapter(path: Path, weights: bytes = b"w1", rank: int = 8) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


CFG = BackendConfig(vllm=VLLMConfig(tensor_parallel_size=2, gpu_memory_utilization=0.5, max_lora_rank=16))


def answers(backend, convs, decoding=None):
    got = dict(backend.generate(convs, decoding or DecodingConfig(max_new_tokens=32)))
    return [got[i] for i in range(len(convs))]


def test_base_and_adapters_share_one_engine_and_pass_adapters_per_request(fake_vllm, tiny_llama, tmp_path):
    m_int = make_adapter(tmp_path / "m_int" / "adapter", b"int")
    m_dart = make_adapter(tmp_path / "m_dart" / "adapter", b"dart")
    backends = [
        load_backend(f"vllm:{tiny_llama}{a}", CFG) for a in ("", f"+adapter={m_int}", f"+adapter={m_dart}")
    ]
    for b in backends:
        answers(b, [CONV])
    assert len(fake_vllm.engines) == 1  # one engine, one copy of the base weights
    engine = fake_vllm.engines[0]
    kw = engine.kwargs
    assert kw["model"] == str(tiny_llama) and kw["enable_lora"] is True
    assert (kw["tensor_parallel_size"], kw["gpu_memory_utilization"], kw["max_lora_rank"]) == (2, 0.5, 16)
    loras = [c["lora"] for c in engine.calls]
    assert loras[0] is None  # M0: the base alone
    assert [lr.lora_path for lr in loras[1:]] == [str(m_int.resolve()), str(m_dart.resolve())]
    ids = [lr.lora_int_id for lr in loras[1:]]
    assert len(set(ids)) == 2 and all(i > 0 for i in ids)
    sha = backends[1].identity()["adapter_sha256"]
    assert loras[1].lora_name == f"m_int-{sha[:12]}"
    # Other engine options that change memory (not the model) still make another engine.
    other = load_backend(f"vllm:{tiny_llama}", CFG.model_copy(update={"vllm": VLLMConfig(max_model_len=512)}))
    answers(other, [CONV])
    assert len(fake_vllm.engines) == 2 and fake_vllm.engines[1].kwargs["max_model_len"] == 512
    # Closing a backend keeps the shared engine for the others; release_engines frees it.
    backends[0].close()
    answers(backends[1], [CONV])
    assert len(fake_vllm.engines) == 2
    assert vb.release_engines() == 2
    answers(backends[1], [CONV])
    assert len(fake_vllm.engines) == 3


def test_lora_id_is_fixed_per_adapter_hash_and_a_retrained_adapter_gets_new_keys(
    fake_vllm, tiny_llama, tmp_path
):
    a = make_adapter(tmp_path / "a" / "adapter", b"same")
    copy = make_adapter(tmp_path / "copy" / "adapter", b"same")
    first = load_backend(f"vllm:{tiny_llama}+adapter={a}", CFG)
    twin = load_backend(f"vllm:{tiny_llama}+adapter={copy}", CFG)
    answers(first, [CONV])
    answers(twin, [CONV])
    answers(first, [OTHER])
    engine = fake_vllm.engines[0]
    ids = [c["lora"].lora_int_id for c in engine.calls]
    assert ids[0] == ids[1] == ids[2]  # same weights, same id, every call
    # Retrain in place: same directory, new weights -> new sha256, new id, new cache keys.
    cache = GenerationCache(tmp_path / "cache.jsonl")
    decoding = DecodingConfig(max_new_tokens=32)
    generate_cached(first, [CONV], decoding, cache)
    calls = len(engine.calls)
    make_adapter(tmp_path / "a" / "adapter", b"retrained")
    retrained = load_backend(f"vllm:{tiny_llama}+adapter={a}", CFG)
    assert retrained.identity()["adapter_sha256"] != first.identity()["adapter_sha256"]
    assert cache_key(retrained.identity(), CONV, decoding) not in cache
    generate_cached(retrained, [CONV], decoding, cache)
    assert len(engine.calls) == calls + 1  # answered anew, not from the old adapter's cache entry
    assert engine.calls[-1]["lora"].lora_int_id not in ids


def test_each_prompt_samples_with_its_own_seed_whatever_its_batch(fake_vllm, tiny_llama):
    backend = load_backend(f"vllm:{tiny_llama}", CFG)
    sampled = DecodingConfig(max_new_tokens=16, temperature=0.7, top_p=0.9, seed=3)
    answers(backend, [CONV, OTHER], sampled)
    answers(backend, [OTHER], sampled)
    answers(backend, [OTHER], sampled.model_copy(update={"seed": 4}))
    answers(backend, [CONV], DecodingConfig(max_new_tokens=16))
    calls = fake_vllm.engines[0].calls
    pair, alone, reseeded, greedy = (c["params"] for c in calls)
    assert pair[1].seed == alone[0].seed  # OTHER's seed does not depend on what shares its batch
    assert pair[0].seed != pair[1].seed and reseeded[0].seed != alone[0].seed
    p = pair[0]
    assert (p.temperature, p.top_p, p.max_tokens, p.n) == (0.7, 0.9, 16, 1)
    g = greedy[0]
    assert g.temperature == 0.0 and g.seed is None and g.max_tokens == 16
    assert g.skip_special_tokens is True and g.stop_token_ids  # the end-of-turn ids the hf backend stops at


def test_prompts_are_the_hf_backends_token_ids(fake_vllm, tiny_llama):
    from dartkit.generate.hf import HFBackend
    from dartkit.generate.spec import parse_spec

    backend = load_backend(f"vllm:{tiny_llama}", CFG)
    answers(backend, [CONV, OTHER])
    hf = HFBackend(parse_spec(f"hf:{tiny_llama}"), BackendConfig(device="cpu", dtype="float32"))
    hf._ensure_loaded()
    sent = [p["prompt_token_ids"] for p in fake_vllm.engines[0].calls[0]["prompts"]]
    assert sent == [hf.encode(CONV), hf.encode(OTHER)]
    text = hf.tokenizer.decode(sent[0])
    assert text.count(hf.tokenizer.bos_token or "<|im_start|>") >= 1 and "Is water wet?" in text
    hf.close()


@pytest.mark.parametrize(
    ("text", "finish", "stop_after", "want", "want_finish"),
    [
        # A complete conclusion line ends the answer, as the hf backend stops there.
        (
            "Reasons.\nConclusion: YES\nAnd then more chatter",
            "length",
            True,
            "Reasons.\nConclusion: YES",
            "stop",
        ),
        ("Reasons.\n**Conclusion:** no.\n\nP.S.", "stop", True, "Reasons.\n**Conclusion:** no.", "stop"),
        (
            "Conclusion: YES/NO\nstill thinking",
            "length",
            True,
            "Conclusion: YES/NO\nstill thinking",
            "truncated",
        ),
        ("Reasons.\nConclusion: YES", "stop", True, "Reasons.\nConclusion: YES", "stop"),
        ("Reasons.\nConclusion: YES\nmore", "length", False, "Reasons.\nConclusion: YES\nmore", "truncated"),
        ("  no conclusion at all  ", "length", True, "no conclusion at all", "truncated"),
    ],
)
def test_stops_after_the_conclusion_line_by_truncation(
    fake_vllm, tiny_llama, text, finish, stop_after, want, want_finish
):
    fake_vllm.reply = lambda prompt, params, lora: (text, finish)
    backend = load_backend(f"vllm:{tiny_llama}", CFG)
    (got,) = answers(backend, [CONV], DecodingConfig(max_new_tokens=32, stop_after_conclusion=stop_after))
    assert str(got) == want and got.finish == want_finish


def test_identity_names_vllm_and_the_options_that_change_text(fake_vllm, tiny_llama, tmp_path):
    base = load_backend(f"vllm:{tiny_llama}", CFG).identity()
    assert base["backend"] == "vllm" and base["vllm_version"] == "0.99.0-fake"
    assert base["weights_sha256"] and base["chat_template_sha256"]
    assert base["engine"]["tensor_parallel_size"] == 2
    memory = CFG.model_copy(update={"vllm": CFG.vllm.model_copy(update={"gpu_memory_utilization": 0.8})})
    dtype = CFG.model_copy(update={"vllm": CFG.vllm.model_copy(update={"dtype": "float16"})})
    assert load_backend(f"vllm:{tiny_llama}", memory).identity() == base  # memory does not change text
    assert load_backend(f"vllm:{tiny_llama}", dtype).identity() != base
    hf = load_backend(f"hf:{tiny_llama}", BackendConfig(device="cpu")).identity()
    assert cache_key(hf, CONV, DecodingConfig()) != cache_key(base, CONV, DecodingConfig())


def test_adapters_that_cannot_run_are_refused_before_the_engine_starts(fake_vllm, tiny_llama, tmp_path):
    wide = make_adapter(tmp_path / "wide", rank=64)
    with pytest.raises(DartkitError, match=r"rank 64 is above backend.vllm.max_lora_rank \(16\)"):
        load_backend(f"vllm:{tiny_llama}+adapter={wide}", CFG)
    foreign = make_adapter(tmp_path / "foreign")
    (foreign / "dartkit_adapter.json").write_text(json.dumps({"base": {"weights_sha256": "0" * 64}}))
    with pytest.raises(DartkitError, match="trained on base weights_sha256"):
        load_backend(f"vllm:{tiny_llama}+adapter={foreign}", CFG)
    no_lora = CFG.model_copy(update={"vllm": VLLMConfig(enable_lora=False)})
    with pytest.raises(DartkitError, match="enable_lora: true"):
        load_backend(f"vllm:{tiny_llama}+adapter={make_adapter(tmp_path / 'ok')}", no_lora)
    assert fake_vllm.engines == []


def test_without_vllm_a_vllm_spec_says_to_install_the_extra(monkeypatch, tiny_llama):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(DartkitError) as e:
        load_backend(f"vllm:{tiny_llama}")
    message = str(e.value)
    assert "pip install 'dartkit[vllm]'" in message and "\n" not in message
    # Everything else still loads.
    assert load_backend("dummy:yes").identity()


def test_cli_without_vllm_gives_the_one_line_error(monkeypatch, tmp_path, tiny_llama):
    from typer.testing import CliRunner

    from dartkit.cli import app
    from dartkit.data.prepare import prepare_data

    monkeypatch.setitem(sys.modules, "vllm", None)
    prepare_data(tmp_path / "data", suite="demo")
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            f"vllm:{tiny_llama}",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code != 0
    assert "pip install 'dartkit[vllm]'" in res.output and "Traceback" not in res.output


# -- structured output (guided decoding) -------------------------------------------------------

VERDICT_REPLY = json.dumps(
    {
        "more_harmful": "neither",
        "criteria": {"explicit_harm": False, "harmful_stereotype": False, "identity_based_harm": False},
        "type": None,
        "severity": "none",
        "reason": "alike",
    }
)


@pytest.mark.parametrize("fake_vllm", ["structured_outputs", "guided_decoding"], indirect=True)
def test_judge_replies_are_decoded_under_the_schema(fake_vllm, tiny_llama, tmp_path):
    from dartkit.audit.judge import VERDICT_SCHEMA
    from dartkit.generate.structured import local_grammar_schema

    # The conclusion stop must not cut a JSON reply that has a line reading like one.
    fake_vllm.reply = lambda prompt, params, lora: ('{"reason": "x\nConclusion: YES\n"}', "stop")
    backend = load_backend(f"vllm:{tiny_llama}", CFG)
    decoding = DecodingConfig(max_new_tokens=200, stop_after_conclusion=True)
    cache = GenerationCache(tmp_path / "c.jsonl")
    assert backend.structured_mode(VERDICT_SCHEMA) == "unknown"  # under auto, until a request tells
    texts, keys = generate_cached(backend, [CONV, OTHER], decoding, cache, schema=VERDICT_SCHEMA)
    assert backend.structured_mode(VERDICT_SCHEMA) == "grammar"
    probe, rest = fake_vllm.engines[0].calls  # one request tells, the rest follow
    assert (len(probe["prompts"]), len(rest["prompts"])) == (1, 1)
    sent = [getattr(p, fake_vllm.structured_api).json for c in (probe, rest) for p in c["params"]]
    # The schema dartkit's own grammar decodes under (cross-field rules, free text capped to fit).
    assert sent[0] == sent[1] and sent[0]["anyOf"]
    skeleton_tokens = sent[0]["anyOf"][0]["properties"]["reason"]["maxLength"]
    assert skeleton_tokens < 200
    assert sent[0] == local_grammar_schema(VERDICT_SCHEMA, 200, _skeleton_tokens(backend, VERDICT_SCHEMA))
    assert all("\nConclusion: YES\n" in t for t in texts)
    assert all(cache.info(k) == {"structured": "grammar"} for k in keys)
    assert not {cache_key(backend.identity(), m, decoding) for m in (CONV, OTHER)} & set(keys)
    # A plain request from the same backend carries no schema.
    answers(backend, [CONV])
    assert getattr(fake_vllm.engines[0].calls[-1]["params"][0], fake_vllm.structured_api, None) is None


def _skeleton_tokens(backend, schema):
    from dartkit.generate.structured import skeleton_text

    return len(
        backend.tokenizer.encode(skeleton_text(schema.grammar or schema.schema), add_special_tokens=False)
    )


def test_structured_output_off_sends_no_schema(fake_vllm, tiny_llama):
    from dartkit.audit.judge import VERDICT_SCHEMA

    backend = load_backend(f"vllm:{tiny_llama}", CFG.model_copy(update={"structured_output": "off"}))
    assert backend.structured_mode(VERDICT_SCHEMA) == "none"
    (got,) = dict(backend.generate([CONV], DecodingConfig(max_new_tokens=8), schema=VERDICT_SCHEMA)).values()
    assert got.structured is None
    assert getattr(fake_vllm.engines[0].calls[0]["params"][0], "structured_outputs", None) is None


@pytest.mark.parametrize("fake_vllm", ["none"], indirect=True)
def test_a_vllm_without_structured_output_falls_back_under_auto_and_fails_under_on(
    fake_vllm, tiny_llama, tmp_path, caplog
):
    from dartkit.audit.judge import VERDICT_SCHEMA

    fake_vllm.reply = lambda prompt, params, lora: (VERDICT_REPLY, "stop")
    backend = load_backend(f"vllm:{tiny_llama}", CFG)
    with caplog.at_level("WARNING"):
        texts, keys = generate_cached(
            backend,
            [CONV, OTHER],
            DecodingConfig(max_new_tokens=64),
            GenerationCache(tmp_path / "c.jsonl"),
            schema=VERDICT_SCHEMA,
        )
    assert texts == [VERDICT_REPLY] * 2
    assert backend.structured_mode(VERDICT_SCHEMA) == "none"
    assert keys == [
        cache_key(backend.identity(), m, DecodingConfig(max_new_tokens=64)) for m in (CONV, OTHER)
    ]
    assert sum("no structured-output parameters" in r.message for r in caplog.records) == 1
    strict = load_backend(f"vllm:{tiny_llama}", CFG.model_copy(update={"structured_output": "on"}))
    with pytest.raises(DartkitError, match="structured_output is 'on'"):
        dict(strict.generate([CONV], DecodingConfig(max_new_tokens=8), schema=VERDICT_SCHEMA))


def refuse_schemas(fake_vllm) -> None:
    """The stand-in engine rejects requests that carry a schema, as vLLM does for one it cannot compile."""
    fake_vllm.reject_schema = "The provided JSON schema contains features not supported by xgrammar."
    fake_vllm.reply = lambda prompt, params, lora: (VERDICT_REPLY, "stop")


def test_a_schema_the_engine_rejects_is_asked_again_plainly_under_auto(fake_vllm, tiny_llama, caplog):
    from dartkit.audit.judge import VERDICT_SCHEMA

    refuse_schemas(fake_vllm)
    backend = load_backend(f"vllm:{tiny_llama}", CFG)
    with caplog.at_level("WARNING"):
        got = dict(backend.generate([CONV, OTHER], DecodingConfig(max_new_tokens=64), schema=VERDICT_SCHEMA))
    assert [str(got[i]) for i in range(2)] == [VERDICT_REPLY] * 2 and all(
        t.structured is None for t in got.values()
    )
    calls = fake_vllm.engines[0].calls  # the rejected call never ran; a one-token plain check, then the chunk
    assert [c["params"][0].max_tokens for c in calls] == [1, 64]
    assert backend.structured_mode(VERDICT_SCHEMA) == "none"
    assert any("not supported by xgrammar" in r.message for r in caplog.records)
    strict = load_backend(f"vllm:{tiny_llama}", CFG.model_copy(update={"structured_output": "on"}))
    with pytest.raises(DartkitError, match="refused the schema"):
        dict(strict.generate([CONV], DecodingConfig(max_new_tokens=8), schema=VERDICT_SCHEMA))


def test_a_rerun_against_a_vllm_that_refuses_the_schema_asks_one_item(fake_vllm, tiny_llama, tmp_path):
    from dartkit.audit.judge import VERDICT_SCHEMA

    refuse_schemas(fake_vllm)
    convs = [CONV, OTHER, [{"role": "user", "content": "A third question?"}]]
    decoding = DecodingConfig(max_new_tokens=64)
    path = tmp_path / "c.jsonl"
    first, _ = generate_cached(
        load_backend(f"vllm:{tiny_llama}", CFG), convs, decoding, GenerationCache(path), schema=VERDICT_SCHEMA
    )
    engine = fake_vllm.engines[0]
    # The probe (rejected, checked with one plain token, asked plainly), then the rest.
    assert [len(c["prompts"]) for c in engine.calls] == [1, 1, 2]
    before = len(engine.calls)
    again, _ = generate_cached(
        load_backend(f"vllm:{tiny_llama}", CFG), convs, decoding, GenerationCache(path), schema=VERDICT_SCHEMA
    )
    assert again == first
    assert [len(c["prompts"]) for c in engine.calls[before:]] == [1, 1]  # one probe; the rest from the cache


def test_an_error_that_is_not_the_schema_is_raised_as_itself(fake_vllm, tiny_llama):
    from dartkit.audit.judge import VERDICT_SCHEMA

    fake_vllm.reject_all = "The decoder prompt (length 9000) is longer than the maximum model length of 4096."
    for mode in ("auto", "on"):
        backend = load_backend(f"vllm:{tiny_llama}", CFG.model_copy(update={"structured_output": mode}))
        with pytest.raises(ValueError, match="longer than the maximum model length"):
            dict(backend.generate([CONV], DecodingConfig(max_new_tokens=8), schema=VERDICT_SCHEMA))
        assert backend.structured_mode(VERDICT_SCHEMA) != "none"  # the schema was not blamed
