"""Every config file shipped in configs/ validates against the model it is for."""

from pathlib import Path

import pytest

from dartkit.config import load_config
from dartkit.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_validate(path):
    cfg = load_config(TrainConfig, path, {"out": "runs/x"})
    assert cfg.base.startswith(("embedded", "hf:"))
