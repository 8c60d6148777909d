"""Models whose KV cache dartkit's own decode loop cannot share or trim get plain batched generate."""

import pytest
import torch

from dartkit.config import BackendConfig, DecodingConfig
from dartkit.generate import load_backend
from dartkit.generate.hf import plain_attention_cache

QUESTIONS = ["Is the sky blue?", "Name a colour.", "Which is larger, two or three? Explain at length please."]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from dartkit.generate.embedded import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
    )
    out = {}
    for name, cfg, cls in (
        ("llama", LlamaConfig(**common), LlamaForCausalLM),
        ("mistral", MistralConfig(sliding_window=64, **common), MistralForCausalLM),
    ):
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(name)
        cls(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        out[name] = path
    return out


def reference(backend, convs, max_new_tokens):
    texts = []
    for c in convs:
        ids = torch.tensor([backend.encode(c)])
        with torch.inference_mode():
            out = backend.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=backend.tokenizer.pad_token_id,
            )
        texts.append(backend.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return texts


@pytest.mark.parametrize("name, own_loop", [("llama", True), ("mistral", False)])
def test_both_paths_match_plain_generate(tiny_models, name, own_loop):
    backend = load_backend(
        f"hf:{tiny_models[name]}", BackendConfig(batch_size=3, device="cpu", dtype="float32")
    )
    system = {
        "role": "system",
        "content": "You are a terse assistant that answers every question in few words. " * 3,
    }
    convs = [[system, {"role": "user", "content": q}] for q in QUESTIONS]
    decoding = DecodingConfig(max_new_tokens=10, stop_after_conclusion=False)
    ours = dict(backend.generate(convs, decoding))
    assert backend._own_loop_ok is own_loop
    assert plain_attention_cache(backend.model) is own_loop
    assert [ours[i] for i in range(len(convs))] == reference(backend, convs, 10)


def test_chat_template_without_system_role_gets_the_system_text_in_the_user_turn(tiny_models):
    backend = load_backend(f"hf:{tiny_models['llama']}", BackendConfig(device="cpu"))
    backend._ensure_loaded()
    backend.tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
    )
    ids = backend.encode([{"role": "system", "content": "SYS"}, {"role": "user", "content": "hello"}])
    text = backend.tokenizer.decode(ids)
    assert "SYS\n\nhello" in text and "system" not in text


def test_decode_loop_generate_forces_batched_generate(tiny_models, monkeypatch):
    backend = load_backend(
        f"hf:{tiny_models['llama']}",
        BackendConfig(batch_size=3, device="cpu", dtype="float32", decode_loop="generate"),
    )
    convs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    decoding = DecodingConfig(max_new_tokens=10, stop_after_conclusion=False)
    backend._ensure_loaded()
    calls = []
    original = backend._generate_fallback
    monkeypatch.setattr(backend, "_generate_fallback", lambda *a: calls.append(1) or original(*a))
    monkeypatch.setattr(backend, "_decode", lambda *a: pytest.fail("own loop used"))
    ours = dict(backend.generate(convs, decoding))
    assert calls and backend._own_loop_ok  # the model allows the own loop; the setting chose generate
    assert [ours[i] for i in range(len(convs))] == reference(backend, convs, 10)
