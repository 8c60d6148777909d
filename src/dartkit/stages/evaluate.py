"""Evaluation: one model answers one split; answers are parsed and scored.

    dartkit eval --model embedded --data runs/demo/data --split test --out runs/demo/baseline

Writes ``generations.jsonl`` (one line per item), ``metrics.json``,
``config.yaml`` and ``manifest.json`` in the output directory. Generations go
through the content-addressed cache, so an interrupted evaluation resumes and a
finished one reruns in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dartkit.config import DecodingConfig, EvalConfig, dump_config
from dartkit.data.jsonl import write_json, write_jsonl
from dartkit.data.prepare import load_split
from dartkit.data.splits import stratified_order
from dartkit.generate import Backend, load_backend
from dartkit.generate.cache import GenerationCache, served_versions
from dartkit.manifest import write_manifest
from dartkit.parse import is_refusal, parse_conclusion
from dartkit.progress import generate_with_progress, results_console
from dartkit.prompts import Policy, classification_messages, render_messages
from dartkit.records import Example, Generation
from dartkit.stats.metrics import evaluation_metrics, finish_counts


def answer_examples(
    examples: Sequence[Example],
    backend: Backend,
    decoding: DecodingConfig,
    cache: GenerationCache,
    policy: Policy = "off",
    description: str = "answering",
) -> list[Generation]:
    """Ask ``backend`` to classify every example (cached) and parse the answers."""
    conversations = [classification_messages(e, policy) for e in examples]
    texts, keys = generate_with_progress(backend, conversations, decoding, cache, description)
    gens = []
    for e, m, text, key in zip(examples, conversations, texts, keys, strict=True):
        gens.append(
            Generation(
                id=e.id,
                model=backend.spec,
                prompt=render_messages(m),
                text=text,
                conclusion=parse_conclusion(text),
                refusal=is_refusal(text),
                gold=e.label,
                benchmark=e.benchmark,
                cache_key=key,
                # Metrics and audits resample whole groups for their intervals: the split group
                # (scenario + twin questions) when the data has one, else the scenario.
                scenario_key=e.group_key or e.scenario_key,
                # Truncated / filtered marks and the server's model and build, when the backend gave them.
                **cache.info(key),
            )
        )
    return gens


def select_examples(data: Path, split: str, limit: int | None) -> list[Example]:
    """The split's items in the fixed stratified order, cut to ``limit``."""
    ordered = stratified_order(load_split(data, split))
    return ordered[:limit] if limit else ordered


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def metrics_table(metrics: dict, title: str) -> Table:
    """Overall and per-benchmark metrics as a rich table (percentages)."""
    table = Table(title=title)
    for col in ("set", "n", "acc", "95% CI", "NO", "YES", "said YES", "unparsed", "refused", "F1"):
        table.add_column(col, justify="right" if col != "set" else "left", no_wrap=True)
    table.caption = (
        "acc: accuracy; NO / YES: accuracy on gold-NO / gold-YES items; F1: macro-F1; "
        f"95% CI: {metrics.get('ci_method') or '-'}"
    )
    rows = [("all", metrics), *metrics.get("per_benchmark", {}).items()]
    for name, m in rows:
        ci = m.get("accuracy_ci95")
        table.add_row(
            name,
            str(m["n"]),
            _fmt(m["accuracy"]),
            f"{_fmt(ci[0])}–{_fmt(ci[1])}" if ci else "-",
            _fmt(m["accuracy_equal"]),
            _fmt(m["accuracy_diff"]),
            _fmt(m["yes_rate"]),
            _fmt(m["unparseable_rate"]),
            _fmt(m["refusal_rate"]),
            _fmt(m["macro_f1"]),
        )
    return table


def run(cfg: EvalConfig, console: Console | None = None) -> dict:
    """Evaluate ``cfg.model`` on ``cfg.split`` of ``cfg.data``; returns the metrics."""
    console = console or results_console()
    t0 = time.perf_counter()
    examples = select_examples(cfg.data, cfg.split, cfg.limit)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    cache = GenerationCache(cfg.cache or out / "cache.jsonl")
    backend = load_backend(cfg.model, cfg.backend)
    try:
        t1 = time.perf_counter()
        gens = answer_examples(
            examples, backend, cfg.decoding, cache, cfg.policy, description=f"eval {cfg.split}"
        )
        t2 = time.perf_counter()
        identity = backend.identity()
    finally:
        backend.close()
    write_jsonl(out / "generations.jsonl", gens)
    metrics = evaluation_metrics(gens, cfg.bootstrap_samples, seed=cfg.decoding.seed)
    metrics.update(finish_counts(gens))
    versions = served_versions(cache, [g.cache_key for g in gens if g.cache_key])
    if versions:
        metrics["served_versions"] = versions  # more than one: the server changed during this evaluation
    metrics.update(model=cfg.model, split=cfg.split, policy=cfg.policy, data=str(cfg.data))
    write_json(out / "metrics.json", metrics)
    write_manifest(
        out,
        command="eval",
        config=cfg.model_dump(mode="json"),
        models={"model": identity},
        timings={"total": time.perf_counter() - t0, "generation": t2 - t1},
        n_items=len(gens),
    )
    console.print(metrics_table(metrics, f"{cfg.model} on {cfg.split} (policy {cfg.policy}), % of items"))
    if metrics["n_truncated"] or metrics["n_filtered"]:
        console.print(
            f"[yellow]{metrics['n_truncated']} answer(s) cut at max_new_tokens={cfg.decoding.max_new_tokens}, "
            f"{metrics['n_filtered']} filtered by the server (counted as given)[/yellow]"
        )
    if len(versions) > 1:
        console.print(
            f"[yellow]answers came from {len(versions)} server versions: see served_versions[/yellow]"
        )
    console.print(f"results: {out / 'metrics.json'}  answers: {out / 'generations.jsonl'}")
    return metrics
