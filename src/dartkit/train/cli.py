"""`dartkit train`: fine-tune a LoRA adapter on distilled rationales (or labels), resumably.

    dartkit train --data runs/demo/distill/teacher.jsonl --prepared runs/demo/data --out runs/demo/distill
    dartkit train --label-only --prepared runs/demo/data --out runs/demo/label_only
    dartkit train --data runs/demo/distill/teacher.jsonl --data runs/demo/repair/teacher_safe.jsonl \\
        --weights-from severity_weight --init-adapter runs/demo/distill/adapter --prepared runs/demo/data \\
        --out runs/demo/repair
    dartkit train --data runs/demo/distill/teacher.jsonl --prepared runs/demo/data --tox-lambda 0.1 \\
        --out runs/demo/tox_0.1

The same command runs under ``accelerate launch ... -m dartkit.train`` on several GPUs.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path

import typer

from dartkit.cli_support import fail
from dartkit.config import ConfigError, cli_flags, load_config
from dartkit.errors import DartkitError
from dartkit.generate.spec import SpecError
from dartkit.train.config import TrainConfig


class WeightingChoice(str, Enum):
    loss = "loss"
    oversample = "oversample"


def train_command(
    data: list[Path] = typer.Option(
        None,
        "--data",
        help="Training JSONL (repeatable): distillation rows (id, accepted, text) or records (id, messages, "
        "target); with --label-only, prepared Example rows.",
    ),
    prepared: Path = typer.Option(
        None,
        "--prepared",
        help="Prepared data directory (from `dartkit data prepare`), to rebuild prompts by example id; "
        "with --label-only and no --data, its train.jsonl is used.",
    ),
    base: str = typer.Option(
        None, "--base", help="Base model spec: embedded (default) or hf:ID_OR_PATH[@REV]."
    ),
    out: Path = typer.Option(
        None, "--out", help="Output directory (adapter/, checkpoints/, train_log.jsonl, metrics.json)."
    ),
    weights_from: str = typer.Option(
        None, "--weights-from", help="Row field with each example's loss weight, e.g. severity_weight."
    ),
    weighting: WeightingChoice = typer.Option(
        None,
        "--weighting",
        help="How weights act: loss (exact weighted loss, default) or oversample (k copies, integer weights).",
    ),
    init_adapter: Path = typer.Option(
        None, "--init-adapter", help="Continue training this PEFT adapter instead of starting a new LoRA."
    ),
    label_only: bool = typer.Option(
        False, "--label-only", help="Targets are 'Conclusion: YES|NO' only (label-only SFT baseline)."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML file with TrainConfig fields; the flags here override it."
    ),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Passes over the data (default 3)."),
    max_steps: int = typer.Option(
        None, "--max-steps", min=1, help="Train exactly this many optimizer steps (overrides --epochs)."
    ),
    lr: float = typer.Option(None, "--lr", min=0.0, help="Peak learning rate (default 2e-4, cosine decay)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Examples per device per forward pass."),
    grad_accum: int = typer.Option(
        None, "--grad-accum", min=1, help="Micro-batches accumulated per optimizer step, per device."
    ),
    seed: int = typer.Option(
        None, "--seed", help="Seed for LoRA init, dropout and batch order (default 42)."
    ),
    tox_lambda: float = typer.Option(
        None,
        "--tox-lambda",
        min=0.0,
        help="λ of the toxicity penalty L_SFT + λ·L_tox on rationales sampled under teacher forcing "
        "(default 0: plain SFT; docs/toxreg.md).",
    ),
    tox_scorer: str = typer.Option(
        None,
        "--tox-scorer",
        help="Harm scorer of the toxicity penalty: profanity (default), hf:MODEL[@REV][#LABEL] or max(...).",
    ),
) -> None:
    """Fine-tune a LoRA adapter, loss on the assistant tokens only; rerun the same command to resume."""
    overrides = {
        "data": [str(p) for p in data] if data else None,
        "prepared": str(prepared) if prepared else None,
        "base": base,
        "out": str(out) if out else None,
        "weights_from": weights_from,
        "weighting": weighting.value if weighting else None,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "label_only": True if label_only else None,
        "epochs": epochs,
        "max_steps": max_steps,
        "learning_rate": lr,
        "per_device_batch_size": batch_size,
        "grad_accum": grad_accum,
        "seed": seed,
        "tox_lambda": tox_lambda,
        "tox_scorer": tox_scorer,
    }
    try:
        flags = cli_flags(overrides, {"learning_rate": "--lr", "per_device_batch_size": "--batch-size"})
        cfg = load_config(TrainConfig, config, overrides, flags)
        from dartkit.train.sft import run

        metrics = run(cfg)
    except (DartkitError, ConfigError, SpecError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        typer.echo("interrupted: rerun the same command to resume from the last checkpoint", err=True)
        sys.exit(130)
    typer.echo(json.dumps(metrics))
