"""Generation backends behind one protocol (hf, vllm, openai, dummy) and the content-addressed cache."""

from __future__ import annotations

from dartkit.config import BackendConfig
from dartkit.generate.base import Backend, BackendError, Messages
from dartkit.generate.spec import ModelSpec, SpecError, parse_spec

__all__ = ["Backend", "BackendError", "Messages", "ModelSpec", "SpecError", "load_backend", "parse_spec"]


def load_backend(spec: str | ModelSpec, cfg: BackendConfig | None = None) -> Backend:
    """Build the backend a model spec string names (models load here, not at import)."""
    cfg = cfg or BackendConfig()
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "dummy":
        from dartkit.generate.dummy import DummyBackend

        return DummyBackend(parsed.model)
    if parsed.kind == "openai":
        from dartkit.generate.openai_backend import OpenAIBackend

        return OpenAIBackend(parsed, cfg)
    if parsed.kind == "vllm":
        from dartkit.generate.vllm_backend import VLLMBackend

        return VLLMBackend(parsed, cfg)
    from dartkit.generate.hf import HFBackend

    return HFBackend(parsed, cfg)
