"""Toxicity-regularised SFT: the straight-through penalty, its token table, training with it, choosing λ."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import demo_records, lora_model, run_killed_after, save_tiny_llama, write_records

from dartkit.errors import DartkitError, DataError
from dartkit.harm import ProfanityScorer
from dartkit.train import TrainConfig, run
from dartkit.train.batching import IGNORE_INDEX, collate, encode_record
from dartkit.train.loss import target_logits
from dartkit.train.sft import backward_step
from dartkit.train.toxicity import (
    ToxicityPenalty,
    harmonic_mean,
    select_lambda,
    token_toxicity_table,
)


class VowelScorer:
    """A harm scorer whose value the tests can predict: the share of non-space characters that are vowels."""

    name = "vowels"

    def __init__(self):
        self.calls = 0

    def identity(self):
        return {"name": self.name}

    def score(self, texts):
        self.calls += 1
        out = []
        for text in texts:
            chars = [c for c in text.lower() if not c.isspace()]
            out.append(sum(c in "aeiou" for c in chars) / len(chars) if chars else 0.0)
        return out


class CountingScorer:
    """Wraps a scorer and counts the texts it is asked to score."""

    def __init__(self, inner, name=None):
        self.inner = inner
        self.name = name or inner.name
        self.texts = 0

    def identity(self):
        return {**self.inner.identity(), "name": self.name}

    def score(self, texts):
        self.texts += len(texts)
        return self.inner.score(texts)


@pytest.fixture(scope="module")
def encoded(tokenizer):
    return [encode_record(tokenizer, r, max_length=1024) for r in demo_records(4)]


@pytest.fixture(scope="module")
def profanity_table(tokenizer, tmp_path_factory):
    table, _ = token_toxicity_table(
        ProfanityScorer(), tokenizer, len(tokenizer), tmp_path_factory.mktemp("t")
    )
    return table


def make_penalty(tokenizer, table, tox_lambda, sampling="sample", scorer=None, temperature=1.0):
    scorer = scorer or ProfanityScorer()
    return ToxicityPenalty(
        tox_lambda=tox_lambda,
        table=table,
        score=scorer.score,
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        sampling=sampling,
        temperature=temperature,
    )


# ---- the estimator ------------------------------------------------------------------------------


def test_penalty_value_is_the_scorer_on_the_sample_and_its_gradient_the_expected_token_toxicity():
    words = ["calm", "rude", "nice", "awful", "ok"]
    table = torch.tensor([0.0, 0.9, 0.1, 0.7, 0.2], dtype=torch.float64)
    scored = []

    def score(texts):
        scored.extend(texts)
        return [0.05 * len(t) for t in texts]  # any function of the text: the value must be it, exactly

    penalty = ToxicityPenalty(
        tox_lambda=1.0,
        table=table,
        score=score,
        decode=lambda ids: " ".join(words[i] for i in ids),
        sampling="sample",
        temperature=0.5,
    )
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2, 3], [4, IGNORE_INDEX, IGNORE_INDEX]])
    l_tox, harm, sampled = penalty.per_example(logits, targets)

    # Forward: H of the decoded sample, on target positions only.
    assert scored == [" ".join(words[i] for i in sampled[0].tolist()), words[int(sampled[1, 0])]]
    assert sampled[1, 1:].tolist() == [IGNORE_INDEX, IGNORE_INDEX]
    torch.testing.assert_close(l_tox, torch.tensor([0.05 * len(t) for t in scored], dtype=torch.float64))
    torch.testing.assert_close(harm, l_tox.detach())

    # Backward: the gradient of mean_t <softmax(logits_t / T), w>, whatever was sampled.
    (grad,) = torch.autograd.grad(l_tox.sum(), logits)
    reference = logits.detach().clone().requires_grad_(True)
    expected = torch.softmax(reference / 0.5, -1) @ table
    mask = targets != IGNORE_INDEX
    ((expected * mask).sum(1) / mask.sum(1)).sum().backward()
    torch.testing.assert_close(grad, reference.grad)
    assert grad[1, 1:].abs().sum() == 0 and grad[0].abs().sum() > 0

    # argmax: the sample is the mode.
    penalty.sampling = "argmax"
    _, _, mode = penalty.per_example(logits, targets)
    assert mode[0].tolist() == logits[0].argmax(-1).tolist()


def lora_step(tiny_llama, micro_batches, penalty):
    from accelerate import Accelerator

    model = lora_model(tiny_llama)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=len(micro_batches))
    step = backward_step(model, micro_batches, accelerator, penalty)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, step


def test_penalty_gradient_reaches_every_lora_matrix_and_lambda_zero_is_plain_sft(
    tiny_llama, tokenizer, encoded, profanity_table
):
    batch = collate(encoded, tokenizer.pad_token_id)
    plain, plain_step = lora_step(tiny_llama, [batch], None)
    assert plain_step.toxicity is None and plain_step.loss == plain_step.sft_loss

    zero, zero_step = lora_step(tiny_llama, [batch], make_penalty(tokenizer, profanity_table, 0.0))
    assert zero_step.loss == plain_step.loss and 0 <= zero_step.toxicity <= 1
    for name, g in plain.items():
        assert torch.equal(zero[name], g), name

    lam = 0.5
    torch.manual_seed(1)
    penalised, step = lora_step(tiny_llama, [batch], make_penalty(tokenizer, profanity_table, lam))
    assert step.sft_loss == pytest.approx(plain_step.sft_loss, rel=1e-12)
    assert step.loss == pytest.approx(step.sft_loss + lam * step.toxicity, rel=1e-12)
    # The penalty's share of the gradient is λ times that of the mean expected token toxicity.
    model = lora_model(tiny_llama)
    logits, targets = target_logits(model, batch)
    mask = targets != IGNORE_INDEX
    expected = torch.softmax(logits, -1) @ profanity_table.double()
    ((expected * mask).sum(1) / mask.sum(1)).mean().backward()
    assert len(plain) == 2 * 3 * 2
    for name, p in model.named_parameters():
        if p.requires_grad:
            tox_grad = penalised[name] - plain[name]
            assert tox_grad.abs().sum() > 0, name
            # A difference of two gradients ~1000x its size: compared by norm (float32 RMSNorm rounding).
            assert float((tox_grad - lam * p.grad).norm() / (lam * p.grad).norm()) < 1e-3, name


def test_weight_k_equals_k_copies_for_the_penalty_too(tiny_llama, tokenizer, encoded, profanity_table):
    # argmax: the sample, hence H, is the same however the examples are batched.
    penalty = make_penalty(tokenizer, profanity_table, 0.5, sampling="argmax")
    a, b, c, d = encoded
    pad = tokenizer.pad_token_id
    reference, ref_step = lora_step(tiny_llama, [collate([a, a, b], pad), collate([a, c, d], pad)], penalty)
    for micro in (
        [collate([a, b, c, d], pad, weights=[3, 1, 1, 1])],
        [collate([a, d], pad, [3, 1]), collate([b, c], pad)],
    ):
        grads, step = lora_step(tiny_llama, micro, penalty)
        assert step.toxicity == pytest.approx(ref_step.toxicity, rel=1e-6)  # summed in float32
        assert step.loss == pytest.approx(ref_step.loss, rel=1e-6)
        for name, g in grads.items():
            torch.testing.assert_close(g, reference[name], rtol=1e-5, atol=1e-9, msg=name)


@pytest.fixture(scope="module")
def peaked_llama(tmp_path_factory):
    # Larger initial weights than tiny_llama's: its distributions are peaked enough for a LoRA of
    # rank 4 to move them in a few steps (with 0.02 every logit stays within about ±1 of the rest).
    return save_tiny_llama(tmp_path_factory.mktemp("peaked"), seed=0, initializer_range=0.3)


def test_a_few_steps_with_the_penalty_lower_the_harm_of_sampled_rationales(
    peaked_llama, tokenizer, encoded, tmp_path
):
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    scorer = VowelScorer()
    table, _ = token_toxicity_table(scorer, tokenizer, len(tokenizer), cache_dir=tmp_path)
    batch = collate(encoded, tokenizer.pad_token_id)

    def harm_of_samples(model, penalty) -> float:
        state = torch.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            logits, targets = target_logits(model, batch)
            h = [penalty.per_example(logits, targets)[1].mean().item() for _ in range(8)]
        torch.set_rng_state(state)
        return sum(h) / len(h)

    def train(tox_lambda: float) -> tuple[float, float]:
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(peaked_llama)
        lora = LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"]
        )
        model = get_peft_model(base, lora)
        penalty = make_penalty(tokenizer, table, tox_lambda, scorer=scorer)
        accelerator = Accelerator(cpu=True, gradient_accumulation_steps=1)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
        before = harm_of_samples(model, penalty)
        for _ in range(12):
            backward_step(model, [batch], accelerator, penalty if tox_lambda > 0 else None)
            optimizer.step()
            optimizer.zero_grad()
        return before, harm_of_samples(model, penalty)

    # A large λ so that a dozen steps show it; measured: 0.373 -> 0.198 (λ 100) vs 0.374 (λ 0).
    start, plain = train(0.0)
    _, penalised = train(100.0)
    assert penalised < start - 0.08
    assert penalised < plain - 0.08


# ---- the token table ------------------------------------------------------------------------------


def test_token_table_is_built_once_per_scorer_and_tokenizer(tokenizer, tmp_path):
    scorer = CountingScorer(ProfanityScorer())
    table, info = token_toxicity_table(scorer, tokenizer, len(tokenizer) + 3, tmp_path)
    assert scorer.texts == len(tokenizer) and not info["cached"]
    # Profane tokens score high; special tokens and ids past the vocabulary score 0.
    vocab = tokenizer.get_vocab()
    assert table[vocab["Ġass"]] > 0.5 > table[vocab["Ġchair"]]
    assert all(table[i] == 0 for i in tokenizer.all_special_ids)
    assert table[-3:].tolist() == [0.0, 0.0, 0.0]

    again, info2 = token_toxicity_table(scorer, tokenizer, len(tokenizer) + 3, tmp_path)
    assert scorer.texts == len(tokenizer) and info2["cached"] and info2["path"] == info["path"]
    assert torch.equal(again, table)

    # Another scorer identity or logit width is another table.
    other = CountingScorer(ProfanityScorer(), name="profanity-v2")
    _, info3 = token_toxicity_table(other, tokenizer, len(tokenizer) + 3, tmp_path)
    assert other.texts == len(tokenizer) and info3["key"] != info["key"]
    _, info4 = token_toxicity_table(scorer, tokenizer, len(tokenizer), tmp_path)
    assert info4["key"] != info["key"]

    # A torn file is rebuilt, not trusted.
    with open(info["path"], "r+b") as f:
        f.truncate(100)
    rebuilt, info5 = token_toxicity_table(scorer, tokenizer, len(tokenizer) + 3, tmp_path)
    assert not info5["cached"] and torch.equal(rebuilt, table)


def test_another_tokenizer_gets_another_table(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    scorer = CountingScorer(VowelScorer())
    _, first = token_toxicity_table(scorer, tokenizer, len(tokenizer) + 1, tmp_path)
    grown = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    grown.add_tokens(["zzyzx"])
    table, second = token_toxicity_table(scorer, grown, len(grown), tmp_path)
    assert second["key"] != first["key"] and not second["cached"]
    assert table[len(grown) - 1] == 0.0  # "zzyzx" has no vowel


# ---- training with the penalty --------------------------------------------------------------------


def config(tiny_llama, data, out, **kw) -> TrainConfig:
    settings = dict(
        base=f"hf:{tiny_llama}",
        data=[data],
        out=out,
        per_device_batch_size=2,
        grad_accum=2,
        lora_r=4,
        save_every=2,
        max_steps=4,
    )
    return TrainConfig(**{**settings, **kw})


def log_rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_training_with_the_penalty_logs_toxicity_and_resumes_to_the_same_adapter(
    tiny_llama, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    monkeypatch.setenv("DARTKIT_CACHE", str(tmp_path / "cache"))
    data = write_records(tmp_path / "records.jsonl", demo_records(10))
    straight = run(config(tiny_llama, data, tmp_path / "straight", tox_lambda=0.5))
    rows = log_rows(tmp_path / "straight")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert 0 <= r["toxicity"] <= 1
        assert r["loss"] == pytest.approx(r["sft_loss"] + 0.5 * r["toxicity"], abs=2e-6)
    assert straight["tox_lambda"] == 0.5 and straight["tox_scorer"] == "profanity"
    assert straight["final_toxicity"] == pytest.approx(rows[-1]["toxicity"], abs=1e-6)
    assert straight["first_toxicity"] == pytest.approx(rows[0]["toxicity"], abs=1e-6)
    assert straight["mean_toxicity"] == pytest.approx(sum(r["toxicity"] for r in rows) / 4, abs=1e-6)
    assert straight["final_sft_loss"] == pytest.approx(rows[-1]["sft_loss"], abs=1e-6)
    assert straight["tox_table"]["path"].startswith(str(tmp_path / "cache"))
    meta = json.loads((tmp_path / "straight" / "adapter" / "dartkit_adapter.json").read_text())
    assert meta["toxicity"]["scorer"]["name"] == "profanity"
    assert "toxicity penalty | λ 0.5" in (tmp_path / "straight" / "adapter" / "README.md").read_text()

    resumed_cfg = config(tiny_llama, data, tmp_path / "resumed", tox_lambda=0.5)
    run_killed_after(resumed_cfg, 3)
    resumed = run(resumed_cfg)
    assert resumed["resumed_from_step"] == 2 and resumed["tox_table"]["cached"]
    # The samples after the checkpoint are drawn again from the restored random state.
    again = log_rows(tmp_path / "resumed")
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    for key in ("toxicity", "sft_loss", "loss"):
        assert [r[key] for r in again] == pytest.approx([r[key] for r in rows], rel=1e-5), key
    assert resumed["mean_toxicity"] == pytest.approx(straight["mean_toxicity"], rel=1e-6)
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    for name in a:
        torch.testing.assert_close(b[name], a[name], msg=name)


def test_lambda_zero_is_the_plain_run_whatever_the_other_toxicity_settings(tiny_llama, tmp_path):
    data = write_records(tmp_path / "records.jsonl", demo_records(6))
    plain = run(config(tiny_llama, data, tmp_path / "out", max_steps=2))
    assert "toxicity" not in log_rows(tmp_path / "out")[0] and "final_toxicity" not in plain
    # The same run: found finished, not retrained.
    same = config(
        tiny_llama, data, tmp_path / "out", max_steps=2, tox_scorer="max(profanity)", tox_sampling="argmax"
    )
    assert run(same)["skipped"] is True
    with pytest.raises(DartkitError, match="different config"):
        run(same.model_copy(update={"tox_lambda": 0.1}))


def test_fingerprint_of_a_plain_config_is_what_it_was_before_the_penalty():
    # Computed before the toxicity fields existed: runs trained then must stay resumable.
    extra = dict(
        data_sha256="d", base={"model": "m"}, init_adapter_sha256=None, processes=1, base_dtype="float32"
    )
    pinned = "b77961870f0d9825ebf2b476995bbae9aa8231a0dcd34d2a4b94c98734497e93"
    assert TrainConfig(out="x").fingerprint(**extra) == pinned
    assert (
        TrainConfig(out="x", tox_scorer="max(profanity)", tox_temperature=0.7).fingerprint(**extra) == pinned
    )
    assert TrainConfig(out="x", tox_lambda=0.1).fingerprint(**extra) != pinned
    a = TrainConfig(out="x", tox_lambda=0.1).fingerprint(**extra)
    assert TrainConfig(out="x", tox_lambda=0.1, tox_sampling="argmax").fingerprint(**extra) != a


def test_bad_toxicity_settings_are_refused_by_name():
    from dartkit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"tox_scorer: unknown harm scorer 'bogus'"):
        load_config(TrainConfig, None, {"out": "o", "tox_scorer": "bogus"})
    with pytest.raises(ConfigError, match=r"tox_lambda"):
        load_config(TrainConfig, None, {"out": "o", "tox_lambda": -0.1})
    with pytest.raises(ConfigError, match=r"tox_sampling"):
        load_config(TrainConfig, None, {"out": "o", "tox_sampling": "greedy"})


# ---- choosing λ -----------------------------------------------------------------------------------


def test_the_most_accurate_lambda_is_not_chosen_when_it_is_much_more_toxic():
    rows = [
        {"lambda": 0.5, "accuracy": 0.60, "toxicity": 0.05},
        {"lambda": 0.01, "accuracy": 0.70, "toxicity": 0.60},  # most accurate, but toxic
        {"lambda": 0.1, "accuracy": 0.65, "toxicity": 0.10, "n": 40},
    ]
    choice = select_lambda(rows)
    # hm(0.70, 0.60) = 0.509, hm(0.65, 0.10) = 0.751, hm(0.60, 0.05) = 0.735
    assert choice["chosen"] == 0.1
    assert "harmonic mean" in choice["rule"] and "smaller" in choice["rule"]
    assert [t["lambda"] for t in choice["table"]] == [0.01, 0.1, 0.5]
    assert [t["chosen"] for t in choice["table"]] == [False, True, False]
    assert choice["table"][1]["score"] == pytest.approx(2 * 0.65 * 0.9 / (0.65 + 0.9))
    assert choice["table"][1]["n"] == 40  # other keys are kept


def test_ties_go_to_the_smaller_lambda_and_missing_values_are_excluded_with_a_reason():
    rows = [
        {"lambda": 0.2, "accuracy": 0.5, "toxicity": 0.5},
        {"lambda": 0.05, "accuracy": 0.5, "toxicity": 0.5},
        {"lambda": 0.01, "accuracy": None, "toxicity": 0.0},
        {"lambda": 0.5, "accuracy": float("nan")},
    ]
    choice = select_lambda(rows)
    assert choice["chosen"] == 0.05
    excluded = {t["lambda"]: t["excluded"] for t in choice["table"]}
    assert excluded == {0.01: "no accuracy", 0.05: None, 0.2: None, 0.5: "no accuracy or toxicity"}
    assert [t["score"] for t in choice["table"]] == [None, 0.5, 0.5, None]
    assert harmonic_mean(0.0, 1.0) == 0.0


def test_select_lambda_refuses_what_it_cannot_rank():
    with pytest.raises(DataError, match="no λ rows"):
        select_lambda([])
    with pytest.raises(DataError, match="no λ has both accuracy and toxicity.*λ = 0.1: no toxicity"):
        select_lambda([{"lambda": 0.1, "accuracy": 0.5}])
    with pytest.raises(DataError, match="λ = 0.1 appears twice"):
        select_lambda([{"lambda": 0.1, "accuracy": 0.5, "toxicity": 0.1}] * 2)
    with pytest.raises(DataError, match=r"λ = 0.1: accuracy 68.8 is outside \[0, 1\]"):
        select_lambda([{"lambda": 0.1, "accuracy": 68.8, "toxicity": 0.1}])
    with pytest.raises(DataError, match="row 1 has no valid λ"):
        select_lambda([{"accuracy": 0.5, "toxicity": 0.1}])


def test_the_penalty_is_refused_on_label_only_targets(tmp_path):
    from typer.testing import CliRunner

    from dartkit.cli import app

    res = CliRunner().invoke(
        app,
        [
            "train",
            "--base",
            "embedded",
            "--label-only",
            "--prepared",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--tox-lambda",
            "0.1",
        ],
    )
    assert res.exit_code == 2
    assert "--tox-lambda penalises the toxicity of sampled rationales, but --label-only targets" in res.output
    assert not (tmp_path / "o").exists()
