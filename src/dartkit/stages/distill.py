"""Stage I: label-conditioned distillation, then LoRA training of M_int.

    dartkit distill --data runs/demo/data --teacher embedded --out runs/demo/distill

For every training item the teacher is given the question *and its gold label*
and writes a short analysis ending in ``Conclusion: YES|NO``. Every answer goes
through quality control (``dartkit.qc``); a failing answer gets up to two
format-fix follow-ups that say what was wrong (sampled, so a retry is new text).
Items that still fail stay in ``teacher.jsonl`` as rejected, with the reason,
and are not trained on. Then (unless ``train=False``) the student is
LoRA-fine-tuned on the accepted rationales and evaluated on the validation split.

Every teacher call goes through the generation cache, so an interrupted run
resumes and a finished one reruns in seconds.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from dartkit.config import ConfigError, DecodingConfig, DistillConfig, dump_config
from dartkit.data.jsonl import write_json, write_jsonl
from dartkit.data.prepare import load_split
from dartkit.data.splits import stratified_order
from dartkit.errors import DataError
from dartkit.files import file_sha256
from dartkit.generate import Backend, load_backend
from dartkit.generate.base import Messages
from dartkit.generate.cache import GenerationCache, generate_cached
from dartkit.generate.loading import teacher_is_student
from dartkit.manifest import write_manifest
from dartkit.parse import parse_conclusion, split_analysis
from dartkit.progress import generate_with_progress, results_console
from dartkit.prompts import (
    consistency_judge_messages,
    consistency_judge_retry_messages,
    format_fix_messages,
    load_teacher_examples,
    predict_fix_messages,
    predicted_teacher_messages,
    render_messages,
    teacher_messages,
)
from dartkit.qc import QCConfig, builtin_contradictions, check_rationale, fix_problems, near_duplicates
from dartkit.records import Example

PREDICTED_WRONG = "predicted_wrong_label"


class FileTeacher:
    """Rationales produced elsewhere: a JSONL file mapping ``id`` to ``text``.

    They go through the same QC; there is nobody to ask for a fix, so a failing
    rationale is rejected at once.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.spec = f"file:{path}"
        if not self.path.is_file():
            raise DataError(f"{path}: teacher file not found")
        self.texts: dict[str, str] = {}
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("id"), str)
                or not isinstance(row.get("text"), str)
            ):
                raise DataError(f"{path}:{n}: each line needs string fields 'id' and 'text'")
            self.texts[row["id"]] = row["text"]

    def identity(self) -> dict[str, Any]:

        return {
            "backend": "file",
            "path": str(self.path),
            "sha256": file_sha256(self.path),
        }

    def close(self) -> None:
        pass


_VERDICTS = {
    "consistent": False,
    "contradicts": True,
    "contradict": True,
    "contradicting": True,
    "contradictory": True,
    "contradiction": True,
    "inconsistent": True,
}
_NOT = frozenset(("not", "no", "never", "t"))  # "t" from "doesn't" / "isn't"


def parse_consistency_reply(text: str) -> bool | None:
    """The consistency judge's verdict: True (CONTRADICTS), False (CONSISTENT), None when it gave none.

    Lenient about case, punctuation, markdown and words around the verdict ("**Answer:** Contradicts.",
    "The explanation is consistent with its conclusion"); a negated verdict word counts as its opposite
    ("it does not contradict it"). A reply whose verdict words disagree ("CONSISTENT or CONTRADICTS")
    or that has none gives None.

    Examples:
        >>> parse_consistency_reply("**Answer:** contradicts."), parse_consistency_reply("Consistent")
        (True, False)
        >>> parse_consistency_reply("I cannot tell.") is None
        True
        >>> parse_consistency_reply("No, it contradicts the conclusion."), parse_consistency_reply("No. CONTRADICTS")
        (True, True)
    """
    found = set()
    # A negation counts only inside the verdict's own clause: "No, it contradicts the conclusion" and
    # "No. CONTRADICTS" are verdicts of CONTRADICTS, not negated ones.
    for clause in re.split(r"[.,;:!?\n]|\s-+\s", (text or "").lower()):
        words = re.findall(r"[a-z]+", clause)
        found |= {
            _VERDICTS[w] != any(p in _NOT for p in words[max(0, k - 2) : k])
            for k, w in enumerate(words)
            if w in _VERDICTS
        }
    return found.pop() if len(found) == 1 else None


