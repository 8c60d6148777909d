"""Generations made by other harnesses: lm-evaluation-harness samples files and Inspect eval logs.

A team that already evaluated its fine-tunes with lm-evaluation-harness or Inspect can audit
those answers without generating again::

    dartkit audit --baseline-generations samples_mytask_2025-06-01T10-00-00.jsonl \\
        --candidate-generations logs/2025-06-01_mytask_abc.eval --data runs/demo/data --out audit/

Formats (recognised by content; ``--generations-format`` forces one):

- **lm-eval**: a ``samples_<task>_<timestamp>.jsonl`` file (``--log_samples``), one JSON object a
  line with ``doc_id``, ``doc``, ``arguments`` (the prompt: ``arguments.gen_args_0.arg_0``) and
  ``resps`` (the raw generation: ``resps[0][0]``), written once per filter. Older releases
  (0.4.0-0.4.2) wrote one JSON array to ``<model_args>_<task>.jsonl`` with ``arguments`` as a list
  of ``[context, gen_kwargs]`` pairs; both layouts are read.
- **inspect**: an Inspect eval log, ``.json`` (one document whose ``samples`` hold ``id``,
  ``epoch``, ``input``, ``messages`` and ``output.completion``) or ``.eval`` (a zip with one
  ``samples/<id>_epoch_<n>.json`` member a sample, plus ``header.json``). The prompt is
  ``messages`` up to the last assistant reply (the answer; earlier ones are few-shot turns) (what solvers such as ``system_message`` and
  ``prompt_template`` actually sent), ``input`` only when no messages were logged. Read with the standard
  library rather than ``inspect_ai.log.read_eval_log``: inspect-ai is a 35 MB wheel with ~40
  dependencies (boto3, s3fs, fastapi, textual, tiktoken, ...) for what is a zip of JSON files.
  Recent inspect-ai versions compress ``.eval`` members with Zstandard, which Python's ``zipfile``
  reads only from 3.14; older Pythons need the ``zstandard`` package (``dartkit[inspect]``).

Harness logs carry no dartkit ids, so each log sample is mapped onto the audit's prompts
(``--data/--split`` or ``--prompts``): first by equality of its user prompt with the user prompt
dartkit sends (whitespace normalised; ``exact`` only if any system prompt it logged is dartkit's
too), else by the dartkit question text appearing inside it (``contains``: harness templates add
instructions or few-shot examples). A prompt containing two questions, or
two samples mapping onto one question, is refused rather than guessed. ``--id-field doc.id`` maps
by a field of the log sample instead.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dartkit.audit.inputs import AuditItem, GenerationRow, load_generations
from dartkit.data.jsonl import iter_json_lines, read_text
from dartkit.errors import DataError
from dartkit.generate.base import Messages
from dartkit.prompts import render_messages

FORMATS = ("auto", "dartkit", "lm-eval", "inspect")
LOG_FORMATS = ("lm-eval", "inspect")
ZIP_ZSTANDARD = 93  # the zip method id of Zstandard (APPNOTE 4.4.5); zipfile knows it from 3.14
_SHOWN = 50  # ids and sample references listed in summary.json


@dataclass
class LogSample:
    """One answer read from a harness log, before it is mapped onto a dartkit id."""

    ref: str  # where it is: "file:line", "file samples[i]" or "file:zip-member"
    native_id: str  # the harness's own id (lm-eval doc_id, Inspect sample id)
    text: str  # the generated answer
    messages: Messages  # what the model was sent (an lm-eval context is one user message)
    raw: dict[str, Any]  # the sample as logged, for --id-field


@dataclass
class HarnessLog:
    """The answers of one harness log and how it was read."""

    path: Path
    format: str
    layout: str
    samples: list[LogSample]
    skipped: dict[str, int] = field(default_factory=dict)


def normalise(text: str) -> str:
    """Whitespace-normalised text: what prompt matching and the prompt check compare."""
    return " ".join(text.split())


# --- format detection -----------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """``dartkit``, ``lm-eval`` or ``inspect``, from the file's content (not its name).

    Raises:
        DataError: the file cannot be read or matches none of the formats.
    """
    path = Path(path)
    if _head(path).startswith(b"PK"):
        return "inspect"  # a zip: the .eval log format
    text = read_text(path)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        raise DataError(f"{path}: no records")
    if first in ("{", "["):  # one indented JSON document: an Inspect .json log or an old lm-eval array
        doc = _json_document(path, text)
        if isinstance(doc, dict) and "eval" in doc:
            return "inspect"
        if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "doc_id" in doc[0]:
            return "lm-eval"
        raise DataError(f"{path}: a JSON document that is neither an Inspect log nor an lm-eval samples list")
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        obj = _json_document(path, text)  # a single-line JSON document, or malformed
    if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "doc_id" in obj[0]:
        return "lm-eval"
    if isinstance(obj, dict):
        if "eval" in obj and ("samples" in obj or "version" in obj):
            return "inspect"
        if "doc_id" in obj and ("arguments" in obj or "resps" in obj):
            return "lm-eval"
        if "id" in obj or "text" in obj:
            return "dartkit"  # its own reader names what a bad line lacks
        keys = ", ".join(sorted(obj)[:8])
        raise DataError(
            f"{path}:1: cannot tell the generations format from fields ({keys}): expected dartkit JSONL "
            "(id, text), an lm-eval samples file (doc_id, arguments, resps) or an Inspect log; "
            "pass --generations-format"
        )
    raise DataError(f"{path}:1: expected a JSON object, got {type(obj).__name__}")


def _head(path: Path) -> bytes:
    """The file's first bytes (a zip starts with ``PK``)."""
    try:
        with path.open("rb") as f:
            return f.read(4)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _json_document(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None


# --- lm-evaluation-harness ------------------------------------------------------------------


def read_lm_eval(path: Path) -> HarnessLog:
    """The generations of an lm-evaluation-harness samples file (either layout, see the module docs).

    A sample logged once per filter (same ``doc_id``, same response) is read once.

    Raises:
        DataError: naming the file, line (or sample) and field of the first bad record.
    """
    path = Path(path)
    text = read_text(path)
    if text.lstrip().startswith("["):
        doc = _json_document(path, text)
        if not isinstance(doc, list):
            raise DataError(f"{path}: expected a list of lm-eval samples")
        records = [(f"{path} [sample {i}]", r) for i, r in enumerate(doc, start=1)]
        for ref, r in records:
            if not isinstance(r, dict):
                raise DataError(f"{ref}: expected a JSON object, got {type(r).__name__}")
    else:
        records = [(f"{path}:{n}", r) for n, r in iter_json_lines(text, str(path))]
    if not records:
        raise DataError(f"{path}: no records")
    samples: dict[str, LogSample] = {}
    layouts: set[str] = set()
    repeats = 0
    for ref, r in records:
        doc_id = r.get("doc_id")
        if isinstance(doc_id, bool) or not isinstance(doc_id, (int, str)):
            raise DataError(f"{ref}: field 'doc_id' {'is missing' if doc_id is None else 'must be a number'}")
        prompt, layout = _lm_eval_prompt(ref, r.get("arguments"))
        layouts.add(layout)
        answer = _lm_eval_response(ref, r.get("resps"))
        key = str(doc_id)
        if key in samples:
            if samples[key].text != answer:
                raise DataError(
                    f"{ref}: doc_id {doc_id} repeats {samples[key].ref} with a different response; a samples "
                    "file holds one task's samples (give each side one task's file)"
                )
            repeats += 1  # the same generation logged under another filter
            continue
        samples[key] = LogSample(
            ref=ref,
            native_id=key,
            text=answer,
            messages=[{"role": "user", "content": prompt}],
            raw=r,
        )
    skipped = {"filter_repeats": repeats} if repeats else {}
    return HarnessLog(path, "lm-eval", "+".join(sorted(layouts)), list(samples.values()), skipped)


def _lm_eval_prompt(ref: str, arguments: Any) -> tuple[str, str]:
    """The context string of the sample's first request, and which layout held it."""
    if isinstance(
        arguments, dict
    ):  # since lm-eval 0.4.3: {"gen_args_0": {"arg_0": context, "arg_1": kwargs}}
        first = arguments.get("gen_args_0")
        context = first.get("arg_0") if isinstance(first, dict) else None
        if not isinstance(context, str):
            raise DataError(f"{ref}: field 'arguments.gen_args_0.arg_0' {_missing_or(context, 'a string')}")
        return context, "gen_args"
    if isinstance(arguments, list):  # 0.4.0-0.4.2: [[context, kwargs], ...]
        first = arguments[0] if arguments else None
        context = first[0] if isinstance(first, list) and first else None
        if not isinstance(context, str):
            raise DataError(f"{ref}: field 'arguments[0][0]' {_missing_or(context, 'a string')}")
        return context, "list"
    raise DataError(f"{ref}: field 'arguments' {_missing_or(arguments, 'an object or a list')}")


def _lm_eval_response(ref: str, resps: Any) -> str:
    """The first raw generation, ``resps[0][0]``; refuses log-likelihood tasks, which generate nothing."""
    first = resps[0] if isinstance(resps, list) and resps else None
    answer = first[0] if isinstance(first, list) and first else None
    if isinstance(answer, str):
        return answer
    if isinstance(answer, (list, int, float)):
        raise DataError(
            f"{ref}: field 'resps' holds log-likelihood scores, not generated text; only generate_until "
            "tasks have answers to audit"
        )
    raise DataError(f"{ref}: field 'resps[0][0]' {_missing_or(answer, 'a string')}")


def _missing_or(value: Any, what: str) -> str:
    return "is missing" if value is None else f"must be {what}, got {type(value).__name__}"


# --- Inspect --------------------------------------------------------------------------------


def read_inspect(path: Path) -> HarnessLog:
    """The generations of an Inspect eval log (``.json`` or ``.eval``).

    A task run with several epochs answered each sample several times; the audit pairs one answer
    per prompt, so the lowest epoch is read and the others are counted as skipped. Samples that
    ended in an error without an answer are skipped and counted too.

    Raises:
        DataError: naming the file, sample (or zip member) and field of the first bad record.
    """
    path = Path(path)
    if _head(path).startswith(b"PK"):
        records, header = _eval_zip(path)
        layout = f"eval v{header.get('version', '?')}"
    else:
        try:
            doc = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            if e.msg == "Extra data":  # several JSON records: JSONL, not a log
                raise DataError(
                    f"{path}: not an Inspect log (one JSON record a line, not one document)"
                ) from None
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(doc, dict) or "eval" not in doc:
            raise DataError(f"{path}: not an Inspect log (no 'eval' field)")
        raw_samples = doc.get("samples")
        if not isinstance(raw_samples, list) or not raw_samples:
            raise DataError(f"{path}: field 'samples' is empty or missing (status {doc.get('status')!r})")
        records = [(f"{path} samples[{i}]", s) for i, s in enumerate(raw_samples)]
        header = doc
        layout = f"json v{doc.get('version', '?')}"
    by_id: dict[str, tuple[int, LogSample]] = {}
    skipped: Counter[str] = Counter()
    for ref, s in records:
        if not isinstance(s, dict):
            raise DataError(f"{ref}: expected a JSON object, got {type(s).__name__}")
        sample = _inspect_sample(ref, s)
        if sample is None:
            skipped["errored"] += 1
            continue
        epoch = s.get("epoch", 1)
        epoch = epoch if isinstance(epoch, int) else 1
        seen = by_id.get(sample.native_id)
        if seen is None or epoch < seen[0]:
            by_id[sample.native_id] = (epoch, sample)
        if seen is not None:
            skipped["other_epochs"] += 1
    if not by_id:
        raise DataError(f"{path}: no sample has an answer ({dict(skipped)} skipped)")
    status = header.get("status")
    if status not in (None, "success"):
        layout += f", status {status}"
    return HarnessLog(path, "inspect", layout, [s for _, s in by_id.values()], dict(skipped))


def _eval_zip(path: Path) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """``(reference, sample)`` for each ``samples/*.json`` member of a ``.eval`` zip, and its header."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a readable .eval (zip) file ({e})") from None
    with zf:
        names = zf.namelist()
        members = [n for n in names if n.startswith("samples/") and n.endswith(".json") and n.count("/") == 1]
        if not members:
            if any(n.startswith("samples/") and n.endswith("/sample.json") for n in names):
                raise DataError(
                    f"{path}: samples are stored in the chunked layout (samples/<id>/sample.json), which "
                    f"dartkit does not read; convert it: inspect log convert {path} --to json --output-dir DIR"
                )
            raise DataError(f"{path}: no samples/*.json members (was the eval run without logging samples?)")
        header_name = next((n for n in ("header.json", "_journal/start.json") if n in names), None)
        header = _member_json(zf, path, header_name) if header_name else {}
        records = [(f"{path}:{n}", _member_json(zf, path, n)) for n in members]
    return records, header if isinstance(header, dict) else {}


def _member_json(zf: zipfile.ZipFile, path: Path, name: str) -> Any:
    info = zf.getinfo(name)
    try:
        data = zf.read(info)
    except NotImplementedError:
        if info.compress_type != ZIP_ZSTANDARD:
            raise DataError(
                f"{path}:{name}: zip compression method {info.compress_type} is not supported"
            ) from None
        data = _zstd_member(path, info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise DataError(f"{path}:{name}: unreadable zip member ({e})") from None
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise DataError(f"{path}:{name}: malformed JSON ({where})") from None


def _zstd_member(path: Path, info: zipfile.ZipInfo) -> bytes:
    """A Zstandard-compressed member, decompressed with the ``zstandard`` package.

    ``zipfile`` before Python 3.14 refuses the method before reading a byte, so the compressed
    bytes are taken from after the member's local header (fixed 30 bytes, then its name and
    extra field) and checked against the central directory's CRC.
    """
    try:
        import zstandard
    except ImportError:
        raise DataError(
            f"{path}:{info.filename}: compressed with Zstandard (inspect-ai's default for .eval logs), "
            "which this Python's zipfile cannot read: pip install 'dartkit[inspect]' (adds the zstandard "
            f"package), or convert the log: inspect log convert {path} --to json --output-dir DIR"
        ) from None
    with Path(path).open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise DataError(f"{path}:{info.filename}: unreadable zip member (bad local header)")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        blob = f.read(info.compress_size)
    try:
        # Inspect writes multi-frame streams for large members, hence read_across_frames.
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True) as r:
            data = r.read()
    except zstandard.ZstdError as e:
        raise DataError(f"{path}:{info.filename}: unreadable zip member ({e})") from None
    if zlib.crc32(data) != info.CRC:
        raise DataError(f"{path}:{info.filename}: unreadable zip member (CRC check failed)")
    return data


def _inspect_sample(ref: str, s: dict[str, Any]) -> LogSample | None:
    """One Inspect sample; ``None`` for a sample that errored before answering."""
    sid = s.get("id")
    if isinstance(sid, bool) or not isinstance(sid, (int, str)):
        raise DataError(f"{ref}: field 'id' {_missing_or(sid, 'a string or a number')}")
    attachments = s.get("attachments") if isinstance(s.get("attachments"), dict) else {}
    text = _inspect_answer(ref, s, attachments)
    if text is None:
        if s.get("error"):
            return None
        raise DataError(
            f"{ref}: field 'output.completion' is missing (and 'messages' has no assistant reply)"
        )
    return LogSample(
        ref=ref, native_id=str(sid), text=text, messages=_inspect_sent(ref, s, attachments), raw=s
    )


def _inspect_sent(ref: str, s: dict[str, Any], attachments: dict[str, Any]) -> Messages:
    """The conversation the model was sent: ``messages`` up to the last assistant reply (the answer).

    Solvers such as ``system_message`` and ``prompt_template`` rewrite ``messages`` and leave
    ``input`` as the dataset's input, so ``input`` is read only for a sample that logged no
    ``messages`` (hand-made or very old logs).
    """
    logged = s.get("messages")
    if logged is not None and not isinstance(logged, list):
        raise DataError(
            f"{ref}: field 'messages' must be a list of chat messages, got {type(logged).__name__}"
        )
    if logged:
        # The prompt answered is everything before the *last* assistant message (the answer): earlier
        # assistant turns are few-shot examples the solver put in the conversation.
        last = max(
            (i for i, m in enumerate(logged) if isinstance(m, dict) and m.get("role") == "assistant"),
            default=len(logged),
        )
        messages: Messages = [
            _chat_message(ref, f"messages[{i}]", m, attachments) for i, m in enumerate(logged[:last])
        ]
        if not any(m["role"] == "user" for m in messages):
            raise DataError(f"{ref}: field 'messages' has no user message before the answer")
        return messages
    inp = s.get("input")
    if isinstance(inp, str):
        messages = [{"role": "user", "content": _resolve(ref, "input", inp, attachments)}]
    elif isinstance(inp, list) and inp:
        messages = [_chat_message(ref, f"input[{i}]", m, attachments) for i, m in enumerate(inp)]
    else:
        raise DataError(
            f"{ref}: field 'input' {_missing_or(inp, 'a string or a list of chat messages')} "
            "(and 'messages' is missing)"
        )
    if not any(m["role"] == "user" for m in messages):
        raise DataError(f"{ref}: field 'input' has no user message")
    return messages


def _inspect_answer(ref: str, s: dict[str, Any], attachments: dict[str, Any]) -> str | None:
    """``output.completion``, else the text of the last assistant message (older or hand-made logs)."""
    output = s.get("output")
    if isinstance(output, dict):
        completion = output.get("completion")
        if isinstance(completion, str) and (completion or output.get("choices")):
            return _resolve(ref, "output.completion", completion, attachments)
    replies = s.get("messages")
    if isinstance(replies, list):
        for i in range(len(replies) - 1, -1, -1):
            m = replies[i]
            if isinstance(m, dict) and m.get("role") == "assistant":
                return _chat_message(ref, f"messages[{i}]", m, attachments)["content"]
    return None


def _chat_message(ref: str, where: str, m: Any, attachments: dict[str, Any]) -> dict[str, str]:
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise DataError(f"{ref}: field '{where}.role' is missing")
    content = m.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):  # content parts: only text parts are text the model read or wrote
        text = "\n".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    else:
        raise DataError(f"{ref}: field '{where}.content' {_missing_or(content, 'a string or a list')}")
    return {"role": m["role"], "content": _resolve(ref, f"{where}.content", text, attachments)}


def _resolve(ref: str, where: str, text: str, attachments: dict[str, Any]) -> str:
    """Inspect may store long content once, as ``attachment://<hash>``, in the sample's ``attachments``."""
    if not text.startswith("attachment://"):
        return text
    value = attachments.get(text.removeprefix("attachment://"))
    if not isinstance(value, str):
        raise DataError(f"{ref}: field '{where}' refers to {text}, which is not in 'attachments'")
    return value


