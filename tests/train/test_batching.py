"""Chat-template masking and length-grouped batch planning, with the embedded model's real tokenizer."""

from __future__ import annotations

import pytest
from train_helpers import demo_records

from dartkit.errors import DartkitError
from dartkit.train.batching import (
    IGNORE_INDEX,
    collate,
    encode_record,
    plan_epoch,
    split_step,
    step_micro_batches,
)
from dartkit.train.data import TrainRecord


def test_only_the_answer_and_its_end_of_turn_token_are_trained(tokenizer):
    record = demo_records(1)[0]
    enc = encode_record(tokenizer, record, max_length=1024)
    prompt = tokenizer.apply_chat_template(
        record.messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    trained = [i for i, t in enumerate(enc.labels) if t != IGNORE_INDEX]
    # Every prompt token (system, user, "<|im_start|>assistant\n") is masked; the rest is trained.
    assert trained == list(range(len(prompt), len(enc.input_ids)))
    assert enc.input_ids[: len(prompt)] == list(prompt)
    answer = [t for t in enc.labels if t != IGNORE_INDEX]
    assert answer[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")  # learns to stop
    assert tokenizer.decode(answer[:-1]) == record.target
    assert (
        tokenizer.decode(answer) == record.target + "<|im_end|>"
    )  # nothing of the template's spacing after it


def test_too_long_examples_are_dropped(tokenizer):
    record = demo_records(1)[0]
    enc = encode_record(tokenizer, record, max_length=1024)
    assert encode_record(tokenizer, record, max_length=len(enc.input_ids)) is not None
    assert encode_record(tokenizer, record, max_length=len(enc.input_ids) - 1) is None


def test_a_template_that_breaks_the_prefix_is_refused(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    # The generation prompt opens a thinking block that the rendered conversation does not contain.
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    record = TrainRecord(id="x", messages=[{"role": "user", "content": "Hi"}], target="Conclusion: NO")
    with pytest.raises(DartkitError, match="prefix"):
        encode_record(tok, record, max_length=1024)


def test_collate_pads_right_and_masks_padding(tokenizer):
    a, b = (encode_record(tokenizer, r, 1024) for r in demo_records(2))
    batch = collate([a, b], tokenizer.pad_token_id, weights=[2.0, 1.0])
    width = max(len(a), len(b))
    assert batch.input_ids.shape == (2, width)
    short = 0 if len(a) < len(b) else 1
    n = min(len(a), len(b))
    assert batch.attention_mask[short, n:].sum() == 0 and (batch.labels[short, n:] == IGNORE_INDEX).all()
    assert batch.target_tokens.tolist() == [a.n_target_tokens, b.n_target_tokens]
    assert batch.weights.tolist() == [2.0, 1.0]


def test_plan_covers_every_example_once_and_is_reproducible():
    lengths = [(i * 37) % 101 + 5 for i in range(103)]
    plan = plan_epoch(lengths, global_batch=8, seed=42, epoch=0)
    assert sorted(i for step in plan for i in step) == list(range(103))
    assert sorted(len(s) for s in plan) == [7] + [8] * 12
    assert plan == plan_epoch(lengths, global_batch=8, seed=42, epoch=0)
    assert plan != plan_epoch(lengths, global_batch=8, seed=42, epoch=1)
    assert max(lengths) in [lengths[i] for i in plan[0]]  # the longest batch first


def test_length_grouping_cuts_padding():
    lengths = [(i * 7919) % 900 + 100 for i in range(400)]

    def padding(plan):
        return sum(max(lengths[i] for i in s) * len(s) - sum(lengths[i] for i in s) for s in plan)

    grouped = padding(plan_epoch(lengths, 8, seed=1, epoch=0, mega_batch_steps=50))
    random_order = padding(plan_epoch(lengths, 8, seed=1, epoch=0, group_by_length=False))
    assert grouped < 0.1 * random_order


def test_short_steps_are_split_evenly_and_filled_with_zero_weight_rows(tokenizer):
    lengths = [10, 50, 30, 20, 40]
    assert split_step([0, 1, 2, 3, 4], 2, lengths) == [[1, 4, 2], [3, 0]]
    assert split_step([0, 1], 4, lengths) == [[1], [0], [], []]
    examples = [encode_record(tokenizer, r, 1024) for r in demo_records(2)]
    # Two examples, two processes x two micro-batches: process 1 gets one real row and one zero-weight filler.
    micro = step_micro_batches([0, 1], examples, grad_accum=2, num_processes=2, process_index=1, pad_id=0)
    assert [m.weights.tolist() for m in micro] == [[1.0], [0.0]]


def with_template(tokenizer, template: str):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def test_a_template_that_rewrites_the_answer_is_refused(tokenizer):
    # Prefix intact, but the assistant turn gains text the target does not have.
    tok = with_template(
        tokenizer,
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' %}Thinking done.\n{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    )
    record = TrainRecord(id="x", messages=[{"role": "user", "content": "Hi"}], target="Conclusion: NO")
    with pytest.raises(DartkitError, match="renders the target as 'Thinking done"):
        encode_record(tok, record, max_length=1024)


def test_a_template_without_an_end_of_turn_token_gets_eos(tokenizer):
    # Its generation prompt ends in a space that would merge with the answer's first word when
    # the whole conversation is tokenized at once; the prompt must still be tokenized as at inference.
    tok = with_template(
        tokenizer,
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}",
    )
    record = TrainRecord(id="x", messages=[{"role": "user", "content": "Hi"}], target="Conclusion: NO")
    enc = encode_record(tok, record, max_length=1024)
    prompt = tok.apply_chat_template(
        record.messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert enc.input_ids[: len(prompt)] == list(prompt)
    answer = [t for t in enc.labels if t != IGNORE_INDEX]
    assert len(prompt) + len(answer) == len(enc.input_ids)
    assert answer[-1] == tok.eos_token_id
    assert tok.decode(answer[:-1]).strip() == "Conclusion: NO"


def test_a_template_without_system_role_trains_on_the_prompt_generation_uses(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    record = TrainRecord(
        id="x",
        messages=[{"role": "system", "content": "SYS"}, {"role": "user", "content": "hello"}],
        target="Fine.\nConclusion: NO",
    )
    enc = encode_record(tok, record, max_length=512)
    text = tok.decode(enc.input_ids)
    assert "SYS\n\nhello" in text and "system" not in text
    answer = [t for t, label in zip(enc.input_ids, enc.labels, strict=True) if label != -100]
    assert tok.decode(answer).startswith("Fine.\nConclusion: NO")


def test_a_model_without_chat_template_is_a_clear_error(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    record = TrainRecord(id="x", messages=[{"role": "user", "content": "hi"}], target="Conclusion: NO")
    with pytest.raises(DartkitError, match="has no chat template"):
        encode_record(tok, record, max_length=512)
