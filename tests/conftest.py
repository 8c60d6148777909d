import os
from pathlib import Path

import pytest
from train_helpers import save_tiny_llama

# Tests never touch a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedded_backend():
    """The real embedded model (SmolLM2-135M-Instruct), loaded once for the session."""
    from dartkit.config import BackendConfig
    from dartkit.generate import load_backend

    # CPU and float32 so that exact-text comparisons hold on any machine (bf16 on a GPU would not).
    backend = load_backend("embedded", BackendConfig(batch_size=8, device="cpu", dtype="float32"))
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Directory of a tiny random llama (use as base spec ``hf:<dir>``)."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


def pytest_report_header(config):
    """The versions the model-facing code ran against (``make test-oldest`` shadows the venv's)."""
    from importlib.metadata import version

    return (
        f"dartkit tests: transformers {version('transformers')}, huggingface_hub {version('huggingface_hub')}"
    )
