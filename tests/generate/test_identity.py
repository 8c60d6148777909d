"""A local model's identity (and so every cache key) covers everything that changes its answers.

The chat template, the decode loop, the dtype and the device kind each change generated text;
a cache shared across runs must never serve an answer made under other settings. Identity
stays cheap: no weights are loaded to compute it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from dartkit.config import BackendConfig, DecodingConfig
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache, generate_cached

CPU = BackendConfig(device="cpu", dtype="float32")
QUESTION = [{"role": "user", "content": "Is the sky blue?"}]


def identity(spec: str, cfg: BackendConfig = CPU) -> dict:
    backend = load_backend(spec, cfg)
    ident = backend.identity()
    assert backend.model is None, "identity() must not load the weights"
    return ident


@pytest.fixture()
def model_copy(tiny_llama, tmp_path):
    return shutil.copytree(tiny_llama, tmp_path / "model")


def test_editing_the_chat_template_file_changes_the_identity(model_copy):
    template = model_copy / "chat_template.jinja"
    assert template.is_file(), "the tiny model is expected to keep its template in chat_template.jinja"
    before = identity(f"hf:{model_copy}")
    template.write_text(template.read_text() + "{# edited #}")
    after = identity(f"hf:{model_copy}")
    assert after["chat_template_sha256"] != before["chat_template_sha256"]
    # Weights did not change, only the prompts the model will see.
    assert after["weights_sha256"] == before["weights_sha256"]


def test_a_template_kept_in_tokenizer_config_counts_too(model_copy):
    template = (model_copy / "chat_template.jinja").read_text()
    (model_copy / "chat_template.jinja").unlink()
    config_path = model_copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    before = identity(f"hf:{model_copy}")["chat_template_sha256"]
    config["chat_template"] = template.replace("<|im_start|>", "<|im_start|> ")
    config_path.write_text(json.dumps(config))
    assert before is not None and identity(f"hf:{model_copy}")["chat_template_sha256"] != before


def test_embedded_identity_follows_its_converted_template(tmp_path, monkeypatch):
    from dartkit.generate.embedded import embedded_model_dir

    real = embedded_model_dir()
    # A copy of the converted model in a fresh dartkit cache: small files copied, weights linked.
    copy = tmp_path / "models" / real.name
    copy.mkdir(parents=True)
    for f in real.iterdir():
        if f.suffix == ".safetensors":
            (copy / f.name).symlink_to(f)
        else:
            shutil.copy(f, copy / f.name)
    monkeypatch.setenv("DARTKIT_CACHE", str(tmp_path))
    assert embedded_model_dir() == copy
    before = identity("embedded")
    (copy / "chat_template.jinja").write_text((copy / "chat_template.jinja").read_text() + "\n")
    assert identity("embedded")["chat_template_sha256"] != before["chat_template_sha256"]


def test_stale_answers_are_not_served_after_a_template_edit(model_copy, tmp_path):
    cache = GenerationCache(tmp_path / "cache.jsonl")
    decoding = DecodingConfig(max_new_tokens=3)
    first = load_backend(f"hf:{model_copy}", CPU)
    generate_cached(first, [QUESTION], decoding, cache)
    template = model_copy / "chat_template.jinja"
    template.write_text(template.read_text().replace("<|im_start|>", "<|im_start|>\n"))
    second = load_backend(f"hf:{model_copy}", CPU)
    generate_cached(second, [QUESTION], decoding, cache)
    assert second.model is not None, "the edited template's prompt was served from the cache"
    assert len(cache) == 2


def test_decode_loop_dtype_and_device_are_in_the_identity(tiny_llama):
    spec = f"hf:{tiny_llama}"
    auto = identity(spec)
    assert auto["decode_loop"] == "dartkit" and auto["dtype"] == "float32" and auto["device"] == "cpu"
    # 'auto' and 'dartkit' run the same loop on this model, so they share answers ...
    assert identity(spec, CPU.model_copy(update={"decode_loop": "dartkit"})) == auto
    # ... 'generate' does not, and neither does another dtype.
    assert identity(spec, CPU.model_copy(update={"decode_loop": "generate"}))["decode_loop"] == "generate"
    assert identity(spec, CPU.model_copy(update={"dtype": "bfloat16"}))["dtype"] == "bfloat16"
    # Settings that only change speed stay out of it.
    assert identity(spec, CPU.model_copy(update={"batch_size": 3, "prefix_cache_min_tokens": 0})) == auto


def test_answers_of_one_decode_loop_are_not_served_for_the_other(tiny_llama, tmp_path):
    cache = GenerationCache(tmp_path / "cache.jsonl")
    decoding = DecodingConfig(max_new_tokens=3)
    generate_cached(load_backend(f"hf:{tiny_llama}", CPU), [QUESTION], decoding, cache)
    other = load_backend(f"hf:{tiny_llama}", CPU.model_copy(update={"decode_loop": "generate"}))
    generate_cached(other, [QUESTION], decoding, cache)
    assert other.model is not None and len(cache) == 2


def test_answers_that_hit_max_new_tokens_are_marked_truncated(tiny_llama, tmp_path):
    # A random tiny model never ends its turn within 3 tokens.
    cache = GenerationCache(tmp_path / "cache.jsonl")
    _, keys = generate_cached(
        load_backend(f"hf:{tiny_llama}", CPU), [QUESTION], DecodingConfig(max_new_tokens=3), cache
    )
    assert cache.info(keys[0]) == {"finish": "truncated"}
    assert GenerationCache(tmp_path / "cache.jsonl").info(keys[0]) == {"finish": "truncated"}


def test_every_text_setting_reaches_the_stage_fingerprints():
    from dartkit.pipeline.config import RunConfig
    from dartkit.pipeline.stages import RunStages
    from dartkit.progress import results_console

    def params(**backend) -> dict:
        cfg = RunConfig.model_validate({"backend": backend})
        return {s.name: s.params() for s in RunStages(cfg, results_console()).stages()}

    base = params()
    for change in ({"decode_loop": "generate"}, {"dtype": "bfloat16"}, {"device": "cuda"}):
        changed = params(**change)
        for stage in ("eval_m0", "distill", "audit_int", "repair"):
            assert changed[stage] != base[stage], f"{stage} ignores backend {change}"
    # A speed-only setting does not redo generation stages.
    assert params(batch_size=3)["eval_m0"] == base["eval_m0"]


def test_shared_loading_helpers_end_the_import_circle():
    # adapters.py and harm/hf.py use the loading helpers without importing the hf backend.
    code = (
        "import sys, dartkit.generate.adapters, dartkit.harm.hf; print('dartkit.generate.hf' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_teacher_is_student_compares_weights_not_spec_strings(tiny_llama, tmp_path):
    import shutil

    from dartkit.generate.loading import model_location, same_weights, teacher_is_student
    from dartkit.generate.spec import parse_spec

    hf = model_location(parse_spec(f"hf:{tiny_llama}"))[1]
    assert teacher_is_student(f"hf:{tiny_llama}", f"hf:{tiny_llama}", None)  # the same spec
    assert teacher_is_student(
        f"hf:{tiny_llama}", f"vllm:{tiny_llama}", hf
    )  # the same weights, another engine
    other = tmp_path / "other"
    shutil.copytree(tiny_llama, other)
    assert not teacher_is_student(f"hf:{tiny_llama}", f"hf:{other}", hf)  # another model (name)
    assert not teacher_is_student("openai:big@http://127.0.0.1:9/v1", f"hf:{tiny_llama}", {"model": "big"})
    assert not teacher_is_student(f"hf:{tiny_llama}", "openai:x@http://127.0.0.1:9/v1", hf)
    assert not same_weights(hf, {**hf, "weights_sha256": "0" * 64, "revision": None})
    # A teacher with an adapter on the student's base is not the base.
    adapter = tmp_path / "m_dart" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    tuned = model_location(parse_spec(f"hf:{tiny_llama}+adapter={adapter}"))[1]
    assert not teacher_is_student(f"hf:{tiny_llama}+adapter={adapter}", f"hf:{tiny_llama}", tuned)
    assert same_weights(tuned, dict(tuned))