def _judge_contradictions(
    judge: Backend, items: Sequence[tuple[str, str]], cache: GenerationCache
) -> list[dict[str, Any]]:
    """Ask the judge about (analysis, label) pairs; a reply without a verdict gets one follow-up.

    Returns one ``{"verdict": "consistent" | "contradicts" | None, "replies": 1 | 2}`` per pair;
    ``verdict`` None means the judge never answered in a usable form.
    """
    decoding = DecodingConfig(max_new_tokens=32)
    convs = [consistency_judge_messages(a, label) for a, label in items]
    replies, _ = generate_cached(judge, convs, decoding, cache)
    verdicts = [parse_consistency_reply(t) for t in replies]
    n_replies = [1] * len(items)
    again = [i for i, v in enumerate(verdicts) if v is None]
    if again:
        follow_ups = [consistency_judge_retry_messages(convs[i], replies[i]) for i in again]
        retried, _ = generate_cached(judge, follow_ups, decoding, cache)
        for i, reply in zip(again, retried, strict=True):
            verdicts[i] = parse_consistency_reply(reply)
            n_replies[i] = 2
    return [
        {"verdict": None if v is None else "contradicts" if v else "consistent", "replies": n}
        for v, n in zip(verdicts, n_replies, strict=True)
    ]


def _qc_round(
    examples: Sequence[Example],
    texts: Sequence[str],
    prompts: Sequence[Messages],
    qc: QCConfig,
    judge: Backend | None,
    judge_cache: GenerationCache | None,
) -> tuple[list[list[str]], list[dict[str, Any] | None]]:
    """QC reasons per text, and the consistency judge's result per text (None where it was not asked).

    The judge is asked only about texts that pass every other check. A text whose judge reply has no
    verdict even after the follow-up gets the built-in check instead, so it is never waved through.
    """
    use_judge = judge is not None and qc.consistency in ("judge", "auto")
    reasons = [
        check_rationale(t, e.label, [m["content"] for m in p], qc, builtin_consistency=False)
        for e, t, p in zip(examples, texts, prompts, strict=True)
    ]
    judged: list[dict[str, Any] | None] = [None] * len(texts)
    builtin_todo: list[int] = []
    if use_judge:
        todo = [i for i, r in enumerate(reasons) if not r]
        results = _judge_contradictions(
            judge, [(split_analysis(texts[i]), examples[i].label) for i in todo], judge_cache
        )
        for i, result in zip(todo, results, strict=True):
            judged[i] = result
            if result["verdict"] == "contradicts":
                reasons[i].append("contradicts_conclusion")
            elif result["verdict"] is None:
                builtin_todo.append(i)
    elif qc.consistency in ("builtin", "auto"):
        # Same condition as check_rationale's own built-in check (a parsed conclusion), batched.
        builtin_todo = [i for i, r in enumerate(reasons) if "empty" not in r and "no_conclusion" not in r]
    flags = builtin_contradictions(
        [split_analysis(texts[i]) for i in builtin_todo], [examples[i].label for i in builtin_todo]
    )
    for i, flagged in zip(builtin_todo, flags, strict=True):
        if flagged:
            reasons[i].append("contradicts_conclusion")
    return reasons, judged


