"""Scenario-grouped, stratified train / val / test splits.

Every item sharing a ``scenario_key`` lands in one split, so a model never
trains on one wording of a scenario and is tested on another. Within that
constraint the split is stratified by benchmark x label: whole scenario groups
are handed out, largest first, each to the split where it brings the cells it
touches closest to their targets. A group that spans two cells (diff/equal
twins in D2, D3, N4) is placed by its effect on both.

Example::

    from dartkit.data.splits import split_examples
    examples = split_examples(examples, ratios=(0.6, 0.2, 0.2), seed=42)
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from dartkit.errors import DataError
from dartkit.records import BENCHMARKS, Example

SPLITS: tuple[str, ...] = ("train", "val", "test")

Cell = tuple[str, str]


def cell_of(example: Example) -> Cell:
    """The stratification cell of an example: ``(benchmark, label)``."""
    return (example.benchmark, example.label)


def _cell_sort_key(cell: Cell) -> tuple[int, str, int]:
    benchmark, label = cell
    rank = BENCHMARKS.index(benchmark) if benchmark in BENCHMARKS else len(BENCHMARKS)
    return (rank, benchmark, 0 if label == "YES" else 1)


def _group_by_key(examples: Iterable[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        groups[example.scenario_key].append(example)
    return groups


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test ratios.

    Args:
        ratios: Three non-negative numbers summing to 1.

    Returns:
        The ratios as a tuple of floats.

    Raises:
        DataError: There are not three, one is negative, or they do not sum to 1.
    """
    if len(ratios) != 3:
        raise DataError(f"ratios: expected three numbers (train, val, test), got {len(ratios)}")
    values = tuple(float(r) for r in ratios)
    if any(not math.isfinite(r) or r < 0 for r in values):
        raise DataError(f"ratios: must be non-negative numbers, got {', '.join(map(str, ratios))}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise DataError(f"ratios: must sum to 1, got {sum(values):g}")
    return values  # type: ignore[return-value]


def subsample_per_cell(examples: Sequence[Example], per_cell: int, seed: int = 42) -> list[Example]:
    """Keep at most ``per_cell`` items in each benchmark x label cell.

    Whole scenario groups are taken in a seeded random order while they fit in
    every cell they touch, so twins stay together; cells still short are then
    topped up with part of a remaining group (only that cell's items).

    Args:
        examples: Items to draw from.
        per_cell: Items to keep per cell; cells with fewer keep all.
        seed: Random seed.

    Returns:
        The kept items, in their input order.

    Raises:
        DataError: ``per_cell`` is not positive.
    """
    if per_cell < 1:
        raise DataError(f"per_cell: must be a positive integer, got {per_cell}")
    rng = random.Random(seed)
    groups = _group_by_key(examples)
    keys = sorted(groups)
    rng.shuffle(keys)
    taken: Counter[Cell] = Counter()
    kept: set[int] = set()
    leftovers = []
    for key in keys:
        need = Counter(cell_of(e) for e in groups[key])
        if all(taken[cell] + n <= per_cell for cell, n in need.items()):
            kept.update(id(e) for e in groups[key])
            taken.update(need)
        else:
            leftovers.append(key)
    for key in leftovers:
        members = list(groups[key])
        rng.shuffle(members)
        for example in members:
            cell = cell_of(example)
            if taken[cell] < per_cell:
                kept.add(id(example))
                taken[cell] += 1
    return [e for e in examples if id(e) in kept]


def _assign_groups(
    groups: dict[str, list[Example]], ratios: tuple[float, float, float], rng: random.Random
) -> dict[str, int]:
    totals: Counter[Cell] = Counter(cell_of(e) for members in groups.values() for e in members)
    target = {cell: [ratio * n for ratio in ratios] for cell, n in totals.items()}
    placed = {cell: [0, 0, 0] for cell in totals}

    tiebreak = {key: rng.random() for key in sorted(groups)}
    # Largest first: the big groups are placed while every split still has room,
    # and the many small ones fill the remaining gaps precisely.
    order = sorted(groups, key=lambda key: (-len(groups[key]), tiebreak[key]))
    assignment = {}
    for key in order:
        need = Counter(cell_of(e) for e in groups[key])
        # Growth of the squared relative error of the touched cells if the group
        # went to split s; cells are scaled by their size so a small cell counts
        # as much as a large one.
        costs = [
            sum(
                n * (2 * (placed[cell][s] - target[cell][s]) + n) / totals[cell] ** 2
                for cell, n in need.items()
            )
            for s in range(3)
        ]
        best = min(costs)
        candidates = [s for s in range(3) if costs[s] - best <= 1e-12]
        choice = candidates[0] if len(candidates) == 1 else rng.choice(candidates)
        assignment[key] = choice
        for cell, n in need.items():
            placed[cell][choice] += n
    return assignment


def check_disjoint_scenarios(examples: Iterable[Example]) -> None:
    """Make sure no scenario key occurs in two splits.

    Args:
        examples: Items with ``split`` set.

    Raises:
        DataError: A scenario key is in more than one split, or an item has no split.
    """
    splits_of: dict[str, set[str]] = defaultdict(set)
    for example in examples:
        if example.split is None:
            raise DataError(f"item {example.id} has no split")
        splits_of[example.scenario_key].add(example.split)
    leaked = sorted(key for key, found in splits_of.items() if len(found) > 1)
    if leaked:
        shown = ", ".join(f"{key} ({'/'.join(sorted(splits_of[key]))})" for key in leaked[:5])
        raise DataError(f"scenario leak: {len(leaked)} scenario key(s) in more than one split: {shown}")


def split_examples(
    examples: Sequence[Example],
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 42,
    per_cell: int | None = None,
) -> list[Example]:
    """Split examples into train / val / test by scenario, stratified by benchmark x label.

    Args:
        examples: Items to split; an existing ``split`` field is ignored.
        ratios: Train, val, test fractions, summing to 1.
        seed: Random seed; the same seed and input give the same split.
        per_cell: When set, first keep only this many items per benchmark x label
            cell (see :func:`subsample_per_cell`).

    Returns:
        Copies of the (kept) examples, in input order, with ``split`` set.

    Raises:
        DataError: Bad ratios or ``per_cell``, or (a bug) a scenario key ended
            up in two splits.
    """
    ratios = check_ratios(ratios)
    if per_cell is not None:
        examples = subsample_per_cell(examples, per_cell, seed)
    rng = random.Random(seed)
    assignment = _assign_groups(_group_by_key(examples), ratios, rng)
    result = [e.model_copy(update={"split": SPLITS[assignment[e.scenario_key]]}) for e in examples]
    check_disjoint_scenarios(result)
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
