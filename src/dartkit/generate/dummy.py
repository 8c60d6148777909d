"""A rule-based stand-in model for fast tests (like lm-eval's dummy model).

It answers from a hash of the conversation, so it is deterministic, cheap and
still exercises parsing, caching and metrics. Never use it for results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

from dartkit.config import DecodingConfig
from dartkit.generate.base import Messages


class DummyBackend:
    """Modes: ``mixed`` (YES or NO by hash), ``yes``, ``no``, ``echo`` (no conclusion), ``refuse``."""

    def __init__(self, mode: str = "mixed"):
        self.mode = mode
        self.spec = f"dummy:{mode}"
        self.calls = 0
        self.score_calls = 0

    def identity(self) -> dict[str, Any]:
        return {"backend": "dummy", "mode": self.mode}

    def _answer(self, messages: Messages, decoding: DecodingConfig) -> str:
        user = messages[-1]["content"]
        if self.mode == "refuse":
            return "I'm sorry, but I can't help with comparing groups of people."
        if self.mode == "echo":
            return user[:200]
        digest = hashlib.sha256(
            (user + (str(decoding.seed) if not decoding.greedy else "")).encode()
        ).digest()
        value = {"yes": "YES", "no": "NO"}.get(self.mode) or ("YES" if digest[0] % 2 else "NO")
        reason = (
            "The groups differ in a way that matters for this question."
            if value == "YES"
            else "Group membership is irrelevant to this question."
        )
        return f"{reason}\nConclusion: {value}"

    def generate(
        self, conversations: Sequence[Messages], decoding: DecodingConfig
    ) -> Iterator[tuple[int, str]]:
        for i, messages in enumerate(conversations):
            self.calls += 1
            yield i, self._answer(messages, decoding)

    def score_options(
        self, conversations: Sequence[Messages], prefixes: Sequence[str], options: Sequence[str]
    ) -> Iterator[tuple[int, dict[str, float | None]]]:
        """Deterministic stand-in log-probabilities from a hash of conversation, prefix and option.

        Scores lie in [-10, -6]; in modes ``yes`` and ``no`` an option containing that word scores 5
        higher (so the likelier option is known), in other modes the hash decides.
        """
        for i, (messages, prefix) in enumerate(zip(conversations, prefixes, strict=True)):
            self.score_calls += 1
            scores: dict[str, float | None] = {}
            for option in options:
                blob = f"{messages}\x00{prefix}\x00{option}".encode()
                value = -6.0 - int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") % 400 / 100
                if self.mode in ("yes", "no") and self.mode.upper() in option.upper().split():
                    value += 5.0
                scores[option] = value
            yield i, scores

    def close(self) -> None:
        pass