def distill_rationales(
    examples: Sequence[Example],
    teacher: Backend | FileTeacher,
    cfg: DistillConfig,
    cache: GenerationCache,
    judge: Backend | None = None,
    messages_fn: Callable[[Example], Messages] | None = None,
    extra_check: Callable[[list[int], list[str]], list[list[str]]] | None = None,
    labels: Literal["gold", "predicted"] = "gold",
    keep: Literal["matching", "all"] = "matching",
) -> Iterator[dict[str, Any]]:
    """Ask the teacher for a rationale per example, with QC and format-fix follow-ups.

    With ``labels="predicted"`` (the predicted-label ablation) the teacher is asked the question
    without its gold label (``predicted_teacher_messages``), QC checks the rationale against the
    teacher's *own* conclusion, and follow-ups name only problems of form, never the right answer.
    ``keep="matching"`` then rejects a rationale whose conclusion is not the gold label
    (``predicted_wrong_label``, final: asking again until the teacher guesses right would leak the
    label through selection); ``keep="all"`` keeps it with the teacher's conclusion as its target.

    ``cfg`` needs ``qc``, ``decoding`` and ``teacher_examples`` (a DistillConfig or RepairConfig); ``messages_fn``
    builds the teacher prompt (Stage I's by default, the repair prompt in Stage III). ``extra_check``
    gets the indices (into ``examples``) and texts that passed QC in a round and returns more reasons
    for each (repair's harm check); a failing text gets a follow-up like any other.

    Yields one ``teacher.jsonl`` row per example, in input order.
    """
    qc = cfg.qc
    predicted = labels == "predicted"
    if messages_fn is None:
        build = predicted_teacher_messages if predicted else teacher_messages
        messages_fn = partial(build, examples=load_teacher_examples(cfg.teacher_examples))
    convs = [messages_fn(e) for e in examples]
    attempts: list[list[dict[str, Any]]] = [[] for _ in examples]
    pending = list(range(len(examples)))
    for round_ in range(qc.max_fix_attempts + 1):
        if not pending:
            break
        if isinstance(teacher, FileTeacher):
            texts = [teacher.texts.get(examples[i].id, "") for i in pending]
            finishes: list[str | None] = [None] * len(pending)
        else:
            decoding = cfg.decoding
            if round_ > 0:
                decoding = decoding.model_copy(
                    update={"temperature": qc.fix_temperature, "seed": cfg.decoding.seed + round_}
                )
            texts, keys = generate_with_progress(
                teacher, [convs[i] for i in pending], decoding, cache, f"teacher round {round_ + 1}"
            )
            # Replies cut at the token limit or filtered by the server are marked in the cache.
            finishes = [cache.info(k).get("finish") for k in keys]
        # Copy checks look at the original prompt only: a retry may keep good sentences of its own
        # earlier answer, which sits in the follow-up conversation.
        originals = [messages_fn(examples[i]) for i in pending]
        checked = [examples[i] for i in pending]
        if predicted:
            # QC holds each rationale to the teacher's own conclusion; without one, "no_conclusion".
            checked = [
                e.model_copy(update={"label": parse_conclusion(t) or e.label})
                for e, t in zip(checked, texts, strict=True)
            ]
        reasons, judged = _qc_round(checked, texts, originals, qc, judge, cache)
        if predicted and keep == "matching":
            for k, (i, text) in enumerate(zip(pending, texts, strict=True)):
                said = parse_conclusion(text)
                if said is not None and said != examples[i].label:
                    reasons[k] = [*reasons[k], PREDICTED_WRONG]
        if extra_check is not None:
            passed = [k for k, why in enumerate(reasons) if not why]
            if passed:
                extra = extra_check([pending[k] for k in passed], [texts[k] for k in passed])
                for k, more in zip(passed, extra, strict=True):
                    reasons[k] = [*reasons[k], *more]
        still = []
        for i, text, why, verdict, finish in zip(pending, texts, reasons, judged, finishes, strict=True):
            attempts[i].append({"text": text, "reasons": why, "judge": verdict, "finish": finish})
            if why and not isinstance(teacher, FileTeacher):
                if predicted:
                    if PREDICTED_WRONG in why:
                        continue  # final: see the docstring
                    # Name the teacher's own conclusion where a hint needs one, never the gold label.
                    own = parse_conclusion(text) or "YES or NO"
                    convs[i] = predict_fix_messages(convs[i], text, fix_problems(why, own, qc))
                else:
                    convs[i] = format_fix_messages(
                        convs[i], text, fix_problems(why, examples[i].label, qc), examples[i].label
                    )
                still.append(i)
        pending = still
    accepted_text = {i: a[-1]["text"] for i, a in enumerate(attempts) if not a[-1]["reasons"]}
    order = sorted(accepted_text)
    dup_of = near_duplicates([split_analysis(accepted_text[i]) for i in order], qc.near_duplicate_threshold)
    duplicate = {order[k]: examples[order[j]].id for k, j in enumerate(dup_of) if j is not None}
    for i, e in enumerate(examples):
        last = attempts[i][-1]
        reasons = list(last["reasons"])
        flags = []
        if i in duplicate:
            flags.append(f"near_duplicate_of:{duplicate[i]}")
            if qc.reject_near_duplicates:
                reasons.append("near_duplicate")
        yield {
            "id": e.id,
            "benchmark": e.benchmark,
            "gold": e.label,
            "prompt": render_messages(messages_fn(e)),
            "text": last["text"],
            "accepted": not reasons,
            "reason": ",".join(reasons) if reasons else None,
            "attempts": len(attempts[i]),
            "attempt_log": attempts[i],
            "flags": flags,
            # Which label the teacher was shown (gold) or not (predicted), and the conclusion it wrote.
            "labels": labels,
            "teacher_conclusion": parse_conclusion(last["text"]),
        }


