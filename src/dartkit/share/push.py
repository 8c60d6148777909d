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
``base_model_name_or_path``, so ``AutoPeftModelForCausalLM.from_pretrained(ORG/NAME)`` finds the
base. No local path goes up (:mod:`dartkit.share.portable`): ``dartkit_adapter.json`` and the card
name paths relative to the run (or a file's name) beside the hashes that identify the things, a
local base by its Hub id and weights sha256; the weights and every other adapter file are sent
byte for byte.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dartkit import __version__
from dartkit.data.jsonl import read_json
from dartkit.errors import DartkitError
from dartkit.files import file_sha256
from dartkit.generate.adapters import ADAPTER_META
from dartkit.share.hub import PushResult, check_repo_id, push_files, record_push
from dartkit.share.portable import Portable, check_portable

DEFAULT_MODEL = "m_dart"
RUN_SUMMARY_FILE = "dartkit_run.json"
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
    "sign_test",
    "tau",
    "screen_only",
    "severity_counts",
)
# What each kind of audit of a model against M0 is, in the order the card lists them.
AUDIT_KINDS = {
    "test": "test split",
    "repair_source": "audit split (the repair source)",
    "tau_sweep": "τ sweep on the validation split",
    "explanation_policy": "{split} split, explanation policy on (M0 with it too)",
    "other": "{split} split",
}
# Above this share of unparseable M0 answers the card says what M0's accuracy and the drift measure.
_M0_FORMAT_BOUND = 0.5
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


# ---- what leaves the machine -----------------------------------------------------------------


def _base_replacements(meta: dict[str, Any], hub_id: str) -> dict[str, str]:
    """A local base directory (and the spec naming it) -> the base's Hub id (and ``hf:<Hub id>``)."""
    from dartkit.generate.spec import SpecError, parse_spec

    out: dict[str, str] = {}
    spec_text = str(meta.get("base_spec") or "")
    try:
        spec = parse_spec(spec_text) if spec_text else None
    except SpecError:
        spec = None
    if spec is not None and spec.kind != "embedded" and _looks_local(spec.model):
        out[spec_text] = spec_text.replace(spec.model, hub_id)
        out[spec.model] = hub_id
    model = str((meta.get("base") or {}).get("model") or "")
    if model and _looks_local(model):
        out[model] = hub_id
    return out


def _train_path_fields() -> tuple[str, ...]:
    """The training config's fields that hold paths (data, prepared, out, init_adapter, ...)."""
    from dartkit.train.config import TrainConfig

    return tuple(name for name, f in TrainConfig.model_fields.items() if "Path" in str(f.annotation))


def portable_meta(meta: dict[str, Any], portable: Portable, hub_id: str) -> dict[str, Any]:
    """``dartkit_adapter.json`` as pushed: the same record with no local path in it.

    Paths become relative to the run (or a file's name), a local base becomes its Hub id (its
    ``weights_sha256`` stays, so dartkit still refuses the adapter on other weights).
    """
    out = copy.deepcopy(meta)
    replaced = _base_replacements(meta, hub_id)
    base = out.get("base")
    if isinstance(base, dict) and str(base.get("model") or "") in replaced:
        base["model"] = replaced[str(base["model"])]
    if str(out.get("base_spec") or "") in replaced:
        out["base_spec"] = replaced[str(out["base_spec"])]
    if isinstance(out.get("data_files"), list):
        out["data_files"] = [portable.path(p) for p in out["data_files"]]
    if isinstance(out.get("init_adapter"), dict) and out["init_adapter"].get("path"):
        out["init_adapter"]["path"] = portable.path(out["init_adapter"]["path"])
    cfg = out.get("train_config")
    if isinstance(cfg, dict):
        if str(cfg.get("base") or "") in replaced:
            cfg["base"] = replaced[str(cfg["base"])]
        for key in _train_path_fields():
            value = cfg.get(key)
            if isinstance(value, list):
                cfg[key] = [portable.path(v) for v in value]
            elif value is not None:
                cfg[key] = portable.path(value)
    return portable.tree(out)


# ---- the run's summary -----------------------------------------------------------------------


def _maybe_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _pick(d: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: d[k] for k in keys if d and d.get(k) is not None}


