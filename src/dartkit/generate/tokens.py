"""Prompt tokens, end-of-turn ids and per-prompt seeds: what the hf and vllm backends must share.

The two backends hand the same prompt to their engines and stop at the same tokens, so that an
answer cached from one is comparable with the other's (the audit's prompt check sees one prompt)
and a prompt's sample depends on the prompt and the seed, not on which prompts share its batch.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Iterable

from dartkit.generate.base import Messages
from dartkit.generate.chat import fit_to_template


def chat_token_ids(tokenizer, messages: Messages, model: str) -> list[int]:
    """Prompt token ids: the model's chat template with the generation prompt (see
    :func:`~dartkit.generate.chat.fit_to_template` for templates without a system turn)."""
    fitted = fit_to_template(tokenizer, messages, model)
    ids = tokenizer.apply_chat_template(fitted, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5.x returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def end_of_turn_ids(tokenizer_eos: int | None, generation_eos: int | Iterable[int] | None) -> list[int]:
    """The token ids generation stops at: the tokenizer's EOS and the generation config's (one id
    or a list), sorted, without None."""
    ids = {tokenizer_eos}
    if isinstance(generation_eos, numbers.Integral):
        ids.add(generation_eos)
    elif generation_eos is not None:
        ids.update(generation_eos)
    return sorted(int(i) for i in ids if i is not None)


def row_seed(seed: int, prompt_ids: list[int]) -> int:
    """The sampling seed of one prompt: a function of the decoding seed and the prompt's tokens only."""
    digest = hashlib.sha256(f"{seed}:{','.join(map(str, prompt_ids))}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)
