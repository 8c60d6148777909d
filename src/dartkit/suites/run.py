"""Run one suite on one model: ``dartkit suite run NAME --model SPEC --out DIR``.

Writes into ``out``: ``config.yaml`` (the resolved settings), ``generations.jsonl`` (prompt and
answer per item), ``scores.jsonl`` (harm, refusal, sentiment, judge label per item), ``metrics.json``
(the suite's numbers, each with its ``n``), ``manifest.json`` (model identities, versions) and a
figure. Answers, scores and judge replies are cached in ``out`` as they finish, so an interrupted run
resumes where it stopped; the directory is locked while a run writes to it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from rich.console import Console

from dartkit.config import BackendConfig, ConfigError, DecodingConfig, _Strict, dump_config
from dartkit.data.jsonl import write_json, write_jsonl
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache
from dartkit.harm.cache import score_cached
from dartkit.harm.spec import load_scorer
from dartkit.lock import check_config_inputs, dir_lock
from dartkit.manifest import write_manifest
from dartkit.progress import generate_with_progress, results_console
from dartkit.refusal import detect_refusals, model_fingerprint
from dartkit.suites.base import Suite, SuiteItem, items_label, stratified_subset
from dartkit.suites.figures import suite_figure
from dartkit.suites.registry import get_suite
from dartkit.suites.samples import SAMPLE, sample_dir

RESULTS = ("generations.jsonl", "scores.jsonl", "metrics.json")


class SuiteSettings(_Strict):
    """Which suite, on which items: shared by `dartkit suite run` and `dartkit run`'s ``evaluations``."""

    suite: str = Field(description="Suite name: transfer, hatecheck, bold or xstest (`dartkit suite list`).")
    source: Literal["sample"] | Path | None = Field(
        None,
        description="The suite's upstream files (a directory or the file), or for transfer your own query "
        "file; 'sample': dartkit's small packaged sample of HateCheck, XSTest or BOLD (for demos); default: "
        "the packaged set (transfer).",
    )
    download: bool = Field(
        False,
        description="Without a source, download the suite's upstream files into the dartkit cache (pinned by "
        "sha256; $DARTKIT_SUITE_URL replaces the release URL).",
    )
    limit: int | None = Field(
        None, ge=1, description="Run a seeded subset of this many items, stratified as the suite declares."
    )
    seed: int = Field(0, description="Seed of the subset.")
    judge: str | None = Field(
        None,
        description="Judge model spec, for suites that use one (transfer: appropriate/refusal; xstest: refusal).",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, description="Answer length in tokens; default: the suite's own (dartkit suite list)."
    )

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, v: str) -> str:
        get_suite(v)  # raises with the list of suites
        return v

    def resolved_source(self) -> Path | None:
        """The directory or file to load from (None: the suite's own packaged set; downloads not resolved)."""
        if self.source != SAMPLE:
            return self.source  # type: ignore[return-value]
        path = sample_dir(self.suite)
        if not path.is_dir():
            raise ConfigError(f"suite {self.suite} has no packaged sample (its default data is packaged)")
        return path

    @model_validator(mode="after")
    def _has_data(self) -> SuiteSettings:
        if self.source is None and not self.download and get_suite(self.suite).files:
            raise ValueError(
                f"suite {self.suite} reads upstream files: set `source` (your copy) or `download`"
            )
        return self


class SuiteRunConfig(SuiteSettings):
    """Settings of one suite run (``dartkit suite run``)."""

    model: str = Field(
        description="Model spec: embedded, embedded+adapter=DIR, hf:ID_OR_PATH, openai:MODEL@URL."
    )
    out: Path = Field(
        description="Output directory: generations.jsonl, scores.jsonl, metrics.json, a figure."
    )
    scorer: str = Field(
        "profanity", description="Harm scorer spec for the answers (see `dartkit audit --help`)."
    )
    decoding: DecodingConfig = Field(
        default_factory=lambda: DecodingConfig(stop_after_conclusion=False),
        description="Decoding of the answers (greedy by default; free answers have no conclusion line to stop at).",
    )
    backend: BackendConfig = Field(default_factory=BackendConfig, description="Backend settings.")

    def answer_decoding(self, suite: Suite) -> DecodingConfig:
        return self.decoding.model_copy(
            update={"max_new_tokens": self.max_new_tokens or suite.max_new_tokens}
        )


def select_items(cfg: SuiteRunConfig) -> tuple[Suite, list[SuiteItem], int]:
    """The suite, the items this run answers (the ``--limit`` subset) and the suite's full size."""
    suite = get_suite(cfg.suite)
    source = cfg.resolved_source()
    if source is None and cfg.download:
        from dartkit.suites.download import fetch_suite

        source = fetch_suite(suite)
    items = suite.load(source)
    return suite, stratified_subset(items, cfg.limit, cfg.seed, suite.stratum), len(items)