def distill_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    first_try: Counter[str] = Counter()
    for r in rows:
        for reason in (r["reason"] or "").split(","):
            if reason:
                reasons[reason] += 1
        for reason in r["attempt_log"][0]["reasons"]:
            first_try[reason] += 1
    n = len(rows)
    accepted = sum(r["accepted"] for r in rows)
    by_label = {
        label: {
            "n": sum(r["gold"] == label for r in rows),
            "accepted": sum(r["accepted"] and r["gold"] == label for r in rows),
        }
        for label in ("YES", "NO")
    }
    judged = [a["judge"] for r in rows for a in r["attempt_log"] if a.get("judge")]
    # How often the teacher's own first answer names the gold label: the quantity predicted-label
    # distillation depends on (with gold labels the prompt states it, so this is near 1).
    first = [parse_conclusion(r["attempt_log"][0]["text"]) for r in rows]
    parsed = [(c, r["gold"]) for c, r in zip(first, rows, strict=True) if c is not None]
    return {
        "labels": rows[0].get("labels", "gold") if rows else None,
        "teacher_first_answer_accuracy": sum(c == g for c, g in parsed) / len(parsed) if parsed else None,
        "teacher_first_answer_parsed": len(parsed),
        "n": n,
        "accepted": accepted,
        "acceptance_rate": accepted / n if n else None,
        "accepted_first_try": sum(r["accepted"] and r["attempts"] == 1 for r in rows),
        "reason_counts": dict(reasons.most_common()),
        "first_try_reason_counts": dict(first_try.most_common()),
        "by_label": by_label,
        "attempts_histogram": dict(sorted(Counter(r["attempts"] for r in rows).items())),
        # Consistency-judge replies over all attempts: asked, needing the one-word follow-up, and still
        # without a verdict after it (those attempts were checked by the built-in classifier instead).
        "judge_asked": len(judged),
        # Teacher replies (all attempts) that hit the token limit, came back filtered, or came back
        # as the server's refusal field.
        "teacher_truncated": sum(a.get("finish") == "truncated" for r in rows for a in r["attempt_log"]),
        "teacher_filtered": sum(a.get("finish") == "filtered" for r in rows for a in r["attempt_log"]),
        "teacher_refused": sum(a.get("finish") == "refused" for r in rows for a in r["attempt_log"]),
        "judge_retried": sum(j["replies"] > 1 for j in judged),
        "judge_unparsed": sum(j["verdict"] is None for j in judged),
    }


