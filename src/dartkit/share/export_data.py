"""``dartkit export-data``: a run's distillation and repair training rows as Hugging Face datasets.

    dartkit export-data runs/demo --out runs/demo/export
    dartkit export-data runs/demo --out exp --format messages --parts repair --push my-org/dart-repairs

Only rows that passed QC are exported, each exactly as dartkit trained on it: the rows are read
by the trainer's own reader (:func:`dartkit.train.data.read_records`: the student's
classification prompt rebuilt from the prepared split, the explanation policy of the run's
training, repair weights from ``severity_weight``), so the text equals the training text.
Two shapes, in TRL's conversational formats:

- ``messages``: ``[system?, user, assistant]`` (TRL's "conversational language modeling");
- ``prompt-completion``: ``prompt`` = ``[system?, user]``, ``completion`` = ``[assistant]``
  (TRL's "conversational prompt-completion": the loss on the completion, as dartkit trains).

Columns beside them: ``id``, ``source`` (distill / repair), ``split`` (the prepared split the
item belongs to), ``benchmark``, ``label``, ``weight`` (1 for distillation rows, the severity
weight x1..x4 for repair rows). Each shape is a ``DatasetDict`` with one split per part, saved
with ``save_to_disk`` under ``DIR/messages`` and ``DIR/prompt_completion``, and as JSONL under
``DIR/jsonl/``, which the dataset card's front matter names, so the pushed repository loads with
``load_dataset("ORG/NAME", "messages")``. :func:`plan_export` reads the rows without writing
(``--dry-run`` prints :func:`dry_run_report` of it); :func:`push_export` pushes an export and logs
the push in ``<run>/hub/pushes.jsonl``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dartkit import __version__
from dartkit.data.jsonl import iter_json_lines, read_examples, read_json, read_text, write_jsonl, write_text
from dartkit.data.splits import SPLITS
from dartkit.errors import DartkitError, DataError
from dartkit.files import file_sha256
from dartkit.records import Example
from dartkit.share.hub import PushResult
from dartkit.share.portable import Portable, check_portable

PARTS = ("distill", "repair")
FORMATS = ("messages", "prompt-completion")
# Where each part's rows live in a run, and which training read them (for its explanation policy).
PART_FILES = {"distill": Path("distill") / "teacher.jsonl", "repair": Path("repair") / "repair.jsonl"}
PART_TRAINING = {"distill": "m_int", "repair": "m_dart"}
EXPORT_META = "dartkit_export.json"
# Columns every row carries, in this order, before the conversation columns.
COLUMNS = ("id", "source", "split", "benchmark", "label", "weight")


def format_dir(fmt: str) -> str:
    """The directory (and Hub config) name of a format: ``messages`` or ``prompt_completion``."""
    return fmt.replace("-", "_")


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        out: The output directory.
        counts: Rows written per part (passed QC).
        files: Every file written, relative to ``out``.
        datasets: Whether ``save_to_disk`` directories were written (False without ``datasets``).
        notes: Things the user should know (a part skipped, datasets missing).
    """

    out: Path
    counts: dict[str, int]
    files: list[str] = field(default_factory=list)
    datasets: bool = True
    notes: list[str] = field(default_factory=list)


def parse_list(value: str | None, allowed: tuple[str, ...], flag: str) -> tuple[str, ...] | None:
    """``"a,b"`` -> ``("a", "b")``, each checked against ``allowed`` (None stays None).

    Raises:
        DartkitError: an unknown or empty entry.
    """
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(","))
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        raise DartkitError(f"{flag} {value!r}: expected a comma-separated list of {', '.join(allowed)}")
    return tuple(dict.fromkeys(items))


def _training_policy(run: Path, part: str) -> str:
    """The explanation policy the run's training rebuilt prompts with (``off`` unless set)."""
    cfg_path = run / PART_TRAINING[part] / "config.yaml"
    if cfg_path.is_file():
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        return str(cfg.get("policy") or "off")
    return "off"


