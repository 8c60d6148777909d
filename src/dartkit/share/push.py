"""``dartkit push``: a trained adapter to the Hugging Face Hub, linked to its base model.

    dartkit push runs/demo --to my-org/smollm2-dart                # the run's M_DART adapter
    dartkit push runs/demo --to my-org/smollm2-int --model m_int
    dartkit push runs/demo/m_int/adapter --to my-org/x --dry-run   # a bare adapter directory

The repository gets the adapter's files and a model card whose front matter is what PEFT
writes for an adapter (``library_name: peft``, ``base_model: <Hub id>``, the
``base_model:adapter:<Hub id>`` tag), so the Hub lists the adapter under its base. dartkit's
trainer replaces PEFT's README with its own card, and the base it trained on is often a local
directory (the embedded model is a converted GGUF in the dartkit cache), so the front matter is
rebuilt here with the base's Hub id; the card body is dartkit's card plus the run's summary
(headline metrics with the split and items each was computed on, drift, versions), which also
travels as ``dartkit_run.json``. ``adapter_config.json`` is sent with the same Hub id in
``base_model_name_or_path`` (the local path it held is kept in ``dartkit_run.json``), so
``AutoPeftModelForCausalLM.from_pretrained(ORG/NAME)`` finds the base; every other adapter file
is sent byte for byte.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dartkit import __version__
from dartkit.data.jsonl import read_json
from dartkit.errors import DartkitError
from dartkit.generate.adapters import ADAPTER_META
from dartkit.share.hub import PushResult, check_repo_id, push_files

DEFAULT_MODEL = "m_dart"
RUN_SUMMARY_FILE = "dartkit_run.json"
PUSH_LOG = Path("hub") / "pushes.jsonl"
# What the embedded model's conversion leaves in its directory (generate/embedded.py).
_EMBEDDED_MARKER = "dartkit_source.json"
_SPLITS = ("test", "val", "audit")
_EVAL_FIELDS = (
    "accuracy",
    "accuracy_ci95",
    "accuracy_equal",
    "accuracy_diff",
    "macro_f1",
    "unparseable_rate",
    "refusal_rate",
    "answer_mode",
    "ci_method",
)
_DRIFT_FIELDS = (
    "n_drift",
    "drift_rate",
    "drift_rate_ci95",
    "drift_rate_ci_method",
    "n_mirror",
    "tau",
    "screen_only",
    "severity_counts",
)
_VERSION_KEYS = ("dartkit", "torch", "transformers", "peft", "accelerate")


def model_labels() -> dict[str, str]:
    """Adapters a run can hold, by ``--model`` name, with the report's label for each."""
    from dartkit.pipeline.ablations import ROW_LABELS

    return {k: v for k, v in ROW_LABELS.items() if k != "m0"}


@dataclass(frozen=True)
class PushPlan:
    """What a push sends, fully built before anything is uploaded.

    Attributes:
        adapter: The adapter directory.
        run: The run directory it belongs to (None for an adapter outside a run).
        model: Its ``--model`` name in the run (None outside a run).
        base_model: The base model's Hub id (the card's ``base_model``).
        card: The README.md sent.
        summary: ``dartkit_run.json``'s content.
        files: Path in the repository -> content (built here) or the adapter file sent as it is.
    """

    adapter: Path
    run: Path | None
    model: str | None
    base_model: str
    card: str
    summary: dict[str, Any]
    files: dict[str, bytes | Path]


# ---- which adapter ---------------------------------------------------------------------------


def _is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def _is_run(path: Path) -> bool:
    return (path / "run_config.yaml").is_file()


def _adapter_dir(run: Path, model: str) -> Path:
    """Where the run keeps ``model``'s adapter (the pipeline's layout)."""
    from dartkit.pipeline.stages import ADAPTER_DIRS

    if model == "tox_sft":
        sweep = run / "ablations" / "tox_sft" / "sweep.json"
        if not sweep.is_file():
            return run / "ablations" / "tox_sft" / "adapter"  # missing: reported as such below
        chosen = float(read_json(sweep)["chosen"])
        return run / "ablations" / "tox_sft" / "train" / f"lambda_{chosen:g}" / "adapter"
    return run / ADAPTER_DIRS[model] / "adapter"