def read_log(path: Path, fmt: str) -> HarnessLog:
    """A harness log in ``fmt`` (``lm-eval`` or ``inspect``)."""
    return read_lm_eval(path) if fmt == "lm-eval" else read_inspect(path)


# --- mapping onto dartkit ids ---------------------------------------------------------------


def parse_id_fields(spec: str | None) -> dict[str, str]:
    """``--id-field`` as ``{format: dotted path}``: ``doc.id`` for every format, or per format as
    ``lm-eval:doc.id,inspect:metadata.dartkit_id``.

    Raises:
        ValueError: an empty path, or an unknown format name.
    """
    if spec is None:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        fmt, sep, dotted = part.strip().rpartition(":")
        if sep and fmt not in LOG_FORMATS:
            raise ValueError(f"unknown log format {fmt!r} in {spec!r}; use {' or '.join(LOG_FORMATS)}")
        if not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", dotted):
            raise ValueError(f"{part.strip()!r} is not a dotted field path such as doc.id")
        for f in [fmt] if sep else LOG_FORMATS:
            out[f] = dotted
    return out


def _field(sample: LogSample, dotted: str) -> str:
    value: Any = sample.raw
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise DataError(
            f"{sample.ref}: field '{dotted}' (--id-field) {_missing_or(value, 'a string or a number')}"
        )
    return str(value)