def _prepared(run: Path) -> tuple[dict[str, Example], dict[str, str]]:
    """Every prepared example of the run by id, and the split each one is in."""
    data = run / "data"
    examples: dict[str, Example] = {}
    split_of: dict[str, str] = {}
    for split in SPLITS:
        path = data / f"{split}.jsonl"
        if path.is_file():
            for e in read_examples(path):
                examples[e.id] = e
                split_of[e.id] = split
    if not examples:
        raise DataError(
            f"{data}: no prepared split files (train/audit/val/test.jsonl); is {run} a dartkit run?"
        )
    return examples, split_of


def training_rows(run: Path, part: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of one part that passed QC, as trained on, and facts about the part for the card.

    Returns:
        (rows with the columns of :data:`COLUMNS` plus ``messages``, ``prompt``, ``completion``;
        info: source file, its sha256, rows in the file, policy).

    Raises:
        DataError: a bad row, an id not in the prepared data (naming file:line).
    """
    from dartkit.stages.repair import SEVERITY_FIELD
    from dartkit.train.data import read_records

    path = run / PART_FILES[part]
    examples, split_of = _prepared(run)
    policy = _training_policy(run, part)
    records, _ = read_records(
        path, examples, policy, weights_from=SEVERITY_FIELD if part == "repair" else None
    )
    rows = []
    for r in records:
        example = examples[r.id]  # read_records refuses an id the prepared data lacks
        answer = {"role": "assistant", "content": r.target}
        rows.append(
            {
                "id": r.id,
                "source": part,
                "split": split_of[r.id],
                "benchmark": example.benchmark,
                "label": example.label,
                "weight": float(r.weight),
                "messages": [*r.messages, answer],
                "prompt": list(r.messages),
                "completion": [answer],
            }
        )
    in_file = sum(1 for _ in iter_json_lines(read_text(path), str(path)))
    info = {
        "file": str(PART_FILES[part]),
        "sha256": file_sha256(path),
        "rows_in_file": in_file,
        "policy": policy,
    }
    return rows, info


def _shape(rows: Iterable[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    keep = (*COLUMNS, "messages") if fmt == "messages" else (*COLUMNS, "prompt", "completion")
    return [{k: row[k] for k in keep} for row in rows]


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def _teacher(run: Path, part: str) -> str | None:
    """The part's teacher spec as the card may show it: its local paths rewritten (see
    :meth:`~dartkit.share.portable.Portable.spec`), e.g. ``hf:/home/me/models/t`` -> ``hf:t``."""
    metrics = run / PART_FILES[part].parent / "metrics.json"
    teacher = read_json(metrics).get("teacher") if metrics.is_file() else None
    return Portable(run).spec(str(teacher)) if teacher else None


def dataset_card(
    run: Path,
    rows: dict[str, list[dict[str, Any]]],
    infos: dict[str, dict[str, Any]],
    formats: tuple[str, ...],
    protocol: str | None,
) -> str:
    """README.md of the export: front matter naming the JSONL files per config, counts, provenance."""
    from huggingface_hub import DatasetCardData

    total = sum(len(r) for r in rows.values())
    data = DatasetCardData(
        language=["en"],
        task_categories=["text-generation"],
        tags=["dartkit", "sft", "trl", "conversational", "fairness"],
        size_categories=[_size_category(total)],
        configs=[
            {
                "config_name": format_dir(fmt),
                "data_files": [
                    {"split": part, "path": f"jsonl/{format_dir(fmt)}/{part}.jsonl"}
                    for part in rows
                    if rows[part]
                ],
            }
            for fmt in formats
        ],
    )
    lines = [
        "# dartkit training data",
        "",
        f"Training rows of the dartkit run `{run.name}` (protocol `{protocol or 'unknown'}`), exported by "
        f"dartkit {__version__}. **These are training items**: every row is an example a student was "
        "fine-tuned on, so a model trained on them must not be evaluated on these items.",
        "",
        "Only rows that passed dartkit's quality control are here (conclusion present and equal to the gold "
        "label, sentence count, no copied prompt text, consistency; repair rows also had to score no more "
        "harmful than the base model's answer). The prompt is the student's classification prompt, exactly "
        "as dartkit trained on it (not the teacher's prompt, which showed the gold label).",
        "",
        "| part | rows (passed QC / in file) | from split | weight | teacher | trained |",
        "|---|---|---|---|---|---|",
    ]
    trained = {"distill": "M_int (Stage I), and M_DART with recipe `mix`", "repair": "M_DART (Stage III)"}
    for part, part_rows in rows.items():
        info = infos[part]
        splits = Counter(r["split"] for r in part_rows)
        weights = Counter(r["weight"] for r in part_rows)
        lines.append(
            f"| {part} | {len(part_rows)} / {info['rows_in_file']} "
            f"| {', '.join(f'{s} ({n})' for s, n in sorted(splits.items())) or '–'} "
            f"| {', '.join(f'{w:g} ({n})' for w, n in sorted(weights.items())) or '–'} "
            f"| {_teacher(run, part) or '–'} | {trained[part]} |"
        )
    lines.append("")
    if any(r["split"] == "test" for part_rows in rows.values() for r in part_rows):
        lines += [
            "**Some rows are test items** (protocol `paper` repairs the test split's drift cases): "
            "this run's test results on them are not held out.",
            "",
        ]
    lines += ["Rows per benchmark and label:", "", "| part | benchmark | YES | NO |", "|---|---|---|---|"]
    for part, part_rows in rows.items():
        cells = Counter((r["benchmark"], r["label"]) for r in part_rows)
        for bench in sorted({b for b, _ in cells}):
            lines.append(f"| {part} | {bench} | {cells[(bench, 'YES')]} | {cells[(bench, 'NO')]} |")
    described = {
        "messages": "- `messages`: the conversation `[system?, user, assistant]` (TRL's conversational "
        "language modeling format).",
        "prompt_completion": "- `prompt_completion`: `prompt` = `[system?, user]`, `completion` = "
        "`[assistant]` (TRL's conversational prompt-completion format; the loss goes on the completion, "
        "as dartkit trains).",
    }
    first = format_dir(formats[0])
    lines += [
        "",
        "## Formats",
        "",
        *(described[format_dir(fmt)] for fmt in formats),
        "",
        "Other columns: `id`, `source` (distill / repair), `split` (the prepared split the item is in), "
        "`benchmark`, `label` (gold: YES when a correct answer needs group differences), `weight` (the loss "
        "weight dartkit used: 1 for distillation rows, the drift severity weight for repair rows; "
        "TRL's SFTTrainer ignores it, so use it with a weighted loss or by repeating rows).",
        "",
        "```python",
        "from datasets import load_dataset, load_from_disk",
        "",
        f'ds = load_from_disk("<this directory>/{first}")  # or load_dataset("ORG/NAME", "{first}")',
        "```",
        "",
        "Content note: the questions are about demographic groups and some quote stereotypes or slurs "
        "from the source benchmarks (Wang et al. 2025, Fairness through Difference Awareness); check "
        "their terms before redistributing.",
        "",
    ]
    return f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines)


@dataclass
class ExportPlan:
    """What an export holds, read from the run before anything is written.

    Attributes:
        run: The run directory.
        formats: The formats to write.
        rows: Rows per part (passed QC), with every column of both formats.
        infos: Per part: source file, its sha256, rows in the file, policy.
        protocol: The run's protocol.
        notes: Things the user should know (a part with no row).
    """

    run: Path
    formats: tuple[str, ...]
    rows: dict[str, list[dict[str, Any]]]
    infos: dict[str, dict[str, Any]]
    protocol: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {part: len(rows) for part, rows in self.rows.items()}

    def jsonl_files(self) -> dict[str, int]:
        """The JSONL files the export writes (relative to ``out``), with their row counts."""
        return {
            f"jsonl/{format_dir(fmt)}/{part}.jsonl": len(rows)
            for fmt in self.formats
            for part, rows in self.rows.items()
            if rows
        }


def parse_format(value: str | None) -> tuple[str, ...]:
    """``--format``: ``messages``, ``prompt-completion`` or ``both`` (None: both) -> the formats.

    Raises:
        DartkitError: anything else, listing the choices.
    """
    if value is None or value == "both":
        return FORMATS
    if value.replace("_", "-") in FORMATS:
        return (value.replace("_", "-"),)
    raise DartkitError(f"--format {value!r}: expected one of {', '.join(FORMATS)}, both")


def plan_export(
    run: Path, formats: tuple[str, ...] = FORMATS, parts: tuple[str, ...] | None = None
) -> ExportPlan:
    """Read the run's QC-passed training rows for an export; nothing is written.

    Args:
        run: A ``dartkit run`` directory.
        formats: ``messages`` and/or ``prompt-completion``.
        parts: ``distill`` and/or ``repair``; None exports every part the run has.

    Raises:
        DartkitError: not a run, a requested part missing, no rows at all.
    """
    run = Path(run)
    if not (run / "run_config.yaml").is_file():
        raise DartkitError(f"{run}: not a dartkit run directory (no run_config.yaml)")
    notes: list[str] = []
    if parts is None:
        parts = tuple(p for p in PARTS if (run / PART_FILES[p]).is_file())
    missing = [p for p in parts if not (run / PART_FILES[p]).is_file()]
    if missing:
        raise DartkitError(
            f"{run}: no {' or '.join(missing)} rows ({', '.join(str(run / PART_FILES[p]) for p in missing)} "
            "missing); has that stage run?"
        )
    rows: dict[str, list[dict[str, Any]]] = {}
    infos: dict[str, dict[str, Any]] = {}
    for part in parts:
        rows[part], infos[part] = training_rows(run, part)
        if not rows[part]:
            notes.append(f"{part}: no row passed QC, so the export has no {part} split")
    if not any(rows.values()):
        raise DartkitError(
            f"{run}: no training row passed QC in {', '.join(parts) or 'any part'}: nothing to export"
        )
    cfg = yaml.safe_load((run / "run_config.yaml").read_text(encoding="utf-8")) or {}
    return ExportPlan(run, tuple(formats), rows, infos, cfg.get("protocol"), notes)


def _have_datasets() -> bool:
    try:
        import datasets  # noqa: F401 - only whether it is there
    except ImportError:
        return False
    return True


_NO_DATASETS = (
    "the `datasets` package is not installed, so only JSONL was written "
    "(pip install datasets for load_from_disk directories)"
)


def export_data(
    run: Path,
    out: Path,
    formats: tuple[str, ...] = FORMATS,
    parts: tuple[str, ...] | None = None,
    warn=None,
) -> ExportResult:
    """Write the run's QC-passed training rows to ``out`` (datasets directories, JSONL, card).

    Args:
        run: A ``dartkit run`` directory.
        out: Output directory (files of an earlier export there are replaced).
        formats: ``messages`` and/or ``prompt-completion``.
        parts: ``distill`` and/or ``repair``; None exports every part the run has.
        warn: Called with a one-line note (default: none).

    Raises:
        DartkitError: not a run, a requested part missing, no rows at all.
    """
    plan = plan_export(run, formats, parts)
    run, out = plan.run, Path(out)
    notes = list(plan.notes)
    _clear_previous(out, run)
    # Marked as an export's directory before anything is written, so an export that dies half-way
    # (disk full, a crash in save_to_disk) is replaced by the next one instead of refused.
    write_text(out / EXPORT_META, json.dumps({"dartkit_version": __version__, "complete": False}) + "\n")
    written: list[str] = []
    for fmt in plan.formats:
        for part, part_rows in plan.rows.items():
            if part_rows:
                rel = f"jsonl/{format_dir(fmt)}/{part}.jsonl"
                write_jsonl(out / rel, _shape(part_rows, fmt))
                written.append(rel)
    have_datasets = _have_datasets()
    if have_datasets:
        for fmt in plan.formats:
            written += _save_to_disk(out / format_dir(fmt), plan.rows, fmt, out)
    else:
        notes.append(_NO_DATASETS)
    write_text(out / "README.md", dataset_card(run, plan.rows, plan.infos, plan.formats, plan.protocol))
    meta = {
        "dartkit_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run": run.name,
        "protocol": plan.protocol,
        "formats": list(plan.formats),
        "counts": plan.counts,
        "sources": plan.infos,
        "columns": list(COLUMNS),
        "complete": True,
    }
    write_text(out / EXPORT_META, json.dumps(meta, indent=2) + "\n")
    written += ["README.md", EXPORT_META]
    if warn is not None:
        for note in notes:
            warn(note)
    return ExportResult(out, meta["counts"], sorted(written), have_datasets, notes)


def dry_run_report(
    plan: ExportPlan, out: Path, push_to: str | None = None, revision: str | None = None
) -> str:
    """What ``export-data --dry-run`` prints: the card, every file it would write, what it would push.

    Raises:
        DartkitError: ``out`` holds directories an export would replace that no export wrote.
    """
    _check_previous(Path(out), plan.run)
    counts = ", ".join(f"{n} {part}" for part, n in plan.counts.items())
    jsonl = plan.jsonl_files()
    lines = [
        "==> README.md (the dataset card)",
        dataset_card(plan.run, plan.rows, plan.infos, plan.formats, plan.protocol),
        f"would export {counts} row(s) as {' and '.join(plan.formats)} to {out} (nothing written: --dry-run):",
        "  README.md  dataset card (above)",
        f"  {EXPORT_META}  export record (counts, source files and their sha256)",
        *(f"  {name}  {n} rows" for name, n in jsonl.items()),
    ]
    splits = ", ".join(part for part, rows in plan.rows.items() if rows)
    if _have_datasets():
        lines += [
            f"  {format_dir(fmt)}/  datasets save_to_disk directory (splits: {splits})"
            for fmt in plan.formats
        ]
    else:
        lines.append("  (no save_to_disk directories: the `datasets` package is not installed)")
    if push_to:
        names = ["README.md", EXPORT_META, *jsonl]
        lines.append(
            f"would push to the dataset repository {push_to} (branch {revision or 'main'}): {', '.join(names)}"
        )
    return "\n".join(lines)


def _check_previous(out: Path, run: Path) -> list[Path]:
    """An earlier export's outputs in ``out`` (to be replaced).

    Raises:
        DartkitError: ``out`` is the run directory itself, or holds files or directories of those
            names (``README.md``, ``jsonl/``, ``messages/``, ``prompt_completion/``) that no export wrote.
    """
    if Path(out).resolve() == Path(run).resolve():
        raise DartkitError(
            f"--out {out} is the run directory itself; choose a directory of its own (e.g. {Path(run) / 'export'})"
        )
    ours = [out / "README.md", out / "jsonl", *(out / format_dir(f) for f in FORMATS)]
    present = [p for p in ours if p.exists()]
    if present and not (out / EXPORT_META).is_file():
        raise DartkitError(
            f"{present[0]} exists and was not written by `dartkit export-data`; choose another --out"
        )
    return present


def _clear_previous(out: Path, run: Path) -> None:
    """Remove an earlier export's outputs from ``out``, so no split or file of it outlives this one.

    Raises:
        DartkitError: see :func:`_check_previous`.
    """
    for p in _check_previous(out, run):
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _save_to_disk(target: Path, rows: dict[str, list[dict[str, Any]]], fmt: str, out: Path) -> list[str]:
    import datasets
    from datasets import Dataset, DatasetDict

    dd = DatasetDict({part: Dataset.from_list(_shape(r, fmt)) for part, r in rows.items() if r})
    # A bar per split for a few hundred rows is noise beside the one-line summary.
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dd.save_to_disk(str(target))
    finally:
        if bars:
            datasets.enable_progress_bars()
    return sorted(str(p.relative_to(out)) for p in target.rglob("*") if p.is_file())


def hub_files(result: ExportResult) -> dict[str, Path]:
    """The files a dataset push sends: the card, the export record and the JSONL (the Hub's format)."""
    names = [f for f in result.files if f.startswith("jsonl/") or f in ("README.md", EXPORT_META)]
    return {name: result.out / name for name in names}


def push_export(
    result: ExportResult,
    run: Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    endpoint: str | None = None,
) -> PushResult:
    """Push an export's card, record and JSONL to the dataset repository ``repo_id`` in one commit.

    The push is recorded in ``<run>/hub/pushes.jsonl`` beside the run's adapter pushes (never the token).

    Raises:
        DartkitError: no token, the Hub unreachable or refusing (see :func:`dartkit.share.hub.push_files`).
    """
    from dartkit.share.hub import push_files, record_push

    files = hub_files(result)
    check_portable({name: files[name] for name in ("README.md", EXPORT_META) if name in files})
    pushed = push_files(
        repo_id,
        files,
        repo_type="dataset",
        revision=revision,
        private=private,
        commit_message=f"dartkit {__version__}: training data of {Path(run).name}",
        endpoint=endpoint,
    )
    record_push(run, pushed, kind="dataset", counts=result.counts, export=str(result.out))
    return pushed
