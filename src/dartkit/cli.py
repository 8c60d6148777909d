"""The ``dartkit`` command line. Each subcommand loads a config and calls one stage's ``run()``.

dartkit data prepare --suite demo --out runs/demo/data
dartkit eval --model embedded --data runs/demo/data --split test --out runs/demo/baseline
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path

import typer

from dartkit.config import ConfigError, DistillConfig, EvalConfig, load_config
from dartkit.data.cli import data_app
from dartkit.errors import DartkitError
from dartkit.generate.base import BackendError
from dartkit.generate.spec import SpecError
from dartkit.train.cli import train_command

app = typer.Typer(
    help="DART: distill rationales, audit harm drift, repair. Every command has --help.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data", help="Turn benchmark files into train/val/test splits.")
app.command(
    "train", help="LoRA SFT of a student on rationales (or labels), with exact per-example loss weights."
)(train_command)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit (no traceback: the input was wrong, not the code)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn errors caused by input or environment into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DartkitError, ConfigError, SpecError, BackendError) as e:
            fail(str(e))
        except KeyboardInterrupt:
            typer.echo(
                "interrupted: finished generations are cached; rerun the same command to continue", err=True
            )
            sys.exit(130)

    return wrapper


class PolicyChoice(str, Enum):
    off = "off"
    on = "on"


class SplitChoice(str, Enum):
    train = "train"
    val = "val"
    test = "test"


@app.command("eval")
@user_errors
def eval_command(
    model: str = typer.Option(
        None,
        "--model",
        help="Model spec: embedded, hf:ID\\[@REV]\\[+adapter=DIR], openai:MODEL@URL, dummy:MODE. Default: embedded.",
    ),
    data: Path = typer.Option(
        None, "--data", help="Directory with train/val/test.jsonl from `dartkit data prepare`."
    ),
    split: SplitChoice = typer.Option(None, "--split", help="Split to answer (default: test)."),
    out: Path = typer.Option(None, "--out", help="Output directory for generations.jsonl and metrics.json."),
    policy: PolicyChoice = typer.Option(
        None, "--policy", help="Inference-time explanation policy (default: off)."
    ),
    limit: int = typer.Option(
        None, "--limit", min=1, help="Answer only the first N items, in a fixed stratified order."
    ),
    seed: int = typer.Option(None, "--seed", help="Sampling seed (matters only with --temperature > 0)."),
    temperature: float = typer.Option(None, "--temperature", min=0.0, help="0 = greedy (default)."),
    max_new_tokens: int = typer.Option(
        None, "--max-new-tokens", min=1, help="Longest answer in tokens (default 192)."
    ),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="hf backend batch size (default 16)."),
    device: str = typer.Option(None, "--device", help="hf backend device: auto, cpu, cuda, mps."),
    cache: Path = typer.Option(None, "--cache", help="Generation cache file (default <out>/cache.jsonl)."),
    api_key_env: str = typer.Option(
        None,
        "--api-key-env",
        help="openai backend: environment variable holding the API key (default OPENAI_API_KEY).",
    ),
    concurrency: int = typer.Option(
        None, "--concurrency", min=1, help="openai backend: requests in flight (default 8)."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML file with EvalConfig fields; flags override it."
    ),
) -> None:
    """Answer one split with one model and report difference-awareness accuracy."""
    from dartkit.stages import evaluate

    overrides = {
        "model": model,
        "data": data,
        "split": split.value if split else None,
        "out": out,
        "policy": policy.value if policy else None,
        "limit": limit,
        "decoding.seed": seed,
        "decoding.temperature": temperature,
        "decoding.max_new_tokens": max_new_tokens,
        "backend.batch_size": batch_size,
        "backend.device": device,
        "cache": cache,
        "backend.api_key_env": api_key_env,
        "backend.concurrency": concurrency,
    }
    cfg = load_config(EvalConfig, config, overrides)
    evaluate.run(cfg)


@app.command("distill")
@user_errors
def distill_command(
    data: Path = typer.Option(None, "--data", help="Prepared data directory; its train split is distilled."),
    teacher: str = typer.Option(
        None,
        "--teacher",
        help="Teacher spec (embedded, hf:..., openai:MODEL@URL) or file:PATH (JSONL id -> text). Default: embedded.",
    ),
    out: Path = typer.Option(
        None, "--out", help="Output directory (teacher.jsonl, train/, eval_val/, metrics.json)."
    ),
    student: str = typer.Option(None, "--student", help="Student base model spec (default: embedded)."),
    judge: str = typer.Option(
        None,
        "--judge",
        help="Judge model spec for the rationale consistency check (default: built-in rules).",
    ),
    limit: int = typer.Option(
        None, "--limit", min=1, help="Distill only the first N training items (stratified order)."
    ),
    no_train: bool = typer.Option(
        False, "--no-train", help="Only write teacher.jsonl; do not train or evaluate M_int."
    ),
    max_fix_attempts: int = typer.Option(
        None, "--max-fix-attempts", min=0, help="Format-fix follow-ups per failing rationale (default 2)."
    ),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="hf backend batch size."),
    api_key_env: str = typer.Option(
        None, "--api-key-env", help="openai backend: environment variable with the API key."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML file with DistillConfig fields; flags override it."
    ),
) -> None:
    """Stage I: teacher rationales for the gold labels (with QC), then train and evaluate M_int."""
    from dartkit.stages import distill

    overrides = {
        "data": data,
        "teacher": teacher,
        "out": out,
        "student": student,
        "judge": judge,
        "limit": limit,
        "train": False if no_train else None,
        "qc.max_fix_attempts": max_fix_attempts,
        "backend.batch_size": batch_size,
        "backend.api_key_env": api_key_env,
    }
    cfg = load_config(DistillConfig, config, overrides)
    distill.run(cfg)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