@dataclass
class _Target:
    item: AuditItem
    user: str  # the normalised user prompt dartkit sends for this item
    question: str  # the normalised question text that a harness prompt must contain
    system: str  # the normalised system prompt dartkit sends ("" for none)


def _targets(items: list[AuditItem]) -> list[_Target]:
    out = []
    for item in items:
        user = next((m["content"] for m in reversed(item.messages) if m["role"] == "user"), item.question)
        out.append(
            _Target(
                item,
                normalise(user),
                normalise(item.extra.get("question") or item.question),
                _system_prompt(item.messages),
            )
        )
    return out


def _system_prompt(messages: Messages) -> str:
    return normalise("\n\n".join(m["content"] for m in messages if m["role"] == "system"))


def _user_prompt(sample: LogSample) -> str:
    return normalise(next(m["content"] for m in reversed(sample.messages) if m["role"] == "user"))


def _relation(sample: LogSample, target: _Target) -> str:
    """``exact``: the sample's user turn is dartkit's, and so is its system prompt if it logged one
    (an lm-eval context has none); ``contains``: its prompt only contains dartkit's question (a
    template around it, or another system prompt); ``differs``: it does not contain it."""
    prompt = _user_prompt(sample)
    system = _system_prompt(sample.messages)
    if prompt == target.user and (not system or system == target.system):
        return "exact"
    return "contains" if target.question in prompt else "differs"


