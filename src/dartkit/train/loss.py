"""The per-example weighted token loss, exact under gradient accumulation and data parallelism.

For one optimizer step over examples i (all micro-batches, all processes), with
weight w_i, n_i target tokens and token negative log-likelihoods NLL_{i,t}::

    L_step = sum_i w_i * sum_t NLL_{i,t}  /  sum_i w_i * n_i

The denominator is computed over the whole step before any backward pass, so the
step's gradient does not depend on how its examples are split into micro-batches
or processes, and an example of weight k contributes exactly what k copies of it
(weight 1 each) would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dartkit.train.batching import IGNORE_INDEX, MicroBatch


def weighted_token_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, denominator: torch.Tensor | float
) -> torch.Tensor:
    """One micro-batch's share of the step loss ``sum_i w_i * sum_t NLL_it / sum_j w_j * n_j``.

    Args:
        logits: (B, T, V) scores; ``logits[i, t]`` predicts ``targets[i, t]`` (already shifted).
        targets: (B, T) token ids, -100 where there is nothing to predict (prompt, padding).
        weights: (B,) per-example loss weights w_i.
        denominator: sum of w_j * n_j over every example of the optimizer step, on every
            process (n_j = number of target tokens of example j).

    Returns:
        A scalar; summing it over all micro-batches and processes of the step gives the step loss.
    """
    # Half-precision logits are upcast: a sum of hundreds of token losses in bf16 loses digits.
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    nll = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(targets.shape)
    per_example = nll.sum(dim=1)
    return (weights.to(per_example.dtype) * per_example).sum() / denominator


def target_logits(model, batch: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward one micro-batch, keeping the logits only where they predict a target token.

    Logits are computed only at those positions (``logits_to_keep``): prompts are long and
    answers short, so this skips most of the output projection, whose vocabulary-sized
    product is the largest single matmul.

    Returns:
        ``(logits, targets)``: (B, T', V) and (B, T') with ``logits[i, t]`` predicting
        ``targets[i, t]`` (-100 where row i has no target at a kept position).
    """
    next_tokens = batch.labels[:, 1:]
    keep = (next_tokens != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep, use_cache=False
    )
    return out.logits, next_tokens[:, keep]


def micro_batch_loss(model, batch: MicroBatch, denominator: torch.Tensor) -> torch.Tensor:
    """Forward one micro-batch (:func:`target_logits`) and return its :func:`weighted_token_loss`."""
    logits, targets = target_logits(model, batch)
    return weighted_token_loss(logits, targets, batch.weights, denominator)
