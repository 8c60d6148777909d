"""Peak memory of a whole DART run, stage by stage: the embedded default, as ``make demo`` runs it.

    .venv/bin/python benchmarks/memory.py [--config FILE] [--out DIR] [--set key=value ...]

Runs the pipeline in this process (as ``dartkit run`` does) into a fresh directory, so nothing
is served from an earlier run's caches, then prints one JSON line: each stage's peak resident
memory in MiB (the kernel's high-water mark, reset at the start of the stage; see
``dartkit.memory``), its seconds, the whole process's peak, and the versions it ran with.
Every run records the same figures in ``<run>/stages/<stage>.json`` under ``memory``.

``--set`` overrides a config field for comparison, e.g. ``--set backend.max_batch_tokens=0
--set training.per_device_batch_size=4 --set training.grad_accum=1`` gives the settings before
the memory work (add ``--set training.gradient_checkpointing=false``). The process's own peak is
the largest stage peak: resetting the high-water mark also resets what ``getrusage`` reports. Run it on an otherwise idle machine: another torch job changes the timings.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
from pathlib import Path

import yaml


def _set(cfg: dict, dotted: str, raw: str) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = yaml.safe_load(raw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="run config YAML (default: the embedded default)")
    ap.add_argument("--out", type=Path, help="keep the run here (default: a temporary directory)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    args = ap.parse_args()

    import torch
    import transformers
    from rich.console import Console

    import dartkit
    from dartkit.config import load_config
    from dartkit.pipeline import run
    from dartkit.pipeline.config import RunConfig

    raw = yaml.safe_load(args.config.read_text()) if args.config else {}
    for item in args.set:
        key, _, value = item.partition("=")
        _set(raw, key, value)
    tmp = None
    out = args.out
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="dartkit-memory-"))
        out = tmp / "run"
    elif out.exists():
        raise SystemExit(f"{out} exists: give a new directory (a resumed run would measure nothing)")
    raw["out"] = str(out)
    cfg_file = (tmp or out.parent) / "memory_benchmark_config.yaml"
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(yaml.safe_dump(raw))
    try:
        cfg = load_config(RunConfig, cfg_file)
        result = run(cfg, console=Console(stderr=True))  # stdout keeps the one JSON line
        stages = {
            name: {
                "peak_rss_mb": rec["memory"]["peak_rss_mb"],
                "scope": rec["memory"]["scope"],
                "seconds": rec["seconds"],
            }
            for name, rec in result["records"].items()
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    peaks = [s["peak_rss_mb"] for s in stages.values() if s["peak_rss_mb"] is not None]
    print(
        json.dumps(
            {
                "benchmark": "memory",
                "overrides": args.set,
                "stages": stages,
                "max_stage_peak_rss_mb": max(peaks) if peaks else None,
                "dartkit": dartkit.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "cpus": __import__("os").cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
