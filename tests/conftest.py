import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAW_PKL = REPO.parent / "shared" / "data" / "difference_awareness" / "raw_pkl"

# Tests never touch a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def raw_pkl_dir() -> Path:
    if not RAW_PKL.is_dir():
        pytest.skip(f"real benchmark files not found at {RAW_PKL}")
    return RAW_PKL


@pytest.fixture(scope="session")
def embedded_backend():
    """The real embedded model (SmolLM2-135M-Instruct), loaded once for the session."""
    from dartkit.config import BackendConfig
    from dartkit.generate import load_backend

    backend = load_backend("embedded", BackendConfig(batch_size=8))
    yield backend
    backend.close()
