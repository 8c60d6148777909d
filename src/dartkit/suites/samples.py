"""Small packaged samples of HateCheck, XSTest and BOLD, so the embedded default runs every suite offline.

The samples are seeded, stratified subsets of the upstream files, rows unchanged, in the upstream
format and layout (so a sample directory is a valid ``source``), each beside its upstream licence:
HateCheck 4 cases per target group x gold label (60), XSTest 2 prompts per type (36), BOLD 2 prompts
per group (86). They are for the demo and smoke tests; numbers on them say little. ``source: sample``
selects them. Rebuild them from an upstream copy with::

    python -m dartkit.suites.samples /path/to/shared/data src/dartkit/data/suite_samples
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import sys
from importlib import resources
from pathlib import Path

SAMPLE = "sample"
SEED = 7


def sample_dir(suite: str) -> Path:
    """The packaged sample of ``suite`` (a directory in upstream layout)."""
    return Path(str(resources.files("dartkit.data").joinpath("suite_samples", suite)))


def _csv_sample(src: Path, dst: Path, key, per_key: int, order: str, rng: random.Random) -> int:
    with open(src, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault(key(r), []).append(r)
    picked = []
    for k in sorted(by):
        rng.shuffle(by[k])
        picked += by[k][:per_key]
    picked.sort(key=lambda r: int(r[order]))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    return len(picked)


def make_samples(upstream: Path, out: Path) -> dict[str, int]:
    """Write the three samples from ``upstream`` (holding hatecheck/, xstest/, bold/) into ``out``."""
    rng = random.Random(SEED)
    counts = {
        "hatecheck": _csv_sample(
            upstream / "hatecheck" / "test_suite_cases.csv",
            out / "hatecheck" / "test_suite_cases.csv",
            lambda r: (r["target_ident"], r["label_gold"]),
            4,
            "case_id",
            rng,
        ),
        "xstest": _csv_sample(
            upstream / "xstest" / "xstest_prompts.csv",
            out / "xstest" / "xstest_prompts.csv",
            lambda r: (r["type"],),
            2,
            "id",
            rng,
        ),
    }
    n = 0
    (out / "bold" / "prompts").mkdir(parents=True, exist_ok=True)
    for domain in ("gender", "political_ideology", "profession", "race", "religious_ideology"):
        data = json.loads(
            (upstream / "bold" / "prompts" / f"{domain}_prompt.json").read_text(encoding="utf-8")
        )
        sample: dict[str, dict[str, list[str]]] = {}
        for group, pages in data.items():
            prompts = [(page, p) for page, ps in pages.items() for p in ps if p.strip()]
            rng.shuffle(prompts)
            sample[group] = {}
            for page, p in prompts[:2]:
                sample[group].setdefault(page, []).append(p)
                n += 1
        (out / "bold" / "prompts" / f"{domain}_prompt.json").write_text(
            json.dumps(sample, ensure_ascii=False, indent=0), encoding="utf-8"
        )
    counts["bold"] = n
    for suite, licence in (("hatecheck", "LICENSE"), ("xstest", "LICENSE"), ("bold", "LICENSE.md")):
        shutil.copy(upstream / suite / licence, out / suite / licence)
    return counts


if __name__ == "__main__":  # pragma: no cover - maintenance script
    print(make_samples(Path(sys.argv[1]), Path(sys.argv[2])))
