"""LoRA supervised fine-tuning with the loss on the assistant tokens only — DART Stages I and III.

One process (CPU or one GPU)::

    dartkit train --data runs/demo/distill/teacher.jsonl --prepared runs/demo/data --out runs/demo/distill

Several GPUs (DDP, FSDP or DeepSpeed; see ``configs/accelerate/``)::

    accelerate launch --config_file configs/accelerate/ddp.yaml -m dartkit.train \\
        --config my_train.yaml --out runs/llama/distill

The file reads top to bottom: setup (data, fingerprint, model, optimizer, resume),
train (one optimizer step = ``grad_accum`` micro-batches per process, weighted loss
from :mod:`dartkit.train.loss`, plus λ·L_tox from :mod:`dartkit.train.toxicity` when
``tox_lambda`` > 0), save (PEFT adapter + ``dartkit_adapter.json`` +
model card). Rerunning the same command after an interrupt resumes from the newest
checkpoint and ends with the same adapter; rerunning a finished run returns at once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dartkit import __version__
from dartkit.config import BackendConfig, dump_config
from dartkit.data.jsonl import write_json
from dartkit.errors import DartkitError, DataError
from dartkit.generate.adapters import ADAPTER_META, attach_adapter
from dartkit.generate.hf import load_model_and_tokenizer
from dartkit.generate.loading import hash_dir, model_location
from dartkit.generate.spec import ModelSpec, parse_spec
from dartkit.harm.spec import parse_scorer
from dartkit.manifest import write_manifest
from dartkit.progress import progress_bar
from dartkit.train.batching import MicroBatch, encode_record, plan_epoch, step_micro_batches
from dartkit.train.checkpoints import (
    latest_checkpoint,
    read_state,
    register_trainable_only_hooks,
    save_checkpoint,
)
from dartkit.train.config import TrainConfig
from dartkit.train.data import data_sha256, expand_oversampled, load_training_records
from dartkit.train.loss import micro_batch_loss, target_logits, weighted_token_loss
from dartkit.train.toxicity import ToxicityPenalty, build_penalty

StepCallback = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class StepLoss:
    """One optimizer step's loss over all its micro-batches and processes.

    Attributes:
        loss: the objective the gradient is of: ``sft_loss + λ * toxicity``.
        sft_loss: sum_i w_i * NLL_i / sum_i w_i * n_i.
        toxicity: sum_i w_i * H(r̂_i) / sum_i w_i, the weighted mean harm of the step's sampled
            rationales (the penalty's value); None without the penalty.
    """

    loss: float
    sft_loss: float
    toxicity: float | None = None


def backward_step(
    model, micro_batches: list[MicroBatch], accelerator, penalty: ToxicityPenalty | None = None
) -> StepLoss:
    """Forward and backward every micro-batch of one optimizer step; gradients end up accumulated.

    The loss denominator (sum of weight x target tokens) is summed over this
    process's micro-batches and all-reduced over processes *before* any backward
    pass. ``accelerator.backward`` divides by the accumulation steps and DDP / FSDP /
    DeepSpeed average gradients over processes; the loss is multiplied by both so
    the accumulated gradient is exactly that of the step loss.

    With a ``penalty``, each micro-batch adds ``λ * sum_i w_i * L_tox_i / sum_j w_j``, the
    denominator (sum of weights over the step) all-reduced up front the same way, so the
    penalty is a weighted mean over the step's examples whatever the micro-batching.
    Both terms come from one forward pass and the same target logits.

    Returns:
        The step's :class:`StepLoss`.
    """
    if len(micro_batches) != accelerator.gradient_accumulation_steps:
        raise ValueError(
            f"{len(micro_batches)} micro-batches for gradient_accumulation_steps="
            f"{accelerator.gradient_accumulation_steps}"
        )
    local = sum((mb.weights * mb.target_tokens).sum() for mb in micro_batches)
    denominator = accelerator.reduce(local.detach().float().to(accelerator.device), reduction="sum")
    scale = accelerator.gradient_accumulation_steps * accelerator.num_processes
    if penalty is None:
        total = torch.zeros((), device=accelerator.device)
        for mb in micro_batches:
            with accelerator.accumulate(model):
                loss = micro_batch_loss(model, mb.to(accelerator.device), denominator)
                accelerator.backward(loss * scale)
            total += loss.detach()
        _check_in_step(accelerator)
        sft = float(accelerator.reduce(total, reduction="sum"))
        return StepLoss(loss=sft, sft_loss=sft)

    local_weight = sum(mb.weights.sum() for mb in micro_batches)
    weight_sum = accelerator.reduce(local_weight.detach().float().to(accelerator.device), reduction="sum")
    totals = torch.zeros(2, device=accelerator.device)  # sft, toxicity
    for mb in micro_batches:
        with accelerator.accumulate(model):
            mb = mb.to(accelerator.device)
            logits, targets = target_logits(model, mb)
            sft = weighted_token_loss(logits, targets, mb.weights, denominator)
            l_tox, _, _ = penalty.per_example(logits, targets)
            tox = (mb.weights.to(l_tox.dtype) * l_tox).sum() / weight_sum.clamp(min=1e-12)
            accelerator.backward((sft + penalty.tox_lambda * tox) * scale)
        totals += torch.stack([sft.detach(), tox.detach()]).to(totals.dtype)
    _check_in_step(accelerator)
    sft_loss, toxicity = (float(x) for x in accelerator.reduce(totals, reduction="sum"))
    return StepLoss(loss=sft_loss + penalty.tox_lambda * toxicity, sft_loss=sft_loss, toxicity=toxicity)


def _check_in_step(accelerator) -> None:
    if not accelerator.sync_gradients:  # the accumulation counter drifted: a bug, not a user error
        raise RuntimeError("gradient accumulation is out of step with the optimizer steps")


def run(cfg: TrainConfig, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train (or resume, or skip a finished run) and write the adapter to ``<out>/adapter``.

    Args:
        cfg: The run's settings.
        on_step: Called after every optimizer step with ``(step, log_row)`` on every
            process; raising from it stops training (tests use it to simulate a kill).

    Returns:
        Metrics: steps, first/final loss, tokens, tokens/s, padding fraction, seconds, ...

    Raises:
        DataError: bad or empty training data.
        DartkitError: unusable model, adapter, chat template or output directory.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed

    started = time.time()
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, step_scheduler_with_optimizer=False)
    main = accelerator.is_main_process
    console = Console(stderr=True, quiet=not main)
    out = Path(cfg.out)

    # ---- setup: data and the run's fingerprint -------------------------------------------
    records = load_training_records(cfg.data, cfg.prepared, cfg.label_only, cfg.policy, cfg.weights_from)
    data_hash = data_sha256(records)
    spec = parse_spec(cfg.base)
    _, base_identity = model_location(spec)
    init_hash = None
    if cfg.init_adapter is not None:
        if not (Path(cfg.init_adapter) / "adapter_config.json").is_file():
            raise DartkitError(f"{cfg.init_adapter}: not a PEFT adapter directory (no adapter_config.json)")
        init_hash = hash_dir(Path(cfg.init_adapter))
    # The process count fixes the global batch, which examples each process sees and every process's
    # RNG stream; the base dtype ('auto' differs between a CPU and a GPU) changes every update. A run
    # that differs in either is another run, so neither a checkpoint nor a finished adapter carries over.
    dtype = _base_dtype(cfg, accelerator)
    setup = {"processes": accelerator.num_processes, "base_dtype": dtype}
    # The penalty's scorer identity (package versions, a hub model's resolved revision) is part of
    # the run only when the penalty acts; its weights load on first use, after the finished-run check.
    tox_scorer, tox_extra = None, {}
    if cfg.tox_lambda > 0:
        tox_scorer = parse_scorer(cfg.tox_scorer, device=str(accelerator.device))
        tox_extra = {"tox_scorer_identity": tox_scorer.identity()}
    fingerprint = cfg.fingerprint(
        data_sha256=data_hash, base=base_identity, init_adapter_sha256=init_hash, **setup, **tox_extra
    )
    done = _finished_run(out, fingerprint, setup)
    if done is not None:
        console.print(
            f"[green]{out / 'adapter'} is already trained with this config and data; nothing to do[/green]"
        )
        return done
    checkpoints = out / "checkpoints"
    latest = latest_checkpoint(checkpoints)
    resume_state = read_state(latest) if latest is not None else None
    if resume_state is not None and resume_state.get("fingerprint") != fingerprint:
        # Checked before loading any weights: for an 8B model that takes minutes.
        raise DartkitError(
            f"{latest}: checkpoint of a run with "
            + _difference(resume_state.get("setup"), setup, "resuming it")
            + f" delete {checkpoints} or use another --out"
        )

    # ---- model: base + a fresh LoRA, or the adapter to continue ------------------------------
    set_seed(cfg.seed)
    model, tokenizer = _load_student(cfg, spec, base_identity, dtype)
    lora_settings = _lora_settings(model)
    penalty, tox_table = None, None
    if tox_scorer is not None:
        # The main process builds (or reads) the cached table first; the others then read it.
        with accelerator.main_process_first():
            penalty, tox_table = build_penalty(cfg, tox_scorer, tokenizer, _vocab_size(model))
        if main and not tox_table["cached"]:
            console.print(f"per-token toxicity table for {cfg.tox_scorer} written to {tox_table['path']}")

    # ---- data: encode once (and repeat examples in oversample mode) --------------------------
    train_records = expand_oversampled(records) if cfg.weighting == "oversample" else records
    encoded = [encode_record(tokenizer, r, cfg.max_length) for r in train_records]
    skipped = sum(e is None for e in encoded)
    encoded = [e for e in encoded if e is not None]
    if not encoded:
        raise DataError(f"every training example is longer than max_length={cfg.max_length} tokens")
    if skipped:
        console.print(
            f"[yellow]skipped {skipped} example(s) longer than max_length={cfg.max_length} tokens "
            "(raise max_length to keep them)[/yellow]"
        )
    lengths = [len(e) for e in encoded]
    global_batch = cfg.per_device_batch_size * cfg.grad_accum * accelerator.num_processes
    steps_per_epoch = math.ceil(len(encoded) / global_batch)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch

    # ---- optimizer, schedule, distribution -----------------------------------------------------
    from transformers import get_cosine_schedule_with_warmup

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps
    )
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # We batch ourselves (no DataLoader), so DeepSpeed cannot infer its micro-batch size.
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            cfg.per_device_batch_size
        )
    if accelerator.distributed_type == DistributedType.FSDP and not getattr(accelerator, "is_fsdp2", False):
        # FSDP1 flattens each wrapped unit into one tensor that must be all-trainable or all-frozen;
        # PEFT's policy wraps the LoRA layers in their own units (as transformers' Trainer does).
        from peft.utils.other import fsdp_auto_wrap_policy

        accelerator.state.fsdp_plugin.auto_wrap_policy = fsdp_auto_wrap_policy(model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    register_trainable_only_hooks(accelerator)

    # ---- resume ----------------------------------------------------------------------------------
    progress_state = {"tokens": 0, "padded_tokens": 0, "train_seconds": 0.0, "first_loss": None, "loss": None}
    if penalty is not None:
        progress_state.update(
            {
                "first_sft_loss": None,
                "sft_loss": None,
                "first_toxicity": None,
                "toxicity": None,
                "toxicity_sum": 0.0,
            }
        )
    start_step = 0
    if resume_state is not None:
        accelerator.load_state(str(latest))
        start_step = int(resume_state["step"])
        progress_state.update({k: resume_state[k] for k in progress_state if k in resume_state})
        console.print(f"resuming from {latest} (step {start_step} of {total_steps})")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out / "config.yaml")
        _truncate_log(out / "train_log.jsonl", start_step)

    # ---- train -----------------------------------------------------------------------------------
    model.train()
    pad_id = tokenizer.pad_token_id
    plans: dict[int, list[list[int]]] = {}
    log_path = out / "train_log.jsonl"
    loop_started = time.time()
    seconds_before = float(progress_state["train_seconds"])
    # A bar on a terminal, a plain line every few seconds in a log file.
    with progress_bar(console, extra="loss {task.fields[loss]:.4f}", disable=not main) as progress:
        task = progress.add_task("training", total=total_steps, completed=start_step, loss=float("nan"))
        for step in range(start_step, total_steps):
            epoch, index = divmod(step, steps_per_epoch)
            if epoch not in plans:
                plans = {
                    epoch: plan_epoch(
                        lengths, global_batch, cfg.seed, epoch, cfg.group_by_length, cfg.mega_batch_steps
                    )
                }
            micro = step_micro_batches(
                plans[epoch][index],
                encoded,
                cfg.grad_accum,
                accelerator.num_processes,
                accelerator.process_index,
                pad_id,
            )
            step_loss = backward_step(model, micro, accelerator, penalty)
            loss = step_loss.loss
            grad_norm = None
            if cfg.max_grad_norm is not None:
                # The norm before clipping, over all processes (None under DeepSpeed, which clips itself).
                norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                grad_norm = None if norm is None else round(float(norm), 6)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            counts = torch.tensor(
                [sum(m.real_tokens for m in micro), sum(m.padded_tokens for m in micro)],
                device=accelerator.device,
            )
            real, padded = (int(x) for x in accelerator.reduce(counts, reduction="sum").tolist())
            progress_state["tokens"] += real
            progress_state["padded_tokens"] += padded
            progress_state["train_seconds"] = seconds_before + time.time() - loop_started
            if progress_state["first_loss"] is None:
                progress_state["first_loss"] = loss
            progress_state["loss"] = loss
            row = {
                "step": step + 1,
                "epoch": epoch,
                "loss": round(loss, 6),
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": real,
                "elapsed": round(progress_state["train_seconds"], 3),
            }
            if penalty is not None:
                row["sft_loss"] = round(step_loss.sft_loss, 6)
                row["toxicity"] = round(step_loss.toxicity, 6)
                if progress_state["first_toxicity"] is None:
                    progress_state["first_toxicity"] = step_loss.toxicity
                    progress_state["first_sft_loss"] = step_loss.sft_loss
                progress_state["toxicity"] = step_loss.toxicity
                progress_state["sft_loss"] = step_loss.sft_loss
                progress_state["toxicity_sum"] += step_loss.toxicity
            if main:
                with log_path.open("a", encoding="utf-8") as f:
                    f.write(_json_line(row))
            progress.update(task, advance=1, loss=loss)
            if (step + 1) % cfg.save_every == 0 and step + 1 < total_steps:
                save_checkpoint(
                    accelerator,
                    checkpoints,
                    step + 1,
                    {**progress_state, "fingerprint": fingerprint, "setup": setup},
                    cfg.keep_checkpoints,
                )
            if on_step is not None:
                on_step(step + 1, row)

    # ---- save ------------------------------------------------------------------------------------
    tokens, padded = progress_state["tokens"], progress_state["padded_tokens"]
    seconds = float(progress_state["train_seconds"])
    metrics = {
        "steps": total_steps,
        "resumed_from_step": start_step or None,
        "examples": len(records),
        "trained_examples": len(encoded),
        "skipped_too_long": skipped,
        "first_loss": progress_state["first_loss"],
        "final_loss": progress_state["loss"],
        "tokens": tokens,
        "padded_tokens": padded,
        "padding_fraction": padded / max(tokens + padded, 1),
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "seconds": seconds,
        "processes": accelerator.num_processes,
    }
    if penalty is not None:
        metrics.update(
            tox_lambda=cfg.tox_lambda,
            tox_scorer=cfg.tox_scorer,
            first_sft_loss=progress_state["first_sft_loss"],
            final_sft_loss=progress_state["sft_loss"],
            first_toxicity=progress_state["first_toxicity"],
            final_toxicity=progress_state["toxicity"],
            mean_toxicity=progress_state["toxicity_sum"] / max(total_steps, 1),
            tox_table=tox_table,
        )
    meta = {
        "dartkit_version": __version__,
        "base": {
            k: base_identity.get(k) for k in ("model", "revision", "weights_sha256", "chat_template_sha256")
        },
        "base_spec": cfg.base,
        "data_sha256": data_hash,
        "data_files": [str(p) for p in cfg.data],
        "num_examples": len(records),
        "num_trained_examples": len(encoded),
        "weighting": cfg.weighting,
        "weights_from": cfg.weights_from,
        "label_only": cfg.label_only,
        "init_adapter": None
        if cfg.init_adapter is None
        else {"path": str(cfg.init_adapter), "sha256": init_hash},
        "lora": lora_settings,
        "train_config": cfg.model_dump(mode="json"),
        "fingerprint": fingerprint,
        "setup": setup,
        **({"toxicity": {"scorer": tox_extra["tox_scorer_identity"], "table": tox_table}} if penalty else {}),
        "steps": total_steps,
        "final_loss": progress_state["loss"],
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _save_adapter(accelerator, model, out / "adapter", meta)
    if main:
        write_json(out / "metrics.json", metrics)
        write_manifest(
            out,
            "train",
            cfg.model_dump(mode="json"),
            {"base": base_identity, "init_adapter": meta["init_adapter"]},
            {"train": seconds, "total": time.time() - started},
            data_sha256=data_hash,
        )
        console.print(
            f"[green]adapter saved to {out / 'adapter'}[/green]: {total_steps} steps, final loss "
            f"{metrics['final_loss']:.4f}, {metrics['tokens_per_s'] or 0:.0f} tokens/s, "
            f"padding {metrics['padding_fraction']:.1%}"
        )
    accelerator.wait_for_everyone()
    return metrics


def _finished_run(out: Path, fingerprint: str, setup: dict[str, Any]) -> dict[str, Any] | None:
    """The stored metrics when ``out`` holds a finished run with this fingerprint.

    Raises:
        DartkitError: ``out`` holds an adapter from a different config, data, base, process
            count or base dtype (the message names the last two when they are the difference).
    """
    meta_path = out / "adapter" / ADAPTER_META
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("fingerprint") != fingerprint:
        raise DartkitError(
            f"{out / 'adapter'} was trained by a run with "
            + _difference(meta.get("setup"), setup, "keeping it")
            + " use another --out, or delete that adapter to retrain"
        )
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    return {**metrics, "skipped": True}


def _difference(before: dict[str, Any] | None, now: dict[str, Any], action: str) -> str:
    """What differs between a stored run and this one, and why that matters, for an error message."""
    before = before or {}  # written before dartkit recorded the setup: only the generic message
    parts = []
    if before and before.get("processes") != now["processes"]:
        parts.append(f"{before.get('processes')} process(es) (this run has {now['processes']})")
    if before and before.get("base_dtype") != now["base_dtype"]:
        parts.append(f"base weights in {before.get('base_dtype')} (this run: {now['base_dtype']})")
    if not parts:
        return "a different config, data or base model;"
    return (
        " and ".join(parts)
        + f": the process count sets the global batch, which examples each process sees and its random "
        f"stream, and the dtype every update, so {action} would not give the adapter this run trains; "
        f"run again with {before.get('processes')} process(es) and dtype {before.get('base_dtype')}, or"
    )


def _base_dtype(cfg: TrainConfig, accelerator) -> str:
    from accelerate.utils import DistributedType

    if cfg.dtype != "auto":
        return cfg.dtype
    if accelerator.device.type == "cuda" and torch.cuda.is_bf16_supported():
        # FSDP1 shards flatten parameters of one dtype; fp32 weights with bf16 autocast keep them uniform.
        return "float32" if accelerator.distributed_type == DistributedType.FSDP else "bfloat16"
    return "float32"


def _load_student(cfg: TrainConfig, spec: ModelSpec, base_identity: dict[str, Any], dtype: str):
    """The base model wrapped with a trainable LoRA (new, or ``cfg.init_adapter``) and its tokenizer."""
    from peft import LoraConfig, get_peft_model

    # Load on CPU: under `accelerate launch` every process would otherwise first place its copy on cuda:0.
    model, tokenizer, _ = load_model_and_tokenizer(
        spec, BackendConfig(device="cpu", dtype=dtype), for_training=True
    )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if cfg.init_adapter is not None:
        model, _ = attach_adapter(model, Path(cfg.init_adapter), base_identity, trainable=True)
    else:
        targets = "all-linear" if cfg.target_modules == ["all-linear"] else list(cfg.target_modules)
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            model = get_peft_model(model, lora)
        except ValueError as e:
            raise DartkitError(f"target_modules {cfg.target_modules}: {str(e).splitlines()[0]}") from None
    if not any(p.requires_grad for p in model.parameters()):
        raise DartkitError("the model has no trainable parameters (is the adapter loaded as trainable?)")
    return model, tokenizer


def _vocab_size(model) -> int:
    """Width of the student's logits (may exceed the tokenizer's vocabulary when padded)."""
    head = model.get_output_embeddings()
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


def _lora_settings(model) -> dict[str, Any]:
    """The LoRA hyper-parameters actually in use (an init adapter brings its own)."""
    peft_cfg = model.peft_config["default"]
    targets = peft_cfg.target_modules
    return {
        "r": peft_cfg.r,
        "alpha": peft_cfg.lora_alpha,
        "dropout": peft_cfg.lora_dropout,
        "target_modules": sorted(targets) if isinstance(targets, (set, list)) else targets,
    }


def _save_adapter(accelerator, model, adapter_dir: Path, meta: dict[str, Any]) -> None:
    """PEFT adapter + metadata + model card, renamed into place only when complete."""
    partial = adapter_dir.parent / f".{adapter_dir.name}.partial"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    # get_state_dict gathers sharded (FSDP / ZeRO-3) weights; every process must call it.
    state_dict = accelerator.get_state_dict(model)
    accelerator.unwrap_model(model).save_pretrained(
        str(partial), is_main_process=main, save_function=accelerator.save, state_dict=state_dict
    )
    if main:
        (partial / "README.md").write_text(_model_card(meta), encoding="utf-8")
        # Written last: its presence marks a complete adapter.
        (partial / ADAPTER_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        shutil.rmtree(adapter_dir, ignore_errors=True)
        os.replace(partial, adapter_dir)
    accelerator.wait_for_everyone()


def _model_card(meta: dict[str, Any]) -> str:
    base = meta["base"]
    lora = meta["lora"]
    cfg = meta["train_config"]
    spec = meta["base_spec"]
    return f"""# dartkit LoRA adapter

