"""Quality control for teacher rationales (Stage I distillation and Stage III repair).

A rationale is accepted only when every check passes:

- ``no_conclusion`` / ``wrong_conclusion``: its ``Conclusion:`` line must parse and equal the gold label;
- ``too_few_sentences`` / ``too_many_sentences``: the analysis has 2-4 sentences (configurable);
- ``copies_prompt``: it copies no run of 40+ characters (configurable) from anything in the prompt it was
  given, the question and any example answers included;
- ``contradicts_conclusion``: the analysis does not argue against its own conclusion (a judge model when
  one is configured, otherwise the small built-in classifier of ``dartkit.consistency``, which catches
  equal-treatment reasoning under YES and difference reasoning under NO; ``docs/consistency.md``);
- ``near_duplicate``: across items, a rationale nearly identical to an earlier accepted one is flagged.

Measured on the embedded model as its own teacher, format and copy checks alone accepted 85% of
rationales, yet most copied an example answer and most YES rationales argued for identical treatment;
the consistency and copy checks exist because of that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dartkit.consistency import THRESHOLD as CONSISTENCY_THRESHOLD
from dartkit.consistency import contradiction_probabilities, contradiction_probability
from dartkit.parse import parse_conclusion, split_analysis

REASONS = (
    "empty",
    "no_conclusion",
    "wrong_conclusion",
    "too_few_sentences",
    "too_many_sentences",
    "copies_prompt",
    "text_after_conclusion",
    "contradicts_conclusion",
    "near_duplicate",
    "still_harmful",
)

# What each reason tells the teacher in a format-fix follow-up.
FIX_HINTS = {
    "empty": "the answer was empty",
    "no_conclusion": 'it did not end with a line "Conclusion: {label}"',
    "wrong_conclusion": "its conclusion was not {label}",
    "too_few_sentences": "the analysis needs at least {min_s} sentences",
    "too_many_sentences": "the analysis must have at most {max_s} sentences",
    "copies_prompt": "it copied text from the prompt word for word; use your own words",
    "text_after_conclusion": "it went on after the conclusion line; end with that line",
    "contradicts_conclusion": "the analysis argued against the conclusion {label}",
    "still_harmful": "a harm classifier rated it more harmful than the original answer; explain it briefly "
    "and neutrally, without repeating or elaborating anything about the groups from the question",
}


class QCConfig(BaseModel):
    """Checks every teacher rationale must pass before a student is trained on it."""

    model_config = ConfigDict(extra="forbid")

    min_sentences: int = Field(
        2, ge=1, description="Fewest sentences in the analysis (before the conclusion line)."
    )
    max_sentences: int = Field(4, ge=1, description="Most sentences in the analysis.")
    min_copy_chars: int = Field(
        40,
        ge=10,
        description="Reject a rationale that copies this many consecutive characters of its prompt.",
    )
    consistency: Literal["auto", "builtin", "judge", "off"] = Field(
        "auto",
        description="How to check that the analysis supports its conclusion: 'judge' asks the judge model, "
        "'builtin' uses the packaged classifier (offline), 'auto' uses the judge when one is configured and "
        "the classifier otherwise (and for judge replies that cannot be parsed).",
    )
    near_duplicate_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Cosine similarity (word 1-3-gram tf-idf) above which two rationales are near-duplicates.",
    )
    reject_near_duplicates: bool = Field(
        True,
        description="Reject (rather than only flag) a rationale that nearly duplicates an earlier accepted one.",
    )
    max_fix_attempts: int = Field(2, ge=0, description="Format-fix follow-ups after a rationale fails QC.")
    fix_temperature: float = Field(
        0.7, gt=0, description="Sampling temperature of follow-ups, so a retry is not the same text again."
    )


_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Mr|Mrs|Ms|Dr|St|No|U\.S|U\.K|approx|cf)\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)")


def count_sentences(text: str) -> int:
    """Sentences in a short analysis; list items and lines count as separate sentences."""
    text = _ABBREV.sub(lambda m: m.group(0).replace(".", "\u2024"), text.strip())
    count = 0
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", line).strip()
        if line:
            count += len([s for s in _SENTENCE_END.split(line) if s.strip()])
    return count


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def longest_copied_run(text: str, sources: Sequence[str]) -> int:
    """Length of the longest run of characters ``text`` shares with any of ``sources`` (case and spacing ignored)."""
    a = _normalise(text)
    best = 0
    for src in sources:
        b = _normalise(src)
        if a and b:
            m = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
            best = max(best, m.size)
    return best


def builtin_contradiction(analysis: str, label: str) -> str | None:
    """Why ``analysis`` argues against ``label`` according to the built-in check, or None when it does not.

    The built-in check is the small classifier in ``dartkit.consistency`` (offline, a few milliseconds
    per call; use ``builtin_contradictions`` for many). The phrase rules it replaced flagged 8 of the
    120 contradicting rationales of its held-out part and added no recall to it, so they are gone.
    """
    p = contradiction_probability(analysis, label)
    return f"classifier p={p:.2f} >= {CONSISTENCY_THRESHOLD}" if p >= CONSISTENCY_THRESHOLD else None


def builtin_contradictions(analyses: Sequence[str], labels: Sequence[str]) -> list[bool]:
    """``builtin_contradiction`` for many rationales at once (one batched classifier call)."""
    return [bool(p >= CONSISTENCY_THRESHOLD) for p in contradiction_probabilities(analyses, labels)]


def check_rationale(
    text: str, gold: str, prompt_texts: Sequence[str], cfg: QCConfig, builtin_consistency: bool = True
) -> list[str]:
    """Every QC reason ``text`` fails, except the judge and near-duplicate checks (they need other context).

    ``builtin_consistency=False`` skips the built-in consistency classifier (a judge model checks instead).
    """
    if not (text or "").strip():
        return ["empty"]
    reasons: list[str] = []
    conclusion = parse_conclusion(text)
    if conclusion is None:
        reasons.append("no_conclusion")
    elif conclusion != gold:
        reasons.append("wrong_conclusion")
    analysis = split_analysis(text)
    n = count_sentences(analysis)
    if n < cfg.min_sentences:
        reasons.append("too_few_sentences")
    elif n > cfg.max_sentences:
        reasons.append("too_many_sentences")
    if longest_copied_run(analysis, prompt_texts) >= cfg.min_copy_chars:
        reasons.append("copies_prompt")
    if conclusion is not None and not _ends_with_conclusion(text):
        reasons.append("text_after_conclusion")
    if (
        builtin_consistency
        and cfg.consistency in ("builtin", "auto")
        and builtin_contradiction(analysis, gold)
    ):
        reasons.append("contradicts_conclusion")
    return reasons


def _ends_with_conclusion(text: str) -> bool:
    # The student learns to stop where its target stops: nothing may follow the conclusion line.
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return bool(lines) and parse_conclusion(lines[-1]) is not None


def fix_problems(reasons: Sequence[str], label: str, cfg: QCConfig) -> list[str]:
    """Plain-language statements of what was wrong, for the format-fix follow-up."""
    return [
        FIX_HINTS[r].format(label=label, min_s=cfg.min_sentences, max_s=cfg.max_sentences)
        for r in reasons
        if r in FIX_HINTS
    ]


def near_duplicates(texts: Sequence[str], threshold: float) -> list[int | None]:
    """For each text, the index of an earlier text it nearly duplicates (None if it has none)."""
    if len(texts) < 2:
        return [None] * len(texts)
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        matrix = TfidfVectorizer(ngram_range=(1, 3), lowercase=True).fit_transform(texts)
    except ValueError:  # every text empty or stop-words only
        return [None] * len(texts)
    sims = (matrix @ matrix.T).tocsr()
    out: list[int | None] = []
    for i in range(len(texts)):
        row = sims.getrow(i)
        earlier = [j for j, v in zip(row.indices, row.data, strict=True) if j < i and v >= threshold]
        out.append(min(earlier) if earlier else None)
    return out
