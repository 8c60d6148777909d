"""Content-addressed generation cache, appended to as results finish.

The key of a generation is a hash of everything that determines its text: the
backend identity (model id, revision, adapter hash), the full conversation, the
decoding fields and, for a reply held to a JSON schema, the schema's digest and how it
was held (a constrained and an unconstrained reply never share an entry; see :meth:`HFBackend.identity <dartkit.generate.hf.HFBackend.identity>`
for what a local model's identity holds). The cache is a JSONL file, one line per finished
generation, flushed and fsynced line by line, so a killed run loses at most what
was in flight and a rerun skips everything already there. A torn last line (the
process died mid-write) is ignored on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dartkit.config import DecodingConfig
from dartkit.generate.base import Backend, Completion, Messages, structured_mode

if TYPE_CHECKING:
    from dartkit.generate.structured import ResponseSchema
    from dartkit.generate.structured import StructuredMode as StructuredModeT

log = logging.getLogger(__name__)

#: Record fields besides key and text that :meth:`GenerationCache.info` returns.
INFO_FIELDS = ("finish", "served_model", "system_fingerprint", "structured")


def cache_key(
    identity: dict[str, Any],
    messages: Messages,
    decoding: DecodingConfig,
    constraint: dict[str, Any] | None = None,
) -> str:
    """The cache key of one generation.

    ``constraint`` (a :meth:`ResponseSchema.cache_field <dartkit.generate.structured.ResponseSchema.cache_field>`)
    is left out of the hashed blob when None, so unconstrained keys are what they always were.
    """
    fields: dict[str, Any] = {"model": identity, "messages": messages, "decoding": decoding.cache_fields()}
    if constraint is not None:
        fields["schema"] = constraint
    blob = json.dumps(
        fields,
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """A JSONL-backed map from cache key to generated text.

    Besides the text, a record may say how the generation ended (``finish``: truncated,
    filtered) and which model and build a remote server reported (``served_model``,
    ``system_fingerprint``); :meth:`info` returns them. When the server behind one model
    spec reports another model or build than the record before it in the same cache, a
    warning names both and the change is kept in :attr:`served_changes`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._texts: dict[str, str] = {}
        self._info: dict[str, dict[str, Any]] = {}
        # Per model spec: the (served_model, system_fingerprint) of its latest record.
        self._last_served: dict[str, tuple[str | None, str | None]] = {}
        self.served_changes: list[dict[str, Any]] = []
        self.torn_lines = 0
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    key, text = rec["key"], rec["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn_lines += 1
                    continue
                self._remember(key, text, rec, warn=False)

    def _remember(self, key: str, text: str, rec: dict[str, Any], warn: bool) -> None:
        self._texts[key] = text
        info = {k: rec[k] for k in INFO_FIELDS if rec.get(k) is not None}
        if info:
            self._info[key] = info
        else:
            self._info.pop(key, None)
        if "served_model" in info or "system_fingerprint" in info:
            self._note_served(str(rec.get("model")), info, warn)

    def _note_served(self, spec: str, info: dict[str, Any], warn: bool) -> None:
        now = (info.get("served_model"), info.get("system_fingerprint"))
        before = self._last_served.get(spec)
        self._last_served[spec] = now
        if before is None or before == now:
            return
        change = {
            "model": spec,
            "old": {"served_model": before[0], "system_fingerprint": before[1]},
            "new": {"served_model": now[0], "system_fingerprint": now[1]},
        }
        if change not in self.served_changes:
            self.served_changes.append(change)
            if warn:
                log.warning(
                    "%s: the server changed within %s: model %r, system_fingerprint %r -> model %r, "
                    "system_fingerprint %r (earlier answers came from the old one)",
                    spec,
                    self.path,
                    before[0],
                    before[1],
                    now[0],
                    now[1],
                )

    def __contains__(self, key: str) -> bool:
        return key in self._texts

    def __len__(self) -> int:
        return len(self._texts)

    def get(self, key: str) -> str | None:
        return self._texts.get(key)

    def info(self, key: str) -> dict[str, Any]:
        """How a cached generation ended and who served it (``{}`` for a normal local answer)."""
        return dict(self._info.get(key, {}))

    def put(self, key: str, text: str, meta: dict[str, Any] | None = None) -> None:
        self.put_many([(key, text)], meta)

    def put_many(self, items: Sequence[tuple[str, str]], meta: dict[str, Any] | None = None) -> None:
        """Append several (key, text) records with one write and one fsync.

        A :class:`~dartkit.generate.base.Completion` text adds its ``finish`` and server fields.
        """
        if not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records = [
            {
                "key": key,
                "text": str(text),
                **(meta or {}),
                **(text.info() if isinstance(text, Completion) else {}),
            }
            for key, text in items
        ]
        lines = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
        # A torn line left by a killed writer would glue onto this record; start a fresh line.
        with self.path.open("ab+") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(lines.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        for rec in records:
            self._remember(rec["key"], rec["text"], rec, warn=True)


def served_versions(cache: GenerationCache, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Distinct (served_model, system_fingerprint) behind ``keys``, with counts; [] for local models.

    More than one entry means the answers of one stage came from different server builds.
    """
    counts: Counter[tuple[str | None, str | None]] = Counter()
    for key in dict.fromkeys(keys):
        info = cache.info(key)
        if "served_model" in info or "system_fingerprint" in info:
            counts[(info.get("served_model"), info.get("system_fingerprint"))] += 1
    return [
        {"served_model": m, "system_fingerprint": fp, "n": n}
        for (m, fp), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    ]


def generate_cached(
    backend: Backend,
    conversations: Sequence[Messages],
    decoding: DecodingConfig,
    cache: GenerationCache,
    on_progress: Callable[[int], None] | None = None,
    schema: ResponseSchema | None = None,
) -> tuple[list[str], list[str]]:
    """Answer every conversation, reusing cached texts and caching new ones as they finish.

    Truncated and filtered answers are cached with their ``finish`` mark (see
    :meth:`GenerationCache.info`), so callers can count them rather than take them as normal
    answers. A warning is logged when the answers for ``conversations`` came from more than one
    server model or build.

    With ``schema``, a backend that can hold replies to it (see
    :func:`~dartkit.generate.base.structured_mode`) is asked to, and each reply is cached under a
    key that names the schema and how it was followed; a reply the backend could not constrain
    (a server that rejected the schema) is cached under the plain key, beside unconstrained ones.
    When it is not yet known whether a server takes schemas, one request goes first and tells,
    so that a rerun against a server that rejects them finds its earlier answers in the cache;
    that probe asks an item with no cached answer where there is one, and never replaces a
    cached answer with an unconstrained one.

    Returns:
        (texts, keys) aligned with ``conversations``; ``cache.info(key)["structured"]`` says how
        each reply was held to ``schema`` (absent: it was not).
    """
    identity = backend.identity()
    plain = [cache_key(identity, m, decoding) for m in conversations]

    def wanted() -> tuple[list[str], StructuredModeT]:
        mode = structured_mode(backend, schema)
        if schema is None or mode == "none":
            return list(plain), mode
        # Not known yet ('unknown'): keyed as the backend will follow it once it can.
        via = getattr(backend, "structured_path", "json_schema") if mode == "unknown" else mode
        constraint = schema.cache_field(via)
        engine = getattr(backend, "grammar_engine", None)
        if via == "grammar" and callable(engine):
            # The grammar library's version changes which tokens it allows, hence the texts.
            constraint["engine"] = engine()
        return [cache_key(identity, m, decoding, constraint) for m in conversations], mode

    def pending(keys: list[str]) -> dict[str, int]:
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in cache and k not in todo:
                todo[k] = i
        return todo

    reported = 0

    def report(n: int) -> None:
        nonlocal reported
        reported += n
        if on_progress and n:
            on_progress(n)

    # Where a reply requested under a constrained key was cached (its plain key after a fallback).
    landed: dict[str, str] = {}

    def run(todo: dict[str, int], keys: list[str], mode: StructuredModeT) -> None:
        todo_keys = list(todo)
        dup_count = {k: 0 for k in todo_keys}
        for k in keys:
            if k in dup_count:
                dup_count[k] += 1
        batch = [conversations[todo[k]] for k in todo_keys]
        extra = {"schema": schema} if schema is not None and mode != "none" else {}
        for j, text in backend.generate(batch, decoding, **extra):
            key = todo_keys[j]
            if (
                extra
                and getattr(text, "structured", None) is None
                and structured_mode(backend, schema) == "none"
            ):
                # The backend could not follow the schema (a server that rejected it): the reply
                # is an unconstrained one and is cached as such. (A reply that is not held to the
                # schema while the backend still follows it, a server's refusal, keeps its key.)
                landed[key] = plain[todo[key]]
                key = landed[key]
                if key in cache:
                    # A plain answer is cached already (an earlier run against this server):
                    # it stays, and this reply, asked only to learn about the schema, is dropped.
                    report(dup_count[todo_keys[j]])
                    continue
            cache.put(key, text, {"model": backend.spec})
            report(dup_count[todo_keys[j]])

    keys, mode = wanted()
    todo = pending(keys)
    report(len(keys) - len(todo))
    if todo and mode == "unknown":
        # The probe: an item with no plain answer cached either, where there is one, so that a
        # rerun against a server that rejects schemas asks nothing it has answered before.
        first = next((k for k, i in todo.items() if plain[i] not in cache), next(iter(todo)))
        run({first: todo[first]}, keys, mode)
        keys = [landed.get(k, k) for k in keys]
        if structured_mode(backend, schema) == "none":
            # The server rejected the schema: the rest go as plain requests, and plain answers
            # cached by an earlier run are used (a reply cached as constrained stays usable).
            keys = [k if k in cache else plain[i] for i, k in enumerate(keys)]
            mode = "none"
        todo = pending(keys)
        report(len(keys) - len(todo) - reported)
    if todo:
        run(todo, keys, mode)
    keys = [landed.get(k, k) for k in keys]
    texts = [cache.get(k) for k in keys]
    missing = [i for i, t in enumerate(texts) if t is None]
    if missing:
        raise RuntimeError(f"backend {backend.spec} returned no text for {len(missing)} prompt(s)")
    versions = served_versions(cache, keys)
    if len(versions) > 1:
        log.warning(
            "%s: these %d answers came from %d server versions: %s",
            backend.spec,
            len(keys),
            len(versions),
            "; ".join(
                f"model {v['served_model']!r} fingerprint {v['system_fingerprint']!r} ({v['n']})"
                for v in versions
            ),
        )
    return texts, keys  # type: ignore[return-value]
