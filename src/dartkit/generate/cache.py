"""Content-addressed generation cache, appended to as results finish.

The key of a generation is a hash of everything that determines its text: the
backend identity (model id, revision, adapter hash), the full conversation and
the decoding fields. The cache is a JSONL file, one line per finished
generation, flushed and fsynced line by line, so a killed run loses at most what
was in flight and a rerun skips everything already there. A torn last line (the
process died mid-write) is ignored on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dartkit.config import DecodingConfig
from dartkit.generate.base import Backend, Messages


def cache_key(identity: dict[str, Any], messages: Messages, decoding: DecodingConfig) -> str:
    blob = json.dumps(
        {"model": identity, "messages": messages, "decoding": decoding.cache_fields()},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """A JSONL-backed map from cache key to generated text."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._texts: dict[str, str] = {}
        self.torn_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    self._texts[rec["key"]] = rec["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn_lines += 1

    def __contains__(self, key: str) -> bool:
        return key in self._texts

    def __len__(self) -> int:
        return len(self._texts)

    def get(self, key: str) -> str | None:
        return self._texts.get(key)

    def put(self, key: str, text: str, meta: dict[str, Any] | None = None) -> None:
        self.put_many([(key, text)], meta)

    def put_many(self, items: Sequence[tuple[str, str]], meta: dict[str, Any] | None = None) -> None:
        """Append several (key, text) records with one write and one fsync."""
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps({"key": key, "text": text, **(meta or {})}, ensure_ascii=False) + "\n"
            for key, text in items
        )
        # A torn line left by a killed writer would glue onto this record; start a fresh line.
        with self.path.open("ab+") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(lines.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        for key, text in items:
            self._texts[key] = text


def generate_cached(
    backend: Backend,
    conversations: Sequence[Messages],
    decoding: DecodingConfig,
    cache: GenerationCache,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[str], list[str]]:
    """Answer every conversation, reusing cached texts and caching new ones as they finish.

    Returns:
        (texts, keys) aligned with ``conversations``.
    """
    identity = backend.identity()
    keys = [cache_key(identity, m, decoding) for m in conversations]
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in cache and k not in todo:
            todo[k] = i
    done = len(keys) - len(todo)
    if on_progress and done:
        on_progress(done)
    if todo:
        todo_keys = list(todo)
        batch = [conversations[todo[k]] for k in todo_keys]
        dup_count = {k: 0 for k in todo_keys}
        for k in keys:
            if k in dup_count:
                dup_count[k] += 1
        for j, text in backend.generate(batch, decoding):
            key = todo_keys[j]
            cache.put(key, text, {"model": backend.spec})
            if on_progress:
                on_progress(dup_count[key])
    texts = [cache.get(k) for k in keys]
    missing = [i for i, t in enumerate(texts) if t is None]
    if missing:
        raise RuntimeError(f"backend {backend.spec} returned no text for {len(missing)} prompt(s)")
    return texts, keys  # type: ignore[return-value]
