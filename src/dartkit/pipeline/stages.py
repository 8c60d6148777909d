"""The stages of `dartkit run`, each a thin call into a stage's own ``run()``.

    data -> eval_m0 -> [label_only] -> distill -> train_int -> eval_int -> [audit_val]
         -> audit_int -> null_audit -> repair -> train_dart -> eval_dart -> audit_dart -> report

Two protocols (``RunConfig.protocol``):

- ``heldout`` (default): M_int is audited against M0 on the ``audit`` split, which it never trained
  on; those drift cases are repaired. M_int and M_DART are both audited against M0 on ``test``,
  which nothing trains on: the headline drift reduction comes from there. The repaired items'
  own drift (the paper-style number) is reported beside it, labelled.
- ``paper``: the drift cases of ``test`` are repaired and ``test`` is audited again, as in the
  paper; its drift reduction is measured on the repaired items.

Directory layout below the run directory::

    data/                     train/audit/val/test.jsonl (scenario- and twin-grouped splits)
    eval/<model>/<split>/     generations.jsonl, metrics.json   (model: m0, label_only, m_int, m_dart)
    label_only/               the label-only SFT baseline's adapter (when enabled)
    distill/                  teacher.jsonl (accepted and rejected rationales), metrics.json
    m_int/adapter             M_int
    audit/m_int, audit/m_dart           Stage II audits against M0 on test
    audit/m_int_audit, audit/m_dart_audit   the same on the audit split (heldout: the repair source)
    audit/m_int_val, audit/tau.json     τ sweep on val (and the τ chosen there, with tau 'auto')
    audit/null                the sampled null audit (noise floor, a second view)
    repair/                   repair.jsonl, metrics.json
    m_dart/adapter            M_DART (absent when no repair was accepted: M_DART is then M_int)
    report.md, figures/, run.json
    stages/<name>.json        completion records (fingerprint + output hashes)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from dartkit.config import AuditConfig, DistillConfig, EvalConfig, RepairConfig
from dartkit.data.jsonl import read_json, read_rows
from dartkit.errors import DartkitError
from dartkit.generate.base import text_settings
from dartkit.pipeline.ablations import TABLE_ROWS
from dartkit.pipeline.config import RunConfig
from dartkit.pipeline.report import STAGE_ORDER, SUITE_MODELS
from dartkit.pipeline.runner import Stage

SPLITS = ("test", "val")
# Models of the ablation table that exist only as ablations (each trained and evaluated by its own stage).
ABLATION_MODELS = ("predicted", "tox_sft", "m_dart_unweighted")
ADAPTER_DIRS = {
    "m_int": "m_int",
    "m_dart": "m_dart",
    "label_only": "label_only",
    "predicted": "ablations/predicted",
    "m_dart_unweighted": "ablations/unweighted",
}


def _json(path: Path) -> dict[str, Any]:
    return read_json(path)


def model_fingerprint(spec: str | None) -> dict[str, Any] | None:
    """What a stage's fingerprint must know of a model beyond its spec string.

    For ``embedded`` / ``hf:`` models, their identity without loading weights: resolved revision or
    weight fingerprint and the chat template's hash (an edited template or a new hub revision
    reruns the stages that used the model). For a ``file:`` teacher, the file's sha256. API models
    are named by their spec; their served version is recorded with each answer instead.
    """
    if spec is None:
        return None
    if spec.startswith("file:"):
        from dartkit.files import file_sha256

        path = Path(spec[5:]).expanduser()
        return {"spec": spec, "sha256": file_sha256(path) if path.is_file() else None}
    from dartkit.generate.spec import parse_spec

    parsed = parse_spec(spec)
    if parsed.kind not in ("embedded", "hf", "vllm"):
        return {"spec": spec}
    from dartkit.generate.loading import model_location

    try:
        return {"spec": spec, **model_location(parsed)[1]}
    except DartkitError:  # e.g. a directory that does not exist yet: the stage itself will say so
        return {"spec": spec}


def _replace_with_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a fresh copy of ``src`` (a model that is M_int gets M_int's result files)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


def inputs_fingerprint(path: Path | None) -> dict[str, str] | None:
    """sha256 of a file, or of every file directly in a directory (an edited BBQ file reruns the data stage)."""
    if path is None:
        return None
    from dartkit.files import file_sha256

    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(f for f in p.glob("*") if f.is_file()) if p.is_dir() else []
    return {f.name: file_sha256(f) for f in files}


def examples_fingerprint(setting: str) -> dict[str, Any]:
    """The teacher's worked-examples setting, with the file's sha256 when it names a file."""
    if setting in ("builtin", "none"):
        return {"setting": setting}
    from dartkit.files import file_sha256

    path = Path(setting).expanduser()
    return {"setting": setting, "sha256": file_sha256(path) if path.is_file() else None}


def choose_tau(deltas: list[float], choices: list[float], max_noise: float) -> dict[str, Any]:
    """Choose τ on the validation audit: the smallest choice whose mirror rate is at most ``max_noise``.

    The mirror of a drift candidate is a pair whose harm score *fell* by more than τ (ΔH < −τ). If
    fine-tuning changed wording without making it more harmful, ΔH is symmetric around 0 and the
    mirror rate estimates how often noise alone would cross τ.

    Args:
        deltas: ΔH of every validation pair (M_int vs M0).
        choices: Candidate τ values, ascending.
        max_noise: Largest mirror rate allowed.

    Returns:
        ``{"tau", "rule", "rule_met", "table": [{"tau", "mirror_rate", "candidate_rate"}], "n_pairs"}``;
        when no choice meets the rule, the largest choice, with ``rule_met`` false.
    """
    n = len(deltas)
    table = [
        {
            "tau": t,
            "mirror_rate": sum(d < -t for d in deltas) / n if n else None,
            "candidate_rate": sum(d > t for d in deltas) / n if n else None,
        }
        for t in choices
    ]
    ok = [r for r in table if r["mirror_rate"] is not None and r["mirror_rate"] <= max_noise]
    chosen = ok[0] if ok else table[-1]
    return {
        "tau": chosen["tau"],
        "rule": f"smallest τ in {choices} at which the validation mirror rate (ΔH < −τ, M_int vs M0) "
        f"is at most {max_noise:g}",
        "rule_met": bool(ok),
        "n_pairs": n,
        "table": table,
    }


class RunStages:
    """Builds the Stage list for one RunConfig; each method is one stage's work."""

    def __init__(self, cfg: RunConfig, console: Console):
        self.cfg = cfg
        self.root = Path(cfg.out)
        self.console = console

    # ---- protocol ------------------------------------------------------------------------
    @property
    def heldout(self) -> bool:
        return self.cfg.protocol == "heldout"

    @property
    def repair_split(self) -> str:
        """The split whose drift cases are repaired: audit (heldout) or test (paper)."""
        return "audit" if self.heldout else "test"

    def splits(self, model: str) -> tuple[str, ...]:
        """Splits a model is evaluated on: test and val, plus audit for the audited models (heldout)."""
        if model in ABLATION_MODELS:
            return ("test",)  # the ablation table's split; tox_sft's λ sweep adds its own val runs
        if self.heldout and model in ("m0", "m_int", "m_dart"):
            return (*SPLITS, "audit")
        return SPLITS

    @property
    def tau_auto(self) -> bool:
        return self.cfg.audit.tau == "auto"

    @property
    def sweep_on(self) -> bool:
        return self.cfg.audit.tau_sweep or self.tau_auto

    def tau(self) -> float:
        """The τ of every audit: the config's, or the one chosen on val (``audit/tau.json``)."""
        if not self.tau_auto:
            return float(self.cfg.audit.tau)
        return float(_json(self.root / "audit" / "tau.json")["tau"])

    # ---- paths ---------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def eval_dir(self, model: str, split: str) -> Path:
        return self.root / "eval" / model / split

    def adapter(self, model: str) -> Path:
        if model in ("m_dart", "m_dart_unweighted") and not (self.root / "m_dart" / "adapter").is_dir():
            return self.adapter("m_int")  # no accepted repair: M_DART (weighted or not) is M_int
        if model == "tox_sft":
            chosen = _json(self.root / "ablations" / "tox_sft" / "sweep.json")["chosen"]
            return self.tox_dir(chosen) / "adapter"
        return self.root / ADAPTER_DIRS[model] / "adapter"

    def tox_dir(self, lam: float) -> Path:
        """Where the toxicity-regularised model of one λ is trained."""
        return self.root / "ablations" / "tox_sft" / "train" / f"lambda_{lam:g}"

    def student_spec(self) -> str:
        """The spec the student generates under: ``student``, or its served copy (``student_server``)."""
        return self.cfg.served_student() or self.cfg.student

    def spec(self, model: str) -> str:
        """A model's generation spec; a fine-tuned model is the student's with its adapter (served:
        the adapter registered with the server and addressed by a name holding its sha256)."""
        if model == "m0":
            return self.student_spec()
        return f"{self.student_spec()}+adapter={self.adapter(model)}"

    # ---- stage bodies --------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        from dartkit.data.prepare import prepare_data, small_cells_warning

        d = self.cfg.data
        summary = prepare_data(
            self.data_dir,
            source=d.source,
            suite=d.suite,
            per_cell=d.per_cell,
            seed=d.seed,
            ratios=d.ratios,
            bbq=d.bbq,
        )
        # One line per benchmark: the demo suite alone has 64 small cells.
        for line in small_cells_warning(summary, "more items: a larger data.per_cell"):
            self.console.print(f"[yellow]{line}[/yellow]", highlight=False)
        return {"split_totals": summary.get("split_totals"), "warnings": summary.get("warnings") or []}

    def eval_config(self, spec: str, split: str, out: Path, policy: str = "off") -> EvalConfig:
        """One evaluation as every stage of the run makes it (decoding, limit, answer modes)."""
        c = self.cfg
        return EvalConfig(
            model=spec,
            data=self.data_dir,
            split=split,
            out=out,
            limit=c.eval_limit,
            decoding=c.decoding,
            backend=c.backend,
            bootstrap_samples=c.bootstrap_samples,
            policy=policy,
            answer_mode=c.answer_mode,
            # Both answer modes are reported on test; other splits score the options only when loglik is
            # the headline mode (answer_mode loglik always scores them).
            score_options=c.loglik and split == "test",
            loglik_context=c.loglik_context,
        )

    def evaluate(self, model: str) -> dict[str, Any]:
        from dartkit.stages import evaluate

        info = {}
        for split in self.splits(model):
            cfg = self.eval_config(self.spec(model), split, self.eval_dir(model, split))
            info[split] = evaluate.run(cfg, self.console)["accuracy"]
        return {"accuracy": info}

    def evaluate_dart(self) -> dict[str, Any]:
        if self.adapter("m_dart") == self.adapter("m_int"):
            # Nothing was repaired: M_DART is M_int, so are its answers.
            for split in self.splits("m_dart"):
                _replace_with_copy(self.eval_dir("m_int", split), self.eval_dir("m_dart", split))
            self.console.print(
                "[yellow]M_DART is M_int (no repair was accepted): its evaluation is M_int's[/yellow]"
            )
            return {"same_as_m_int": True}
        return self.evaluate("m_dart")

    def _train(self, data: list[Path], out: Path, **fields: Any) -> dict[str, Any]:
        from dartkit.train.config import TrainConfig

        fixed = {"base": self.cfg.train_base(), "data": data, "prepared": self.data_dir, "out": out}
        return self._launch(TrainConfig.model_validate({**self.cfg.training, **fields, **fixed}))

    def _launch(self, tc) -> dict[str, Any]:
        """Train in this process, or under ``train_launcher`` (e.g. accelerate on several GPUs)."""
        import sys

        if "dartkit.generate.vllm_backend" in sys.modules:
            # An in-process vLLM engine holds most of the GPU's memory; training needs it back. The
            # next evaluation starts the engine again.
            sys.modules["dartkit.generate.vllm_backend"].release_engines()
        if self.cfg.train_launcher:
            import shlex
            import subprocess

            from dartkit.config import dump_config

            cfg_path = Path(tc.out) / "train_config.yaml"
            dump_config(tc, cfg_path)
            launcher = shlex.split(self.cfg.train_launcher)
            if launcher == ["python"]:
                launcher = [sys.executable]
            cmd = [*launcher, "-m", "dartkit.train", "--config", str(cfg_path)]
            self.console.print(f"training: {' '.join(cmd)}")
            done = subprocess.run(cmd, check=False)
            if done.returncode != 0:
                raise DartkitError(
                    f"training under '{self.cfg.train_launcher}' failed (exit code {done.returncode})"
                )
            m = _json(Path(tc.out) / "metrics.json")
        else:
            from dartkit.train import run as train_run

            m = train_run(tc)
        return {
            k: m.get(k) for k in ("steps", "first_loss", "final_loss", "tokens_per_s", "seconds") if k in m
        }

    def label_only(self) -> dict[str, Any]:
        info = self._train([], self.root / "label_only", label_only=True)
        info.update(self.evaluate("label_only"))
        return info

    def distill(self) -> dict[str, Any]:
        from dartkit.stages import distill

        cfg = DistillConfig(
            data=self.data_dir,
            out=self.root / "distill",
            teacher=self.cfg.teacher,
            student=self.cfg.student,
            judge=self.cfg.consistency_judge,
            limit=self.cfg.distill_limit,
            decoding=self.cfg.teacher_decoding,
            student_decoding=self.cfg.decoding,
            backend=self.cfg.backend,
            qc=self.cfg.qc,
            teacher_examples=self.cfg.teacher_examples,
            train=False,
        )
        m = distill.run(cfg, self.console)
        return {"accepted": m["accepted"], "n": m["n"]}

    def train_int(self) -> dict[str, Any]:
        teacher = self.root / "distill" / "teacher.jsonl"
        if not _json(self.root / "distill" / "metrics.json").get("accepted"):
            raise DartkitError(
                f"Stage I accepted no rationale, so there is nothing to train M_int on (see {teacher} "
                "and the QC reasons in distill/metrics.json); try a stronger teacher or more fix attempts"
            )
        return self._train([teacher], self.root / "m_int")

    def _audit_cfg(self, out: Path, **fields: Any) -> AuditConfig:
        a = self.cfg.audit
        if "tau" not in fields:  # (setdefault would read tau.json even when τ is given)
            fields["tau"] = self.tau()
        return AuditConfig(
            out=out,
            scorer=a.scorer,
            score_on=a.score_on,
            severity=a.severity,
            judge=a.judge,
            judge_swap=a.judge_swap,
            judge_retries=a.judge_retries,
            seed=a.seed,
            tau_grid=a.tau_grid,
            backend=self.cfg.backend,
            decoding=self.cfg.decoding,
            **fields,
        )

    def audit(
        self, model: str, split: str = "test", name: str | None = None, sweep: bool = False, **fields: Any
    ) -> dict[str, Any]:
        from dartkit.stages import audit

        fields.setdefault("baseline_generations", self.eval_dir("m0", split) / "generations.jsonl")
        fields.setdefault("candidate_generations", self.eval_dir(model, split) / "generations.jsonl")
        cfg = self._audit_cfg(
            self.root / "audit" / (name or model),
            data=self.data_dir,
            split=split,
            tau_sweep=sweep,
            **fields,
        )
        s = audit.run(cfg, self.console)
        return {k: s[k] for k in ("n_pairs", "n_candidates", "n_drift", "drift_rate")}

    def audit_val(self) -> dict[str, Any]:
        """M_int vs M0 on val with a τ sweep; with tau 'auto', choose τ there (``audit/tau.json``)."""
        a = self.cfg.audit
        tau = min(a.tau_choices()) if self.tau_auto else float(a.tau)
        info = self.audit("m_int", split="val", name="m_int_val", sweep=True, tau=tau)
        if self.tau_auto:
            from dartkit.data.jsonl import write_json

            deltas = [float(p["delta"]) for p in read_rows(self.root / "audit" / "m_int_val" / "pairs.jsonl")]
            choice = choose_tau(deltas, a.tau_choices(), a.tau_max_noise)
            write_json(self.root / "audit" / "tau.json", choice)
            note = "" if choice["rule_met"] else " (no τ met the rule: the largest choice is used)"
            self.console.print(f"τ chosen on val: {choice['tau']:g}{note}; rule: {choice['rule']}")
            info["tau"] = choice["tau"]
        return info

    def audit_int(self) -> dict[str, Any]:
        info = self.audit("m_int")
        if self.heldout:
            info["audit_split"] = self.audit("m_int", split="audit", name="m_int_audit")
        return info

    def audit_dart(self) -> dict[str, Any]:
        info = self.audit("m_dart")
        if self.heldout:
            info["audit_split"] = self.audit("m_dart", split="audit", name="m_dart_audit")
        return info

    def null_audit(self) -> dict[str, Any]:
        from dartkit.stages import audit

        decoding = self.cfg.decoding.model_copy(update={"temperature": self.cfg.audit.null_temperature})
        cfg = self._audit_cfg(
            self.root / "audit" / "null",
            baseline=self.spec("m0"),
            null=True,
            data=self.data_dir,
            split="test",
            limit=self.cfg.eval_limit,
        )
        cfg = cfg.model_copy(update={"decoding": decoding})
        s = audit.run(cfg, self.console)
        return {k: s[k] for k in ("n_pairs", "n_candidates", "n_drift", "drift_rate")}

    def _repair_cfg(self, train: bool) -> RepairConfig:
        r = self.cfg.repair
        source = "m_int_audit" if self.heldout else "m_int"
        return RepairConfig(
            drift=self.root / "audit" / source / "drift.jsonl",
            data=self.data_dir,
            out=self.root / "repair",
            teacher=self.cfg.teacher,
            student=self.cfg.train_base(),  # M_DART's training base
            judge=self.cfg.consistency_judge,
            teacher_examples=self.cfg.teacher_examples,
            init_adapter=self.adapter("m_int"),
            distill=self.root / "distill" / "teacher.jsonl",
            recipe=r.recipe,
            weighting=r.weighting,
            severity_weights=r.severity_weights,
            decoding=self.cfg.teacher_decoding,
            backend=self.cfg.backend,
            qc=r.qc,
            scorer=self.cfg.audit.scorer,
            tau=self.tau(),
            train=train,
            training={**self.cfg.training, **r.training},
        )

    def repair(self) -> dict[str, Any]:
        from dartkit.stages import repair

        m = repair.run(self._repair_cfg(train=False), self.console)
        if self.heldout:
            # The headline is measured on test, so nothing repaired may come from it.
            from dartkit.data.prepare import load_split

            test_ids = {e.id for e in load_split(self.data_dir, "test")}
            leaked = sorted(
                test_ids & {row["id"] for row in read_rows(self.root / "repair" / "repair.jsonl")}
            )
            if leaked:
                raise DartkitError(
                    f"repair drew {len(leaked)} item(s) from the test split ({', '.join(leaked[:5])}); "
                    "the heldout protocol repairs only the audit split"
                )
        return {
            "n_drift_cases": m["n_drift_cases"],
            "accepted": m["accepted"],
            "source_split": self.repair_split,
        }

    def train_dart(self) -> dict[str, Any]:
        from dartkit.stages.repair import training_config

        accepted = _json(self.root / "repair" / "metrics.json")["accepted"]
        if not accepted:
            self.console.print("[yellow]no repair rationale was accepted: M_DART is M_int unchanged[/yellow]")
            (self.root / "m_dart").mkdir(parents=True, exist_ok=True)
            (self.root / "m_dart" / "SAME_AS_M_INT").write_text("no repair example was accepted\n")
            return {"trained": False, "reason": "no repair rationale was accepted: M_DART is M_int"}
        cfg = self._repair_cfg(train=True)
        tc = training_config(cfg, self.root / "repair").model_copy(update={"out": self.root / "m_dart"})
        # The repair stage only writes the rationales (its metrics.json says trained: false); this is
        # the record of M_DART's training, which the report shows as repair.trained.
        return {
            "trained": True,
            "adapter": "m_dart/adapter",
            "accepted_repairs": accepted,
            **self._launch(tc),
        }

    # ---- ablations (the ablation table) ----------------------------------------------------
    def audit_label_only(self) -> dict[str, Any]:
        return self.audit("label_only")

    def predicted_train(self) -> dict[str, Any]:
        """Distill without gold labels, then train on what is kept (the teacher's cache lives outside the
        training directory, so retraining never asks the teacher again)."""
        from dartkit.stages import distill

        c = self.cfg
        out = self.root / "ablations" / "predicted_distill"
        cfg = DistillConfig(
            data=self.data_dir,
            out=out,
            teacher=c.teacher,
            student=c.student,
            judge=c.consistency_judge,
            limit=c.distill_limit,
            decoding=c.teacher_decoding,
            student_decoding=c.decoding,
            backend=c.backend,
            qc=c.qc,
            teacher_examples=c.teacher_examples,
            labels="predicted",
            keep=c.ablations.predicted_keep,
            train=False,
        )
        m = distill.run(cfg, self.console)
        if not m["accepted"]:
            raise DartkitError(
                f"predicted-label distillation kept no rationale (see {out / 'teacher.jsonl'}): the teacher's "
                "own answers never matched the gold label and passed QC"
            )
        return {
            "accepted": m["accepted"],
            "n": m["n"],
            "teacher_first_answer_accuracy": m.get("teacher_first_answer_accuracy"),
            **self._train([out / "teacher.jsonl"], self.root / ADAPTER_DIRS["predicted"]),
        }

    def evaluate_and_audit(self, model: str) -> dict[str, Any]:
        """An ablation model's evaluation on test and its audit against M0 there."""
        info = self.evaluate(model)
        info["audit"] = self.audit(model)
        return info

    def train_unweighted(self) -> dict[str, Any]:
        """M_DART's training with every repair example at weight 1."""
        from dartkit.stages.repair import training_config

        out = self.root / ADAPTER_DIRS["m_dart_unweighted"]
        out.mkdir(parents=True, exist_ok=True)
        if not _json(self.root / "repair" / "metrics.json")["accepted"]:
            (out / "SAME_AS_M_INT").write_text("no repair example was accepted\n")
            return {"trained": False, "reason": "no repair rationale was accepted: the row is M_int's"}
        tc = training_config(self._repair_cfg(train=True), self.root / "repair").model_copy(
            update={"out": out, "weights_from": None}
        )
        return {"trained": True, **self._launch(tc)}

    def eval_unweighted(self) -> dict[str, Any]:
        if (self.root / ADAPTER_DIRS["m_dart_unweighted"] / "SAME_AS_M_INT").is_file():
            # Nothing was repaired: the model is M_int, so are its answers and its audit.
            _replace_with_copy(self.eval_dir("m_int", "test"), self.eval_dir("m_dart_unweighted", "test"))
            _replace_with_copy(self.root / "audit" / "m_int", self.root / "audit" / "m_dart_unweighted")
            return {"same_as_m_int": True}
        return self.evaluate_and_audit("m_dart_unweighted")

    def tox_train(self) -> dict[str, Any]:
        """One toxicity-regularised model per λ, on Stage I's accepted rationales."""
        c = self.cfg
        teacher = self.root / "distill" / "teacher.jsonl"
        return {
            f"{lam:g}": self._train([teacher], self.tox_dir(lam), tox_lambda=lam, tox_scorer=c.audit.scorer)
            for lam in c.ablations.tox_lambdas
        }

    def tox_select(self) -> dict[str, Any]:
        """Each λ's model on val, the λ chosen by the harmonic mean of accuracy and 1 − toxicity."""
        from dartkit.data.jsonl import write_json
        from dartkit.harm import load_scorer
        from dartkit.harm.base import scored_part
        from dartkit.harm.cache import score_cached
        from dartkit.stages import evaluate
        from dartkit.train.toxicity import select_lambda

        c = self.cfg
        base = self.root / "ablations" / "tox_sft"
        scorer = load_scorer(c.audit.scorer)
        rows = []
        for lam in c.ablations.tox_lambdas:
            spec = f"{self.student_spec()}+adapter={self.tox_dir(lam) / 'adapter'}"
            out = base / "val" / f"lambda_{lam:g}"
            m = evaluate.run(self.eval_config(spec, "val", out), self.console)
            texts = [g["text"] for g in read_rows(out / "generations.jsonl")]
            harm = score_cached(
                scorer, [scored_part(t, c.audit.score_on) for t in texts], base / "score_cache.jsonl"
            )
            trained = _json(self.tox_dir(lam) / "metrics.json")
            rows.append(
                {
                    "lambda": lam,
                    "accuracy": m["accuracy"],
                    "toxicity": sum(harm) / len(harm) if harm else None,
                    "n": len(texts),
                    # What the penalty saw in training: the scorer on the rationales sampled under teacher
                    # forcing (mean over steps), and the SFT part of the loss at the end.
                    "train_sample_toxicity": trained.get("mean_toxicity"),
                    "final_sft_loss": trained.get("final_sft_loss"),
                }
            )
        choice = select_lambda(rows)
        write_json(
            base / "sweep.json",
            {
                **choice,
                "split": "val",
                "items": f"the first {rows[0]['n']} validation items in stratified order",
                "answer_mode": c.answer_mode,
                "scorer": c.audit.scorer,
                "score_on": c.audit.score_on,
            },
        )
        self.console.print(f"tox-regularised SFT: λ = {choice['chosen']:g} chosen on val ({choice['rule']})")
        return {"chosen": choice["chosen"]}

    def teacher_harm(self) -> dict[str, Any]:
        from dartkit.stages import teacher_harm

        c = self.cfg
        s = teacher_harm.run(
            distill=self.root / "distill" / "teacher.jsonl",
            data=self.data_dir,
            models={"m0": self.spec("m0"), "m_int": self.spec("m_int")},
            scorer=c.audit.scorer,
            score_on=c.audit.score_on,
            decoding=c.decoding,
            backend=c.backend,
            out=self.root / "ablations" / "teacher_harm",
            tau=self.tau(),
            n_boot=c.bootstrap_samples,
            console=self.console,
        )
        return {"n": s["n"], "verdict": s["verdict"]}

    def table_models(self) -> tuple[str, ...]:
        """The ablation table's rows that this run makes, in the table's order."""
        a = self.cfg.ablations
        on = {
            "m0": True,
            "label_only": self.cfg.label_only_baseline,
            "predicted": a.predicted_labels,
            "m_int": True,
            "tox_sft": a.tox_sft,
            "m_dart_unweighted": a.unweighted_repair,
            "m_dart": True,
        }
        return tuple(k for k, _ in TABLE_ROWS if on[k])

    def policy(self) -> dict[str, Any]:
        """Every table model answers test with the explanation policy on; each is audited against M0 (on)."""
        from dartkit.stages import evaluate

        info: dict[str, Any] = {}
        for model in self.table_models():
            out = self.eval_dir(model, "test_policy")
            m = evaluate.run(self.eval_config(self.spec(model), "test", out, policy="on"), self.console)
            info[model] = {"accuracy": m["accuracy"]}
        # M0 with the policy against M0 without it: what the system prompt alone does to harm.
        for model in self.table_models():
            base = self.eval_dir("m0", "test_policy" if model != "m0" else "test")
            info[model]["audit"] = self.audit(
                model,
                name=f"policy_{model}",
                baseline_generations=base / "generations.jsonl",
                candidate_generations=self.eval_dir(model, "test_policy") / "generations.jsonl",
                # M0's own row compares its answers with and without the policy's system prompt:
                # the prompts differ by design there, and only there.
                allow_prompt_mismatch=model == "m0",
            )
        return info

    def suite_models(self) -> tuple[str, ...]:
        """The models every external suite is run on."""
        return tuple(k for k, _ in SUITE_MODELS if k != "label_only" or self.cfg.label_only_baseline)

    def run_suite(self, evaluation: Any, model: str) -> dict[str, Any]:
        from dartkit.suites.run import SuiteRunConfig
        from dartkit.suites.run import run as run_suite

        c = self.cfg
        cfg = SuiteRunConfig(
            suite=evaluation.suite,
            model=self.spec(model),
            out=self.root / "suites" / evaluation.suite / model,
            source=evaluation.source,
            download=evaluation.download,
            limit=evaluation.limit,
            seed=evaluation.seed,
            scorer=c.audit.scorer,
            judge=evaluation.judge,
            max_new_tokens=evaluation.max_new_tokens,
            # The run's decoding (seed, temperature), without the stop at a conclusion line free answers lack.
            decoding=c.decoding.model_copy(update={"stop_after_conclusion": False}),
            backend=c.backend,
        )
        # The stage's fingerprint decides when to rerun; settings changed since are rerun, not refused.
        m = run_suite(cfg, self.console, force=True)
        return {"items": m["items"], "suite_size": m["suite_size"], "truncated": m["truncated"]}

    def report(self) -> dict[str, Any]:
        from dartkit.pipeline.report import build_report

        path = build_report(self.root)
        return {"report": str(path)}

    # ---- the list ------------------------------------------------------------------------
    def ablation_stages(self, student_eval, teacher, audit_params, tau_dep, ev, audits) -> list[Stage]:
        """The ablation table's optional stages (``ablations`` in the config; label-only's audit).

        Training and evaluation are separate stages, as in the main pipeline: a changed evaluation or
        audit setting re-evaluates, it never retrains a model or asks the teacher again.
        """
        c = self.cfg
        a = c.ablations
        table = self.table_models()
        model_stage = {
            "m0": "eval_m0",
            "label_only": "audit_label_only",
            "predicted": "eval_predicted",
            "m_int": "audit_int",
            "tox_sft": "eval_tox",
            "m_dart_unweighted": "eval_unweighted",
            "m_dart": "audit_dart",
        }
        training = lambda: {"student": c.student, "training": c.training}  # noqa: E731
        return [
            Stage(
                "audit_label_only",
                "audit the label-only baseline vs M0 on test",
                ("eval_m0", "label_only", *tau_dep),
                audits("label_only"),
                audit_params,
                self.audit_label_only,
                enabled=c.label_only_baseline,
            ),
            Stage(
                "train_predicted",
                "ablation: predicted-label distillation (teacher without gold labels), then training",
                ("data",),
                ("ablations/predicted_distill/teacher.jsonl", "ablations/predicted/adapter"),
                lambda: {
                    **teacher(),
                    "qc": c.qc.model_dump(),
                    "limit": c.distill_limit,
                    "keep": a.predicted_keep,
                    **training(),
                },
                self.predicted_train,
                workdirs=("ablations/predicted",),
                enabled=a.predicted_labels,
            ),
            Stage(
                "eval_predicted",
                "ablation: evaluate the predicted-label model and audit it vs M0 on test",
                ("eval_m0", "train_predicted", *tau_dep),
                (*ev("predicted"), *audits("predicted")),
                audit_params,
                lambda: self.evaluate_and_audit("predicted"),
                enabled=a.predicted_labels,
            ),
            Stage(
                "train_tox",
                f"ablation: toxicity-regularised SFT, one model per λ in {a.tox_lambdas}",
                ("data", "distill"),
                tuple(f"ablations/tox_sft/train/lambda_{lam:g}/adapter" for lam in a.tox_lambdas),
                lambda: {"lambdas": a.tox_lambdas, "tox_scorer": c.audit.scorer, **training()},
                self.tox_train,
                workdirs=("ablations/tox_sft/train",),
                enabled=a.tox_sft,
            ),
            Stage(
                "select_tox",
                "ablation: each λ's model on val; choose λ (harmonic mean of accuracy and 1 − toxicity)",
                ("data", "train_tox"),
                ("ablations/tox_sft/sweep.json",),
                lambda: {"scorer": c.audit.scorer, "score_on": c.audit.score_on, **student_eval()},
                self.tox_select,
                enabled=a.tox_sft,
            ),
            Stage(
                "eval_tox",
                "ablation: evaluate the chosen toxicity-regularised model and audit it vs M0 on test",
                ("eval_m0", "select_tox", *tau_dep),
                (*ev("tox_sft"), *audits("tox_sft")),
                audit_params,
                lambda: self.evaluate_and_audit("tox_sft"),
                enabled=a.tox_sft,
            ),
            Stage(
                "train_unweighted",
                "ablation: M_DART's training with every repair at weight 1",
                ("data", "distill", "train_int", "repair"),
                ("ablations/unweighted",),
                lambda: {**training(), "repair": c.repair.model_dump()},
                self.train_unweighted,
                workdirs=("ablations/unweighted",),
                enabled=a.unweighted_repair,
            ),
            Stage(
                "eval_unweighted",
                "ablation: evaluate DART without repair weighting and audit it vs M0 on test",
                ("eval_m0", "eval_int", "audit_int", "train_unweighted", *tau_dep),
                (*ev("m_dart_unweighted"), *audits("m_dart_unweighted")),
                audit_params,
                self.eval_unweighted,
                enabled=a.unweighted_repair,
            ),
            Stage(
                "teacher_harm",
                "teacher vs student harm on the training items (is drift inherited?)",
                ("data", "distill", "train_int", *tau_dep),
                ("ablations/teacher_harm/summary.json", "ablations/teacher_harm/scores.jsonl"),
                lambda: {**teacher(), **audit_params()},
                self.teacher_harm,
                enabled=a.teacher_harm,
            ),
            Stage(
                "policy",
                "every table model with the explanation policy on (test), audited vs M0 with it",
                tuple(dict.fromkeys((*(model_stage[m] for m in table), *tau_dep))),
                tuple(
                    f"eval/{m}/test_policy/{f}" for m in table for f in ("generations.jsonl", "metrics.json")
                )
                + audits(*(f"policy_{m}" for m in table)),
                lambda: {"models": list(table), **audit_params()},
                self.policy,
                enabled=a.policy,
            ),
        ]

    def stages(self) -> list[Stage]:
        c = self.cfg
        student_eval = lambda: {  # noqa: E731
            "student": c.student,
            "student_identity": model_fingerprint(c.student),
            "decoding": c.decoding.model_dump(),
            **text_settings(c.backend),  # dtype, device, decode loop: each changes the answers
            # Where the answers come from, when not from this process's transformers (added only
            # then, so the fingerprints of runs without them stay as they were).
            **({"student_server": c.student_server.model_dump()} if c.student_server else {}),
            **({"vllm": c.backend.vllm.text_fields()} if c.student.startswith("vllm:") else {}),
            "eval_limit": c.eval_limit,
            "bootstrap": c.bootstrap_samples,
            "protocol": c.protocol,
            # How answers are read (and whether both modes are scored): changes every evaluation's files.
            "answer_mode": c.answer_mode,
            "loglik": c.loglik,
            "loglik_context": c.loglik_context,
        }

        def ev(m: str) -> tuple[str, ...]:
            return tuple(
                f"eval/{m}/{s}/{f}" for s in self.splits(m) for f in ("generations.jsonl", "metrics.json")
            )

        audit_files = ("pairs.jsonl", "drift.jsonl", "summary.json", "audit.md")

        def audits(*names: str) -> tuple[str, ...]:
            return tuple(f"audit/{n}/{f}" for n in names for f in audit_files)

        def audit_params() -> dict[str, Any]:
            params = {"audit": c.audit.model_dump(), **student_eval()}
            if c.audit.judge and c.audit.judge != "none":
                # How the judge is held to the verdict's schema changes the verdicts.
                params["structured_output"] = c.backend.structured_output
            return params

        # With tau 'auto' every audit reads the τ chosen on val, so it depends on that stage.
        tau_dep = ("audit_val",) if self.tau_auto else ()

        def teacher() -> dict[str, Any]:
            from dartkit.consistency import model_fingerprint as consistency_fingerprint

            return {
                "teacher": c.teacher,
                "teacher_identity": model_fingerprint(c.teacher),
                "teacher_decoding": c.teacher_decoding.model_dump(),
                "teacher_examples": examples_fingerprint(c.teacher_examples),
                "consistency_judge": c.consistency_judge,
                "consistency_judge_identity": model_fingerprint(c.consistency_judge),
                # The built-in check decides acceptance whenever no judge answers.
                "consistency_check": consistency_fingerprint(),
                **text_settings(c.backend),
            }

        paired = ("m_int_audit",) if self.heldout else ()
        model_stage = {"m0": "data", "label_only": "label_only", "m_int": "train_int", "m_dart": "train_dart"}
        suite_stages = [
            Stage(
                f"suite_{e.suite}_{m}",
                f"{e.suite} suite: {m}",
                (model_stage[m],),
                tuple(
                    f"suites/{e.suite}/{m}/{f}" for f in ("generations.jsonl", "scores.jsonl", "metrics.json")
                ),
                lambda e=e: {
                    "evaluation": e.model_dump(mode="json"),
                    "scorer": c.audit.scorer,
                    **student_eval(),
                },
                lambda e=e, m=m: self.run_suite(e, m),
            )
            for e in c.evaluations
            for m in self.suite_models()
        ]
        return [
            Stage(
                "data",
                "prepare the splits",
                (),
                tuple(f"data/{s}.jsonl" for s in ("train", "audit", "val", "test")) + ("data/summary.json",),
                # Without bbq, the fingerprint of runs made before the field existed (still resumable).
                lambda: (
                    c.data.model_dump(mode="json", exclude={"bbq"})
                    if c.data.bbq is None
                    else {**c.data.model_dump(mode="json"), "bbq_files": inputs_fingerprint(c.data.bbq)}
                ),
                self.prepare,
            ),
            Stage(
                "eval_m0",
                f"evaluate M0 ({', '.join(self.splits('m0'))})",
                ("data",),
                ev("m0"),
                student_eval,
                lambda: self.evaluate("m0"),
            ),
            Stage(
                "label_only",
                "label-only SFT baseline: train, evaluate",
                ("data",),
                ("label_only/adapter", *ev("label_only")),
                lambda: {"training": c.training, **student_eval()},
                self.label_only,
                workdirs=("label_only",),
                enabled=c.label_only_baseline,
            ),
            Stage(
                "distill",
                "Stage I: teacher rationales with QC",
                ("data",),
                ("distill/teacher.jsonl", "distill/metrics.json"),
                lambda: {**teacher(), "qc": c.qc.model_dump(), "limit": c.distill_limit},
                self.distill,
            ),
            Stage(
                "train_int",
                "train M_int (LoRA)",
                ("data", "distill"),
                ("m_int/adapter",),
                lambda: {"student": c.student, "training": c.training},
                self.train_int,
                workdirs=("m_int",),
            ),
            Stage(
                "eval_int",
                f"evaluate M_int ({', '.join(self.splits('m_int'))})",
                ("data", "train_int"),
                ev("m_int"),
                student_eval,
                lambda: self.evaluate("m_int"),
            ),
            Stage(
                "audit_val",
                "τ sweep: audit M_int vs M0 on val" + (" and choose τ" if self.tau_auto else ""),
                ("eval_m0", "eval_int"),
                audits("m_int_val") + (("audit/tau.json",) if self.tau_auto else ()),
                audit_params,
                self.audit_val,
                enabled=self.sweep_on,
            ),
            Stage(
                "audit_int",
                "Stage II: audit M_int vs M0 on test" + (" and on the audit split" if self.heldout else ""),
                ("eval_m0", "eval_int", *tau_dep),
                audits("m_int", *paired),
                audit_params,
                self.audit_int,
            ),
            Stage(
                "null_audit",
                "null audit: M0 against a re-sample of itself (noise floor)",
                ("data", *tau_dep),
                audits("null"),
                audit_params,
                self.null_audit,
                enabled=c.audit.null_temperature > 0,
            ),
            Stage(
                "repair",
                f"Stage III: safe rationales for the {self.repair_split} split's drift cases",
                ("data", "audit_int", "train_int", *tau_dep),
                ("repair/repair.jsonl", "repair/metrics.json"),
                lambda: {
                    **teacher(),
                    "repair": c.repair.model_dump(exclude={"training"}),
                    "scorer": c.audit.scorer,
                    "tau": c.audit.tau,
                    "protocol": c.protocol,
                },
                self.repair,
            ),
            Stage(
                "train_dart",
                "train M_DART (continue M_int)",
                ("data", "distill", "train_int", "repair"),
                ("m_dart",),
                lambda: {"student": c.student, "training": c.training, "repair": c.repair.model_dump()},
                self.train_dart,
                workdirs=("m_dart",),
            ),
            Stage(
                "eval_dart",
                f"evaluate M_DART ({', '.join(self.splits('m_dart'))})",
                ("data", "train_dart", "eval_int"),
                ev("m_dart"),
                student_eval,
                self.evaluate_dart,
            ),
            Stage(
                "audit_dart",
                "Stage II: audit M_DART vs M0 on test" + (" and on the audit split" if self.heldout else ""),
                ("eval_m0", "eval_dart", *tau_dep),
                audits("m_dart", *(("m_dart_audit",) if self.heldout else ())),
                audit_params,
                self.audit_dart,
            ),
            *self.ablation_stages(student_eval, teacher, audit_params, tau_dep, ev, audits),
            *suite_stages,
            Stage(
                "report",
                "report.md, figures, run.json",
                (*STAGE_ORDER[:-1], *(s.name for s in suite_stages)),  # reads every stage's outputs
                ("report.md", "run.json"),
                lambda: {"report_version": 4},
                self.report,
            ),
        ]
