"""The offline ``profanity`` scorer: alt-profanity-check's linear SVM over character n-grams.

Fast and dependency-light, but a screen, not a judge: it reacts to words, not meaning
(measured: a harmless sentence about a clown nose scores 0.25, the same with "hat" 0.02).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dartkit.errors import DartkitError
from dartkit.harm.base import clip01, package_version


class ProfanityScorer:
    """``profanity``: probability of profanity from ``profanity_check.predict_prob``."""

    name = "profanity"

    def __init__(self, batch_size: int = 512):
        self.batch_size = batch_size
        self._predict = None

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alt-profanity-check": package_version("alt-profanity-check"),
            "scikit-learn": package_version("scikit-learn"),
            "joblib": package_version("joblib"),
        }

    def load(self) -> None:
        if self._predict is not None:
            return
        try:
            from profanity_check import predict_prob
        except ImportError as e:
            raise DartkitError(
                f"the 'profanity' scorer needs alt-profanity-check (pip install alt-profanity-check): {e}"
            ) from None
        self._predict = predict_prob

    def score(self, texts: Sequence[str]) -> list[float]:
        self.load()
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t or "" for t in texts[start : start + self.batch_size]]
            out.extend(clip01(p) for p in self._predict(chunk))
        return out
