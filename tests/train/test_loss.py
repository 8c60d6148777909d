"""The weighted loss on a tiny llama: weight k == k copies, whatever the micro-batching."""

from __future__ import annotations

import pytest
import torch
from train_helpers import demo_records, lora_model

from dartkit.train.batching import IGNORE_INDEX, collate, encode_record
from dartkit.train.loss import micro_batch_loss, weighted_token_loss
from dartkit.train.sft import backward_step


@pytest.fixture(scope="module")
def encoded(tokenizer):
    records = demo_records(4)
    return [encode_record(tokenizer, r, max_length=1024) for r in records]


def lora_grads(tiny_llama, micro_batches) -> tuple[dict[str, torch.Tensor], float]:
    """Gradients of every LoRA parameter after one optimizer step's backward passes."""
    from accelerate import Accelerator

    model = lora_model(tiny_llama)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=len(micro_batches))
    loss = backward_step(model, micro_batches, accelerator).loss
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, loss


def test_weight_k_equals_k_copies_under_gradient_accumulation(tiny_llama, tokenizer, encoded):
    a, b, c, d = encoded
    pad = tokenizer.pad_token_id
    assert len({len(e) for e in encoded}) > 1  # the micro-batches below pad differently
    # Weight 3 on `a`, one micro-batch; the same with two micro-batches of different widths.
    weighted_one = [collate([a, b, c, d], pad, weights=[3, 1, 1, 1])]
    weighted_two = [collate([a, d], pad, weights=[3, 1]), collate([b, c], pad)]
    # Three copies of `a` (weight 1 each), spread over two micro-batches that pad differently.
    copies_two = [collate([a, a, b], pad), collate([a, c, d], pad)]

    reference, ref_loss = lora_grads(tiny_llama, copies_two)
    assert len(reference) == 2 * 3 * 2  # (A, B) x 3 modules x 2 layers
    assert all(g.abs().sum() > 0 for g in reference.values())
    for micro_batches in (weighted_one, weighted_two):
        grads, loss = lora_grads(tiny_llama, micro_batches)
        assert loss == pytest.approx(ref_loss, rel=1e-10)
        for name, g in grads.items():
            torch.testing.assert_close(g, reference[name], rtol=1e-5, atol=1e-9, msg=name)


def test_a_different_weight_gives_a_different_gradient(tiny_llama, tokenizer, encoded):
    a, b, c, d = encoded
    pad = tokenizer.pad_token_id
    three, _ = lora_grads(tiny_llama, [collate([a, b, c, d], pad, weights=[3, 1, 1, 1])])
    two, _ = lora_grads(tiny_llama, [collate([a, b, c, d], pad, weights=[2, 1, 1, 1])])
    # Far outside the tolerance used above: the equality test can tell weights apart.
    assert max(float((three[n] - two[n]).norm() / two[n].norm()) for n in three) > 1e-2


def test_unit_weights_match_the_transformers_token_mean_loss(tiny_llama, tokenizer, encoded):
    model = lora_model(tiny_llama)
    batch = collate(encoded, tokenizer.pad_token_id)
    denominator = batch.target_tokens.sum().double()
    ours = micro_batch_loss(model, batch, denominator)
    theirs = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    # transformers upcasts to float32, not float64.
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-6, atol=0.0)


def test_weighted_token_loss_formula():
    # Two examples, vocabulary of 3: check sum_i w_i * sum_t NLL / D by hand.
    logits = torch.log(
        torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]], [[0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]])
    )
    targets = torch.tensor([[0, 1], [2, IGNORE_INDEX]])
    weights = torch.tensor([2.0, 1.0])
    denominator = 2.0 * 2 + 1.0 * 1
    expected = (
        2 * (-torch.log(torch.tensor(0.5)) - torch.log(torch.tensor(0.8))) - torch.log(torch.tensor(0.6))
    ) / 5
    torch.testing.assert_close(weighted_token_loss(logits, targets, weights, denominator), expected)
