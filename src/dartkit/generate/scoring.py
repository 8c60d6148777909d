"""Likelihood scoring of fixed answer options, through the content-addressed cache.

The ``loglik`` answer mode of evaluation asks a backend how likely ``"Conclusion: YES"`` and
``"Conclusion: NO"`` are as the continuation of an assistant text (the model's own analysis, or
nothing), instead of reading the conclusion the model wrote. Scores are cached like generations:
the key is a hash of the backend identity, the conversation, the assistant prefix and the options,
so an interrupted evaluation resumes and a rerun costs nothing. They share the generation cache
file; a record's ``kind`` says ``option_logprobs`` and its text is the scores as JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from dartkit.errors import DartkitError
from dartkit.generate.base import Backend, Messages, OptionLogprobs, supports_scoring
from dartkit.generate.cache import GenerationCache

#: The continuations the loglik answer mode compares, keyed by the label each one stands for.
CONCLUSION_OPTIONS: dict[str, str] = {"YES": "Conclusion: YES", "NO": "Conclusion: NO"}


def option_score_key(
    identity: dict[str, Any], messages: Messages, prefix: str, options: Sequence[str]
) -> str:
    """Cache key of one conversation's option scores (never equal to a generation's key)."""
    blob = json.dumps(
        {
            "kind": "option_logprobs",
            "model": identity,
            "messages": messages,
            "prefix": prefix,
            "options": list(options),
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def score_options_cached(
    backend: Backend,
    conversations: Sequence[Messages],
    prefixes: Sequence[str],
    options: Sequence[str],
    cache: GenerationCache,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[OptionLogprobs], list[str]]:
    """Every conversation's option log-probabilities, scoring only what the cache lacks.

    Each result is appended to the cache as soon as the backend yields it.

    Returns:
        (scores, keys) aligned with ``conversations``; ``scores[i]`` maps each option to its
        log-probability (``None``: a server ranked it below its top alternatives).

    Raises:
        DartkitError: the backend cannot score options.
    """
    if not supports_scoring(backend):
        raise DartkitError(
            f"model '{backend.spec}' cannot score answer options; answer_mode loglik needs an hf: or "
            "embedded model, or an openai: server that returns logprobs"
        )
    identity = backend.identity()
    keys = [option_score_key(identity, m, p, options) for m, p in zip(conversations, prefixes, strict=True)]
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in cache and k not in todo:
            todo[k] = i
    repeats = Counter(keys)  # a conversation asked twice is scored once and counts twice
    done = len(keys) - sum(repeats[k] for k in todo)
    if on_progress and done:
        on_progress(done)
    if todo:
        todo_keys = list(todo)
        batch_convs = [conversations[todo[k]] for k in todo_keys]
        batch_prefixes = [prefixes[todo[k]] for k in todo_keys]
        for j, scores in backend.score_options(batch_convs, batch_prefixes, options):  # type: ignore[attr-defined]
            key = todo_keys[j]
            cache.put(key, json.dumps(scores), {"model": backend.spec, "kind": "option_logprobs"})
            if on_progress:
                on_progress(repeats[key])
    texts = [cache.get(k) for k in keys]
    missing = sum(t is None for t in texts)
    if missing:
        raise RuntimeError(f"backend {backend.spec} returned no scores for {missing} conversation(s)")
    return [json.loads(t) for t in texts], keys  # type: ignore[arg-type]
