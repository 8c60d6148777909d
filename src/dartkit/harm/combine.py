"""``max(spec1,spec2,...)``: the element-wise maximum of several scorers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dartkit.harm.base import HarmScorer


class MaxScorer:
    """Scores a text by the most alarmed of its parts (e.g. toxicity and hate classifiers)."""

    def __init__(self, parts: Sequence[HarmScorer]):
        self.parts = list(parts)
        self.name = "max(" + ",".join(p.name for p in self.parts) + ")"

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "parts": [p.identity() for p in self.parts]}

    def load(self) -> None:
        for p in self.parts:
            load = getattr(p, "load", None)
            if load is not None:
                load()

    def score(self, texts: Sequence[str]) -> list[float]:
        columns = [p.score(texts) for p in self.parts]
        return [max(col[i] for col in columns) for i in range(len(texts))]
