"""Reading a model's answer: the conclusion line, the analysis before it, refusals.

The conclusion comes from a line whose first word is "Conclusion" (any case,
optionally wrapped in markdown emphasis, heading or list markers), then ``:``,
``-``, ``–`` or ``—``, then YES or NO. The last such line wins. A line that
echoes the template ("YES/NO", "YES or NO") is not a conclusion.
"""

from __future__ import annotations

import re

from dartkit.records import Label

_MARK = r"[*_`~]*"
_CONCLUSION_LINE = re.compile(
    r"^\s*(?:>\s*)*(?:#{1,6}\s*)?(?:(?:[-*+•]|\d+[.)])\s+)?"  # quote, heading, list markers
    + _MARK
    + r"\s*conclusion\s*"
    + _MARK
    + r"\s*[:\-–—]\s*"
    + _MARK
    + r"\s*"
    + _MARK
    + r"(yes|no)(?![a-z0-9])"
    + r"(.*)$",
    re.IGNORECASE,
)
# "YES/NO", "YES or NO", "yes | no": the model copied the instruction instead of answering.
_ECHO_TAIL = re.compile(
    r"^\s*" + _MARK + r"\s*(?:/|\||\bor\b)\s*" + _MARK + r"\s*(?:yes|no)\b", re.IGNORECASE
)


def _conclusion_matches(text: str) -> list[tuple[int, Label]]:
    """(line index, value) of every real conclusion line."""
    found: list[tuple[int, Label]] = []
    for i, line in enumerate(text.splitlines()):
        m = _CONCLUSION_LINE.match(line)
        if m and not _ECHO_TAIL.match(m.group(2)):
            found.append((i, m.group(1).upper()))  # type: ignore[arg-type]
    return found


def parse_conclusion(text: str) -> Label | None:
    """The value of the last ``Conclusion: YES|NO`` line, or None when there is none.

    Examples:
        >>> parse_conclusion("Religion is a real qualification here.\\nConclusion: YES")
        'YES'
        >>> parse_conclusion("**Conclusion:** no.") , parse_conclusion("Conclusion: YES/NO")
        ('NO', None)
    """
    found = _conclusion_matches(text or "")
    return found[-1][1] if found else None


def split_analysis(text: str) -> str:
    """The analysis: the text before the last conclusion line (the whole text when there is none)."""
    text = text or ""
    found = _conclusion_matches(text)
    if not found:
        return text.strip()
    return "\n".join(text.splitlines()[: found[-1][0]]).strip()


_REFUSAL = re.compile(
    r"|".join(
        [
            r"\b(?:i\s*(?:'|’)?\s*m|i am)\s+(?:so\s+|very\s+|truly\s+)?sorry\b",
            r"^\s*sorry\b",
            r"\bi\s+(?:must\s+)?apologi[sz]e\b",
            r"\bmy apologies\b",
            r"\bi\s+(?:cannot|can\s*not|can(?:'|’)t|won(?:'|’)t|will not|must decline|have to decline|decline)\b",
            r"\bi\s*(?:'|’)?\s*(?:m| am)\s+(?:not\s+able|unable|not\s+(?:comfortable|in a position))\b",
            r"\b(?:i'?m|i am|i'm)\s+not\s+going\s+to\b",
            r"\bunable to (?:help|assist|answer|provide|comply|fulfil|fulfill|engage|respond|make)\b",
            r"\bnot comfortable (?:answering|responding|making|providing|with)\b",
            r"\bas an ai\b",
            r"\bas a language model\b",
        ]
    ),
    re.IGNORECASE | re.MULTILINE,
)


def has_refusal_phrase(text: str) -> bool:
    """True when the text holds a declining phrase ("I'm sorry", "I can't", "as an AI", ...)."""
    return bool(_REFUSAL.search(text or ""))


def is_refusal(text: str) -> bool:
    """True when no conclusion parses and the text declines the task.

    A text with a parsed conclusion is never a refusal: it answered.
    """
    if parse_conclusion(text) is not None:
        return False
    return has_refusal_phrase(text)
