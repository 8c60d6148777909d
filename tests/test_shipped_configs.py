"""Every config file shipped in configs/ validates against the model it is for."""

from pathlib import Path

import pytest
import yaml

from dartkit.config import load_config
from dartkit.errors import DartkitError
from dartkit.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_validate(path):
    cfg = load_config(TrainConfig, path, {"out": "runs/x"})
    assert cfg.base.startswith(("embedded", "hf:"))


def test_embedded_run_config_is_the_default():
    from dartkit.pipeline.config import RunConfig

    shipped = load_config(RunConfig, CONFIGS / "embedded.yaml")
    assert shipped == RunConfig(), "configs/embedded.yaml must spell out RunConfig's defaults"
    # ... every one of them, nested sections included, so a reader finds each setting there.
    written = yaml.safe_load((CONFIGS / "embedded.yaml").read_text())

    def unwritten(defaults, given, prefix=""):
        out = []
        for key, value in defaults.items():
            if key not in given:
                out.append(prefix + key)
            elif isinstance(value, dict) and value and isinstance(given[key], dict):
                out += unwritten(value, given[key], f"{prefix}{key}.")
        return out

    assert unwritten(RunConfig().model_dump(mode="json"), written) == []


def test_paper_run_config_validates_and_dry_runs_offline(tmp_path, monkeypatch):
    from dartkit.pipeline import run
    from dartkit.pipeline.config import RunConfig

    cfg = load_config(RunConfig, CONFIGS / "llama3-8b-paper.yaml", {"out": tmp_path / "paper"})
    assert cfg.student == "hf:meta-llama/Meta-Llama-3-8B-Instruct"
    assert cfg.teacher.startswith("openai:deepseek-chat@") and cfg.audit.judge == cfg.teacher
    assert "roberta_toxicity_classifier" in cfg.audit.scorer and "dynabench-r4-target" in cfg.audit.scorer
    t = cfg.training
    assert (t["lora_r"], t["lora_alpha"], t["lora_dropout"], t["learning_rate"], t["epochs"]) == (
        16,
        32,
        0.05,
        2e-4,
        3,
    )
    assert cfg.data.per_cell == 500 and cfg.data.ratios == [0.5, 0.1, 0.2, 0.2] and cfg.audit.tau == 0.01
    assert cfg.protocol == "heldout"
    assert cfg.repair.severity_weights.model_dump() == {"mild": 1, "moderate": 2, "severe": 3, "extreme": 4}
    # M_DART trains 3 epochs as the authors' code does (the pipeline's own repair default is 1).
    assert {**cfg.training, **cfg.repair.training}["epochs"] == 3 and cfg.repair.training == {"epochs": 3}
    assert cfg.teacher_examples == "none"  # the paper prompts its teacher zero-shot
    # Offline, with none of its hub models cached, the plan cannot run: the dry run says so, naming
    # each model and what to do, before anything runs.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DartkitError) as err:
        run(cfg, dry_run=True)
    message = str(err.value)
    assert "student: hub model 'meta-llama/Meta-Llama-3-8B-Instruct' is not in the local cache" in message
    assert "audit.scorer: hub model 's-nlp/roberta_toxicity_classifier'" in message
    assert "hf download meta-llama/Meta-Llama-3-8B-Instruct" in message
    # With the models available (here: pretend they are cached) the same plan passes.
    monkeypatch.setattr("dartkit.generate.loading.hub_commit", lambda model, rev: "0" * 40)
    result = run(cfg, dry_run=True)
    plan = result["plan"]
    assert result["setup"]["audit judge"] == cfg.audit.judge and "heldout" in result["setup"]["protocol"]
    assert "after the download" in result["setup"]["splits"]
    assert [name for name, _ in plan][0] == "data" and "label_only" in dict(plan)
    assert not (tmp_path / "paper").exists()
