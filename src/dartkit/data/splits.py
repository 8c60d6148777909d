"""Scenario- and twin-grouped, stratified train / audit / val / test splits.

Items are grouped before they are split, so a model never trains on one wording
of a question and is tested on another. Two items are in one group when they
share a ``scenario_key`` or a :func:`twin_key` (the same question up to numbers
and years, case, punctuation, whitespace and option order), and the relation is
closed transitively (connected components). D2, for example, asks the same
occupation question for several years under different scenario ids; those
questions are one group.

Within that constraint the split is stratified by benchmark x label: whole
groups are handed out, largest first, each to the split where it brings the
cells it touches closest to their targets. A group that spans two cells
(diff/equal twins in D2, D3, N4) is placed by its effect on both.

The ``audit`` split is the held-out set Stage II audits M_int on and whose
drift cases Stage III repairs; nothing trains on it before that, and ``test``
stays untouched by every stage.

Example::

    from dartkit.data.splits import split_examples
    examples = split_examples(examples, ratios=(0.5, 0.1, 0.2, 0.2), seed=42)
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dartkit.errors import DataError
from dartkit.records import BENCHMARKS, Example

SPLITS: tuple[str, ...] = ("train", "audit", "val", "test")
DEFAULT_RATIOS: tuple[float, float, float, float] = (0.5, 0.1, 0.2, 0.2)
"""Train, audit, val, test fractions used when none are given."""

Cell = tuple[str, str]

# A run of digits, with thousands separators or a decimal part, is one number.
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NOT_WORD = re.compile(r"[\W_]+")


def cell_of(example: Example) -> Cell:
    """The stratification cell of an example: ``(benchmark, label)``."""
    return (example.benchmark, example.label)


def _cell_sort_key(cell: Cell) -> tuple[int, str, int]:
    benchmark, label = cell
    rank = BENCHMARKS.index(benchmark) if benchmark in BENCHMARKS else len(BENCHMARKS)
    return (rank, benchmark, 0 if label == "YES" else 1)


def normalize_text(text: str) -> str:
    """Text with every number masked, case folded, punctuation and extra whitespace dropped.

    Args:
        text: Any text.

    Returns:
        Lower-case words separated by single spaces; each number (a year, ``10%``,
        ``1,000``) becomes the token ``0``.
    """
    masked = _NUMBER.sub("0", text.casefold())
    return " ".join(_NOT_WORD.sub(" ", masked).split())


def _stem(question: str, choices: dict[str, str]) -> str | None:
    """The question without its trailing ``(a) .. (b) .. (c) ..`` options, or None if they are not there.

    Walks back from the end over each option's text and marker (``(1)`` is
    accepted for the first, as about half of N3 writes it).
    """
    rest = question.rstrip()
    for letter in sorted(choices, reverse=True):
        text = choices[letter]
        if not text or not rest.endswith(text):
            return None
        rest = rest[: -len(text)].rstrip()
        markers = (f"({letter})", "(1)") if letter == "a" else (f"({letter})",)
        marker = next((m for m in markers if rest.endswith(m)), None)
        if marker is None:
            return None
        rest = rest[: -len(marker)].rstrip()
    return rest


def twin_key(example: Example) -> str:
    """The key under which near-identical questions of one benchmark coincide.

    The stem (the question before its options) and the options are normalised
    with :func:`normalize_text`; the options are taken as a sorted set, so the
    same two groups offered in the other order are the same question. When the
    example has no parsed options, or its question does not end with them, the
    whole question text is normalised instead.

    Args:
        example: Any example.

    Returns:
        ``"<benchmark>|<stem>|<option>|<option>|..."``, or ``"<benchmark>|<question>"``.
    """
    stem = _stem(example.question, example.choices) if example.choices else None
    if stem is None:
        return f"{example.benchmark}|{normalize_text(example.question)}"
    options = sorted(normalize_text(text) for text in example.choices.values())
    return "|".join([example.benchmark, normalize_text(stem), *options])


def split_groups(examples: Sequence[Example]) -> list[str]:
    """The split group of each example: connected components of shared scenario keys and twin keys.

    Use it wherever items must be treated as clusters (splitting, subsampling,
    a cluster bootstrap over test items).

    Args:
        examples: Items to group.

    Returns:
        One name per example, in input order: the smallest ``scenario_key`` in
        its group, so an item without twins is named by its own scenario key.
    """
    n = len(examples)
    if n == 0:
        return []
    # Item graph: each item is linked to the first item holding the same key;
    # both kinds of key are edges of one graph, so the components are the
    # transitive union of "same scenario" and "same question".
    first: dict[tuple[str, str], int] = {}
    targets = []
    for i, example in enumerate(examples):
        targets.append(first.setdefault(("scenario", example.scenario_key), i))
        targets.append(first.setdefault(("twin", twin_key(example)), i))
    sources = np.repeat(np.arange(n), 2)
    graph = coo_matrix((np.ones(2 * n, dtype=np.int8), (sources, np.asarray(targets))), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    names: dict[int, str] = {}
    for example, c in zip(examples, component.tolist(), strict=True):
        if c not in names or example.scenario_key < names[c]:
            names[c] = example.scenario_key
    return [names[c] for c in component.tolist()]


def twin_merges(examples: Sequence[Example]) -> dict[str, int]:
    """Per benchmark, how many scenario groups twin questions merged into others.

    Args:
        examples: Items to group (for example one prepared data set).

    Returns:
        ``{benchmark: scenario keys - split groups}``, 0 where no twins join
        different scenarios.
    """
    keys: dict[str, set[str]] = defaultdict(set)
    groups: dict[str, set[str]] = defaultdict(set)
    for example, group in zip(examples, split_groups(examples), strict=True):
        keys[example.benchmark].add(example.scenario_key)
        groups[example.benchmark].add(group)
    return {benchmark: len(keys[benchmark]) - len(groups[benchmark]) for benchmark in keys}


def _members_by_group(names: Sequence[str]) -> dict[str, list[int]]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        members[name].append(i)
    return members


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float, float]:
    """Validate split ratios.

    Args:
        ratios: Four non-negative numbers (train, audit, val, test) summing to 1,
            or three (train, val, test), which mean no audit split.

    Returns:
        ``(train, audit, val, test)`` as floats.

    Raises:
        DataError: There are not three or four, one is negative, or they do not sum to 1.
    """
    if len(ratios) == 3:
        ratios = (ratios[0], 0.0, ratios[1], ratios[2])
    elif len(ratios) != 4:
        raise DataError(
            "ratios: expected four numbers (train, audit, val, test) or three (train, val, test), "
            f"got {len(ratios)}"
        )
    try:
        values = tuple(float(r) for r in ratios)
    except (TypeError, ValueError):
        raise DataError(f"ratios: must be numbers, got {', '.join(map(str, ratios))}") from None
    if any(not math.isfinite(r) or r < 0 for r in values):
        raise DataError(f"ratios: must be non-negative numbers, got {', '.join(map(str, ratios))}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise DataError(f"ratios: must sum to 1, got {sum(values):g}")
    return values  # type: ignore[return-value]


def _subsample(examples: Sequence[Example], names: Sequence[str], per_cell: int, seed: int) -> list[int]:
    """Indices of the kept items (see :func:`subsample_per_cell`)."""
    if per_cell < 1:
        raise DataError(f"per_cell: must be a positive integer, got {per_cell}")
    rng = random.Random(seed)
    groups = _members_by_group(names)
    keys = sorted(groups)
    rng.shuffle(keys)
    taken: Counter[Cell] = Counter()
    kept: set[int] = set()
    leftovers = []
    for key in keys:
        need = Counter(cell_of(examples[i]) for i in groups[key])
        if all(taken[cell] + n <= per_cell for cell, n in need.items()):
            kept.update(groups[key])
            taken.update(need)
        else:
            leftovers.append(key)
    for key in leftovers:
        members = list(groups[key])
        rng.shuffle(members)
        for i in members:
            cell = cell_of(examples[i])
            if taken[cell] < per_cell:
                kept.add(i)
                taken[cell] += 1
    return sorted(kept)


def subsample_per_cell(examples: Sequence[Example], per_cell: int, seed: int = 42) -> list[Example]:
    """Keep at most ``per_cell`` items in each benchmark x label cell.

    Whole split groups (:func:`split_groups`: scenarios joined by twin
    questions) are taken in a seeded random order while they fit in every cell
    they touch, so twins stay together; cells still short are then topped up
    with part of a remaining group (only that cell's items).

    Args:
        examples: Items to draw from.
        per_cell: Items to keep per cell; cells with fewer keep all.
        seed: Random seed.

    Returns:
        The kept items, in their input order.

    Raises:
        DataError: ``per_cell`` is not positive.
    """
    kept = _subsample(examples, split_groups(examples), per_cell, seed)
    return [examples[i] for i in kept]


def _assign_groups(
    cells_of: dict[str, list[Cell]], ratios: Sequence[float], rng: random.Random
) -> dict[str, int]:
    totals: Counter[Cell] = Counter(cell for cells in cells_of.values() for cell in cells)
    target = {cell: [ratio * n for ratio in ratios] for cell, n in totals.items()}
    placed = {cell: [0] * len(ratios) for cell in totals}
    # A split with ratio 0 gets nothing, even when every other split is over its target.
    open_splits = [s for s, ratio in enumerate(ratios) if ratio > 0]

    tiebreak = {key: rng.random() for key in sorted(cells_of)}
    # Largest first: the big groups are placed while every split still has room,
    # and the many small ones fill the remaining gaps precisely.
    order = sorted(cells_of, key=lambda key: (-len(cells_of[key]), tiebreak[key]))
    assignment = {}
    for key in order:
        need = Counter(cells_of[key])
        # Growth of the squared relative error of the touched cells if the group
        # went to split s; cells are scaled by their size so a small cell counts
        # as much as a large one.
        costs = {
            s: sum(
                n * (2 * (placed[cell][s] - target[cell][s]) + n) / totals[cell] ** 2
                for cell, n in need.items()
            )
            for s in open_splits
        }
        best = min(costs.values())
        candidates = [s for s in open_splits if costs[s] - best <= 1e-12]
        choice = candidates[0] if len(candidates) == 1 else rng.choice(candidates)
        assignment[key] = choice
        for cell, n in need.items():
            placed[cell][choice] += n
    return assignment


def cross_split_twins(examples: Iterable[Example]) -> dict[str, list[Example]]:
    """Twin keys whose items are in more than one split.

    This groups by :func:`twin_key` alone, independently of how the split was
    made, so it can check any set of split files.

    Args:
        examples: Items with ``split`` set.

    Returns:
        ``{twin key: its items}`` for every key found in two or more splits.
    """
    by_key: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_key[twin_key(example)].append(example)
    return {key: items for key, items in by_key.items() if len({e.split for e in items}) > 1}


def check_disjoint_groups(examples: Iterable[Example]) -> None:
    """Make sure no scenario key and no twin question occurs in two splits.

    Args:
        examples: Items with ``split`` set.

    Raises:
        DataError: A scenario key or a twin key is in more than one split (the
            message names the items), or an item has no split.
    """
    examples = list(examples)
    splits_of: dict[str, set[str]] = defaultdict(set)
    for example in examples:
        if example.split is None:
            raise DataError(f"item {example.id} has no split")
        splits_of[example.scenario_key].add(example.split)
    leaked = sorted(key for key, found in splits_of.items() if len(found) > 1)
    if leaked:
        shown = ", ".join(f"{key} ({'/'.join(sorted(splits_of[key]))})" for key in leaked[:5])
        raise DataError(f"scenario leak: {len(leaked)} scenario key(s) in more than one split: {shown}")
    twins = cross_split_twins(examples)
    if twins:
        shown = "; ".join(
            " ~ ".join(f"{e.id} ({e.split})" for e in sorted(items, key=lambda e: e.id)[:4])
            for _, items in sorted(twins.items())[:3]
        )
        raise DataError(
            f"twin leak: {len(twins)} question(s) that differ only in numbers, case, punctuation or "
            f"option order are in more than one split: {shown}"
        )


check_disjoint_scenarios = check_disjoint_groups
"""Former name of :func:`check_disjoint_groups`, kept for callers that import it."""


def split_examples(
    examples: Sequence[Example],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 42,
    per_cell: int | None = None,
) -> list[Example]:
    """Split examples into train / audit / val / test by group, stratified by benchmark x label.

    Groups are :func:`split_groups` of the whole input (scenario keys joined by
    twin questions), computed before any subsampling, so twins stay together
    even when only part of a group is kept.

    Args:
        examples: Items to split; an existing ``split`` field is ignored.
        ratios: Train, audit, val, test fractions summing to 1 (three numbers
            mean train, val, test and an empty audit split).
        seed: Random seed; the same seed and input give the same split.
        per_cell: When set, first keep only this many items per benchmark x label
            cell (see :func:`subsample_per_cell`).

    Returns:
        Copies of the (kept) examples, in input order, with ``split`` set.

    Raises:
        DataError: Bad ratios or ``per_cell``, or (a bug) a scenario key or a
            twin question ended up in two splits.
    """
    ratios = check_ratios(ratios)
    names = split_groups(examples)
    if per_cell is not None:
        kept = _subsample(examples, names, per_cell, seed)
        examples = [examples[i] for i in kept]
        names = [names[i] for i in kept]
    cells_of: dict[str, list[Cell]] = defaultdict(list)
    for example, name in zip(examples, names, strict=True):
        cells_of[name].append(cell_of(example))
    assignment = _assign_groups(cells_of, ratios, random.Random(seed))
    result = [
        e.model_copy(update={"split": SPLITS[assignment[name]], "group_key": name})
        for e, name in zip(examples, names, strict=True)
    ]
    check_disjoint_groups(result)
    return result


def stratified_order(examples: Iterable[Example]) -> list[Example]:
    """A fixed interleaving of examples, so that the first N are a balanced sample.

    Cells (benchmark x label, D1..N4 then others, YES before NO) are visited
    round-robin, each cell's items in id order; ``eval --limit N`` takes the first N.

    Args:
        examples: Items to order.

    Returns:
        The same items, interleaved.
    """
    cells: dict[Cell, list[Example]] = defaultdict(list)
    for example in examples:
        cells[cell_of(example)].append(example)
    queues = [sorted(cells[cell], key=lambda e: e.id) for cell in sorted(cells, key=_cell_sort_key)]
    ordered = []
    for position in range(max((len(q) for q in queues), default=0)):
        ordered.extend(queue[position] for queue in queues if position < len(queue))
    return ordered
