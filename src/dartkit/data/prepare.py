"""Turn a benchmark source into ``train.jsonl``, ``audit.jsonl``, ``val.jsonl``, ``test.jsonl`` and ``summary.json``.

Sources: the upstream pickles (a directory, or downloaded into a cache), the
packaged demo suite, or a user's own JSONL of Examples (one file or a directory
of them; any ``split`` they carry is replaced).

Example::

    dartkit data prepare --out runs/x/data --source ../shared/data/difference_awareness/raw_pkl
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from dartkit.data.bbq import describe as describe_rebuild
from dartkit.data.bbq import load_rebuilt_n1
from dartkit.data.demo import DEMO_SUITE_RESOURCE, demo_suite_sha256, load_demo_suite
from dartkit.data.download import fetch_wang2025
from dartkit.data.jsonl import read_examples, write_json, write_jsonl
from dartkit.data.splits import (
    DEFAULT_RATIOS,
    SPLITS,
    check_disjoint_groups,
    check_ratios,
    cross_split_twins,
    split_examples,
    twin_merges,
)
from dartkit.data.wang2025 import benchmark_file_name, load_benchmark_dir
from dartkit.errors import DataError
from dartkit.files import cache_root, file_sha256
from dartkit.records import BENCHMARKS, Example

Suite = Literal["wang2025", "demo", "jsonl"]
SUITES: tuple[str, ...] = ("wang2025", "demo", "jsonl")


def default_cache_dir() -> Path:
    """Where downloads go: ``$DARTKIT_CACHE/wang2025``, else ``~/.cache/dartkit/wang2025``."""
    return cache_root() / "wang2025"


def _jsonl_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source] if source.suffix == ".jsonl" else []
    return sorted(source.glob("*.jsonl")) if source.is_dir() else []


def _has_pickles(source: Path) -> bool:
    return source.is_dir() and any((source / benchmark_file_name(b)).is_file() for b in BENCHMARKS)


def _load_jsonl_source(files: list[Path]) -> list[Example]:
    examples: list[Example] = []
    first_seen: dict[str, Path] = {}
    for path in files:
        for example in read_examples(path):
            if example.id in first_seen:
                raise DataError(f"{path}: id {example.id} also appears in {first_seen[example.id]}")
            first_seen[example.id] = path
            examples.append(example)
    if not examples:
        raise DataError(f"{', '.join(map(str, files))}: no examples")
    return examples


def _add_rebuilt_n1(
    examples: list[Example], info: dict[str, Any], bbq: Path | None
) -> tuple[list[Example], dict[str, Any]]:
    """Fill a missing N1 from BBQ (``bbq``), marked as rebuilt; the upstream N1 file wins when present."""
    info["bbq"] = str(Path(bbq).expanduser()) if bbq is not None else None
    if bbq is None:
        return examples, info
    if "N1" in info["present"]:
        info.setdefault("notes", []).append(
            f"N1: the upstream {benchmark_file_name('N1')} is present and used; bbq ({bbq}) was ignored"
        )
        return examples, info
    build = load_rebuilt_n1(Path(bbq))
    info["present"] = [b for b in BENCHMARKS if b in info["present"] or b == "N1"]
    info["absent"] = [b for b in info["absent"] if b != "N1"]
    (info.get("absent_reasons") or {}).pop("N1", None)
    bbq_path = Path(bbq).expanduser()
    if bbq_path.is_dir():
        info["source_sha256"].update({f"bbq/{name}": sha for name, sha in build.info["bbq_sha256"].items()})
    else:
        info["source_sha256"][f"bbq/{bbq_path.name}"] = build.info["file_sha256"]
    info["rebuilt"] = {"N1": {**build.info, "description": describe_rebuild(build.info)}}
    info.setdefault("notes", []).append(describe_rebuild(build.info))
    return [*examples, *build.examples], info


def _mark_rebuilt_jsonl(examples: Sequence[Example], info: dict[str, Any]) -> None:
    """A JSONL source holding rebuilt items (a `build-n1` file): say so in ``rebuilt`` and ``notes``."""
    for benchmark in sorted({e.benchmark for e in examples}):
        prov = next(
            (
                p
                for e in examples
                if e.benchmark == benchmark and isinstance(p := getattr(e, "provenance", None), dict)
                if p.get("rebuilt")
            ),
            None,
        )
        if prov is None:
            continue
        items = [e for e in examples if e.benchmark == benchmark]
        build = {
            **prov,
            "counts": {
                "diff": {"all": sum(e.label == "YES" for e in items)},
                "equal": {"all": sum(e.label == "NO" for e in items)},
            },
        }
        info.setdefault("rebuilt", {})[benchmark] = {**build, "description": describe_rebuild(build)}
        info.setdefault("notes", []).append(describe_rebuild(build))


def _load_source(
    source: Path | None,
    suite: str,
    cache_dir: Path | None,
    base_url: str | None,
    bbq: Path | None = None,
) -> tuple[list[Example], dict[str, Any]]:
    """Load examples and describe where they came from (for the summary)."""
    if suite not in SUITES:
        raise DataError(f"suite: expected one of {', '.join(SUITES)}, got {suite!r}")
    if bbq is not None and suite != "wang2025":
        raise DataError(
            f"--bbq rebuilds N1 for the upstream suite (--suite wang2025), not for --suite {suite}; "
            "a file from `dartkit data build-n1` can be part of a --suite jsonl source instead"
        )
    if suite == "demo":
        if source is not None:
            raise DataError("--source cannot be combined with --suite demo (the demo suite is packaged)")
        examples = load_demo_suite()
        present = sorted({e.benchmark for e in examples}, key=BENCHMARKS.index)
        return examples, {
            "suite": "demo",
            "source": f"dartkit/data/{DEMO_SUITE_RESOURCE}",
            "present": present,
            "absent": [b for b in BENCHMARKS if b not in present],
            "source_sha256": {DEMO_SUITE_RESOURCE: demo_suite_sha256()},
        }

    info: dict[str, Any] = {}
    if source is None:
        if suite == "jsonl":
            raise DataError("--suite jsonl needs --source (a .jsonl file or a directory of them)")
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        fetched = fetch_wang2025(cache_dir, base_url)
        info["base_url"] = fetched.base_url
        info["absent_reasons"] = fetched.absent
        source = cache_dir
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")

    jsonl_files = _jsonl_files(source)
    if suite == "jsonl" or (jsonl_files and not _has_pickles(source)):
        if bbq is not None:
            raise DataError(
                f"--bbq rebuilds N1 for the upstream pickles, but {source} holds JSONL Examples; "
                "add a file from `dartkit data build-n1` to that source instead"
            )
        if not jsonl_files:
            raise DataError(f"{source}: no .jsonl files")
        examples = _load_jsonl_source(jsonl_files)
        info.update(
            suite="jsonl",
            source=str(source),
            present=sorted({e.benchmark for e in examples}),
            absent=[],
            source_sha256={
                str(p.relative_to(source) if source.is_dir() else p.name): file_sha256(p) for p in jsonl_files
            },
        )
        _mark_rebuilt_jsonl(examples, info)
        return examples, info

    examples, present, absent = load_benchmark_dir(source)
    info.update(
        suite="wang2025",
        source=str(source),
        present=present,
        absent=absent,
        source_sha256={benchmark_file_name(b): file_sha256(source / benchmark_file_name(b)) for b in present},
    )
    return _add_rebuilt_n1(examples, info, bbq)


def _benchmarks_of(examples: Sequence[Example]) -> list[str]:
    return sorted(
        {e.benchmark for e in examples}, key=lambda b: (BENCHMARKS.index(b) if b in BENCHMARKS else 99, b)
    )


def cell_counts(examples: Sequence[Example]) -> dict[str, dict[str, dict[str, int]]]:
    """Items per benchmark x label x split of split examples: ``{benchmark: {label: {split: n}}}``."""
    counts: Counter[tuple[str, str, str]] = Counter((e.benchmark, e.label, e.split or "") for e in examples)
    return {
        b: {label: {s: counts[(b, label, s)] for s in SPLITS} for label in ("YES", "NO")}
        for b in _benchmarks_of(examples)
    }


def summarize(examples: Sequence[Example]) -> dict[str, Any]:
    """Counts of split examples and the checks on their grouping.

    Args:
        examples: Items with ``split`` set.

    Returns:
        ``{"counts": {B: {label: {split: n}}}, "split_totals": {split: n},
        "scenario_keys": {B: n}, "twin_groups_merged": {B: n},
        "cross_split_twins": n, "total": n}``: ``twin_groups_merged`` counts
        the scenario groups that twin questions (same question up to numbers,
        case, punctuation and option order) joined to another group;
        ``cross_split_twins`` counts twin questions found in more than one
        split by a check that ignores how the split was made (always 0 in a
        written summary).
    """
    benchmarks = _benchmarks_of(examples)
    keys: dict[str, set[str]] = {b: set() for b in benchmarks}
    for example in examples:
        keys[example.benchmark].add(example.scenario_key)
    merged = twin_merges(examples)
    return {
        "counts": cell_counts(examples),
        "split_totals": {s: sum(1 for e in examples if e.split == s) for s in SPLITS},
        "scenario_keys": {b: len(keys[b]) for b in benchmarks},
        "twin_groups_merged": {b: merged.get(b, 0) for b in benchmarks},
        "cross_split_twins": len(cross_split_twins(examples)),
        "total": len(examples),
    }


DEFAULT_MIN_CELL_ITEMS = 5
"""A benchmark x label x split cell with fewer items than this gets a warning from ``data prepare``."""


def small_cells(
    counts: dict[str, dict[str, dict[str, int]]],
    ratios: Sequence[float],
    min_items: int = DEFAULT_MIN_CELL_ITEMS,
) -> list[dict[str, Any]]:
    """The benchmark x label x split cells that are empty or hold fewer than ``min_items`` items.

    Grouping by scenario hands out whole groups, so with few items per cell a split can end up with
    no item of a label (or of a benchmark) without anyone asking for it; per-benchmark and per-label
    figures on such a cell mean little. Splits whose ratio is 0 are meant to be empty and are skipped.

    Args:
        counts: ``summary["counts"]``: ``{benchmark: {label: {split: n}}}``.
        ratios: The four split ratios (train, audit, val, test).
        min_items: Cells below this many items are reported (empty cells always are).

    Returns:
        One ``{"benchmark", "label", "split", "n", "message"}`` per cell, in benchmark, label, split order.

    Raises:
        DataError: ``min_items`` is negative.
    """
    if min_items < 0:
        raise DataError(f"min_cell_items: expected 0 or more items, got {min_items}")
    wanted = [s for s, r in zip(SPLITS, check_ratios(ratios), strict=True) if r > 0]
    out = []
    for benchmark, by_label in counts.items():
        for label, by_split in by_label.items():
            for split in wanted:
                n = int(by_split.get(split, 0))
                if n == 0 or n < min_items:
                    what = "empty" if n == 0 else f"{n} item{'s' if n > 1 else ''}, below {min_items}"
                    out.append(
                        {
                            "benchmark": benchmark,
                            "label": label,
                            "split": split,
                            "n": n,
                            "message": f"{benchmark} {label} {split}: {what}",
                        }
                    )
    return out


def small_cells_by_benchmark(cells: Sequence[dict[str, Any]]) -> dict[str, str]:
    """:func:`small_cells` as one short line per benchmark, e.g. ``{"D3": "YES val empty, NO test 1"}``."""
    out: dict[str, list[str]] = {}
    for c in cells:
        out.setdefault(c["benchmark"], []).append(
            f"{c['label']} {c['split']} {'empty' if c['n'] == 0 else c['n']}"
        )
    return {b: ", ".join(parts) for b, parts in out.items()}


def small_cells_warning(summary: dict[str, Any], remedy: str) -> list[str]:
    """The small-cell warning for a console: a headline, then one line per affected benchmark.

    ``remedy`` says how to get more items or fewer warnings in the user's terms (flags or config keys).
    """
    cells = summary.get("small_cells") or []
    if not cells:
        return []
    head = (
        f"warning: {len(cells)} benchmark x label x split cell(s) are empty or hold fewer than "
        f"{summary['min_cell_items']} items; accuracy per benchmark or per label on them means little ({remedy}):"
    )
    return [head, *(f"  {b}: {line}" for b, line in small_cells_by_benchmark(cells).items())]


def prepare_data(
    out: Path,
    source: Path | None = None,
    suite: Suite = "wang2025",
    per_cell: int | None = None,
    seed: int = 42,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    cache_dir: Path | None = None,
    base_url: str | None = None,
    min_cell_items: int = DEFAULT_MIN_CELL_ITEMS,
    bbq: Path | None = None,
) -> dict[str, Any]:
    """Load a benchmark source, split it by scenario and twin question, and write the split files.

    Args:
        out: Directory for ``train.jsonl``, ``audit.jsonl``, ``val.jsonl``, ``test.jsonl``
            (each written, ``audit.jsonl`` empty when its ratio is 0) and ``summary.json``.
        source: Directory of ``<B>_1k.pkl`` files, or a ``.jsonl`` file / directory of
            Example JSONL. None with suite ``wang2025`` downloads into ``cache_dir``.
        suite: ``wang2025`` (upstream pickles; JSONL sources are detected),
            ``demo`` (the packaged demo suite) or ``jsonl`` (users' own Examples).
        per_cell: Keep only this many items per benchmark x label before splitting.
        seed: Seed for subsampling and splitting.
        ratios: Train, audit, val, test fractions (three numbers: train, val, test, no audit).
        cache_dir: Download cache; defaults to :func:`default_cache_dir`.
        base_url: Download location; see :func:`dartkit.data.download.resolve_base_url`.
        min_cell_items: Warn about every benchmark x label x split cell (of a split with a non-zero
            ratio) that is empty or holds fewer items than this.
        bbq: Where to rebuild N1 from when the upstream ``N1_1k.pkl`` is absent (suite
            ``wang2025`` only): BBQ's ``data/`` directory (built with seed
            :data:`dartkit.data.bbq.DEFAULT_SEED`) or a file written by ``dartkit data build-n1``.
            Rebuilt items are marked (ids ``N1-rebuilt-*``, ``provenance``); the summary
            records the build under ``rebuilt`` and says so in ``notes``. When the upstream
            N1 file is present it is used and ``bbq`` is ignored, with a note.

    Returns:
        The summary written to ``summary.json``; its ``warnings`` list one line per small cell
        (``small_cells`` the same as records, see :func:`small_cells`), ``notes`` what else
        a reader should know (a rebuilt N1), ``rebuilt`` each rebuilt benchmark's build.

    Raises:
        DataError: The source is missing, malformed or unsafe, the download
            failed, the arguments are invalid, or the split files as written
            put a scenario or a twin question in two splits (``summary.json``
            is not written then).
    """
    ratios = check_ratios(ratios)
    if min_cell_items < 0:  # checked before anything is loaded or written
        raise DataError(f"min_cell_items: expected 0 or more items, got {min_cell_items}")
    examples, info = _load_source(source, suite, cache_dir, base_url, bbq)
    examples = split_examples(examples, ratios=ratios, seed=seed, per_cell=per_cell)

    out = Path(out)
    # summary.json marks a complete directory: drop a stale one before the split files change.
    (out / "summary.json").unlink(missing_ok=True)
    for split in SPLITS:
        write_jsonl(out / f"{split}.jsonl", [e for e in examples if e.split == split])
    # Check the files as written, by scenario key and by twin question alone
    # (not by the groups the split was made from), so neither a grouping bug
    # nor a write bug can leave a leak unnoticed; summary.json is not written then.
    written = [e for split in SPLITS for e in read_examples(out / f"{split}.jsonl")]
    check_disjoint_groups(written)
    summary = {**info, "seed": seed, "ratios": list(ratios), "per_cell": per_cell, **summarize(written)}
    cells = small_cells(summary["counts"], ratios, min_cell_items)
    summary.update(min_cell_items=min_cell_items, small_cells=cells, warnings=[c["message"] for c in cells])
    write_json(out / "summary.json", summary)
    return summary


def load_split(data_dir: Path, split: str) -> list[Example]:
    """Read one prepared split.

    Args:
        data_dir: Directory written by :func:`prepare_data`.
        split: ``train``, ``audit``, ``val`` or ``test``.

    Returns:
        The split's examples.

    Raises:
        DataError: Unknown split, the file is missing (run ``dartkit data prepare``
            first; a directory prepared before the audit split existed has no
            ``audit.jsonl`` and must be prepared again), or a line is invalid.
    """
    if split not in SPLITS:
        raise DataError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    path = Path(data_dir) / f"{split}.jsonl"
    if Path(data_dir).is_file():
        raise DataError(f"{data_dir}: a file, not a prepared data directory; {_prepare_hint(Path(data_dir))}")
    if not path.is_file():
        if split == "audit" and (Path(data_dir) / "train.jsonl").is_file():
            raise DataError(
                f"{path}: no such file; {data_dir} was prepared before dartkit had an audit split, "
                f"re-run `dartkit data prepare --out {data_dir}` (the splits will change)"
            )
        raise DataError(f"{path}: no such file; {_prepare_hint(Path(data_dir))}")
    return read_examples(path)


def _prepare_hint(data_dir: Path) -> str:
    """What to run for prepared splits, never suggesting to write them into a folder of raw input files."""
    if data_dir.is_file():  # a raw benchmark file given as --data: prepare the folder it sits in
        suite = "" if data_dir.suffix == ".pkl" else " --suite jsonl"
        return (
            f"run `dartkit data prepare{suite} --source {data_dir.parent} --out <a new directory>` and pass "
            "that directory as --data"
        )
    files = sorted(p.name for p in data_dir.iterdir() if p.is_file()) if data_dir.is_dir() else []
    pickles = [f for f in files if f.endswith(".pkl")]
    own = [f for f in files if f.endswith(".jsonl") and f.removesuffix(".jsonl") not in SPLITS]
    if pickles or own:
        suite = "" if pickles else " --suite jsonl"
        return (
            f"{data_dir} holds input files ({(pickles or own)[0]}, ...), not prepared splits: run "
            f"`dartkit data prepare{suite} --source {data_dir} --out <a new directory>` and pass that "
            "directory as --data"
        )
    return f"run `dartkit data prepare --out {data_dir}` first (--source DIR reads benchmark files you have)"
