"""Model spec strings: one name for a model across the CLI, configs and run files.

Grammar::

    embedded[+adapter=DIR]                    packaged SmolLM2-135M-Instruct
    hf:ID_OR_PATH[@REVISION][+adapter=DIR]    any transformers causal LM
    openai:MODEL@BASE_URL                     any OpenAI-compatible chat endpoint
    dummy[:MODE]                              rule-based stand-in for fast tests (MODE: yes, no, echo, mixed, refuse)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["embedded", "hf", "openai", "dummy"]
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
            return f"openai:{self.model}@{self.base_url}"
        s = {"embedded": "embedded", "dummy": f"dummy:{self.model}"}.get(self.kind, f"hf:{self.model}")
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
    help_ = "expected embedded, hf:ID[@REV][+adapter=DIR], openai:MODEL@URL or dummy[:MODE]"
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
    if s.startswith("hf:"):
        body = s[3:]
        revision = None
        # '@' marks a revision only on hub ids; local paths may contain it.
        if "@" in body and not body.startswith((".", "/", "~")):
            body, revision = body.rsplit("@", 1)
        if not body:
            raise SpecError(f"'{spec}': hf: needs a model id or path")
        return ModelSpec("hf", body, revision=revision or None, adapter=adapter)
    if s.startswith("openai:"):
        if adapter:
            raise SpecError(f"'{spec}': adapters cannot be attached to a remote model")
        body = s[7:]
        if "@" not in body:
            raise SpecError(
                f"'{spec}': openai: needs MODEL@BASE_URL, e.g. openai:deepseek-chat@https://api.deepseek.com/v1"
            )
        model, url = body.split("@", 1)
        if not model or not url.startswith(("http://", "https://")):
            raise SpecError(f"'{spec}': openai: needs MODEL@BASE_URL with an http(s) URL")
        return ModelSpec("openai", model, base_url=url.rstrip("/"))
    raise SpecError(f"'{spec}': {help_}")
