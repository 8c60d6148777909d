"""From training records to padded micro-batches: chat-template encoding, masking, length grouping.

Encoding renders the prompt with the student's own chat template twice — with the
generation prompt, and as the full conversation with the target as the assistant
turn — checks that the first is a prefix of the second, and trains on what follows
it up to and including the template's end-of-turn token (so the model learns to
stop). Everything before is masked with -100.

Batches are planned per epoch from a seeded shuffle independent of torch's RNG, so a
resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dartkit.errors import DartkitError
from dartkit.generate.chat import fit_to_template
from dartkit.train.data import TrainRecord

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    """One tokenized example; ``labels`` is -100 on the prompt and the token ids on the answer."""

    id: str
    input_ids: list[int]
    labels: list[int]
    weight: float

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_target_tokens(self) -> int:
        return sum(t != IGNORE_INDEX for t in self.labels)


def _chat_ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    if hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def encode_record(tokenizer, record: TrainRecord, max_length: int) -> EncodedExample | None:
    """Tokenize one record with the chat template and mask everything but the answer.

    The prompt is tokenized exactly as generation tokenizes it (chat template with the
    generation prompt). The answer is what the full conversation adds after it, cut
    after the first special token (the end-of-turn marker), which is trained too.
    Usually the prompt's tokens are a prefix of the full conversation's; when a
    template ends its generation prompt in a way that merges with the first answer
    token (e.g. a trailing space), the answer text is tokenized on its own instead,
    which is what the model will see at inference.

    Returns:
        The encoded example, or None when prompt + answer exceed ``max_length`` tokens.

    Raises:
        DartkitError: the template does not render the prompt as a prefix of the full
            conversation, or renders the target differently from its text (e.g. it
            inserts reasoning tags); training on such spans would teach the wrong thing.
    """
    messages = fit_to_template(tokenizer, record.messages, getattr(tokenizer, "name_or_path", "student"))
    conversation = [*messages, {"role": "assistant", "content": record.target}]
    prompt = _chat_ids(tokenizer, messages, add_generation_prompt=True)
    full = _chat_ids(tokenizer, conversation, add_generation_prompt=False)
    where = record.source or f"id {record.id!r}"
    if full[: len(prompt)] == prompt:
        answer = full[len(prompt) :]
    else:
        prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template(conversation, tokenize=False)
        if not full_text.startswith(prompt_text):
            raise DartkitError(
                f"{where}: the chat template does not render the prompt (with generation prompt) as a "
                "prefix of the full conversation, so the assistant tokens cannot be located"
            )
        answer = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    # The first special token after the generation prompt closes the assistant turn
    # (<|im_end|>, <|eot_id|>, <end_of_turn>, </s>); what follows is spacing before a next turn.
    special = set(tokenizer.all_special_ids)
    end = next((k for k, t in enumerate(answer) if t in special), None)
    if end is None:
        # A template without an end-of-turn token: end with EOS so the model still learns to stop.
        answer = [*answer, tokenizer.eos_token_id]
        end = len(answer) - 1
    answer = answer[: end + 1]
    rendered = tokenizer.decode(answer[:-1])
    if rendered.strip() != record.target.strip():
        raise DartkitError(
            f"{where}: the chat template renders the target as {rendered[:80]!r}, not as the target "
            f"text {record.target[:80]!r}; cannot train on a span that is not the target"
        )
    if len(prompt) + len(answer) > max_length:
        return None
    return EncodedExample(
        id=record.id,
        input_ids=prompt + answer,
        labels=[IGNORE_INDEX] * len(prompt) + answer,
        weight=record.weight,
    )


@dataclass
class MicroBatch:
    """One forward pass worth of right-padded examples."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T), 0 on padding
    labels: torch.Tensor  # (B, T), -100 on prompt and padding
    weights: torch.Tensor  # (B,) float32; 0 for a filler row

    @property
    def target_tokens(self) -> torch.Tensor:
        """(B,) number of target tokens per example."""
        return (self.labels != IGNORE_INDEX).sum(dim=1)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return self.attention_mask.numel() - self.real_tokens

    def to(self, device) -> MicroBatch:
        return MicroBatch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.weights))
        )


def collate(
    examples: Sequence[EncodedExample], pad_id: int, weights: Sequence[float] | None = None
) -> MicroBatch:
    """Right-pad examples to the longest one (dynamic padding: each batch only as wide as it needs)."""
    width = max(len(e) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    for r, e in enumerate(examples):
        input_ids[r, : len(e)] = torch.tensor(e.input_ids)
        attention[r, : len(e)] = 1
        labels[r, : len(e)] = torch.tensor(e.labels)
    w = torch.tensor([e.weight for e in examples] if weights is None else list(weights), dtype=torch.float32)
    return MicroBatch(input_ids, attention, labels, w)


def plan_epoch(
    lengths: Sequence[int],
    global_batch: int,
    seed: int,
    epoch: int,
    group_by_length: bool = True,
    mega_batch_steps: int = 50,
) -> list[list[int]]:
    """The optimizer steps of one epoch, each a list of example indices (the last may be short).

    With ``group_by_length``: shuffle, sort by length inside mega-batches of
    ``mega_batch_steps`` steps' worth of examples, cut into steps, shuffle the step
    order, and move the step holding the longest example to the front (an
    out-of-memory error then shows at step 1, not hours in).
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i : i + global_batch] for i in range(0, len(order), global_batch)]
    mega = global_batch * mega_batch_steps
    steps: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        steps.extend(chunk[i : i + global_batch] for i in range(0, len(chunk), global_batch))
    rng.shuffle(steps)
    longest = max(range(len(steps)), key=lambda s: max(lengths[i] for i in steps[s]))
    steps.insert(0, steps.pop(longest))
    return steps


def split_step(step: Sequence[int], n_micro: int, lengths: Sequence[int]) -> list[list[int]]:
    """Split one step's examples into ``n_micro`` micro-batches of similar lengths.

    Sizes differ by at most one; a micro-batch is empty only when the step has fewer
    examples than micro-batches (the caller fills it with a zero-weight row so every
    process runs the same number of forward passes).
    """
    ordered = sorted(step, key=lambda i: -lengths[i])
    q, r = divmod(len(ordered), n_micro)
    out, start = [], 0
    for k in range(n_micro):
        size = q + (k < r)
        out.append(ordered[start : start + size])
        start += size
    return out


def step_micro_batches(
    step: Sequence[int],
    examples: Sequence[EncodedExample],
    grad_accum: int,
    num_processes: int,
    process_index: int,
    pad_id: int,
) -> list[MicroBatch]:
    """This process's ``grad_accum`` micro-batches of one optimizer step.

    Micro-batches are dealt round-robin to processes so each gets a spread of lengths.
    """
    lengths = [len(e) for e in examples]
    micro = split_step(step, grad_accum * num_processes, lengths)[process_index::num_processes]
    filler = min(step, key=lambda i: lengths[i])
    return [
        collate([examples[i] for i in idx], pad_id)
        if idx
        else collate([examples[filler]], pad_id, weights=[0.0])
        for idx in micro
    ]
