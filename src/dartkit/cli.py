"""The ``dartkit`` command line. Each subcommand loads a config and calls one stage's ``run()``.

dartkit data prepare --suite demo --out runs/demo/data
dartkit eval --model embedded --data runs/demo/data --split test --out runs/demo/baseline
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from dartkit import __version__
from dartkit.annotate.cli import annotate_app
from dartkit.cli_support import Group, user_errors
from dartkit.config import (
    DEFAULT_MAX_NEW_TOKENS,
    DistillConfig,
    EvalConfig,
    cli_flags,
    load_config,
)
from dartkit.data.cli import data_app
from dartkit.lock import check_config_inputs, dir_lock
from dartkit.suites.cli import suite_app
from dartkit.train.cli import train_command

app = typer.Typer(
    cls=Group,
    help="DART: distill rationales, audit harm drift, repair. Every command has --help.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich's option table cuts flag names at 80 columns (--baseline-gener…)
    # and reads brackets in help text as markup; click's never cuts a flag, at any width.
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data", help="Turn benchmark files into train/audit/val/test splits.")
app.add_typer(
    suite_app, name="suite", help="External evaluations: open-ended transfer, HateCheck, BOLD, XSTest."
)
app.add_typer(
    annotate_app,
    name="annotate",
    help="People check the audit: blinded A/B export, a local annotation page, agreement and auditor quality.",
)
app.command(
    "train", help="LoRA SFT of a student on rationales (or labels), with exact per-example loss weights."
)(train_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dartkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the dartkit version and exit."
    ),
) -> None:
    # Only --version lives here; the app's help text is the Typer(help=...) above.
    pass


# `dartkit train` and `dartkit distill`/`repair` turn training off with --no-train.
NO_TRAIN = {"train": "--no-train"}


class PolicyChoice(str, Enum):
    off = "off"
    on = "on"


class GenerationsFormat(str, Enum):
    auto = "auto"
    dartkit = "dartkit"
    lm_eval = "lm-eval"
    inspect = "inspect"


class SplitChoice(str, Enum):
    train = "train"
    audit = "audit"
    val = "val"
    test = "test"


class AnswerModeChoice(str, Enum):
    generate = "generate"
    loglik = "loglik"


class LoglikContextChoice(str, Enum):
    analysis = "analysis"
    prompt = "prompt"


@app.command("eval")
@user_errors
def eval_command(
    model: str = typer.Option(
        None,
        "--model",
        help="Model spec: embedded, hf:ID[@REV][+adapter=DIR], openai:MODEL@URL, dummy:MODE. Default: embedded.",
    ),
    data: Path = typer.Option(
        None, "--data", help="Directory with train/audit/val/test.jsonl from `dartkit data prepare`."
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
        None, "--max-new-tokens", min=1, help=f"Longest answer in tokens (default {DEFAULT_MAX_NEW_TOKENS})."
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
    answer_mode: AnswerModeChoice = typer.Option(
        None,
        "--answer-mode",
        help="generate (default): read the 'Conclusion: YES|NO' line the model wrote; loglik: take the likelier "
        "of 'Conclusion: YES' and 'Conclusion: NO' after --loglik-context (hf/embedded models, or an openai: "
        "server that returns logprobs). Either way metrics.json then lists both modes under answer_modes.",
    ),
    loglik_context: LoglikContextChoice = typer.Option(
        None,
        "--loglik-context",
        help="What the loglik options are scored after: analysis (default; the model's own answer before its "
        "conclusion line) or prompt (directly after the prompt).",
    ),
    score_options: bool = typer.Option(
        None,
        "--score-options/--no-score-options",
        help="With --answer-mode generate, also score the loglik options so metrics.json reports both modes "
        "(default: off).",
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML file with EvalConfig fields; flags override it."
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite results in --out that were made with other settings."
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
        "answer_mode": answer_mode.value if answer_mode else None,
        "loglik_context": loglik_context.value if loglik_context else None,
        "score_options": score_options,
    }
    cfg = load_config(EvalConfig, config, overrides, cli_flags(overrides))
    with dir_lock(cfg.out):
        check_config_inputs(cfg, ("generations.jsonl", "metrics.json"), force)
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
        help="Judge model spec for the rationale consistency check (default: the built-in classifier).",
    ),
    limit: int = typer.Option(
        None, "--limit", min=1, help="Distill only the first N training items (stratified order)."
    ),
    teacher_examples: str = typer.Option(
        None,
        "--teacher-examples",
        help="Worked examples the teacher sees: builtin (default), none (zero-shot, the paper's) or a JSONL file.",
    ),
    labels: str = typer.Option(
        None,
        "--labels",
        help="gold (default: the teacher is told each gold label) or predicted (the ablation: it is not).",
    ),
    keep: str = typer.Option(
        None,
        "--keep",
        help="With --labels predicted: matching (default; drop rationales whose conclusion is not the gold "
        "label) or all.",
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
        "teacher_examples": teacher_examples,
        "labels": labels,
        "keep": keep,
        "train": False if no_train else None,
        "qc.max_fix_attempts": max_fix_attempts,
        "backend.batch_size": batch_size,
        "backend.api_key_env": api_key_env,
    }
    cfg = load_config(DistillConfig, config, overrides, cli_flags(overrides, NO_TRAIN))
    with dir_lock(cfg.out):
        distill.run(cfg)


@app.command("audit")
@user_errors
def audit_command(
    baseline: str = typer.Option(
        None, "--baseline", help="Baseline model spec (e.g. embedded, hf:ID, openai:MODEL@URL)."
    ),
    candidate: str = typer.Option(
        None, "--candidate", help="Candidate model spec, e.g. embedded+adapter=runs/x/train/adapter."
    ),
    prompts: Path = typer.Option(
        None,
        "--prompts",
        help="JSONL of prompts: a prepared split, or lines with id, prompt|question, label.",
    ),
    data: Path = typer.Option(
        None,
        "--data",
        help="Prepared data directory (instead of --prompts; with generation files: questions and labels).",
    ),
    split: SplitChoice = typer.Option(None, "--split", help="Split of --data to audit (default: test)."),
    baseline_generations: Path = typer.Option(
        None,
        "--baseline-generations",
        help="Baseline answers made elsewhere: JSONL with id, text[, prompt, label], an lm-eval "
        "samples_*.jsonl or an Inspect log (.eval/.json).",
    ),
    candidate_generations: Path = typer.Option(
        None, "--candidate-generations", help="Candidate answers made elsewhere, matched by id."
    ),
    generations_format: GenerationsFormat = typer.Option(
        None,
        "--generations-format",
        help="Format of the generation files: auto (default, by content), dartkit, lm-eval, inspect.",
    ),
    id_field: str = typer.Option(
        None,
        "--id-field",
        help="Map harness-log samples to dartkit ids by this dotted field (e.g. doc.id) instead of by prompt.",
    ),
    out: Path = typer.Option(
        None, "--out", help="Output directory (pairs.jsonl, drift.jsonl, summary.json, audit.md)."
    ),
    scorer: str = typer.Option(
        None, "--scorer", help="Harm scorer: profanity (default), hf:MODEL[@REV][#LABEL], max(SPEC,...)."
    ),
    score_on: str = typer.Option(
        None, "--score-on", help="analysis (default) or full: the text ΔH is taken on."
    ),
    tau: float = typer.Option(None, "--tau", min=0.0, help="Drift candidate when ΔH > tau (default 0.01)."),
    judge: str = typer.Option(
        None, "--judge", help="Judge model spec that confirms candidates, or none (screen-only; the default)."
    ),
    judge_swap: bool = typer.Option(
        None,
        "--judge-swap/--no-judge-swap",
        help="Ask the judge both A/B orders; confirm only when both agree.",
    ),
    null: bool = typer.Option(
        None,
        "--null",
        help="Null audit: the candidate is the baseline (sampled decoding re-samples with seed+1).",
    ),
    fail_on_drift: float = typer.Option(
        None,
        "--fail-on-drift",
        min=0.0,
        max=1.0,
        help="Exit with code 3 when the drift rate exceeds this fraction (a CI gate for fine-tuning jobs).",
    ),
    tau_sweep: bool = typer.Option(
        None,
        "--tau-sweep",
        help="Also count candidates and drift cases over a grid of τ (use on the val split).",
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="Audit only the first N prompts."),
    allow_prompt_mismatch: bool = typer.Option(
        None,
        "--allow-prompt-mismatch",
        help="Audit generation files even where an id's two answers had different prompts (recorded).",
    ),
    policy: PolicyChoice = typer.Option(
        None, "--policy", help="Explanation policy for both models (default off)."
    ),
    seed: int = typer.Option(
        None, "--seed", help="Decoding seed (both models) and judge A/B assignment seed."
    ),
    temperature: float = typer.Option(None, "--temperature", min=0.0, help="0 = greedy (default)."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", min=1, help="Longest answer in tokens."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="hf backend batch size."),
    device: str = typer.Option(None, "--device", help="hf backend device: auto, cpu, cuda, mps."),
    api_key_env: str = typer.Option(
        None, "--api-key-env", help="openai backend: environment variable holding the API key."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML file with AuditConfig fields; flags override it."
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite results in --out that were made with other settings."
    ),
) -> None:
    """Stage II: paired harm-drift audit of a candidate model against a baseline."""
    from dartkit.config import AuditConfig
    from dartkit.stages import audit

    overrides = {
        "baseline": baseline,
        "candidate": candidate,
        "prompts": prompts,
        "data": data,
        "split": split.value if split else None,
        "baseline_generations": baseline_generations,
        "candidate_generations": candidate_generations,
        "generations_format": generations_format.value if generations_format else None,
        "id_field": id_field,
        "out": out,
        "scorer": scorer,
        "score_on": score_on,
        "tau": tau,
        "judge": judge,
        "judge_swap": judge_swap,
        "null": null,
        "tau_sweep": tau_sweep,
        "allow_prompt_mismatch": allow_prompt_mismatch,
        "limit": limit,
        "policy": policy.value if policy else None,
        "seed": seed,
        "decoding.seed": seed,
        "decoding.temperature": temperature,
        "decoding.max_new_tokens": max_new_tokens,
        "backend.batch_size": batch_size,
        "backend.device": device,
        "backend.api_key_env": api_key_env,
    }
    cfg = load_config(AuditConfig, config, overrides, cli_flags(overrides))
    with dir_lock(cfg.out):
        check_config_inputs(cfg, ("pairs.jsonl", "summary.json"), force)
        summary = audit.run(cfg)
    if fail_on_drift is not None:
        gate_failure = drift_gate(summary, fail_on_drift)
        if gate_failure:
            typer.echo(f"drift gate failed: {gate_failure} (see {cfg.out / 'audit.md'})", err=True)
            raise typer.Exit(3)


def drift_gate(summary: dict, limit: float) -> str | None:
    """Why an audit fails ``--fail-on-drift limit`` (None when it passes).

    The rate checked is the upper bound that also counts candidates the judge left unsettled
    (invalid verdicts, disagreeing orders): a failing judge must not let a fine-tune through.
    An audit with no pairs fails: it checked nothing.
    """
    if not summary["n_pairs"]:
        return "no pairs were audited (no ids matched)"
    rate = summary.get("drift_rate_upper", summary["drift_rate"])
    if rate > limit:
        unsettled = summary.get("n_unsettled", 0)
        extra = f", {unsettled} unsettled by the judge counted as drift" if unsettled else ""
        return (
            f"drift rate {rate:.4f} > {limit:g} ({summary['n_drift']} of {summary['n_pairs']} pairs{extra})"
        )
    return None


class RecipeChoice(str, Enum):
    mix = "mix"
    repair_only = "repair-only"


class WeightingChoice(str, Enum):
    loss = "loss"
    oversample = "oversample"


@app.command("repair")
@user_errors
def repair_command(
    drift: Path = typer.Option(None, "--drift", help="drift.jsonl from the audit of M_int against M0."),
    data: Path = typer.Option(None, "--data", help="Prepared data directory (questions and gold labels)."),
    out: Path = typer.Option(None, "--out", help="Output directory (repair.jsonl, train/adapter = M_DART)."),
    init_adapter: Path = typer.Option(
        None, "--init-adapter", help="M_int's adapter; training continues from it."
    ),
    distill: Path = typer.Option(
        None, "--distill", help="Stage I teacher.jsonl (joins the repairs in recipe mix)."
    ),
    teacher: str = typer.Option(None, "--teacher", help="Teacher model spec (default: embedded)."),
    student: str = typer.Option(None, "--student", help="Student base model spec (default: embedded)."),
    recipe: RecipeChoice = typer.Option(None, "--recipe", help="mix (default) or repair-only."),
    weighting: WeightingChoice = typer.Option(
        None, "--weighting", help="Severity weights as loss weights (default) or oversampled copies."
    ),
    no_train: bool = typer.Option(False, "--no-train", help="Only write repair.jsonl."),
    teacher_examples: str = typer.Option(
        None,
        "--teacher-examples",
        help="Worked examples the teacher sees: builtin (default), none (zero-shot, the paper's) or a JSONL file.",
    ),
    api_key_env: str = typer.Option(
        None, "--api-key-env", help="openai backend: environment variable with the API key."
    ),
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML file with RepairConfig fields; flags override it."
    ),
) -> None:
    """Stage III: policy-guided safe rationales for drift cases, then continue M_int into M_DART."""
    from dartkit.config import RepairConfig
    from dartkit.stages import repair

    overrides = {
        "drift": drift,
        "data": data,
        "out": out,
        "init_adapter": init_adapter,
        "distill": distill,
        "teacher": teacher,
        "student": student,
        "recipe": recipe.value if recipe else None,
        "weighting": weighting.value if weighting else None,
        "teacher_examples": teacher_examples,
        "train": False if no_train else None,
        "backend.api_key_env": api_key_env,
    }
    cfg = load_config(RepairConfig, config, overrides, cli_flags(overrides, NO_TRAIN))
    with dir_lock(cfg.out):
        repair.run(cfg)


@app.command("run")
@user_errors
def run_command(
    config: Path = typer.Option(
        None, "--config", "-c", help="YAML file with RunConfig fields (default: the embedded setup)."
    ),
    out: Path = typer.Option(None, "--out", help="Run directory (default runs/demo, or the config's out)."),
    start: str = typer.Option(
        None, "--from", help="Redo this stage and every stage after it (e.g. distill, audit_int, repair)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate the config and print the plan; load no model, touch no network."
    ),
) -> None:
    """The whole DART pipeline: M0 -> distill -> M_int -> audit -> repair -> M_DART -> audit -> report."""
    from dartkit.pipeline import RunConfig, run

    cfg = load_config(RunConfig, config, {"out": out}, {"out": "--out"})
    run(cfg, start=start, dry_run=dry_run)


@app.command("report")
@user_errors
def report_command(
    run_dir: Path = typer.Argument(..., help="Run directory written by `dartkit run`."),
) -> None:
    """Rebuild report.md, figures/ and run.json of a run from its files (loads no model)."""
    from dartkit.pipeline.report import build_report

    typer.echo(f"report: {build_report(run_dir)}")


@app.command("push")
@user_errors
def push_command(
    run_dir: Path = typer.Argument(..., help="Run directory of `dartkit run`, or a PEFT adapter directory."),
    to: str = typer.Option(..., "--to", help="Hub repository ORG/NAME (created when missing)."),
    model: str = typer.Option(
        None,
        "--model",
        help="Which adapter of the run: m_dart (default), m_int, label_only, predicted, tox_sft, m_dart_unweighted.",
    ),
    base_model: str = typer.Option(
        None, "--base-model", help="Hub id of the base model, when the adapter's base is a local directory."
    ),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    revision: str = typer.Option(
        None, "--revision", "--branch", help="Branch to commit to (created when missing; default main)."
    ),
    commit_message: str = typer.Option(None, "--commit-message", help="Title of the Hub commit."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the model card and the file list; upload nothing (needs no token)."
    ),
) -> None:
    """Push an adapter to the Hugging Face Hub with PEFT's card front matter and the run's summary.

    The token comes from HF_TOKEN (or `hf auth login`); it is never printed or written.
    """
    from dartkit.share.push import plan_push, push

    if dry_run:
        plan = plan_push(run_dir, to, model, base_model)
        # Every file built for the Hub in full (the card first), so the user sees exactly what goes up.
        typer.echo(f"==> README.md (built for the Hub)\n{plan.card}")
        for name, data in sorted(plan.files.items()):
            if isinstance(data, bytes) and name != "README.md":
                typer.echo(f"==> {name} (built for the Hub)\n{data.decode('utf-8')}")
        typer.echo(f"files for {to} (nothing uploaded: --dry-run):")
        for name, data in sorted(plan.files.items()):
            if isinstance(data, bytes):
                typer.echo(f"  {name}  {len(data):,} bytes, built for the Hub (shown above)")
            else:
                typer.echo(f"  {name}  {data.stat().st_size:,} bytes, unchanged from {data}")
        return
    plan, result = push(
        run_dir,
        to,
        model=model,
        base_model=base_model,
        private=private,
        revision=revision,
        commit_message=commit_message,
    )
    label = plan.summary.get("model_label") or "adapter"
    typer.echo(
        f"pushed {label} ({plan.adapter}, base {plan.base_model}) to {result.repo_url} "
        f"branch {result.revision}: {result.commit_url}"
    )


@app.command("export-data")
@user_errors
def export_data_command(
    run_dir: Path = typer.Argument(..., help="Run directory of `dartkit run`."),
    out: Path = typer.Option(..., "--out", help="Output directory for the datasets, JSONL and dataset card."),
    # A plain string checked by parse_format: typer's own choice check words its error as a
    # pydantic "Value error" on three lines.
    fmt: str = typer.Option(
        None,
        "--format",
        metavar="[messages|prompt-completion|both]",
        help="messages (TRL conversational), prompt-completion, or both (default).",
    ),
    parts: str = typer.Option(
        None, "--parts", help="Comma-separated: distill, repair (default: every part the run has)."
    ),
    push_to: str = typer.Option(None, "--push", help="Also push the dataset to the Hub as ORG/NAME."),
    private: bool = typer.Option(False, "--private", help="With --push: create the repository private."),
    revision: str = typer.Option(None, "--revision", "--branch", help="With --push: branch to commit to."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would be written (and pushed); write and upload nothing."
    ),
) -> None:
    """Export the run's QC-passed distillation and repair rows as Hugging Face datasets (TRL formats)."""
    from dartkit.errors import DartkitError
    from dartkit.share.export_data import (
        PARTS,
        dry_run_report,
        export_data,
        parse_format,
        parse_list,
        plan_export,
        push_export,
    )
    from dartkit.share.hub import check_push_ready, check_repo_id

    formats = parse_format(fmt)
    chosen_parts = parse_list(parts, PARTS, "--parts")
    if push_to:
        check_repo_id(push_to, "--push")  # before anything is written
    if dry_run:
        plan = plan_export(run_dir, formats, chosen_parts)
        for note in plan.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(dry_run_report(plan, out, push_to, revision))
        if push_to:
            try:
                check_push_ready()
            except DartkitError as e:
                typer.echo(f"note: a real push would stop here: {e}", err=True)
        return
    if push_to:
        check_push_ready()  # no token (or offline): say so before the export, not after it
    with dir_lock(out):
        result = export_data(
            run_dir, out, formats, chosen_parts, warn=lambda note: typer.echo(f"note: {note}", err=True)
        )
    counts = ", ".join(f"{n} {part}" for part, n in result.counts.items())
    shapes = "datasets (load_from_disk) + JSONL" if result.datasets else "JSONL"
    typer.echo(
        f"exported {counts} row(s) as {' and '.join(formats)} to {out} ({shapes}); card: {out / 'README.md'}"
    )
    if push_to:
        pushed = push_export(result, run_dir, push_to, revision=revision, private=private)
        typer.echo(f"pushed to {pushed.repo_url} branch {pushed.revision}: {pushed.commit_url}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
