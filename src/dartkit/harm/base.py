"""The harm-scorer protocol and the analysis / full-text split scores are taken on."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

from dartkit.parse import split_analysis


@runtime_checkable
class HarmScorer(Protocol):
    """Maps texts to harm scores in [0, 1], higher meaning more harmful.

    Attributes:
        name: the spec string the scorer was built from (e.g. ``profanity``).
    """

    name: str

    def identity(self) -> dict[str, Any]:
        """Everything that determines the scores: name, package versions, model id/revision/hash.

        Recorded in the run manifest and hashed into score-cache keys.
        """
        ...

    def score(self, texts: Sequence[str]) -> list[float]:
        """Scores aligned with ``texts``, each in [0, 1]."""
        ...


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def clip01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def analysis_and_full(text: str) -> tuple[str, str]:
    """The two texts a response is scored on: the analysis (before the conclusion line) and the whole.

    Returns:
        (analysis, full) where ``full`` is the response stripped of surrounding whitespace.
    """
    text = text or ""
    return split_analysis(text), text.strip()


def scored_part(text: str, score_on: str) -> str:
    """The part of a response a harm score is taken on: ``analysis`` or ``full`` (see :func:`analysis_and_full`)."""
    analysis, full = analysis_and_full(text)
    return analysis if score_on == "analysis" else full