def _match_by_prompt(samples: list[LogSample], targets: list[_Target]) -> dict[int, tuple[_Target, str]]:
    """Index of each mapped sample -> (target, "exact" | "contains"); refuses ambiguous containment."""
    exact: dict[str, list[_Target]] = defaultdict(list)
    for t in targets:
        exact[t.user].append(t)
    out: dict[int, tuple[_Target, str]] = {}
    ambiguous: list[tuple[LogSample, list[_Target]]] = []
    for i, s in enumerate(samples):
        prompt = _user_prompt(s)
        hits = exact.get(prompt, [])
        kind = "exact"
        if not hits:
            kind = "contains"
            hits = [t for t in targets if t.question in prompt]
            # A question inside a longer matched question is not a second question of this prompt.
            hits = [
                t
                for t in hits
                if not any(t.question != o.question and t.question in o.question for o in hits)
            ]
        if len(hits) == 1:
            # Mapped by its user turn; a system prompt other than dartkit's still makes it no exact match.
            out[i] = (hits[0], _relation(s, hits[0]) if kind == "exact" else kind)
        elif len(hits) > 1:
            ambiguous.append((s, hits))
    if ambiguous:
        s, hits = ambiguous[0]
        ids = ", ".join(repr(t.item.id) for t in hits[:4])
        raise DataError(
            f"{s.ref}: the prompt contains the questions of {len(hits)} dartkit ids ({ids}), so its answer "
            f"cannot be mapped onto one; {len(ambiguous)} log sample(s) are ambiguous like this (few-shot "
            "examples drawn from the audited questions?). Map by a field of the log with --id-field, or "
            "audit on prompts that the harness prompts contain only once"
        )
    return out


