"""A token cap on generation batches bounds the KV cache (memory) without changing any answer."""

import pytest

from dartkit.config import CPU_MAX_BATCH_TOKENS, BackendConfig, DecodingConfig
from dartkit.generate import load_backend
from dartkit.generate.hf import token_bounded_batches


def test_batches_respect_both_caps_and_cover_every_prompt():
    lengths = [900, 700, 500, 300, 300, 100, 100, 100, 50]  # sorted longest first, as generate() sorts
    batches = token_bounded_batches(lengths, batch_size=4, max_tokens=2000, max_new_tokens=100)
    covered = [i for start, stop in batches for i in range(start, stop)]
    assert covered == list(range(len(lengths)))
    for start, stop in batches:
        assert stop - start <= 4
        width = lengths[start] + 100
        assert (stop - start) * width <= 2000 or stop - start == 1
    assert batches[0] == (0, 2)  # 2 x (900 + 100) = 2000 tokens


def test_a_prompt_longer_than_the_cap_gets_a_batch_of_its_own():
    assert token_bounded_batches([5000, 10], batch_size=8, max_tokens=1000, max_new_tokens=10) == [
        (0, 1),
        (1, 2),
    ]


def test_no_cap_means_batch_size_only():
    assert token_bounded_batches([900] * 5, batch_size=2, max_tokens=0, max_new_tokens=100) == [
        (0, 2),
        (2, 4),
        (4, 5),
    ]


def test_auto_caps_on_a_cpu_only():
    cfg = BackendConfig()
    assert cfg.max_batch_tokens == "auto"
    assert cfg.batch_token_cap("cpu") == CPU_MAX_BATCH_TOKENS
    assert cfg.batch_token_cap("cuda:0") == 0
    assert BackendConfig(max_batch_tokens=0).batch_token_cap("cpu") == 0
    assert BackendConfig(max_batch_tokens=512).batch_token_cap("cuda") == 512


def test_a_negative_cap_is_refused():
    with pytest.raises(ValueError, match="max_batch_tokens"):
        BackendConfig(max_batch_tokens=-1)


def test_capped_batches_give_the_same_answers(tiny_llama, monkeypatch):
    convs = [[{"role": "user", "content": "word " * n}] for n in (60, 5, 40, 20, 3, 30)]
    decoding = DecodingConfig(max_new_tokens=8)
    free = load_backend(f"hf:{tiny_llama}", BackendConfig(batch_size=6, max_batch_tokens=0, device="cpu"))
    capped = load_backend(f"hf:{tiny_llama}", BackendConfig(batch_size=6, max_batch_tokens=160, device="cpu"))
    rows_seen = []
    decode = type(capped)._decode

    def counting(self, input_ids, *args, **kwargs):
        rows_seen.append((input_ids.shape[0], input_ids.shape[1]))
        return decode(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(type(capped), "_decode", counting)
    want = dict(free.generate(convs, decoding))
    rows_seen.clear()
    got = dict(capped.generate(convs, decoding))
    assert got == want
    assert len(rows_seen) > 1
    for rows, width in rows_seen:  # width = the batch's longest prompt (with the shared prefix)
        assert rows == 1 or rows * (width + decoding.max_new_tokens) <= 160