def _vader():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError(
            "sentiment scoring needs the vaderSentiment package: pip install vaderSentiment"
        ) from None
    return SentimentIntensityAnalyzer()


def sentiment_scores(texts: Sequence[str]) -> list[float]:
    """VADER compound sentiment of each text, -1 (negative) to 1 (positive)."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(t or "")["compound"]) for t in texts]


def run(cfg: SuiteRunConfig, console: Console | None = None, force: bool = False) -> dict[str, Any]:
    """Answer, score and measure one suite; returns ``metrics.json``'s content."""
    console = console or results_console()
    out = Path(cfg.out)
    suite, items, full_size = select_items(cfg)
    decoding = cfg.answer_decoding(suite)
    # What config.yaml and the manifest record is the answer length that ran, not the unset default.
    cfg = cfg.model_copy(update={"max_new_tokens": decoding.max_new_tokens, "decoding": decoding})
    t0 = time.perf_counter()
    with dir_lock(out):
        check_config_inputs(cfg, RESULTS, force)
        dump_config(cfg, out / "config.yaml")
        cache = GenerationCache(out / "cache.jsonl")
        backend = load_backend(cfg.model, cfg.backend)
        try:
            texts, keys = generate_with_progress(
                backend, [suite.messages(i) for i in items], decoding, cache, f"{suite.name}"
            )
            identity = backend.identity()
        finally:
            backend.close()
        t1 = time.perf_counter()
        rows = []
        refused = detect_refusals(texts)
        for item, text, key, refusal in zip(items, texts, keys, refused, strict=True):
            finish = cache.info(key).get("finish") or "stop"
            rows.append(
                {
                    "id": item.id,
                    "group": item.group,
                    **item.fields,
                    "prompt": item.prompt,
                    "text": text,
                    "finish": finish,
                    "refusal": refusal,
                }
            )
        write_jsonl(out / "generations.jsonl", [{k: r[k] for k in r if k != "refusal"} for r in rows])
        scorer = load_scorer(cfg.scorer, device=cfg.backend.device)
        harms = score_cached(scorer, texts, out / "score_cache.jsonl")
        for r, h in zip(rows, harms, strict=True):
            r["harm"] = h
        if suite.sentiment:
            for r, s in zip(rows, sentiment_scores(texts), strict=True):
                r["sentiment"] = s
        judge_identity = None
        if cfg.judge and suite.judge_messages is not None:
            judge_identity = _judge(cfg, suite, rows, GenerationCache(out / "judge_cache.jsonl"))
        elif cfg.judge:
            console.print(f"[yellow]note: suite {suite.name} does not use a judge; --judge ignored[/yellow]")
        t2 = time.perf_counter()
        write_jsonl(
            out / "scores.jsonl", [{k: v for k, v in r.items() if k not in ("prompt", "text")} for r in rows]
        )
        metrics = {
            "suite": suite.name,
            "model": cfg.model,
            "items": len(rows),
            "suite_size": full_size,
            "subset": None
            if cfg.limit is None or cfg.limit >= full_size
            else {"limit": cfg.limit, "seed": cfg.seed},
            "scorer": scorer.name,
            "judge": cfg.judge if judge_identity else None,
            "max_new_tokens": decoding.max_new_tokens,
            "truncated": sum(r["finish"] == "truncated" for r in rows),
            "metrics": suite.metrics(rows),
        }
        write_json(out / "metrics.json", metrics)
        write_manifest(
            out,
            f"suite run {suite.name}",
            cfg.model_dump(mode="json"),
            {
                "model": identity,
                "scorer": scorer.identity(),
                "judge": judge_identity,
                "refusal_detector": {"name": "dartkit.refusal", "fingerprint": model_fingerprint()},
            },
            {"generate_s": round(t1 - t0, 2), "score_s": round(t2 - t1, 2)},
        )
        # Inside the lock like every other output: a second command must not draw over it.
        items_text = items_label(suite, len(rows), full_size, metrics["subset"])
        suite_figure(suite, {cfg.model: rows}, out / f"{suite.name}.png", items_text)
    return metrics


def _judge(
    cfg: SuiteRunConfig, suite: Suite, rows: list[dict[str, Any]], cache: GenerationCache
) -> dict[str, Any]:
    """Label each answer with the judge model (blind: it sees the item and the answer, not the model)."""
    assert suite.judge_messages is not None and suite.apply_judgement is not None
    judge = load_backend(cfg.judge, cfg.backend)  # type: ignore[arg-type]
    try:
        decoding = DecodingConfig(max_new_tokens=64, stop_after_conclusion=False)
        replies, _ = generate_with_progress(
            judge, [suite.judge_messages(r, r["text"]) for r in rows], decoding, cache, "judge"
        )
        identity = judge.identity()
    finally:
        judge.close()
    for r, reply in zip(rows, replies, strict=True):
        suite.apply_judgement(r, reply)
    return identity