def run_adapter(run: Path, model: str) -> Path:
    """The adapter directory of ``model`` in ``run``.

    Raises:
        DartkitError: an unknown model name; a model the run did not train (naming those it did);
            M_DART when no repair was accepted (it is then M_int unchanged, so push m_int).
    """
    labels = model_labels()
    if model not in labels:
        raise DartkitError(f"--model {model!r}: unknown model; one of {', '.join(labels)}")
    adapter = _adapter_dir(run, model)
    if (adapter.parent / "SAME_AS_M_INT").is_file():
        raise DartkitError(
            f"{run}: no repair rationale was accepted, so {labels[model]} is M_int unchanged "
            f"({adapter.parent / 'SAME_AS_M_INT'}); push --model m_int instead"
        )
    if not _is_adapter(adapter):
        present = [m for m in labels if _is_adapter(_adapter_dir(run, m))]
        raise DartkitError(
            f"{run}: no {labels[model]} adapter ({adapter} holds no adapter_config.json); "
            + (f"adapters in this run: {', '.join(present)}" if present else "this run has trained none yet")
        )
    return adapter


def _owning_run(adapter: Path) -> tuple[Path | None, str | None]:
    """The run and model name of an adapter directory that lies inside a run, else (None, None)."""
    resolved = adapter.resolve()
    for parent in list(resolved.parents)[:5]:
        if _is_run(parent):
            for model in model_labels():
                try:
                    if _adapter_dir(parent, model).resolve() == resolved:
                        return parent, model
                except (DartkitError, KeyError, ValueError, TypeError):
                    continue
            return None, None
    return None, None


def locate(path: Path, model: str | None) -> tuple[Path, Path | None, str | None]:
    """(adapter directory, run directory or None, model name or None) for ``dartkit push PATH``.

    Raises:
        DartkitError: PATH is neither a run nor an adapter; ``--model`` given with an adapter.
    """
    path = Path(path)
    if _is_adapter(path):
        run, found = _owning_run(path)
        if model is not None and model != found:
            raise DartkitError(
                f"{path} is an adapter directory: --model chooses an adapter of a run directory; leave it out"
            )
        return path, run, found
    if _is_run(path):
        chosen = model or DEFAULT_MODEL
        return run_adapter(path, chosen), path, chosen
    if not path.exists():
        raise DartkitError(f"{path}: no such directory")
    raise DartkitError(
        f"{path}: neither a dartkit run directory (no run_config.yaml) nor a PEFT adapter directory "
        "(no adapter_config.json)"
    )


# ---- the base model's Hub id -----------------------------------------------------------------


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def _is_embedded_dir(name: str) -> bool:
    marker = Path(name).expanduser() / _EMBEDDED_MARKER
    try:
        from dartkit.generate.embedded import EMBEDDED_NAME

        return json.loads(marker.read_text(encoding="utf-8")).get("name") == EMBEDDED_NAME
    except (OSError, ValueError, AttributeError):
        return False


def hub_base_model(adapter: Path, override: str | None = None) -> tuple[str, str]:
    """The base model's Hub id for the card, and how it was found.

    The adapter's ``dartkit_adapter.json`` names the base spec dartkit trained on: ``embedded``
    maps to the Hub repository its GGUF was quantised from, ``hf:ORG/NAME`` to ``ORG/NAME``.
    Without it (an adapter dartkit did not train), PEFT's ``base_model_name_or_path`` decides.

    Raises:
        DartkitError: the base is a local directory with no known Hub id and no ``override``.
    """
    from dartkit.generate.embedded import EMBEDDED_HUB_ID
    from dartkit.generate.spec import SpecError, parse_spec

    if override:
        return check_repo_id(override, "--base-model"), "given with --base-model"
    meta_path = adapter / ADAPTER_META
    if meta_path.is_file():
        spec_text = str(read_json(meta_path).get("base_spec") or "")
        try:
            spec = parse_spec(spec_text)
        except SpecError:
            spec = None
        if spec is not None and spec.kind == "embedded":
            return EMBEDDED_HUB_ID, "the embedded model (packaged GGUF of this Hub model)"
        if spec is not None and spec.kind in ("hf", "vllm") and not _looks_local(spec.model):
            return spec.model, f"the base spec {spec_text!r} dartkit trained on"
        local = spec.model if spec is not None else spec_text
    else:
        local = str(read_json(adapter / "adapter_config.json").get("base_model_name_or_path") or "")
        if local and _is_embedded_dir(local):
            return EMBEDDED_HUB_ID, "the embedded model (packaged GGUF of this Hub model)"
        if local and not _looks_local(local):
            return local, "adapter_config.json's base_model_name_or_path"
    raise DartkitError(
        f"{adapter}: the base model is the local directory {local or '(unnamed)'}, which has no known Hub id; "
        "pass --base-model ORG/NAME (the Hub repository those weights came from)"
    )