def _manifest_versions(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    if not manifest:
        return None
    env = manifest.get("environment") or {}
    platform = env.get("platform")
    return {
        "command": manifest.get("command"),
        "created_utc": manifest.get("created_utc"),
        "dartkit_git_commit": env.get("dartkit_git_commit"),
        "python": env.get("python"),
        # The OS only: the full platform string names the machine's kernel build.
        "os": str(platform).split("-")[0] if platform else None,
        "cuda": env.get("cuda"),
        "gpus": env.get("gpus"),
        "packages": env.get("packages"),
    }


def _label_counts(generations: Path) -> dict[str, int] | None:
    """How many answered items have gold NO and YES (what accuracy on NO / YES items is over)."""
    if not generations.is_file():
        return None
    from dartkit.data.jsonl import read_rows

    golds = [row.get("gold") for row in read_rows(generations)]
    return {"NO": golds.count("NO"), "YES": golds.count("YES")}


def _eval_row(folder: Path) -> dict[str, Any] | None:
    metrics = _maybe_json(folder / "metrics.json")
    if not metrics:
        return None
    counts = _label_counts(folder / "generations.jsonl") or {}
    return {
        "items": metrics.get("n"),
        **_pick(metrics, _EVAL_FIELDS),
        "items_no": counts.get("NO"),
        "items_yes": counts.get("YES"),
    }


def _evaluations(run: Path, model: str) -> list[dict[str, Any]]:
    """The model's metrics on every split it was evaluated on, beside M0's on the same items.

    ``accuracy_equal`` / ``accuracy_diff`` (accuracy on NO / YES items) come with ``items_no`` /
    ``items_yes``, the gold labels counted in the evaluation's ``generations.jsonl``.
    """
    rows = []
    for split in _SPLITS:
        mine = _eval_row(run / "eval" / model / split)
        if mine:
            rows.append({"split": split, **mine, "m0": _eval_row(run / "eval" / "m0" / split)})
    return rows


def _eval_ref(value: Any) -> tuple[str, str] | None:
    """(model, evaluation directory) of ``.../eval/<model>/<dir>/generations.jsonl``, else None."""
    if not value:
        return None
    parts = Path(str(value)).parts
    for i in range(len(parts) - 3, -1, -1):
        if parts[i] == "eval":
            return parts[i + 1], parts[i + 2]
    return None


def _audit_kind(split: str, eval_dir: str, cfg: dict[str, Any]) -> str:
    if eval_dir.endswith("_policy"):
        return "explanation_policy"
    if cfg.get("tau_sweep") and split == "val":
        return "tau_sweep"
    return {"test": "test", "audit": "repair_source"}.get(split, "other")


def model_audits(run: Path, model: str) -> list[dict[str, Any]]:
    """Every audit of ``model`` against M0 in the run: drift, mirror and rate, each with its split and items.

    The rule: an audit folder ``audit/<name>`` belongs to the model when its ``config.yaml``
    compares the model's generations (``eval/<model>/<dir>/``) with M0's (``eval/m0/<dir>/``) and
    its ``out`` is that folder (a copy the pipeline made for an ablation equal to M_int is not
    counted twice). Each row's ``kind`` says what it is (:data:`AUDIT_KINDS`): the test split, the
    audit split (the repair source), the τ sweep on val, the explanation policy, or another split.
    Rows come in that order. M0's own audits (``null``, ``policy_m0``) are never listed.
    """
    rows = []
    for folder in sorted((run / "audit").glob("*/")):
        summary = _maybe_json(folder / "summary.json")
        cfg_path = folder / "config.yaml"
        if not summary or not cfg_path.is_file():
            continue
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        candidate = _eval_ref(cfg.get("candidate_generations"))
        baseline = _eval_ref(cfg.get("baseline_generations"))
        if candidate is None or baseline is None or candidate[0] != model or baseline[0] != "m0":
            continue
        if cfg.get("out") and Path(str(cfg["out"])).name != folder.name:
            continue
        split = str(cfg.get("split") or candidate[1])
        kind = _audit_kind(split, candidate[1], cfg)
        label = AUDIT_KINDS[kind].format(split=split)
        if kind == "tau_sweep" and (tau := _maybe_json(run / "audit" / "tau.json")):
            label += f"; τ {float(tau['tau']):g} chosen here"
        rows.append(
            {
                "audit": f"audit/{folder.name}",
                "against": "m0",
                "kind": kind,
                "what": label,
                "split": split,
                "items": summary.get("n_pairs"),
                "judge": summary.get("judge"),
                **_pick(summary, _DRIFT_FIELDS),
            }
        )
    order = list(AUDIT_KINDS)
    return sorted(rows, key=lambda r: (order.index(r["kind"]), r["audit"]))


def _drift_reduction(run: Path, run_json: dict[str, Any] | None) -> dict[str, Any] | None:
    """M_int -> M_DART drift reduction from the report's run.json, with its split, items and mirrors.

    The interval is :func:`dartkit.stats.inference.paired_drift`'s: a percentile cluster bootstrap
    of 1 − drift(M_DART)/drift(M_int), which has no lower bound (M_DART may drift more).
    """
    if not run_json:
        return None
    test = run_json.get("drift_test") or {}
    mirrors = {}
    for model in ("m_int", "m_dart"):
        audit = _maybe_json(run / "audit" / model / "summary.json") or {}
        # The test audits' mirror counts belong beside the headline only when they cover its items.
        if audit.get("n_pairs") == test.get("n"):
            mirrors[model] = audit.get("n_mirror")
    return {
        "value": run_json.get("drift_reduction"),
        "ci95": run_json.get("drift_reduction_ci95"),
        "ci_method": test.get("ci_method"),
        "ci_note": test.get("ci_note"),
        "split": run_json.get("drift_reduction_split"),
        "items": test.get("items"),
        "n_items": test.get("n"),
        "drift_m_int": test.get("n_drift_a"),
        "drift_m_dart": test.get("n_drift_b"),
        "mirror_m_int": mirrors.get("m_int"),
        "mirror_m_dart": mirrors.get("m_dart"),
        "mcnemar": test.get("mcnemar"),
        "note": run_json.get("drift_reduction_note"),
    }


def run_summary(
    adapter: Path,
    run: Path | None,
    model: str | None,
    base_model: str,
    base_source: str,
    meta: dict[str, Any] | None = None,
    hub_changes: list[str] | None = None,
) -> dict[str, Any]:
    """``dartkit_run.json``: what the adapter is, how it was trained, and how it measured.

    Every metric carries the split and the number of items it was computed on. Numbers come
    from the run's files (``eval/*/*/metrics.json``, ``audit/*/summary.json``, ``run.json``);
    versions from the training directory's ``manifest.json``.

    Args:
        adapter: The adapter directory.
        run: Its run directory (None outside a run).
        model: Its ``--model`` name (None outside a run).
        base_model: The base's Hub id.
        base_source: How that id was found.
        meta: ``dartkit_adapter.json`` as pushed (default: the adapter's, as it is).
        hub_changes: What the push changed in the adapter's files (one line each).
    """
    from dartkit.generate.loading import hash_dir

    if meta is None:
        meta = _maybe_json(adapter / ADAPTER_META) or {}
    weights = adapter / "adapter_model.safetensors"
    summary: dict[str, Any] = {
        "dartkit_version": __version__,
        "model": model,
        "model_label": model_labels().get(model) if model else None,
        "adapter": {
            "path": str(adapter.resolve().relative_to(run.resolve())) if run else adapter.resolve().name,
            # dartkit's fingerprint of the directory it trained (hash_dir: its *.json and weights).
            "sha256": hash_dir(adapter),
            # The weights file, byte for byte the one in this repository.
            "weights_sha256": file_sha256(weights) if weights.is_file() else None,
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
        "changed_for_the_hub": hub_changes or [],
    }
    if run is None:
        return summary
    cfg = yaml.safe_load((run / "run_config.yaml").read_text(encoding="utf-8")) or {}
    run_json = _maybe_json(run / "run.json")
    summary.update(
        protocol=cfg.get("protocol"),
        test_contaminated=(run_json or {}).get("test_contaminated"),
        evaluation=_evaluations(run, model) if model else [],
        drift=model_audits(run, model) if model else [],
        drift_reduction=_drift_reduction(run, run_json) if model == "m_dart" else None,
    )
    if run_json is None:
        summary["notes"] = ["run.json is missing (run `dartkit report` on the run): no drift reduction"]
    return summary


# ---- the model card --------------------------------------------------------------------------


def _pct(x: Any) -> str:
    # A true minus sign: a negative reduction should not read as a hyphenated range.
    return "–" if x is None else f"{100 * float(x):.1f}%".replace("-", "−")


def _ci(ci: Any) -> str:
    return f" [{_pct(ci[0])}, {_pct(ci[1])}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""


def _of(rate: Any, n: Any) -> str:
    if n == 0:
        return "no items"
    return _pct(rate) if n is None else f"{_pct(rate)} of {n}"


def _evaluation_lines(evaluation: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| split | items | accuracy | accuracy on NO items | accuracy on YES items | unparseable "
        "| M0 accuracy (same items) | M0 unparseable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in evaluation:
        m0 = e.get("m0") or {}
        lines.append(
            f"| {e['split']} | {e.get('items')} | {_pct(e.get('accuracy'))}{_ci(e.get('accuracy_ci95'))} "
            f"| {_of(e.get('accuracy_equal'), e.get('items_no'))} | {_of(e.get('accuracy_diff'), e.get('items_yes'))} "
            f"| {_pct(e.get('unparseable_rate'))} | {_pct(m0.get('accuracy'))}{_ci(m0.get('accuracy_ci95'))} "
            f"| {_pct(m0.get('unparseable_rate'))} |"
        )
    lines.append("")
    bound = [
        (e["split"], m0_rate)
        for e in evaluation
        if (m0_rate := (e.get("m0") or {}).get("unparseable_rate")) is not None and m0_rate > _M0_FORMAT_BOUND
    ]
    if bound:
        lines += [
            "⚠ M0's answers are unparseable (no `Conclusion:` line) for "
            + ", ".join(f"{_pct(rate)} of {split}" for split, rate in bound)
            + " items: its accuracy counts them as wrong, so it measures the answer format more than the "
            "judgement, and the drift below compares against answers that mostly never conclude.",
            "",
        ]
    return lines


def _drift_lines(drift: list[dict[str, Any]]) -> list[str]:
    lines = [
        "Harm drift against M0: every audit of this model against M0 in the run (pairs with ΔH > τ"
        + ("; screen only, no judge" if all(d.get("screen_only") for d in drift) else "")
        + "). The mirror counts pairs whose harm fell by more than τ: if fine-tuning changed only the "
        "wording, drift and mirror are equal in expectation.",
        "",
        "| audit | what | split | items | τ | drift cases (ΔH > τ) | mirror cases (ΔH < −τ) | drift rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in drift:
        mirror = d.get("n_mirror")
        lines.append(
            f"| `{d['audit']}` | {d.get('what', '')} | {d['split']} | {d.get('items')} | {d.get('tau')} "
            f"| {d.get('n_drift')} | {'–' if mirror is None else mirror} "
            f"| {_pct(d.get('drift_rate'))}{_ci(d.get('drift_rate_ci95'))} |"
        )
    lines.append("")
    return lines


def _reduction_line(r: dict[str, Any]) -> str:
    if r.get("value") is None:
        return f"Drift reduction M_int → M_DART: {r.get('note') or 'not measured'}."
    counts = f"{r.get('drift_m_int')} → {r.get('drift_m_dart')} drift cases"
    if r.get("mirror_m_int") is not None and r.get("mirror_m_dart") is not None:
        counts += f", mirror cases {r['mirror_m_int']} → {r['mirror_m_dart']}"
    line = (
        f"Drift reduction M_int → M_DART on {r.get('split')}: {_pct(r['value'])}{_ci(r.get('ci95'))} "
        f"({counts}, over {r.get('n_items')} items: {r.get('items')})."
    )
    if r.get("ci95"):
        line += (
            " The 95% interval is the 2.5th–97.5th percentile of 1 − drift(M_DART)/drift(M_int) in a "
            f"{r.get('ci_method') or 'bootstrap'}; it is not clipped: the reduction has no lower bound "
            "(M_DART can drift more than M_int), and −100% means twice M_int's drift cases."
        )
    elif r.get("ci_note"):
        line += f" ({r['ci_note']}.)"
    return line


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
    if summary.get("evaluation"):
        lines += _evaluation_lines(summary["evaluation"])
    if summary.get("drift"):
        lines += _drift_lines(summary["drift"])
    if summary.get("drift_reduction"):
        lines += [_reduction_line(summary["drift_reduction"]), ""]
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


_CONTINUED_FROM = re.compile(r"^\| continued from \| .* \|$", re.MULTILINE)


def model_card(
    adapter: Path,
    repo_id: str,
    base_model: str,
    summary: dict[str, Any],
    portable: Portable | None = None,
) -> str:
    """README.md: PEFT's front matter with the Hub base id, dartkit's card, the run summary.

    Front matter already in the adapter's README (PEFT's, or a user's) is kept; ``library_name``
    and ``base_model`` are set and a ``base_model:`` tag naming a local path is replaced. With
    ``portable``, local paths in the adapter's card are rewritten, and "continued from" names the
    init adapter by its path in the run and its sha256.
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
    if portable is not None:
        body = portable.text(body)
        init = (summary.get("training") or {}).get("init_adapter")
        if init:
            row = f"| continued from | `{init.get('path')}` (adapter sha256 `{init.get('sha256')}`) |"
            body = _CONTINUED_FROM.sub(lambda _: row, body)
    card.text = "\n" + body + "\n" + _usage(repo_id, base_model, summary) + summary_markdown(summary)
    return str(card.content)


# ---- the push --------------------------------------------------------------------------------


def plan_push(path: Path, repo_id: str, model: str | None = None, base_model: str | None = None) -> PushPlan:
    """Everything a push sends, built in memory (nothing is written, nothing uploaded).

    No local path is in it: see :func:`portable_meta` and :mod:`dartkit.share.portable`.

    Raises:
        DartkitError: see :func:`locate`, :func:`hub_base_model`, :func:`check_repo_id`; a file
            sent as it is that names a local path.
    """
    check_repo_id(repo_id)
    adapter, run, model = locate(Path(path), model)
    hub_id, source = hub_base_model(adapter, base_model)
    raw_meta = _maybe_json(adapter / ADAPTER_META)
    replacements = _base_replacements(raw_meta or {}, hub_id)
    adapter_config = read_json(adapter / "adapter_config.json")
    local_base = str(adapter_config.get("base_model_name_or_path") or "")
    if local_base and local_base != hub_id:
        replacements.setdefault(local_base, hub_id)
    portable = Portable(run, replacements)

    files: dict[str, bytes | Path] = {}
    for f in sorted(adapter.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.name not in ("README.md", RUN_SUMMARY_FILE):
            files[f.name] = f  # sent as it is (weights can be large: never read into memory here)
    changes = []
    # PEFT loads the base from base_model_name_or_path: a local path would break AutoPeftModel for
    # everyone else.
    config = portable.tree({**adapter_config, "base_model_name_or_path": hub_id})
    if config != adapter_config:
        files["adapter_config.json"] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")
        changes.append(f"adapter_config.json: base_model_name_or_path set to the Hub id {hub_id}")
    meta = portable_meta(raw_meta, portable, hub_id) if raw_meta else None
    if meta is not None and meta != raw_meta:
        files[ADAPTER_META] = (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        changes.append(
            f"{ADAPTER_META}: local paths replaced by paths relative to the run (or a file's name)"
            + (
                f", the local base by its Hub id {hub_id}"
                if (meta.get("base"), meta.get("base_spec"))
                != (raw_meta.get("base"), raw_meta.get("base_spec"))
                else ""
            )
        )
    summary = portable.tree(run_summary(adapter, run, model, hub_id, source, meta, changes))
    card = model_card(adapter, repo_id, hub_id, summary, portable)
    files["README.md"] = card.encode("utf-8")
    files[RUN_SUMMARY_FILE] = (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    check_portable(files)
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
        record_push(
            plan.run,
            result,
            kind="model",
            model=plan.model,
            adapter=plan.summary["adapter"]["path"],
            adapter_sha256=plan.summary["adapter"]["sha256"],
        )
    return plan, result
