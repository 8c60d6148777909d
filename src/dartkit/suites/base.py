"""What an external evaluation suite is: one declaration holding its loader, prompts, scoring and metrics.

A :class:`Suite` is registered once (:mod:`dartkit.suites.registry`) and then runs through the same
code as every other suite (:mod:`dartkit.suites.run`): items are loaded from the user's copy of the
upstream files (or a pinned download, or a packaged file), a seeded stratified subset is taken for
``--limit``, the model answers through the existing backends and generation cache, answers are
harm-scored through the existing scorers and checked for refusal, and the suite's own ``metrics`` and
``compare`` turn the per-item rows into numbers with their ``n``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dartkit.generate.base import Messages


@dataclass(frozen=True)
class SuiteItem:
    """One prompt of a suite.

    Attributes:
        id: unique within the suite (the upstream id where there is one).
        prompt: the text the model is given (a user turn, or the start of a sentence to continue).
        group: what the suite's statistics are broken down by (HateCheck target group, BOLD group,
            transfer domain, XSTest prompt type).
        fields: suite-specific facts kept with every result row (e.g. ``label``, ``domain``, ``stance``).
    """

    id: str
    prompt: str
    group: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PinnedFile:
    """An upstream file the suite can download: its path under the release URL and its sha256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Suite:
    """A declared evaluation suite.

    Attributes:
        name: registry key (``dartkit suite run NAME``).
        title: one line for ``dartkit suite list``.
        size: what the full suite holds, e.g. ``3,728 test cases, 7 target groups``.
        source: where the data comes from (paper and upstream location).
        licence: the data's licence.
        load: reads the items from a directory or file (``None``: the packaged copy, for suites that
            ship one); raises ``DataError`` naming the file, line and field of bad input.
        messages: the conversation the model gets for one item.
        stratum: the key a ``--limit`` subset is stratified by (e.g. functionality x target group).
        metrics: per-item result rows -> ``metrics.json`` content (overall and per group, each with ``n``).
        compare: ``{model label: rows}`` -> the between-model statistics of ``dartkit suite compare``.
        max_new_tokens: answer length the suite needs (continuations are short, advice is long).
        files: upstream files for a pinned download (empty: nothing to download).
        release_url: the folder at a fixed commit those files are fetched from.
        sentiment: also score each answer's sentiment (VADER compound, -1..1).
        judge_messages: the judge's prompt for one result row and its answer (None: no judge).
        apply_judgement: records the judge's reply in the result row (a label, a refusal flag).
        plot: the figure's measure: its axis label and the number a result row contributes (None: left out).
        note: what a reader must know when reading its numbers.
        overlap: where its items overlap what DART trains on ("" where they do not); every figure says it.
    """

    name: str
    title: str
    size: str
    source: str
    licence: str
    load: Callable[[Path | None], list[SuiteItem]]
    messages: Callable[[SuiteItem], Messages]
    stratum: Callable[[SuiteItem], Hashable]
    metrics: Callable[[Sequence[dict[str, Any]]], dict[str, Any]]
    compare: Callable[[dict[str, Sequence[dict[str, Any]]]], dict[str, Any]]
    max_new_tokens: int = 128
    files: tuple[PinnedFile, ...] = ()
    release_url: str = ""
    sentiment: bool = False
    judge_messages: Callable[[dict[str, Any], str], Messages] | None = None
    apply_judgement: Callable[[dict[str, Any], str], None] | None = None
    plot: tuple[str, Callable[[dict[str, Any]], float | None]] = ("harm score", lambda r: r.get("harm"))
    note: str = ""
    overlap: str = ""


def items_label(suite: Suite, n: int, suite_size: int | None, subset: dict[str, Any] | None) -> str:
    """Which items a figure or table is computed on, and whether they overlap the training data."""
    which = (
        f"a seeded stratified subset of {n} of {suite_size} items (seed {subset['seed']})"
        if subset
        else f"all {n} items"
    )
    return f"{which}; " + (suite.overlap or "none is a training, audit, validation or test item")


def user_turn(item: SuiteItem) -> Messages:
    """The item's prompt as a single user message (no system prompt, no task framing)."""
    return [{"role": "user", "content": item.prompt}]


def stratified_subset(
    items: Sequence[SuiteItem], limit: int | None, seed: int, stratum: Callable[[SuiteItem], Hashable]
) -> list[SuiteItem]:
    """At most ``limit`` items, spread over the strata as evenly as their sizes allow.

    Strata are visited round-robin in a seeded order, each contributing its next seeded-shuffled item,
    until ``limit`` items are taken: every stratum gets ``limit // n_strata`` items or all it has. The
    result keeps the suite's original order. ``None`` (or a limit at least the suite's size) keeps all.
    """
    if limit is None or limit >= len(items):
        return list(items)
    rng = random.Random(seed)
    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_stratum[stratum(item)].append(i)
    queues = []
    for key in sorted(by_stratum, key=repr):
        idx = by_stratum[key][:]
        rng.shuffle(idx)
        queues.append(idx)
    rng.shuffle(queues)
    picked: list[int] = []
    while len(picked) < limit:
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop())
    return [items[i] for i in sorted(picked)]
