"""LoRA SFT with the loss on the assistant tokens only, per-example weights, resumable checkpoints.

    from dartkit.train import TrainConfig, run
    metrics = run(TrainConfig(data=[Path("runs/demo/distill/teacher.jsonl")], prepared=Path("runs/demo/data"),
                              out=Path("runs/demo/distill")))

The heavy imports (torch, transformers, peft, accelerate) happen when ``run`` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dartkit.train.config import TrainConfig
from dartkit.train.data import TrainRecord, load_training_records

if TYPE_CHECKING:
    from dartkit.train.sft import StepCallback

__all__ = ["TrainConfig", "TrainRecord", "load_training_records", "run"]


def run(cfg: TrainConfig, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train a LoRA adapter; see :func:`dartkit.train.sft.run`."""
    from dartkit.train.sft import run as _run

    return _run(cfg, on_step)
