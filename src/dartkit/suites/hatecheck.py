"""HateCheck (Röttger et al., ACL 2021): 3,728 functional test cases aimed at 7 target groups.

Each case is given to the model as a user message; its answer is harm-scored and checked for
abstention. Per target group: mean toxicity over all answers and over the answers that engaged
(abstention lowers measured harm, which the DART paper names as a confounder), and the abstention
rate. Between two models, per group: Mann–Whitney U with the rank-biserial effect, Holm-adjusted over
the 7 groups. The 292 cases that name no group are run and counted in the overall numbers only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dartkit.errors import DataError
from dartkit.suites.base import PinnedFile, Suite, SuiteItem, user_turn
from dartkit.suites.files import csv_rows, field, locate
from dartkit.suites.measures import by_group, compare_binary, compare_scores, harm_and_refusal

FILE = "test_suite_cases.csv"
# Upstream spelling (the CSV's target_ident values).
GROUPS = ("women", "trans people", "gay people", "black people", "disabled people", "Muslims", "immigrants")
NO_GROUP = "(no target)"
COLUMNS = ("case_id", "functionality", "test_case", "label_gold", "target_ident")


def load(source: Path | None) -> list[SuiteItem]:
    """The test cases from ``test_suite_cases.csv`` (a directory holding it, or the file)."""
    if source is None:
        raise DataError(
            "suite hatecheck needs --source (or --download): a directory holding test_suite_cases.csv"
        )
    path = locate(source, FILE, "hatecheck")
    items = []
    seen: set[str] = set()
    for line, row in csv_rows(path, COLUMNS):
        case_id = field(path, line, row, "case_id")
        if case_id in seen:
            raise DataError(f"{path}:{line}: field 'case_id': {case_id!r} appears twice")
        seen.add(case_id)
        target = (row.get("target_ident") or "").strip()
        if target and target not in GROUPS:
            raise DataError(
                f"{path}:{line}: field 'target_ident': unknown group {target!r} "
                f"(expected one of {', '.join(GROUPS)}, or empty)"
            )
        items.append(
            SuiteItem(
                id=f"hc-{case_id}",
                prompt=field(path, line, row, "test_case"),
                group=target or NO_GROUP,
                fields={
                    "functionality": field(path, line, row, "functionality"),
                    "label": field(path, line, row, "label_gold", ("hateful", "non-hateful")),
                },
            )
        )
    return items


def metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    groups = by_group(rows)
    return {
        "overall": harm_and_refusal(rows),
        "by_group": {g: harm_and_refusal(groups[g]) for g in GROUPS if g in groups},
        "by_label": {k: harm_and_refusal(v) for k, v in by_group(rows, "label").items()},
    }


def compare(runs: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    engaged = {m: [r for r in rows if not r.get("refusal")] for m, rows in runs.items()}
    return {
        "toxicity": compare_scores(runs, "harm", GROUPS),
        "toxicity_non_refused": compare_scores(engaged, "harm", GROUPS),
        "abstention": compare_binary(runs, lambda r: bool(r.get("refusal")), "abstained"),
    }


SUITE = Suite(
    name="hatecheck",
    title="HateCheck: the model's replies to hateful and non-hateful cases, toxicity by target group",
    size="3,728 cases, 29 functional tests, 7 target groups",
    source="Röttger et al. 2021, github.com/paul-rottger/hatecheck-data",
    licence="CC-BY-4.0",
    load=load,
    messages=user_turn,
    stratum=lambda item: (item.fields["functionality"], item.group),
    metrics=metrics,
    compare=compare,
    max_new_tokens=96,
    files=(PinnedFile(FILE, "ecf0dc1e93fccc90b6f880e632b19e635c0f0a68b3157915a9e20b6938f121cf"),),
    release_url="https://raw.githubusercontent.com/paul-rottger/hatecheck-data/d84302298ceeb34f4b0dde2d8a1f4932c2caa612",
    plot=("toxicity of the reply", lambda r: r.get("harm")),
    note="Abstaining lowers measured toxicity: read toxicity over non-abstained answers beside it.",
)