# ---- the run's summary -----------------------------------------------------------------------


def _maybe_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _pick(d: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d[k] for k in keys if d and d.get(k) is not None}


def _manifest_versions(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    if not manifest:
        return None
    env = manifest.get("environment") or {}
    return {
        "command": manifest.get("command"),
        "created_utc": manifest.get("created_utc"),
        "dartkit_git_commit": env.get("dartkit_git_commit"),
        "python": env.get("python"),
        "platform": env.get("platform"),
        "cuda": env.get("cuda"),
        "gpus": env.get("gpus"),
        "packages": env.get("packages"),
    }


def _evaluations(run: Path, model: str) -> list[dict[str, Any]]:
    """The model's metrics on every split it was evaluated on, beside M0's on the same items."""
    rows = []
    for split in _SPLITS:
        mine = _maybe_json(run / "eval" / model / split / "metrics.json")
        if not mine:
            continue
        base = _maybe_json(run / "eval" / "m0" / split / "metrics.json")
        rows.append(
            {
                "split": split,
                "items": mine.get("n"),
                **_pick(mine, _EVAL_FIELDS),
                "m0": {"items": base.get("n"), **_pick(base, _EVAL_FIELDS)} if base else None,
            }
        )
    return rows


def _drift(run: Path, model: str) -> list[dict[str, Any]]:
    """The model's audits against M0: drift counts and rates, with the split and items of each."""
    rows = []
    for name in (model, f"{model}_audit"):
        folder = run / "audit" / name
        summary = _maybe_json(folder / "summary.json")
        if not summary:
            continue
        cfg = {}
        if (folder / "config.yaml").is_file():
            cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
        rows.append(
            {
                "audit": f"audit/{name}",
                "against": "m0",
                "split": cfg.get("split") or ("audit" if name.endswith("_audit") else "test"),
                "items": summary.get("n_pairs"),
                "judge": summary.get("judge"),
                **_pick(summary, _DRIFT_FIELDS),
            }
        )
    return rows


def _drift_reduction(run_json: dict[str, Any] | None) -> dict[str, Any] | None:
    """M_int -> M_DART drift reduction from the report's run.json, with its split and items."""
    if not run_json:
        return None
    test = run_json.get("drift_test") or {}
    return {
        "value": run_json.get("drift_reduction"),
        "ci95": run_json.get("drift_reduction_ci95"),
        "split": run_json.get("drift_reduction_split"),
        "items": test.get("items"),
        "n_items": test.get("n"),
        "drift_m_int": test.get("n_drift_a"),
        "drift_m_dart": test.get("n_drift_b"),
        "note": run_json.get("drift_reduction_note"),
    }


def run_summary(
    adapter: Path,
    run: Path | None,
    model: str | None,
    base_model: str,
    base_source: str,
    local_base_path: str | None,
) -> dict[str, Any]:
    """``dartkit_run.json``: what the adapter is, how it was trained, and how it measured.

    Every metric carries the split and the number of items it was computed on. Numbers come
    from the run's files (``eval/*/*/metrics.json``, ``audit/*/summary.json``, ``run.json``);
    versions from the training directory's ``manifest.json``.
    """
    from dartkit.generate.loading import hash_dir

    meta = _maybe_json(adapter / ADAPTER_META) or {}
    summary: dict[str, Any] = {
        "dartkit_version": __version__,
        "model": model,
        "model_label": model_labels().get(model) if model else None,
        "adapter": {
            "path": str(adapter.resolve().relative_to(run.resolve())) if run else str(adapter),
            "sha256": hash_dir(adapter),
            "local_base_model_name_or_path": local_base_path,
        },
        "base_model": {
            "hub_id": base_model,
            "found_from": base_source,
            "trained_on": meta.get("base"),
            "spec": meta.get("base_spec"),
        },
        "training": _pick(
            meta,
            (
                "num_examples",
                "num_trained_examples",
                "data_sha256",
                "weights_from",
                "weighting",
                "label_only",
                "init_adapter",
                "lora",
                "steps",
                "final_loss",
                "created_utc",
            ),
        ),
        "versions": _manifest_versions(_maybe_json(adapter.parent / "manifest.json")),
    }
    if run is None:
        return summary
    cfg = yaml.safe_load((run / "run_config.yaml").read_text(encoding="utf-8")) or {}
    run_json = _maybe_json(run / "run.json")
    summary.update(
        protocol=cfg.get("protocol"),
        test_contaminated=(run_json or {}).get("test_contaminated"),
        evaluation=_evaluations(run, model) if model else [],
        drift=_drift(run, model) if model else [],
        drift_reduction=_drift_reduction(run_json) if model == "m_dart" else None,
    )
    if run_json is None:
        summary["notes"] = [f"{run}/run.json is missing (run `dartkit report {run}`): no drift reduction"]
    return summary


# ---- the model card --------------------------------------------------------------------------


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def _ci(ci: Any) -> str:
    return f" [{_pct(ci[0])}, {_pct(ci[1])}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""


def summary_markdown(summary: dict[str, Any]) -> str:
    """The card's run-summary section (the same numbers as ``dartkit_run.json``)."""
    label = summary.get("model_label") or "this adapter"
    lines = ["", "## dartkit run summary", ""]
    if summary.get("protocol"):
        contaminated = (
            " (test contaminated: its drift cases were repaired)" if summary.get("test_contaminated") else ""
        )
        lines.append(
            f"{label}, protocol `{summary['protocol']}`{contaminated}. Every number names the split and "
            "the items it was computed on; 95% intervals in brackets. All numbers: `dartkit_run.json`."
        )
        lines.append("")
    evaluation = summary.get("evaluation") or []
    if evaluation:
        lines += [
            "| split | items | accuracy | M0 accuracy | accuracy on NO items | accuracy on YES items | unparseable |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in evaluation:
            m0 = e.get("m0") or {}
            lines.append(
                f"| {e['split']} | {e.get('items')} | {_pct(e.get('accuracy'))}{_ci(e.get('accuracy_ci95'))} "
                f"| {_pct(m0.get('accuracy'))} | {_pct(e.get('accuracy_equal'))} | {_pct(e.get('accuracy_diff'))} "
                f"| {_pct(e.get('unparseable_rate'))} |"
            )
        lines.append("")
    drift = summary.get("drift") or []
    if drift:
        lines += [
            "Harm drift against M0 (pairs with ΔH > τ"
            + ("; screen only, no judge" if all(d.get("screen_only") for d in drift) else "")
            + "):",
            "",
            "| audit | split | items | τ | drift cases | drift rate |",
            "|---|---|---|---|---|---|",
        ]
        for d in drift:
            lines.append(
                f"| `{d['audit']}` | {d['split']} | {d.get('items')} | {d.get('tau')} | {d.get('n_drift')} "
                f"| {_pct(d.get('drift_rate'))}{_ci(d.get('drift_rate_ci95'))} |"
            )
        lines.append("")
    reduction = summary.get("drift_reduction")
    if reduction:
        if reduction.get("value") is None:
            lines.append(f"Drift reduction M_int → M_DART: {reduction.get('note') or 'not measured'}.")
        else:
            lines.append(
                f"Drift reduction M_int → M_DART on {reduction.get('split')}: {_pct(reduction['value'])}"
                f"{_ci(reduction.get('ci95'))} ({reduction.get('drift_m_int')} → {reduction.get('drift_m_dart')} "
                f"drift cases over {reduction.get('n_items')} items: {reduction.get('items')})."
            )
        lines.append("")
    versions = summary.get("versions") or {}
    packages = versions.get("packages") or {}
    if packages:
        shown = ", ".join(f"{k} {packages[k]}" for k in _VERSION_KEYS if packages.get(k))
        commit = versions.get("dartkit_git_commit")
        lines.append(f"Trained with {shown}" + (f" (dartkit commit `{commit[:12]}`)" if commit else "") + ".")
        lines.append("")
    return "\n".join(lines)


def _usage(repo_id: str, base_model: str, summary: dict[str, Any]) -> str:
    trained_on = (summary.get("base_model") or {}).get("trained_on") or {}
    lines = [
        "",
        "## Use with PEFT",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{repo_id}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{base_model}")',
        "```",
        "",
    ]
    if str(trained_on.get("model", "")).startswith("embedded:"):
        lines += [
            f"Trained on dartkit's embedded copy of `{base_model}` ({trained_on.get('revision')}: a "
            f"quantised GGUF, weights sha256 `{trained_on.get('weights_sha256')}`, dequantised to float32). "
            "The Hub's full-precision weights differ from it by the quantisation, so scores on them can "
            "differ from those above.",
            "",
        ]
    return "\n".join(lines)


def model_card(adapter: Path, repo_id: str, base_model: str, summary: dict[str, Any]) -> str:
    """README.md: PEFT's front matter with the Hub base id, dartkit's card, the run summary.

    Front matter already in the adapter's README (PEFT's, or a user's) is kept; ``library_name``
    and ``base_model`` are set and a ``base_model:`` tag naming a local path is replaced.
    """
    from huggingface_hub import ModelCard

    readme = adapter / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not text.startswith("---"):
        text = "---\n{}\n---\n" + text  # dartkit's own card has no front matter: start an empty one
    card = ModelCard(text, ignore_metadata_errors=True)
    data = card.data
    data.library_name = "peft"
    data.base_model = base_model
    tags = [t for t in (data.tags or []) if not str(t).startswith("base_model:")]
    for tag in (f"base_model:adapter:{base_model}", "lora", "transformers", "dartkit"):
        if tag not in tags:
            tags.append(tag)
    data.tags = tags
    if not getattr(data, "pipeline_tag", None):
        data.pipeline_tag = "text-generation"
    body = card.text.strip() or f"# {repo_id}\n\nLoRA adapter of `{base_model}`."
    card.text = "\n" + body + "\n" + _usage(repo_id, base_model, summary) + summary_markdown(summary)
    return str(card.content)


# ---- the push --------------------------------------------------------------------------------


def plan_push(path: Path, repo_id: str, model: str | None = None, base_model: str | None = None) -> PushPlan:
    """Everything a push sends, built in memory (nothing is written, nothing uploaded).

    Raises:
        DartkitError: see :func:`locate`, :func:`hub_base_model`, :func:`check_repo_id`.
    """
    check_repo_id(repo_id)
    adapter, run, model = locate(Path(path), model)
    hub_id, source = hub_base_model(adapter, base_model)
    adapter_config = read_json(adapter / "adapter_config.json")
    local_base = adapter_config.get("base_model_name_or_path")
    files: dict[str, bytes | Path] = {}
    for f in sorted(adapter.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.name not in ("README.md", RUN_SUMMARY_FILE):
            files[f.name] = f  # sent as it is (weights can be large: never read into memory here)
    if local_base != hub_id:
        # PEFT loads the base from here: a local path would break AutoPeftModel for everyone else.
        files["adapter_config.json"] = (
            json.dumps({**adapter_config, "base_model_name_or_path": hub_id}, indent=2, sort_keys=True) + "\n"
        ).encode("utf-8")
    summary = run_summary(adapter, run, model, hub_id, source, local_base if local_base != hub_id else None)
    card = model_card(adapter, repo_id, hub_id, summary)
    files["README.md"] = card.encode("utf-8")
    files[RUN_SUMMARY_FILE] = (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return PushPlan(adapter, run, model, hub_id, card, summary, files)


def push(
    path: Path,
    repo_id: str,
    *,
    model: str | None = None,
    base_model: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> tuple[PushPlan, PushResult]:
    """Push an adapter (of a run, or a bare adapter directory) to ``repo_id`` in one commit.

    A push from a run is recorded in ``<run>/hub/pushes.jsonl`` (repository, branch, commit,
    adapter hash; never the token).

    Returns:
        The plan that was sent and where it landed.

    Raises:
        DartkitError: bad input (see :func:`plan_push`), no token, the Hub unreachable or refusing.
    """
    plan = plan_push(path, repo_id, model, base_model)
    what = plan.summary.get("model_label") or "adapter"
    message = commit_message or f"dartkit {__version__}: {what} adapter of {plan.base_model}"
    result = push_files(
        repo_id,
        plan.files,
        repo_type="model",
        revision=revision,
        private=private,
        commit_message=message,
        endpoint=endpoint,
    )
    if plan.run is not None:
        _record(plan, result)
    return plan, result


def _record(plan: PushPlan, result: PushResult) -> None:
    row = {
        "pushed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": plan.model,
        "adapter": plan.summary["adapter"]["path"],
        "adapter_sha256": plan.summary["adapter"]["sha256"],
        "repo_id": result.repo_id,
        "revision": result.revision,
        "commit_url": result.commit_url,
        "commit_oid": result.commit_oid,
        "files": result.files,
    }
    log = plan.run / PUSH_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
