"""A few real training steps on the embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import demo_records, write_records

from dartkit.train import TrainConfig, run

pytestmark = pytest.mark.slow


def test_every_lora_parameter_moves_and_the_loss_falls(tmp_path):
    data = write_records(tmp_path / "records.jsonl", demo_records(2))
    cfg = TrainConfig(
        base="embedded",
        data=[data],
        out=tmp_path / "out",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "down_proj"],
        learning_rate=2e-3,
        warmup_ratio=0.0,
        per_device_batch_size=2,
        grad_accum=1,
        epochs=3,  # the same batch of two, three times: the loss must fall
        max_length=256,
        save_every=1,
    )
    metrics = run(cfg)
    assert metrics["steps"] == 3 and metrics["trained_examples"] == 2
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()
    ]
    assert losses[2] < losses[1] < losses[0]

    final = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    after_step_1 = {
        k.replace(".default", ""): v
        for k, v in load_file(str(tmp_path / "out" / "checkpoints" / "step-1" / "model.safetensors")).items()
    }
    assert final.keys() == after_step_1.keys() and len(final) == 2 * 3 * 30  # (A, B) x 3 modules x 30 layers
    for name, value in final.items():
        # LoRA starts with B = 0 (so A gets no gradient in step 1): B has left zero after step 1,
        # and steps 2-3 moved every matrix again. Together: every LoRA parameter changed.
        if "lora_B" in name:
            assert after_step_1[name].abs().max() > 0, name
        assert not torch.equal(value, after_step_1[name]), name