def map_log(
    log: HarnessLog, items: list[AuditItem] | None, id_field: str | None
) -> tuple[dict[str, GenerationRow], dict[str, Any]]:
    """A harness log's answers keyed by dartkit id, and how they were mapped.

    Args:
        log: The log's samples.
        items: The audit's prompts (from ``--data/--split`` or ``--prompts``); None when not given.
        id_field: Dotted path of a field holding the dartkit id (``--id-field``), or None to map
            by prompt.

    Returns:
        ``(rows, report)``. Each row's ``prompt`` is what the model was sent (rendered like
        dartkit's own generation files) and ``prompt_match`` how it relates to dartkit's prompt for
        that id: ``exact``, ``contains`` (the harness prompt wraps the question), ``differs``
        (possible only with ``id_field``: it does not contain the question), or None when there are
        no dartkit prompts to compare with.

    Raises:
        DataError: nothing to map by, an ambiguous mapping, or two samples on one id.
    """
    targets = _targets(items) if items else []
    by_id = {t.item.id: t for t in targets}
    mapped: dict[int, tuple[str, _Target | None, str | None]] = {}
    if id_field:
        for i, s in enumerate(log.samples):
            id_ = _field(s, id_field)
            if targets and id_ not in by_id:
                continue  # not one of the audited prompts
            t = by_id.get(id_)
            mapped[i] = (id_, t, _relation(s, t) if t else None)
    elif targets:
        for i, (t, kind) in _match_by_prompt(log.samples, targets).items():
            mapped[i] = (t.item.id, t, kind)
    else:
        raise DataError(
            f"{log.path}: an {log.format} log carries no dartkit ids: give the audit's prompts "
            "(--data/--split or --prompts) to map its samples by prompt, or --id-field FIELD"
        )
    claims: dict[str, list[int]] = defaultdict(list)
    for i, (id_, _, _) in mapped.items():
        claims[id_].append(i)
    repeated = {k: v for k, v in claims.items() if len(v) > 1}
    if repeated:
        id_, idx = next(iter(repeated.items()))
        refs = " and ".join(log.samples[i].ref for i in idx[:2])
        how = f"field '{id_field}'" if id_field else "prompt"
        raise DataError(
            f"{len(idx)} log samples map onto dartkit id {id_!r} by {how} ({refs}); {len(repeated)} id(s) "
            "are claimed more than once. The audit pairs one answer per prompt: give one answer per "
            "question, or map with --id-field"
        )
    rows: dict[str, GenerationRow] = {}
    for i, (id_, t, kind) in sorted(mapped.items()):
        s = log.samples[i]
        item = t.item if t else None
        rows[id_] = GenerationRow(
            id=id_,
            text=s.text,
            prompt=render_messages(s.messages),
            question=item.question if item else None,
            label=item.label if item else None,
            benchmark=item.benchmark if item else None,
            scenario_key=item.scenario_key if item else None,
            source=log.format,
            prompt_match=kind,
            ref=s.ref,
        )
    unmapped = [s.ref for i, s in enumerate(log.samples) if i not in mapped]
    report = {
        "format": log.format,
        "layout": log.layout,
        "file": str(log.path),
        "samples": len(log.samples),
        "mapped": len(rows),
        "mapped_by": f"field {id_field}" if id_field else "prompt",
        "prompt_match": dict(Counter(r.prompt_match for r in rows.values() if r.prompt_match)),
        "unmapped": len(unmapped),
        "unmapped_samples": unmapped[:_SHOWN],
        "skipped": log.skipped,
    }
    return rows, report


