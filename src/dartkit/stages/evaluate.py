"""Evaluation: one model answers one split; answers are parsed and scored.

    dartkit eval --model embedded --data runs/demo/data --split test --out runs/demo/baseline

Writes ``generations.jsonl`` (one line per item), ``metrics.json``,
``config.yaml`` and ``manifest.json`` in the output directory. Generations go
through the content-addressed cache, so an interrupted evaluation resumes and a
finished one reruns in seconds.

Answer modes. ``generate`` reads the ``Conclusion: YES|NO`` line the model wrote.
``loglik`` (``--answer-mode loglik``) scores ``"Conclusion: YES"`` against
``"Conclusion: NO"`` as continuations of the model's own analysis (or of the bare
prompt, ``--loglik-context prompt``) and takes the likelier: a small model that
never writes the line still gets an answer. Whenever the options are scored
(loglik, or ``score_options``), each generation keeps both answers and
``metrics.json`` holds both modes' metrics under ``answer_modes``; its top level
holds the metrics of the evaluation's own mode.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

from dartkit.config import DecodingConfig, EvalConfig, dump_config
from dartkit.data.jsonl import write_json, write_jsonl
from dartkit.data.prepare import load_split
from dartkit.data.splits import stratified_order
from dartkit.generate import Backend, load_backend
from dartkit.generate.base import OptionLogprobs
from dartkit.generate.cache import GenerationCache, served_versions
from dartkit.generate.scoring import CONCLUSION_OPTIONS, score_options_cached
from dartkit.manifest import write_manifest
from dartkit.parse import is_refusal, parse_conclusion, split_analysis
from dartkit.progress import generate_with_progress, progress_bar, results_console
from dartkit.prompts import Policy, classification_messages, render_messages
from dartkit.records import Example, Generation, Label
from dartkit.stats.metrics import evaluation_metrics, finish_counts

AnswerMode = Literal["generate", "loglik"]
LoglikContext = Literal["analysis", "prompt"]


def loglik_prefix(text: str, context: LoglikContext) -> str:
    """The assistant text the conclusion options are scored after.

    ``analysis``: the model's answer before its last conclusion line (all of it when it wrote
    none) and a newline, so the option starts the next line as the format asks; nothing when
    the answer is empty. ``prompt``: nothing, the options directly follow the prompt.
    """
    if context == "prompt":
        return ""
    analysis = split_analysis(text)
    return f"{analysis}\n" if analysis else ""


def likelier_option(scores: OptionLogprobs) -> Label | None:
    """YES or NO, whichever conclusion option has the higher log-probability (YES on a tie).

    A ``None`` score (a server ranked that option below its alternatives) loses to any number.
    """
    yes, no = scores.get(CONCLUSION_OPTIONS["YES"]), scores.get(CONCLUSION_OPTIONS["NO"])
    if yes is None and no is None:
        return None
    if no is None:
        return "YES"
    if yes is None:
        return "NO"
    return "YES" if yes >= no else "NO"


def score_conclusions(
    backend: Backend,
    conversations: Sequence[list[dict[str, str]]],
    texts: Sequence[str],
    cache: GenerationCache,
    context: LoglikContext = "analysis",
    description: str = "scoring",
) -> list[OptionLogprobs]:
    """Log-probabilities of both conclusion options for every answered conversation (cached)."""
    prefixes = [loglik_prefix(t, context) for t in texts]
    options = list(CONCLUSION_OPTIONS.values())
    with progress_bar() as progress:
        task = progress.add_task(f"{description} ({backend.spec})", total=len(conversations))
        scores, _ = score_options_cached(
            backend, conversations, prefixes, options, cache, lambda k: progress.advance(task, k)
        )
    return scores


def answer_examples(
    examples: Sequence[Example],
    backend: Backend,
    decoding: DecodingConfig,
    cache: GenerationCache,
    policy: Policy = "off",
    description: str = "answering",
    answer_mode: AnswerMode = "generate",
    loglik_context: LoglikContext = "analysis",
    score_options: bool = False,
) -> list[Generation]:
    """Ask ``backend`` to classify every example (cached) and read the answers.

    Args:
        examples: The items to answer.
        backend: The model.
        decoding: Decoding settings of the written answers.
        cache: Generation cache; option scores are cached in it too.
        policy: Inference-time explanation policy.
        description: Progress label.
        answer_mode: Which answer ``Generation.conclusion`` holds: the parsed written one
            (``generate``) or the likelier conclusion option (``loglik``).
        loglik_context: What the options are scored after (see :func:`loglik_prefix`).
        score_options: Score the options under ``generate`` too (always done under ``loglik``).
    """
    conversations = [classification_messages(e, policy) for e in examples]
    texts, keys = generate_with_progress(backend, conversations, decoding, cache, description)
    scored = answer_mode == "loglik" or score_options
    scores: list[OptionLogprobs | None] = [None] * len(texts)
    if scored:
        scores = list(
            score_conclusions(
                backend, conversations, texts, cache, loglik_context, f"{description}: scoring options"
            )
        )
    gens = []
    for e, m, text, key, option_scores in zip(examples, conversations, texts, keys, scores, strict=True):
        generated = parse_conclusion(text)
        loglik: dict = {}
        if option_scores is not None:
            loglik = {
                "loglik_yes": option_scores.get(CONCLUSION_OPTIONS["YES"]),
                "loglik_no": option_scores.get(CONCLUSION_OPTIONS["NO"]),
                "loglik_context": loglik_context,
                "loglik_choice": likelier_option(option_scores),
            }
        gens.append(
            Generation(
                id=e.id,
                model=backend.spec,
                prompt=render_messages(m),
                text=text,
                conclusion=loglik["loglik_choice"] if answer_mode == "loglik" else generated,
                answer_mode=answer_mode,
                generated_conclusion=generated,
                **loglik,
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


def answer_mode_metrics(gens: Sequence[Generation], n_resamples: int = 2000, seed: int = 0) -> dict:
    """Both answer modes' metrics side by side, for generations whose options were scored.

    Returns:
        ``{"generate": metrics, "loglik": metrics, "agreement": {...}}``: each metrics dict is what
        :func:`~dartkit.stats.metrics.evaluation_metrics` returns with ``conclusion`` read as the
        written conclusion or as the likelihood choice; ``agreement`` counts the items with a
        written conclusion (``n``) and the share of them where the likelihood choice is the same
        (``rate``, None when there are none).
    """
    written = [g.model_copy(update={"conclusion": g.generated_conclusion}) for g in gens]
    chosen = [g.model_copy(update={"conclusion": g.loglik_choice}) for g in gens]
    parsed = [g for g in gens if g.generated_conclusion is not None]
    agree = sum(g.generated_conclusion == g.loglik_choice for g in parsed)
    return {
        "generate": evaluation_metrics(written, n_resamples, seed),
        "loglik": evaluation_metrics(chosen, n_resamples, seed),
        "agreement": {"n": len(parsed), "rate": agree / len(parsed) if parsed else None},
    }


def _other_mode_line(by_mode: dict, shown: AnswerMode, context: LoglikContext) -> str:
    """One console line with the accuracy of the answer mode the table does not show."""
    other: AnswerMode = "generate" if shown == "loglik" else "loglik"
    m = by_mode[other]
    ci = m.get("accuracy_ci95")
    name = (
        "written conclusions (generate)"
        if other == "generate"
        else f"likelihood choice after the {context} (loglik)"
    )
    agreement = by_mode["agreement"]
    agree = (
        f"; the two agree on {_fmt(agreement['rate'])}% of the {agreement['n']} parseable answers"
        if agreement["rate"] is not None
        else ""
    )
    return (
        f"{name}: accuracy {_fmt(m['accuracy'])}%"
        + (f" ({_fmt(ci[0])}–{_fmt(ci[1])})" if ci else "")
        + f", NO {_fmt(m['accuracy_equal'])}%, YES {_fmt(m['accuracy_diff'])}%, unparsed {_fmt(m['unparseable_rate'])}%"
        + agree
    )


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
            examples,
            backend,
            cfg.decoding,
            cache,
            cfg.policy,
            description=f"eval {cfg.split}",
            answer_mode=cfg.answer_mode,
            loglik_context=cfg.loglik_context,
            score_options=cfg.score_options,
        )
        t2 = time.perf_counter()
        identity = backend.identity()
    finally:
        backend.close()
    write_jsonl(out / "generations.jsonl", gens)
    metrics = evaluation_metrics(gens, cfg.bootstrap_samples, seed=cfg.decoding.seed)
    metrics["answer_mode"] = cfg.answer_mode
    if cfg.scores_options:
        metrics["loglik_context"] = cfg.loglik_context
        metrics["answer_modes"] = answer_mode_metrics(gens, cfg.bootstrap_samples, seed=cfg.decoding.seed)
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
    mode = cfg.answer_mode + (f" after the {cfg.loglik_context}" if cfg.answer_mode == "loglik" else "")
    console.print(
        metrics_table(
            metrics, f"{cfg.model} on {cfg.split} (policy {cfg.policy}, answers: {mode}), % of items"
        )
    )
    if cfg.scores_options:
        console.print(_other_mode_line(metrics["answer_modes"], cfg.answer_mode, cfg.loglik_context))
    if metrics["n_truncated"] or metrics["n_filtered"] or metrics.get("n_refused"):
        console.print(
            f"[yellow]{metrics['n_truncated']} answer(s) cut at max_new_tokens={cfg.decoding.max_new_tokens}, "
            f"{metrics['n_filtered']} filtered by the server, {metrics.get('n_refused', 0)} sent as the "
            "server's refusal (counted as given)[/yellow]"
        )
    if len(versions) > 1:
        console.print(
            f"[yellow]answers came from {len(versions)} server versions: see served_versions[/yellow]"
        )
    console.print(f"results: {out / 'metrics.json'}  answers: {out / 'generations.jsonl'}")
    return metrics
