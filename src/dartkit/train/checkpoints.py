"""Resumable checkpoints: ``<out>/checkpoints/step-N`` written with ``accelerator.save_state``.

A checkpoint holds the LoRA weights, optimizer, LR scheduler and every process's RNG
state (so dropout continues identically), plus ``trainer_state.json`` with the step
and the run fingerprint. It is written to a hidden ``.step-N.partial`` directory and
renamed when complete, so a kill during a save leaves the previous checkpoint usable.

Under plain single-process or DDP training only the trainable (LoRA) weights are
stored, not the frozen base: a Llama-3-8B checkpoint is then ~0.5 GB rather than 16.
FSDP and DeepSpeed write their own sharded states through accelerate.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from dartkit.errors import DartkitError

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def register_trainable_only_hooks(accelerator) -> None:
    """Make ``save_state``/``load_state`` store and restore only parameters that require grad."""

    def save_hook(models, weights, output_dir):
        for model, state in zip(models, weights, strict=True):
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            for key in [k for k in state if k not in trainable]:
                del state[key]

    def load_hook(models, input_dir):
        from safetensors.torch import load_file

        for i, model in enumerate(models):
            path = Path(input_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
            state = load_file(str(path))
            trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            if set(state) != trainable:
                raise DartkitError(
                    f"{input_dir}: the checkpoint's weights are not this run's trainable parameters "
                    f"({len(set(state) ^ trainable)} names differ); delete it or use another --out"
                )
            model.load_state_dict(state, strict=False)
        # Loaded here; accelerate would otherwise try a strict load of the full model.
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root`` (None when there is none)."""
    if not root.is_dir():
        return None
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
    return max(found)[1] if found else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint: step, run fingerprint, running totals."""
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def save_checkpoint(accelerator, root: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``root/step-{step}`` (all processes must call this) and prune to the newest ``keep``."""
    final = root / f"step-{step}"
    partial = root / f".step-{step}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        steps = sorted(
            (int(m.group(1)), d) for d in root.iterdir() if (m := _STEP_DIR.match(d.name)) and d.is_dir()
        )
        for _, old in steps[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
