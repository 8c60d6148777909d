"""Helpers shared by the trainer tests (a tiny random llama, demo training records)."""

from __future__ import annotations

from pathlib import Path

from dartkit.data.demo import load_demo_suite
from dartkit.prompts import classification_messages
from dartkit.train.data import TrainRecord


def save_tiny_llama(path: Path, seed: int, initializer_range: float = 0.02) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from dartkit.generate.embedded import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


RATIONALES = [
    "Religion is a genuine occupational qualification for this role.\nConclusion: YES",
    "Group membership is irrelevant here.\nConclusion: NO",
    "The law permits this distinction because the job requires it, and the difference is real.\nConclusion: YES",
    "Both groups should be treated the same.\nConclusion: NO",
]


def lora_model(tiny_llama: Path):
    """The tiny llama in float64 with a LoRA whose every matrix gets a non-zero gradient."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float64)
    # init_lora_weights=False: B starts random, not zero, so every LoRA matrix gets a non-zero gradient.
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
    )
    # float64 keeps rounding small (llama's RMSNorm still computes in float32, hence rtol 1e-5 in tests).
    return get_peft_model(model, config).double()


def demo_records(n: int) -> list[TrainRecord]:
    """``n`` training records built from the packaged demo suite, with targets of varied length."""
    examples = load_demo_suite()[:n]
    return [
        TrainRecord(id=e.id, messages=classification_messages(e), target=RATIONALES[i % len(RATIONALES)])
        for i, e in enumerate(examples)
    ]


def write_records(path: Path, records: list[TrainRecord]) -> Path:
    from dartkit.data.jsonl import write_jsonl

    write_jsonl(path, [r.model_dump(exclude={"source"}) for r in records])
    return path


class Killed(KeyboardInterrupt):
    """Stands for Ctrl-C / a kill in the middle of training."""


def run_killed_after(cfg, step: int) -> None:
    """Start training ``cfg`` and interrupt it right after optimizer step ``step``."""
    import pytest

    from dartkit.train import run

    def kill(done: int, row) -> None:
        if done == step:
            raise Killed

    with pytest.raises(Killed):
        run(cfg, on_step=kill)