LoRA adapter trained by dartkit {meta["dartkit_version"]} (DART: Distill-Audit-Repair Training).

| | |
|---|---|
| base model | `{base["model"]}` (revision `{base["revision"]}`, weights sha256 `{base["weights_sha256"]}`) |
| training data | {meta["num_examples"]} examples, sha256 `{meta["data_sha256"]}` |
| targets | {"labels only (`Conclusion: YES/NO`)" if meta["label_only"] else "rationale + conclusion"} |
| example weights | {meta["weights_from"] or "none"} (mode: {meta["weighting"]}) |
| LoRA | r {lora["r"]}, alpha {lora["alpha"]}, dropout {lora["dropout"]}, modules {lora["target_modules"]} |
| optimisation | lr {cfg["learning_rate"]} cosine, warmup {cfg["warmup_ratio"]}, {meta["steps"]} steps |
| final loss | {meta["final_loss"]:.4f} |
| continued from | {meta["init_adapter"]["path"] if meta["init_adapter"] else "a fresh LoRA"} |
{_toxicity_row(cfg)}
The loss covers the assistant tokens only (prompt masked), including the end-of-turn token.
`{ADAPTER_META}` records all settings; dartkit refuses to load this adapter onto another base.

Use it:

    dartkit eval --model "{spec}+adapter=<this directory>" --data <prepared data> --split test --out <dir>
"""


def _toxicity_row(cfg: dict[str, Any]) -> str:
    if not cfg.get("tox_lambda"):
        return ""
    return (
        f"| toxicity penalty | λ {cfg['tox_lambda']}, scorer `{cfg['tox_scorer']}`, "
        f"{cfg['tox_sampling']} at temperature {cfg['tox_temperature']} (docs/toxreg.md) |\n"
    )


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step``: a resumed run rewrites the steps done since its checkpoint."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = []
    for line in keep:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a kill
    path.write_text("".join(kept), encoding="utf-8")


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row) + "\n"
