"""Local transformers backend: batched, left-padded, length-sorted generation.

Prompts are rendered with the model's own chat template, sorted by token length
(longest first, so the batch shapes shrink and padding stays small), padded on
the left, and generated in batches. Each row stops once its ``Conclusion:`` line
is complete, so a batch does not wait for one model that keeps talking after
its answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dartkit.config import BackendConfig, DecodingConfig
from dartkit.errors import DartkitError
from dartkit.generate.base import Messages
from dartkit.generate.spec import ModelSpec
from dartkit.parse import parse_conclusion

# Decoding this many trailing tokens always covers a whole conclusion line.
_TAIL_TOKENS = 24


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


_FULL_HASH_LIMIT = 64 << 20
_EDGE = 4 << 20


def hash_dir(path: Path, patterns: Sequence[str] = ("*.json", "*.safetensors", "*.bin", "*.model")) -> str:
    """sha256 fingerprint of a directory's model files.

    Files under 64 MiB (configs, tokenizers, adapters) are hashed whole; bigger weight
    files by size plus their first and last 4 MiB, so an 8B model is fingerprinted
    in milliseconds rather than read in full on every run.
    """
    h = hashlib.sha256()
    files = sorted({p for pat in patterns for p in Path(path).glob(pat) if p.is_file()})
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with p.open("rb") as f:
            if size <= _FULL_HASH_LIMIT:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(f.read(_EDGE))
                f.seek(size - _EDGE)
                h.update(f.read(_EDGE))
    return h.hexdigest()


def _hub_commit(model_id: str, revision: str | None) -> str | None:
    """Commit hash of a hub model already in the local cache, without touching the network."""
    try:
        from transformers.utils.hub import cached_file, extract_commit_hash

        path = cached_file(model_id, "config.json", revision=revision, local_files_only=True)
        return extract_commit_hash(path, None)
    except Exception:
        return None


def model_location(spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """Where a spec's weights live and its identity (model, revision, weights/adapter hashes).

    Cheap: reads no weights beyond fingerprints, so a fully cached run never loads a model.
    """
    identity: dict[str, Any] = {"backend": "hf"}
    if spec.kind == "embedded":
        from dartkit.generate.embedded import EMBEDDED_NAME, embedded_model_dir, embedded_source

        path = str(embedded_model_dir())
        src = embedded_source()
        identity.update(
            model=f"embedded:{EMBEDDED_NAME}", revision=src["package"], weights_sha256=src["gguf_sha256"]
        )
    else:
        local = Path(spec.model).expanduser()
        if not local.exists() and spec.model.startswith((".", "/", "~")):
            raise DartkitError(f"model directory not found: {spec.model}")
        if local.exists():
            path = str(local)
            identity.update(model=spec.model, revision=None, weights_sha256=hash_dir(local))
        else:
            path = spec.model
            identity.update(
                model=spec.model, revision=_hub_commit(spec.model, spec.revision) or spec.revision
            )
    if spec.adapter:
        adapter = Path(spec.adapter).expanduser()
        if not adapter.exists():
            raise DartkitError(f"adapter directory not found: {adapter}")
        identity["adapter_sha256"] = hash_dir(adapter)
    return path, identity


def load_model_and_tokenizer(spec: ModelSpec, cfg: BackendConfig, for_training: bool = False):
    """Load a causal LM and its tokenizer for a spec of kind ``embedded`` or ``hf``.

    Returns:
        (model, tokenizer, identity) where identity names model, revision and adapter hash.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, identity = model_location(spec)
    revision = spec.revision if spec.kind == "hf" else None
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=dtype)
    except (OSError, ValueError) as e:
        # Offline with an uncached hub id, a typo in a repo id, a directory without weights.
        raise DartkitError(f"cannot load model '{spec}': {str(e).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if spec.adapter:
        from dartkit.generate.adapters import attach_adapter

        model, _ = attach_adapter(model, Path(spec.adapter), identity, trainable=for_training)
    model.to(device)
    if not for_training:
        model.eval()
    return model, tok, identity


class _StopAfterConclusion:
    """Per-row stopping criterion: the row has written a complete conclusion line."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new = input_ids[:, self.prompt_len :]
        if new.shape[1] == 0:
            return done
        tails = self.tokenizer.batch_decode(new[:, -_TAIL_TOKENS:], skip_special_tokens=True)
        for i, tail in enumerate(tails):
            if "\n" not in tail:
                continue
            complete = tail[: tail.rfind("\n")]
            last_line = complete.rsplit("\n", 1)[-1]
            if parse_conclusion(last_line) is not None:
                done[i] = True
        return done


class HFBackend:
    """Generation with a local transformers model (optionally with a LoRA adapter)."""

    def __init__(self, spec: ModelSpec, cfg: BackendConfig):
        self.spec = str(spec)
        self._parsed = spec
        self.cfg = cfg
        _, self._identity = model_location(spec)
        self.model = None
        self.tokenizer = None

    def _ensure_loaded(self) -> None:
        # Weights load on first use: a run whose answers are all cached never pays for them.
        if self.model is None:
            self.model, self.tokenizer, _ = load_model_and_tokenizer(self._parsed, self.cfg)
            self.tokenizer.padding_side = "left"

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def encode(self, messages: Messages) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def generate(
        self, conversations: Sequence[Messages], decoding: DecodingConfig
    ) -> Iterator[tuple[int, str]]:
        import torch
        from transformers import StoppingCriteriaList

        if not conversations:
            return
        self._ensure_loaded()
        encoded = [self.encode(m) for m in conversations]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        pad_id = self.tokenizer.pad_token_id
        device = self.model.device
        bs = self.cfg.batch_size
        for b, start in enumerate(range(0, len(order), bs)):
            idx = order[start : start + bs]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids = encoded[i]
                input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[r, width - len(ids) :] = 1
            kwargs: dict[str, Any] = {
                "max_new_tokens": decoding.max_new_tokens,
                "pad_token_id": pad_id,
                "eos_token_id": self._eos_ids(),
            }
            if decoding.greedy:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            else:
                # Seeded per batch: reproducible for the same prompts, batch size and order.
                torch.manual_seed(decoding.seed * 1_000_003 + b)
                kwargs.update(
                    do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=None
                )
            if decoding.stop_after_conclusion:
                kwargs["stopping_criteria"] = StoppingCriteriaList(
                    [_StopAfterConclusion(self.tokenizer, width)]
                )
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
                )
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            for r, i in enumerate(idx):
                yield i, texts[r].strip()

    def _eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = self.model.generation_config.eos_token_id
        if isinstance(gen_eos, int):
            ids.add(gen_eos)
        elif isinstance(gen_eos, list):
            ids.update(gen_eos)
        return sorted(i for i in ids if i is not None)

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
