"""Content-addressed score cache: re-scoring texts a scorer has already seen costs nothing.

A score's key is sha256 of the scorer identity and the text. Scores are stored as
``repr(float)`` strings in a :class:`dartkit.generate.cache.GenerationCache` file
(same JSONL format, same crash safety).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dartkit.generate.cache import GenerationCache
from dartkit.harm.base import HarmScorer


def score_key(identity: dict[str, Any], text: str) -> str:
    blob = json.dumps(
        {"scorer": identity, "text": text}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def score_cached(
    scorer: HarmScorer,
    texts: Sequence[str],
    cache_path: str | Path | GenerationCache | None = None,
) -> list[float]:
    """Scores aligned with ``texts``, computing only those not already in the cache.

    Args:
        scorer: any :class:`HarmScorer`.
        texts: the texts to score; duplicates are scored once.
        cache_path: a JSONL cache file (or an open cache); None scores without caching.
    """
    texts = [t or "" for t in texts]
    if cache_path is None:
        unique = list(dict.fromkeys(texts))
        scores = dict(zip(unique, scorer.score(unique), strict=True))
        return [scores[t] for t in texts]
    cache = cache_path if isinstance(cache_path, GenerationCache) else GenerationCache(Path(cache_path))
    identity = scorer.identity()
    keys = [score_key(identity, t) for t in texts]
    todo: dict[str, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in cache and k not in todo:
            todo[k] = t
    if todo:
        new = scorer.score(list(todo.values()))
        cache.put_many(
            [(k, repr(float(value))) for k, value in zip(todo, new, strict=True)], {"scorer": scorer.name}
        )
    return [float(cache.get(k)) for k in keys]  # type: ignore[arg-type]
