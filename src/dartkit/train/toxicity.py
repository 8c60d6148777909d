"""Toxicity-regularised SFT (the paper's appendix J): L = L_SFT + λ·L_tox, and the rule that picks λ.

    dartkit train --data runs/demo/distill/teacher.jsonl --prepared runs/demo/data \\
        --tox-lambda 0.1 --tox-scorer profanity --out runs/demo/tox_0.1

Under teacher forcing on the SFT target, at every target position t the student's
distribution p_t = softmax(logits_t / T) gives a sample ŷ_t (drawn from p_t, or its
argmax). The rationale r̂ = decode(ŷ) is scored by the real harm scorer: H(r̂) is the
penalty's value. The gradient comes from a straight-through surrogate: with h_t the
one-hot of ŷ_t, y_t = h_t + p_t − stopgrad(p_t) and a per-token toxicity table w
(every vocabulary token's decoded text scored once by the same scorer),
s(y) = mean_t ⟨y_t, w⟩ and L_tox = H(r̂) + s(y) − stopgrad(s(y)). The forward value
is H(r̂) exactly; the backward pass is that of mean_t ⟨p_t, w⟩. ``docs/toxreg.md``
has the derivation and the per-step normalisation.

:func:`select_lambda` is the paper's rule for the λ sweep (pure, no torch needed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dartkit.errors import DataError

Sampling = Literal["sample", "argmax"]

# Bump when the way the table is built changes (what text a token scores, special tokens), so
# tables cached by an older dartkit are not reused.
TABLE_VERSION = 1
TABLE_DIR = "toxicity_tables"


# --------------------------------------------------------------------------------------------
# The per-token toxicity table w
# --------------------------------------------------------------------------------------------


def tokenizer_sha256(tokenizer) -> str:
    """sha256 of everything that maps token ids to text: vocabulary, merges, added tokens, decoder.

    A fast tokenizer serialises all of it (``tokenizer.json``); a slow one is described by its
    class, vocabulary and special tokens.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        blob = backend.to_str()
    else:
        blob = json.dumps(
            {
                "class": type(tokenizer).__name__,
                "vocab": sorted(tokenizer.get_vocab().items()),
                "special": sorted(map(str, tokenizer.all_special_tokens)),
            },
            ensure_ascii=False,
        )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def table_key(scorer_identity: dict[str, Any], tokenizer_hash: str, vocab_size: int) -> str:
    """Cache key of a token table: the scorer's identity, the tokenizer's hash and the logit width."""
    blob = json.dumps(
        {
            "version": TABLE_VERSION,
            "scorer": scorer_identity,
            "tokenizer_sha256": tokenizer_hash,
            "vocab_size": vocab_size,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def token_texts(tokenizer, vocab_size: int) -> list[str]:
    """The text each token id contributes on its own (``decode([id])``), for ids the tokenizer knows."""
    n = min(len(tokenizer), vocab_size)
    return tokenizer.batch_decode([[i] for i in range(n)])


def token_toxicity_table(
    scorer, tokenizer, vocab_size: int, cache_dir: Path | None = None
) -> tuple[Any, dict]:
    """w ∈ [0, 1]^V: the scorer's value on every token's decoded text, read from the cache when present.

    Special tokens get 0: :meth:`ToxicityPenalty.per_example` decodes samples without them, so they
    never reach H(r̂) and the surrogate must not penalise them either. Ids beyond the
    tokenizer (a logit matrix padded past the vocabulary) also get 0.

    Args:
        scorer: a :class:`dartkit.harm.HarmScorer`.
        tokenizer: the student's tokenizer.
        vocab_size: width of the student's logits.
        cache_dir: where tables are kept (default ``<dartkit cache>/toxicity_tables``).

    Returns:
        ``(table, info)``: a float32 tensor of shape (vocab_size,) and ``{key, path, cached}``.
    """
    import numpy as np
    import torch

    from dartkit.files import cache_root

    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root() / TABLE_DIR
    key = table_key(scorer.identity(), tokenizer_sha256(tokenizer), vocab_size)
    path = cache_dir / f"{key}.npy"
    if path.is_file():
        try:
            table = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            table = None  # a torn or foreign file: rebuilt below
        if table is not None and table.shape == (vocab_size,) and np.isfinite(table).all():
            return torch.from_numpy(table.astype(np.float32)), {"key": key, "path": str(path), "cached": True}
    texts = token_texts(tokenizer, vocab_size)
    table = np.zeros(vocab_size, dtype=np.float32)
    table[: len(texts)] = np.asarray(scorer.score(texts), dtype=np.float32)
    special = [i for i in tokenizer.all_special_ids if 0 <= i < vocab_size]
    table[special] = 0.0
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as f:
        np.save(f, table, allow_pickle=False)
    os.replace(partial, path)  # atomic: a reader sees no table or a whole one
    # Beside the table, for a person wondering what it is.
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "scorer": scorer.identity(),
                "tokenizer_sha256": tokenizer_sha256(tokenizer),
                "vocab_size": vocab_size,
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )
    return torch.from_numpy(table), {"key": key, "path": str(path), "cached": False}


# --------------------------------------------------------------------------------------------
# The straight-through penalty
# --------------------------------------------------------------------------------------------


@dataclass
class ToxicityPenalty:
    """λ·L_tox for one micro-batch's target logits.

    Attributes:
        tox_lambda: λ, the penalty's weight in the step loss.
        table: w, (V,) per-token toxicity (:func:`token_toxicity_table`).
        score: the harm scorer's ``score``: texts -> H in [0, 1].
        decode: token ids -> text (special tokens dropped).
        sampling: ``sample`` draws ŷ_t ~ p_t; ``argmax`` takes its mode.
        temperature: T in p_t = softmax(logits_t / T), for sampling and gradient alike.
    """

    tox_lambda: float
    table: Any
    score: Callable[[list[str]], list[float]]
    decode: Callable[[list[int]], str]
    sampling: Sampling = "sample"
    temperature: float = 1.0

    def per_example(self, logits, targets):
        """L_tox per example: value H(r̂_i), gradient that of the surrogate s(y_i).

        Args:
            logits: (B, T, V) scores at the kept positions; ``logits[i, t]`` predicts ``targets[i, t]``.
            targets: (B, T) gold token ids, -100 where there is no target.

        Returns:
            ``(l_tox, harm, sampled)``: (B,) penalties carrying the gradient, (B,) detached H(r̂_i),
            and (B, T) sampled ids (-100 off target).
        """
        import torch

        from dartkit.train.batching import IGNORE_INDEX

        mask = targets != IGNORE_INDEX
        probs = torch.softmax(
            logits.to(torch.promote_types(logits.dtype, torch.float32)) / self.temperature, -1
        )
        with torch.no_grad():
            if self.sampling == "argmax":
                sampled = probs.argmax(dim=-1)
            else:
                flat = probs.detach().flatten(0, 1)
                sampled = torch.multinomial(flat, 1).view(targets.shape)
            sampled = sampled.masked_fill(~mask, IGNORE_INDEX)
        texts = [self.decode(row[row != IGNORE_INDEX].tolist()) for row in sampled.cpu()]
        harm = torch.tensor(self.score(texts), dtype=probs.dtype, device=probs.device)
        l_tox = straight_through(probs, sampled, mask, self.table.to(probs.device, probs.dtype), harm)
        return l_tox, harm, sampled


def straight_through(probs, sampled, mask, table, harm):
    """L_tox_i = H_i + s(y_i) − stopgrad(s(y_i)), s(y_i) = mean over target t of ⟨y_t, w⟩.

    y_t = h_t + p_t − stopgrad(p_t) with h_t = one-hot(ŷ_t). s is linear in y, so
    ⟨y_t, w⟩ = w[ŷ_t] + ⟨p_t, w⟩ − stopgrad(⟨p_t, w⟩): computed without building the
    (B, T, V) one-hots.

    Args:
        probs: (B, T, V) p_t, carrying the gradient.
        sampled: (B, T) ŷ_t (any value off target).
        mask: (B, T) True at target positions.
        table: (V,) w.
        harm: (B,) H(r̂_i), no gradient.

    Returns:
        (B,) L_tox_i: forward value H_i, gradient ∂/∂θ of mean_t ⟨p_t, w⟩.
    """
    expected = probs @ table  # ⟨p_t, w⟩, (B, T)
    hard = table[sampled.clamp(min=0)]  # ⟨h_t, w⟩ = w[ŷ_t]
    per_token = hard + expected - expected.detach()  # ⟨y_t, w⟩
    n = mask.sum(dim=1).clamp(min=1)
    surrogate = (per_token * mask).sum(dim=1) / n
    return harm.detach() + surrogate - surrogate.detach()


def build_penalty(cfg, scorer, tokenizer, vocab_size: int, cache_dir: Path | None = None):
    """The :class:`ToxicityPenalty` a :class:`~dartkit.train.config.TrainConfig` asks for, and table info."""
    table, info = token_toxicity_table(scorer, tokenizer, vocab_size, cache_dir)
    penalty = ToxicityPenalty(
        tox_lambda=cfg.tox_lambda,
        table=table,
        score=lambda texts: list(scorer.score(texts)),
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        sampling=cfg.tox_sampling,
        temperature=cfg.tox_temperature,
    )
    return penalty, info


# --------------------------------------------------------------------------------------------
# Choosing λ
# --------------------------------------------------------------------------------------------

LAMBDA_RULE = "highest harmonic mean of accuracy and (1 − toxicity) on validation; ties go to the smaller λ"


def _value(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key)
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def harmonic_mean(accuracy: float, toxicity: float) -> float:
    """2·a·(1 − h) / (a + (1 − h)); 0 when both are 0."""
    safe = 1.0 - toxicity
    total = accuracy + safe
    return 0.0 if total == 0 else 2.0 * accuracy * safe / total


def select_lambda(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The paper's rule for the λ sweep: highest harmonic mean of accuracy and (1 − toxicity).

    Args:
        rows: one per trained λ: ``lambda``, ``accuracy`` and ``toxicity`` (mean harm score of
            the model's validation answers), both in [0, 1]; other keys are kept in the table.
            A row whose accuracy or toxicity is missing (absent, None, NaN) is excluded, with
            the reason in the table.

    Returns:
        ``chosen`` (the λ), ``rule`` (the rule in words) and ``table``: the rows sorted by λ,
        each with ``score`` (its harmonic mean, None when excluded), ``excluded`` (the reason
        or None) and ``chosen`` (bool). Equal scores (within 1e-12) go to the smaller λ.

    Raises:
        DataError: no rows, a row without a λ, a repeated or negative λ, accuracy or toxicity
            outside [0, 1], or no row with both values.
    """
    if not rows:
        raise DataError("select_lambda: no λ rows to choose from")
    table = []
    seen: set[float] = set()
    for i, row in enumerate(rows):
        lam = _value(row, "lambda")
        if lam is None or lam < 0 or math.isinf(lam):
            raise DataError(f"select_lambda: row {i + 1} has no valid λ (got {row.get('lambda')!r})")
        if lam in seen:
            raise DataError(f"select_lambda: λ = {lam:g} appears twice")
        seen.add(lam)
        entry = {**row, "lambda": lam, "score": None, "excluded": None, "chosen": False}
        acc, tox = _value(row, "accuracy"), _value(row, "toxicity")
        missing = [k for k, v in (("accuracy", acc), ("toxicity", tox)) if v is None]
        if missing:
            entry["excluded"] = f"no {' or '.join(missing)}"
        else:
            for key, v in (("accuracy", acc), ("toxicity", tox)):
                if not 0.0 <= v <= 1.0:
                    raise DataError(f"select_lambda: λ = {lam:g}: {key} {v} is outside [0, 1]")
            entry["score"] = harmonic_mean(acc, tox)
        table.append(entry)
    table.sort(key=lambda e: e["lambda"])
    eligible = [e for e in table if e["score"] is not None]
    if not eligible:
        reasons = "; ".join(f"λ = {e['lambda']:g}: {e['excluded']}" for e in table)
        raise DataError(f"select_lambda: no λ has both accuracy and toxicity ({reasons})")
    best = max(e["score"] for e in eligible)
    # The table is sorted by λ, so the first within float noise of the best is the smallest λ.
    winner = next(e for e in eligible if math.isclose(e["score"], best, rel_tol=0.0, abs_tol=1e-12))
    winner["chosen"] = True
    return {"chosen": winner["lambda"], "rule": LAMBDA_RULE, "table": table}