def load_side(
    path: Path, fmt: str, items: list[AuditItem] | None, id_fields: dict[str, str]
) -> tuple[dict[str, GenerationRow], dict[str, Any] | None]:
    """One side's answers keyed by dartkit id, from a file in ``fmt`` (``auto`` detects it).

    Returns:
        ``(rows, report)``; ``report`` is None for a dartkit generation file.
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "dartkit":
        return load_generations(path), None
    return map_log(read_log(path, fmt), items, id_fields.get(fmt))


def log_checks(
    base: dict[str, GenerationRow], cand: dict[str, GenerationRow], reports: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """What summary.json's ``unmatched`` and ``prompt_check`` gain when a side is a harness log.

    Returns:
        ``(unmatched, prompt_check, messages)``: ``unmatched`` gets ``<side>_log`` (samples, mapped,
        unmapped with their references, skipped); ``prompt_check`` gets ``mapped_by`` and
        ``prompt_match`` per side, ``contains`` / ``contains_ids`` (pairs where a harness prompt
        only contains dartkit's question rather than equalling its prompt) and ``differs`` /
        ``differs_ids`` (a prompt mapped by --id-field that does not contain its question);
        ``messages`` are console lines.
    """
    paired = [i for i in base if i in cand]
    contains = [i for i in paired if "contains" in (base[i].prompt_match, cand[i].prompt_match)]
    differs = [i for i in paired if "differs" in (base[i].prompt_match, cand[i].prompt_match)]
    unmatched = {
        f"{side}_log": {
            k: r[k]
            for k in ("format", "file", "samples", "mapped", "unmapped", "unmapped_samples", "skipped")
        }
        for side, r in reports.items()
    }
    check = {
        "mapped_by": {side: r["mapped_by"] for side, r in reports.items()},
        "prompt_match": {side: r["prompt_match"] for side, r in reports.items()},
        "contains": len(contains),
        "contains_ids": contains[:_SHOWN],
        "differs": len(differs),
        "differs_ids": differs[:_SHOWN],
    }
    messages = [describe_log(side, r) for side, r in reports.items()]
    return unmatched, check, messages


def describe_log(side: str, report: dict[str, Any]) -> str:
    """One console line on how a side's harness log was read and mapped (a ``map_log`` report).

    Records skipped while reading (lm-eval filter repeats, other Inspect epochs, errored samples)
    are counted against the records read, so ``48 records → 24 sample(s)`` explains itself.
    """
    r = report
    how = ", ".join(f"{n} {k}" for k, n in sorted(r["prompt_match"].items()))
    skipped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in r["skipped"].items())
    read = (
        f"{r['samples'] + sum(r['skipped'].values())} records → {r['samples']} sample(s) ({skipped} skipped)"
        if skipped
        else f"{r['samples']} sample(s)"
    )
    return (
        f"{side}: {r['format']} log ({r['layout']}) {r['file']}: {read}, {r['mapped']} mapped onto dartkit "
        f"ids by {r['mapped_by']}{f' ({how})' if how else ''}, {r['unmapped']} unmapped"
    )
