"""`TrainConfig`: every setting of a LoRA SFT run, with the paper's defaults.

A YAML file holds any subset of these fields (unknown keys are rejected by name);
`dartkit train` flags override single fields. Defaults follow the DART paper's
Stage I/III setup: LoRA r 16, alpha 32, dropout 0.05 on all attention and MLP
projections, lr 2e-4 with a cosine schedule and 3% warmup, 3 epochs, 1,024 tokens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dartkit.records import OnOff

# The attention and MLP projections of llama-type decoders (Llama, Mistral, Qwen, SmolLM).
LLAMA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Fields that change where files go or how often they are written, never the trained weights;
# they are left out of the run fingerprint so changing them does not invalidate a checkpoint.
_OPERATIONAL_FIELDS = {"out", "data", "prepared", "init_adapter", "save_every", "keep_checkpoints"}
# The toxicity penalty's settings shape nothing while tox_lambda is 0: left out of the fingerprint
# then, so a run from before the penalty existed keeps its fingerprint (and stays resumable).
_TOXICITY_FIELDS = {"tox_lambda", "tox_scorer", "tox_sampling", "tox_temperature"}


class TrainConfig(BaseModel):
    """`dartkit train`: LoRA SFT of a student on prompt -> target, loss on the assistant tokens only."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- what to train, on what, where to write it
    base: str = Field(
        "embedded", description="Base model spec to fine-tune: embedded or hf:ID_OR_PATH[@REVISION]."
    )
    data: list[Path] = Field(
        default_factory=list,
        description=(
            "Training files (JSONL). Default mode: distillation rows (id, accepted, text[, messages]) "
            "or training records (id, messages, target[, weight]). With label_only: prepared Example rows."
        ),
    )
    prepared: Path | None = Field(
        None,
        description=(
            "Prepared data directory ({train,audit,val,test}.jsonl from `dartkit data prepare`): rows without "
            "'messages' get their prompt rebuilt from the example with the same id; with label_only and no "
            "data files, its train split is the training data."
        ),
    )
    label_only: bool = Field(
        False, description="Train on 'Conclusion: YES|NO' alone (the paper's label-only SFT baseline)."
    )
    weights_from: str | None = Field(
        None,
        description=(
            "Row field holding each example's loss weight (e.g. severity_weight); rows without the field "
            "weigh 1, but at least one row must have it."
        ),
    )
    policy: OnOff = Field(
        "off", description="Explanation policy in the student's system prompt when prompts are rebuilt."
    )
    out: Path = Field(
        description="Output directory: adapter/, checkpoints/, train_log.jsonl, metrics.json, manifest.json."
    )
    init_adapter: Path | None = Field(
        None,
        description=(
            "Continue training this PEFT adapter (e.g. M_int for the repair stage) instead of creating a "
            "new LoRA; its own r/alpha/dropout/target modules are used."
        ),
    )
    weighting: Literal["loss", "oversample"] = Field(
        "loss",
        description=(
            "How example weights act: 'loss' weighs each example's token losses (exact, any positive "
            "weight); 'oversample' repeats an example with integer weight k k times (the paper's code)."
        ),
    )

    # --- LoRA
    lora_r: int = Field(16, ge=1, description="LoRA rank r.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_TARGET_MODULES),
        description=(
            "Module names that get LoRA (default: attention q/k/v/o and MLP gate/up/down of llama-type "
            "models); ['all-linear'] lets PEFT pick every linear layer but the output head."
        ),
    )

    # --- optimisation
    learning_rate: float = Field(2e-4, gt=0, description="Peak AdamW learning rate.")
    warmup_ratio: float = Field(
        0.03,
        ge=0.0,
        lt=1.0,
        description="Fraction of optimizer steps with linear warmup before the cosine decay.",
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="Clip the global gradient norm to this value; null disables clipping."
    )
    epochs: int = Field(3, ge=1, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(
        None, ge=1, description="Train exactly this many optimizer steps (overrides epochs; cycles the data)."
    )
    max_length: int = Field(
        1024, ge=8, description="Longest prompt + target in tokens; longer examples are skipped and counted."
    )
    per_device_batch_size: int = Field(4, ge=1, description="Examples per forward pass on each device.")
    grad_accum: int = Field(
        4, ge=1, description="Micro-batches per optimizer step on each device (gradient accumulation)."
    )
    seed: int = Field(42, description="Seed for LoRA initialisation, dropout and the batch order.")
    group_by_length: bool = Field(
        True,
        description=(
            "Sort examples by length inside seeded mega-batches, then shuffle the batch order, so batches "
            "hold similar lengths and padding stays low."
        ),
    )
    mega_batch_steps: int = Field(
        50, ge=1, description="Size of a length-grouping mega-batch, in optimizer steps' worth of examples."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about 30% slower."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description=(
            "Dtype of the frozen base weights; 'auto' is bfloat16 on a GPU that supports it (float32 under "
            "FSDP, which needs one dtype per shard) and float32 on CPU. LoRA weights stay float32."
        ),
    )

    # --- toxicity-regularised SFT (appendix J; docs/toxreg.md)
    tox_lambda: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description=(
            "λ in L = L_SFT + λ·L_tox: the weight of the straight-through toxicity penalty on rationales "
            "sampled under teacher forcing; 0 is plain SFT."
        ),
    )
    tox_scorer: str = Field(
        "profanity",
        description=(
            "Harm scorer spec (profanity, hf:MODEL[@REV][#LABEL], max(...)) that scores the sampled "
            "rationales and builds the per-token toxicity table; used only when tox_lambda > 0."
        ),
    )
    tox_sampling: Literal["sample", "argmax"] = Field(
        "sample",
        description=(
            "How the rationale is drawn at each target position: 'sample' from the student's distribution, "
            "'argmax' its most likely token; used only when tox_lambda > 0."
        ),
    )
    tox_temperature: float = Field(
        1.0,
        gt=0.0,
        allow_inf_nan=False,
        description="Temperature T of p_t = softmax(logits_t / T), for the sample and the penalty's gradient.",
    )

    # --- checkpoints
    save_every: int = Field(
        100, ge=1, description="Write a resumable checkpoint every this many optimizer steps."
    )
    keep_checkpoints: int = Field(2, ge=1, description="How many of the newest checkpoints to keep.")

    @field_validator("base")
    @classmethod
    def _base_is_local_model(cls, v: str) -> str:
        from dartkit.generate.spec import parse_spec

        spec = parse_spec(v)
        if spec.kind not in ("embedded", "hf"):
            raise ValueError(f"'{v}': only embedded or hf: models can be fine-tuned")
        if spec.adapter:
            raise ValueError(f"'{v}': give the base model alone and the adapter to continue as init_adapter")
        return v

    @field_validator("target_modules")
    @classmethod
    def _target_modules_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one module name")
        return v

    @field_validator("tox_scorer")
    @classmethod
    def _tox_scorer_is_a_spec(cls, v: str) -> str:
        from dartkit.errors import DartkitError
        from dartkit.harm.spec import parse_scorer

        try:
            parse_scorer(v)  # the grammar only; nothing is loaded
        except DartkitError as e:
            raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _penalty_needs_rationales(self) -> TrainConfig:
        if self.tox_lambda > 0 and self.label_only:
            raise ValueError(
                "`tox_lambda` penalises the toxicity of sampled rationales, but `label_only` targets are a bare "
                "'Conclusion:' line with no rationale: use one or the other"
            )
        return self

    def fingerprint(self, **extra: Any) -> str:
        """sha256 of every field that shapes the trained weights, plus ``extra`` (data hash, base identity).

        Paths and checkpoint cadence are left out: the data's content and the base's identity
        stand in for them, so moving a run directory does not invalidate it. The toxicity
        settings are left out while ``tox_lambda`` is 0, where they change nothing.
        """
        exclude = _OPERATIONAL_FIELDS | (_TOXICITY_FIELDS if self.tox_lambda == 0 else set())
        fields = self.model_dump(mode="json", exclude=exclude)
        blob = json.dumps({"config": fields, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()
