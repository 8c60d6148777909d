"""Model spec strings: one name for a model across the CLI, configs and run files.

Grammar::

    embedded[+adapter=DIR]                    packaged SmolLM2-135M-Instruct
    hf:ID_OR_PATH[@REVISION][+adapter=DIR]    any transformers causal LM
    vllm:ID_OR_PATH[@REVISION][+adapter=DIR]  the same model run in-process by vLLM (``dartkit[vllm]``)
    openai:MODEL@BASE_URL[+adapter=DIR]       any OpenAI-compatible chat endpoint; with an adapter, a
                                              LoRA adapter served on top of MODEL (e.g. by ``vllm serve
                                              MODEL --enable-lora``), registered and addressed by name
    dummy[:MODE]                              rule-based stand-in for fast tests (MODE: yes, no, echo, mixed, refuse)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["embedded", "hf", "vllm", "openai", "dummy"]
DUMMY_MODES = ("mixed", "yes", "no", "echo", "refuse")


class SpecError(ValueError):
    """A model spec string that does not follow the grammar."""


@dataclass(frozen=True)
class ModelSpec:
    kind: Kind
    model: str
    revision: str | None = None
    adapter: str | None = None
    base_url: str | None = None

    def __str__(self) -> str:
        if self.kind == "openai":
            s = f"openai:{self.model}@{self.base_url}"
            return s + (f"+adapter={self.adapter}" if self.adapter else "")
        s = {"embedded": "embedded", "dummy": f"dummy:{self.model}"}.get(
            self.kind, f"{self.kind}:{self.model}"
        )
        if self.revision:
            s += f"@{self.revision}"
        if self.adapter:
            s += f"+adapter={self.adapter}"
        return s


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec string.

    Raises:
        SpecError: with the expected forms when ``spec`` fits none of them.
    """
    s = spec.strip()
    help_ = (
        "expected embedded, hf:ID[@REV][+adapter=DIR], vllm:ID[@REV][+adapter=DIR], "
        "openai:MODEL@URL[+adapter=DIR] or dummy[:MODE]"
    )
    if not s:
        raise SpecError(f"empty model spec ({help_})")
    adapter = None
    if "+adapter=" in s:
        s, adapter = s.split("+adapter=", 1)
        if not adapter:
            raise SpecError(f"'{spec}': '+adapter=' needs a directory")
    if s == "embedded":
        return ModelSpec("embedded", "SmolLM2-135M-Instruct", adapter=adapter)
    if s == "dummy" or s.startswith("dummy:"):
        mode = s.split(":", 1)[1] if ":" in s else "mixed"
        if mode not in DUMMY_MODES:
            raise SpecError(f"'{spec}': unknown dummy mode '{mode}' (one of {', '.join(DUMMY_MODES)})")
        if adapter:
            # The dummy answers by rule and has no weights: an adapter would be ignored silently.
            raise SpecError(f"'{spec}': the dummy model has no weights, so it takes no +adapter=")
        return ModelSpec("dummy", mode)
    for kind in ("hf", "vllm"):
        if s.startswith(f"{kind}:"):
            body = s[len(kind) + 1 :]
            revision = None
            # '@' marks a revision only on hub ids; local paths may contain it.
            if "@" in body and not body.startswith((".", "/", "~")):
                body, revision = body.rsplit("@", 1)
            if not body:
                raise SpecError(f"'{spec}': {kind}: needs a model id or path")
            return ModelSpec(kind, body, revision=revision or None, adapter=adapter)  # type: ignore[arg-type]
    if s.startswith("openai:"):
        # An adapter here is a LoRA adapter the server serves on top of MODEL (see
        # dartkit.generate.served_lora): dartkit registers it and sends its name as the model.
        body = s[7:]
        if "@" not in body:
            raise SpecError(
                f"'{spec}': openai: needs MODEL@BASE_URL, e.g. openai:deepseek-chat@https://api.deepseek.com/v1"
            )
        model, url = body.split("@", 1)
        if not model or not url.startswith(("http://", "https://")):
            raise SpecError(f"'{spec}': openai: needs MODEL@BASE_URL with an http(s) URL")
        return ModelSpec("openai", model, base_url=url.rstrip("/"), adapter=adapter)
    raise SpecError(f"'{spec}': {help_}")


def trainable_equivalent(spec: ModelSpec) -> ModelSpec:
    """The spec dartkit's trainer loads for ``spec``'s weights: ``vllm:X`` trains as ``hf:X``.

    vLLM only generates; fine-tuning runs on transformers with the same weights, revision and
    chat template, so the adapters it writes fit the vLLM engine's base model.
    """
    if spec.kind == "vllm":
        return ModelSpec("hf", spec.model, revision=spec.revision, adapter=spec.adapter)
    return spec
