"""The stages of `dartkit run`, each a thin call into a stage's own ``run()``.

    data -> eval_m0 -> [label_only] -> distill -> train_int -> eval_int -> audit_int
         -> null_audit -> repair -> train_dart -> eval_dart -> audit_dart -> report

Directory layout below the run directory::

    data/                     train/val/test.jsonl (scenario-grouped splits)
    eval/<model>/<split>/     generations.jsonl, metrics.json   (model: m0, label_only, m_int, m_dart)
    label_only/               the label-only SFT baseline's adapter (when enabled)
    distill/                  teacher.jsonl (accepted and rejected rationales), metrics.json
    m_int/adapter             M_int
    audit/m_int, audit/m_dart, audit/null, audit/m_int_val   Stage II audits (the last: τ sweep on val)
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
from dartkit.data.jsonl import read_json
from dartkit.errors import DartkitError
from dartkit.pipeline.config import RunConfig
from dartkit.pipeline.report import STAGE_ORDER
from dartkit.pipeline.runner import Stage

SPLITS = ("test", "val")


def _json(path: Path) -> dict[str, Any]:
    return read_json(path)


class RunStages:
    """Builds the Stage list for one RunConfig; each method is one stage's work."""

    def __init__(self, cfg: RunConfig, console: Console):
        self.cfg = cfg
        self.root = Path(cfg.out)
        self.console = console

    # ---- paths ---------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def eval_dir(self, model: str, split: str) -> Path:
        return self.root / "eval" / model / split

    def adapter(self, model: str) -> Path:
        if model == "m_dart" and not (self.root / "m_dart" / "adapter").is_dir():
            return self.adapter("m_int")  # no accepted repair: M_DART is M_int
        return (
            self.root / {"m_int": "m_int", "m_dart": "m_dart", "label_only": "label_only"}[model] / "adapter"
        )

    def spec(self, model: str) -> str:
        if model == "m0":
            return self.cfg.student
        return f"{self.cfg.student}+adapter={self.adapter(model)}"

    # ---- stage bodies --------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        from dartkit.data.prepare import prepare_data

        d = self.cfg.data
        summary = prepare_data(
            self.data_dir, source=d.source, suite=d.suite, per_cell=d.per_cell, seed=d.seed, ratios=d.ratios
        )
        return {"split_totals": summary.get("split_totals")}

    def evaluate(self, model: str) -> dict[str, Any]:
        from dartkit.stages import evaluate

        info = {}
        for split in SPLITS:
            cfg = EvalConfig(
                model=self.spec(model),
                data=self.data_dir,
                split=split,
                out=self.eval_dir(model, split),
                limit=self.cfg.eval_limit,
                decoding=self.cfg.decoding,
                backend=self.cfg.backend,
                bootstrap_samples=self.cfg.bootstrap_samples,
            )
            info[split] = evaluate.run(cfg, self.console)["accuracy"]
        return {"accuracy": info}

    def evaluate_dart(self) -> dict[str, Any]:
        if self.adapter("m_dart") == self.adapter("m_int"):
            # Nothing was repaired: M_DART is M_int, so are its answers.
            for split in SPLITS:
                dst = self.eval_dir("m_dart", split)
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(self.eval_dir("m_int", split), dst)
            self.console.print(
                "[yellow]M_DART is M_int (no repair was accepted): its evaluation is M_int's[/yellow]"
            )
            return {"same_as_m_int": True}
        return self.evaluate("m_dart")

    def _train(self, data: list[Path], out: Path, **fields: Any) -> dict[str, Any]:
        from dartkit.train.config import TrainConfig

        fixed = {"base": self.cfg.student, "data": data, "prepared": self.data_dir, "out": out}
        return self._launch(TrainConfig.model_validate({**self.cfg.training, **fields, **fixed}))

    def _launch(self, tc) -> dict[str, Any]:
        """Train in this process, or under ``train_launcher`` (e.g. accelerate on several GPUs)."""
        if self.cfg.train_launcher:
            import shlex
            import subprocess
            import sys

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
        return AuditConfig(
            out=out,
            scorer=a.scorer,
            score_on=a.score_on,
            tau=a.tau,
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
        self, model: str, split: str = "test", name: str | None = None, sweep: bool = False
    ) -> dict[str, Any]:
        from dartkit.stages import audit

        cfg = self._audit_cfg(
            self.root / "audit" / (name or model),
            baseline_generations=self.eval_dir("m0", split) / "generations.jsonl",
            candidate_generations=self.eval_dir(model, split) / "generations.jsonl",
            data=self.data_dir,
            split=split,
            tau_sweep=sweep,
        )
        s = audit.run(cfg, self.console)
        return {k: s[k] for k in ("n_pairs", "n_candidates", "n_drift", "drift_rate")}

    def audit_int(self) -> dict[str, Any]:
        info = self.audit("m_int")
        if self.cfg.audit.tau_sweep:
            info["val"] = self.audit("m_int", split="val", name="m_int_val", sweep=True)
        return info

    def null_audit(self) -> dict[str, Any]:
        from dartkit.stages import audit

        decoding = self.cfg.decoding.model_copy(update={"temperature": self.cfg.audit.null_temperature})
        cfg = self._audit_cfg(
            self.root / "audit" / "null",
            baseline=self.cfg.student,
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
        return RepairConfig(
            drift=self.root / "audit" / "m_int" / "drift.jsonl",
            data=self.data_dir,
            out=self.root / "repair",
            teacher=self.cfg.teacher,
            student=self.cfg.student,
            judge=self.cfg.consistency_judge,
            init_adapter=self.adapter("m_int"),
            distill=self.root / "distill" / "teacher.jsonl",
            recipe=r.recipe,
            weighting=r.weighting,
            severity_weights=r.severity_weights,
            decoding=self.cfg.teacher_decoding,
            backend=self.cfg.backend,
            qc=r.qc,
            scorer=self.cfg.audit.scorer,
            tau=self.cfg.audit.tau,
            train=train,
            training={**self.cfg.training, **r.training},
        )

    def repair(self) -> dict[str, Any]:
        from dartkit.stages import repair

        m = repair.run(self._repair_cfg(train=False), self.console)
        return {"n_drift_cases": m["n_drift_cases"], "accepted": m["accepted"]}

    def train_dart(self) -> dict[str, Any]:
        from dartkit.stages.repair import training_config

        accepted = _json(self.root / "repair" / "metrics.json")["accepted"]
        if not accepted:
            self.console.print("[yellow]no repair rationale was accepted: M_DART is M_int unchanged[/yellow]")
            (self.root / "m_dart").mkdir(parents=True, exist_ok=True)
            (self.root / "m_dart" / "SAME_AS_M_INT").write_text("no repair example was accepted\n")
            return {"trained": False}
        cfg = self._repair_cfg(train=True)
        tc = training_config(cfg, self.root / "repair").model_copy(update={"out": self.root / "m_dart"})
        return {"trained": True, "accepted_repairs": accepted, **self._launch(tc)}

    def report(self) -> dict[str, Any]:
        from dartkit.pipeline.report import build_report

        path = build_report(self.root)
        return {"report": str(path)}

    # ---- the list ------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        c = self.cfg
        student_eval = lambda: {  # noqa: E731
            "student": c.student,
            "decoding": c.decoding.model_dump(),
            "dtype": c.backend.dtype,
            "eval_limit": c.eval_limit,
            "bootstrap": c.bootstrap_samples,
        }
        evals = tuple(f"eval/{{m}}/{s}/{f}" for s in SPLITS for f in ("generations.jsonl", "metrics.json"))

        def ev(m: str) -> tuple[str, ...]:
            return tuple(e.format(m=m) for e in evals)

        audit_files = ("pairs.jsonl", "drift.jsonl", "summary.json", "audit.md")
        audit_params = lambda: {"audit": c.audit.model_dump(), **student_eval()}  # noqa: E731
        teacher = lambda: {  # noqa: E731
            "teacher": c.teacher,
            "teacher_decoding": c.teacher_decoding.model_dump(),
            "consistency_judge": c.consistency_judge,
            "dtype": c.backend.dtype,
        }
        return [
            Stage(
                "data",
                "prepare the splits",
                (),
                ("data/train.jsonl", "data/val.jsonl", "data/test.jsonl"),
                lambda: c.data.model_dump(mode="json"),
                self.prepare,
            ),
            Stage(
                "eval_m0",
                "evaluate M0 (test, val)",
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
                "evaluate M_int (test, val)",
                ("data", "train_int"),
                ev("m_int"),
                student_eval,
                lambda: self.evaluate("m_int"),
            ),
            Stage(
                "audit_int",
                "Stage II: audit M_int vs M0" + (" (and τ sweep on val)" if c.audit.tau_sweep else ""),
                ("eval_m0", "eval_int"),
                tuple(f"audit/m_int/{f}" for f in audit_files)
                + (tuple(f"audit/m_int_val/{f}" for f in audit_files) if c.audit.tau_sweep else ()),
                audit_params,
                self.audit_int,
            ),
            Stage(
                "null_audit",
                "null audit: M0 against a re-sample of itself (noise floor)",
                ("data",),
                tuple(f"audit/null/{f}" for f in audit_files),
                audit_params,
                self.null_audit,
                enabled=c.audit.null_temperature > 0,
            ),
            Stage(
                "repair",
                "Stage III: safe rationales for drift cases",
                ("data", "audit_int", "train_int"),
                ("repair/repair.jsonl", "repair/metrics.json"),
                lambda: {
                    **teacher(),
                    "repair": c.repair.model_dump(exclude={"training"}),
                    "scorer": c.audit.scorer,
                    "tau": c.audit.tau,
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
                "evaluate M_DART (test, val)",
                ("data", "train_dart", "eval_int"),
                ev("m_dart"),
                student_eval,
                self.evaluate_dart,
            ),
            Stage(
                "audit_dart",
                "Stage II: audit M_DART vs M0",
                ("eval_m0", "eval_dart"),
                tuple(f"audit/m_dart/{f}" for f in audit_files),
                audit_params,
                lambda: self.audit("m_dart"),
            ),
            Stage(
                "report",
                "report.md, figures, run.json",
                tuple(STAGE_ORDER[:-1]),  # reads every stage's outputs
                ("report.md", "run.json"),
                lambda: {"report_version": 1},
                self.report,
            ),
        ]
