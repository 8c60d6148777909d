import os

import pytest

# Tests never touch a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedded_backend():
    """The real embedded model (SmolLM2-135M-Instruct), loaded once for the session."""
    from dartkit.config import BackendConfig
    from dartkit.generate import load_backend

    backend = load_backend("embedded", BackendConfig(batch_size=8))
    yield backend
    backend.close()
