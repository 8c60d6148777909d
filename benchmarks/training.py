"""Training throughput: dartkit's trainer vs. plain peft + transformers ``Trainer``, same LoRA and data.

    .venv/bin/python benchmarks/training.py [--examples 48] [--steps 5] [--batch-size 8]

Both train the embedded model (SmolLM2-135M-Instruct) with the same LoRA (r 16,
alpha 32, dropout 0.05, q/k/v/o/gate/up/down), learning rate, schedule, batch size,
number of steps and the same tokenized examples (chat template, assistant-only
labels). They differ in what dartkit adds: length-grouped batches, logits computed
only where a target token is predicted, and its own loop. The baseline pads each
batch of a shuffled order with ``DataCollatorForSeq2Seq`` (no length grouping).

Prints one JSON line: tokens/s of each (non-pad prompt + target tokens processed per
second of training, from the end of step 1 to the end of the last step: the first
step of a fresh process pays for memory growth and is left out of both), their
ratio, and each one's fraction of padded tokens. Run it on an otherwise idle
machine: CPU timings shift a lot under load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from dartkit.data.demo import load_demo_suite
from dartkit.prompts import classification_messages
from dartkit.train import TrainConfig, TrainRecord, run
from dartkit.train.batching import encode_record
from dartkit.train.config import LLAMA_TARGET_MODULES

# Short rationales of different lengths, so batches really differ in width.
SENTENCES = [
    "The question asks about a factual difference between the groups.",
    "Group membership is irrelevant to what is being asked.",
    "A real distinction applies here, and the law recognises it.",
    "Treating the groups differently would rely on a stereotype.",
]


def build_records(n: int) -> list[TrainRecord]:
    examples = load_demo_suite()
    stride = max(len(examples) // n, 1)
    picked = examples[::stride][:n]
    records = []
    for i, e in enumerate(picked):
        rationale = " ".join(SENTENCES[j % len(SENTENCES)] for j in range(i, i + 1 + i % 3))
        records.append(
            TrainRecord(
                id=e.id, messages=classification_messages(e), target=f"{rationale}\nConclusion: {e.label}"
            )
        )
    return records


def run_dartkit(records, steps: int, batch_size: int, workdir: Path) -> dict:
    from dartkit.data.jsonl import write_jsonl

    data = workdir / "records.jsonl"
    write_jsonl(data, [r.model_dump(exclude={"source"}) for r in records])
    cfg = TrainConfig(
        base="embedded",
        data=[data],
        out=workdir / "dartkit",
        max_steps=steps,
        per_device_batch_size=batch_size,
        grad_accum=1,
        save_every=10_000,
    )
    m = run(cfg)
    rows = [json.loads(line) for line in (workdir / "dartkit" / "train_log.jsonl").read_text().splitlines()]
    seconds = rows[-1]["elapsed"] - rows[0]["elapsed"]
    tokens = sum(r["tokens"] for r in rows[1:])
    return {"tokens_per_s": tokens / seconds, "padding_fraction": m["padding_fraction"], "seconds": seconds}


def run_hf_trainer(records, steps: int, batch_size: int, workdir: Path) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from dartkit.generate.embedded import embedded_model_dir

    model_dir = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(42)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LLAMA_TARGET_MODULES, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)
    encoded = [encode_record(tokenizer, r, 1024) for r in records]
    dataset = [
        {"input_ids": e.input_ids, "attention_mask": [1] * len(e), "labels": e.labels} for e in encoded
    ]
    real_per_batch: list[int] = []
    padded = {"tokens": 0}
    tokenizer.padding_side = "right"
    pad_like_seq2seq = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    def collate(rows):
        batch = pad_like_seq2seq(rows)
        real = int(batch["attention_mask"].sum())
        real_per_batch.append(real)
        padded["tokens"] += batch["attention_mask"].numel() - real
        return batch

    step_ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            step_ends.append(time.perf_counter())

    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        warmup_ratio=0.03,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=42,
        group_by_length=False,
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collate, callbacks=[Clock()]
    )
    trainer.train()
    # The dataloader fetches one batch ahead; batch k is still the k-th collated.
    real = real_per_batch[:steps]
    seconds = step_ends[-1] - step_ends[0]
    return {
        "tokens_per_s": sum(real[1:]) / seconds,
        "padding_fraction": padded["tokens"] / (padded["tokens"] + sum(real_per_batch)),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=48, help="training examples from the demo suite")
    parser.add_argument(
        "--steps", type=int, default=5, help="optimizer steps for each trainer (first one not timed)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="examples per step (no accumulation)")
    a = parser.parse_args()

    from dartkit.generate.embedded import embedded_model_dir

    records = build_records(a.examples)
    embedded_model_dir()  # convert the embedded model first, outside both timings
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_dartkit(records, a.steps, a.batch_size, Path(tmp))
        theirs = run_hf_trainer(records, a.steps, a.batch_size, Path(tmp))
    print(
        json.dumps(
            {
                "benchmark": "training",
                "model": "embedded",
                "examples": len(records),
                "steps": a.steps,
                "batch_size": a.batch_size,
                "dartkit_tokens_per_s": round(ours["tokens_per_s"], 1),
                "hf_trainer_tokens_per_s": round(theirs["tokens_per_s"], 1),
                "speedup": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
                "dartkit_padding_fraction": round(ours["padding_fraction"], 4),
                "hf_trainer_padding_fraction": round(theirs["padding_fraction"], 4),
                "timed_steps": a.steps - 1,
                "dartkit_seconds": round(ours["seconds"], 2),
                "hf_trainer_seconds": round(theirs["seconds"], 2),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
