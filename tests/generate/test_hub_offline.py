"""A hub model that is not downloaded fails at once when the hub cannot be used, saying what to do.

Without the check, loading such a model retried against an unreachable hub for about a minute
of tracebacks. These tests replace every path that would reach the network (transformers'
loaders, the reachability probe) with ones that fail the test, so they show that no download or
retry was even attempted.
"""

from __future__ import annotations

import pytest
import requests
import transformers
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.config import BackendConfig
from dartkit.data.prepare import prepare_data
from dartkit.errors import DartkitError
from dartkit.generate import load_backend, loading
from dartkit.harm import load_scorer

MISSING = "nobody-dartkit-test/not-a-cached-model"


def _network_path(*args, **kwargs):
    raise AssertionError("a download or network request was attempted")


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test on any transformers load or HTTP request."""
    for cls in (
        transformers.AutoConfig,
        transformers.AutoTokenizer,
        transformers.AutoModelForCausalLM,
        transformers.AutoModelForSequenceClassification,
    ):
        monkeypatch.setattr(cls, "from_pretrained", _network_path)
    monkeypatch.setattr(requests, "head", _network_path)
    monkeypatch.setattr(requests, "get", _network_path)
    loading._probe_hub.cache_clear()
    yield
    loading._probe_hub.cache_clear()


def test_offline_env_and_uncached_model_fails_at_once_with_what_to_do(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = load_backend(f"hf:{MISSING}@v2", BackendConfig(device="cpu"))
    with pytest.raises(DartkitError) as err:
        backend.identity()  # resolving a hub model's revision is what used to download it
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg and "HF_HUB_OFFLINE is set" in msg
    assert f"hf download {MISSING} --revision v2" in msg
    assert f"huggingface-cli download {MISSING} --revision v2" in msg
    assert "local directory" in msg


def test_unreachable_hub_is_detected_by_one_probe(monkeypatch, no_network):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    probes = []

    def refused(url, **kwargs):
        probes.append((url, kwargs["timeout"]))
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(requests, "head", refused)
    for _ in range(2):
        with pytest.raises(DartkitError, match=r"huggingface\.co is unreachable \(ConnectionError\)"):
            load_backend(f"hf:{MISSING}", BackendConfig(device="cpu")).identity()
    # One short attempt for the whole process, not one (with retries) per load.
    assert len(probes) == 1 and probes[0][1] <= loading.HUB_PROBE_TIMEOUT_S


def test_reachable_hub_is_used_as_before(monkeypatch, no_network):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(requests, "head", lambda url, **kw: type("Response", (), {"status_code": 200})())
    assert loading.hub_offline_reason() is None
    # Online, the uncached model goes on to transformers' loader (the download path).
    with pytest.raises(AssertionError, match="download or network request"):
        load_backend(f"hf:{MISSING}", BackendConfig(device="cpu")).identity()


def test_offline_uncached_classifier_fails_at_once(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DartkitError) as err:
        load_scorer(f"hf:{MISSING}#toxic").identity()
    msg = str(err.value)
    assert f"classifier 'hf:{MISSING}#toxic' is not in the local Hugging Face cache" in msg
    assert f"hf download {MISSING}" in msg


def test_eval_with_an_uncached_hub_model_offline_is_one_line(monkeypatch, no_network, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prepare_data(tmp_path / "data", suite="demo")
    res = CliRunner().invoke(
        app,
        ["eval", "--model", f"hf:{MISSING}", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")],
    )
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"hf download {MISSING}" in errors[0]
    assert "Traceback" not in res.output