def _load_teacher(spec: str, cfg: DistillConfig) -> Backend | FileTeacher:
    if spec.startswith("file:"):
        return FileTeacher(Path(spec[5:]))
    return load_backend(spec, cfg.backend)


def run(cfg: DistillConfig, console: Console | None = None) -> dict[str, Any]:
    """Distill rationales for the training split, then train and evaluate M_int (unless ``cfg.train`` is off)."""
    console = console or results_console()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    examples = stratified_order(load_split(cfg.data, "train"))
    if cfg.limit:
        examples = examples[: cfg.limit]
    cache = GenerationCache(out / "cache.jsonl")
    teacher = _load_teacher(cfg.teacher, cfg)
    if cfg.qc.consistency == "judge" and not cfg.judge:
        raise ConfigError("qc.consistency is 'judge' but no judge model is configured (set judge or --judge)")
    judge = (
        load_backend(cfg.judge, cfg.backend)
        if cfg.judge and cfg.qc.consistency in ("judge", "auto")
        else None
    )
    try:
        rows = list(
            distill_rationales(examples, teacher, cfg, cache, judge, labels=cfg.labels, keep=cfg.keep)
        )
        identities = {"teacher": teacher.identity(), "judge": judge.identity() if judge else None}
    finally:
        teacher.close()
        if judge:
            judge.close()
    write_jsonl(out / "teacher.jsonl", rows)
    metrics = distill_metrics(rows)
    metrics["teacher"] = cfg.teacher
    metrics["teacher_is_student"] = teacher_is_student(cfg.teacher, cfg.student, identities["teacher"])
    console.print(_qc_table(metrics))
    timings = {"distill": time.perf_counter() - t0}
    if cfg.train and metrics["accepted"]:
        from dartkit.stages import evaluate
        from dartkit.train import run as train_run
        from dartkit.train.config import TrainConfig

        t1 = time.perf_counter()
        train_cfg = TrainConfig.model_validate(
            {
                **cfg.training,
                "base": cfg.student,
                "data": [out / "teacher.jsonl"],
                "prepared": Path(cfg.data),
                "out": out / "train",
            }
        )
        metrics["training"] = train_run(train_cfg)
        timings["train"] = time.perf_counter() - t1
        adapter = out / "train" / "adapter"
        eval_cfg = cfg.eval_config(model=f"{cfg.student}+adapter={adapter}", out=out / "eval_val")
        t2 = time.perf_counter()
        metrics["eval_val"] = evaluate.run(eval_cfg, console)
        timings["eval"] = time.perf_counter() - t2
        metrics["adapter"] = str(adapter)
    elif cfg.train:
        console.print("[yellow]no rationale passed QC: nothing to train on[/yellow]")
    write_json(out / "metrics.json", metrics)
    write_manifest(
        out, command="distill", config=cfg.model_dump(mode="json"), models=identities, timings=timings
    )
    console.print(f"rationales: {out / 'teacher.jsonl'}  metrics: {out / 'metrics.json'}")
    return metrics


def _qc_table(metrics: dict[str, Any]) -> Table:
    table = Table(title=f"teacher QC: {metrics['accepted']}/{metrics['n']} accepted")
    table.add_column("reason (final)")
    table.add_column("items", justify="right")
    table.add_column("on first try", justify="right")
    names = sorted(set(metrics["reason_counts"]) | set(metrics["first_try_reason_counts"]))
    for name in names:
        table.add_row(
            name,
            str(metrics["reason_counts"].get(name, 0)),
            str(metrics["first_try_reason_counts"].get(name, 0)),
        )
    return table
