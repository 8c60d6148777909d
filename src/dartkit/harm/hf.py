"""``hf:<model>[@revision][#label]``: any transformers sequence-classification model as a scorer.

The score of a text is the softmax probability of the positive label, chosen by
name (``#toxic``, ``#hate``) or, by default, the one label named toxic, hate,
offensive or LABEL_1. Texts are truncated to the model's maximum length, sorted
by length and scored in batches. The paper's classifiers::

    hf:s-nlp/roberta_toxicity_classifier                      # labels neutral / toxic
    hf:facebook/roberta-hate-speech-dynabench-r4-target       # labels nothate / hate
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dartkit.errors import DartkitError
from dartkit.harm.base import clip01, package_version

DEFAULT_POSITIVE = ("toxic", "hate", "offensive", "label_1")
# Models whose position ids start after the padding index, so max_position_embeddings overstates the length.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "bart", "mbart")


def choose_label(id2label: dict[int, str], wanted: str | None) -> tuple[int, str]:
    """Index and name of the positive label.

    Args:
        id2label: the model config's label map.
        wanted: a label name (case-insensitive), or None for the unambiguous default.

    Raises:
        DartkitError: listing the model's labels when ``wanted`` is not one of them or no default fits.
    """
    labels = {int(i): str(name) for i, name in id2label.items()}
    listing = ", ".join(labels[i] for i in sorted(labels))
    if wanted is not None:
        hits = [i for i, name in labels.items() if name.lower() == wanted.lower()]
        if len(hits) != 1:
            raise DartkitError(f"label '{wanted}' is not one of the model's labels: {listing}")
        return hits[0], labels[hits[0]]
    hits = [i for i, name in labels.items() if name.lower() in DEFAULT_POSITIVE]
    if len(hits) != 1:
        raise DartkitError(
            f"cannot tell which label means harmful (labels: {listing}); name it, e.g. hf:MODEL#{labels[max(labels)]}"
        )
    return hits[0], labels[hits[0]]


class HFClassifierScorer:
    """A transformers sequence-classification model; the score is P(positive label)."""

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        label: str | None = None,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int | None = None,
    ):
        self.model_id = model
        self.revision = revision
        self.label = label
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = "hf:" + model + (f"@{revision}" if revision else "") + (f"#{label}" if label else "")
        self._config = None
        self._model = None
        self._tok = None
        self._identity: dict[str, Any] | None = None

    def _location(self) -> str:
        local = Path(self.model_id).expanduser()
        if local.exists():
            return str(local)
        if self.model_id.startswith((".", "/", "~")):
            raise DartkitError(f"classifier directory not found: {self.model_id}")
        return self.model_id

    def _local_files_only(self) -> bool:
        """True for a cached hub model while the hub is offline; fails at once when it is not cached."""
        if Path(self._location()).exists():
            return False
        from dartkit.generate.loading import hub_local_files_only

        return hub_local_files_only(self.model_id, self.revision, f"classifier '{self.name}'")

    def _load_error(self, e: Exception) -> DartkitError:
        from dartkit.generate.loading import hub_download_hint

        # Offline, a cached model that still fails to load lacks some of its files.
        hint = (
            f"; offline, {hub_download_hint(self.model_id, self.revision)}"
            if self._local_files_only()
            else ""
        )
        return DartkitError(f"cannot load classifier '{self.name}': {str(e).splitlines()[0]}{hint}")

    def _load_config(self):
        if self._config is None:
            from transformers import AutoConfig

            local_only = self._local_files_only()
            try:
                self._config = AutoConfig.from_pretrained(
                    self._location(), revision=self.revision, local_files_only=local_only
                )
            except (OSError, ValueError) as e:
                raise self._load_error(e) from None
        return self._config

    def positive_label(self) -> tuple[int, str]:
        return choose_label(self._load_config().id2label, self.label)

    def identity(self) -> dict[str, Any]:
        """Name, model, resolved revision (or local weights hash), label, length limit, transformers version.

        A hub model's revision is resolved to a commit before anything is keyed on it: the config
        is loaded first (downloading it when it is not cached yet), so score-cache keys name the
        commit actually scored with, never "whatever main was" or nothing at all.
        """
        if self._identity is None:
            from dartkit.generate.loading import hash_dir, hub_commit

            path = self._location()
            ident: dict[str, Any] = {"name": self.name, "model": self.model_id}
            label = self.positive_label()[1]  # loads (and, for a hub model, fetches) the config
            if Path(path).exists():
                ident.update(revision=None, weights_sha256=hash_dir(Path(path)))
            else:
                commit = hub_commit(self.model_id, self.revision) or getattr(
                    self._load_config(), "_commit_hash", None
                )
                ident.update(revision=commit or self.revision)
            ident["label"] = label
            ident["max_length"] = self.max_length  # None: the model's own limit
            ident["transformers"] = package_version("transformers")
            self._identity = ident
        return self._identity

    def _resolved_max_length(self, tok) -> int:
        if self.max_length:
            return self.max_length
        cfg = self._load_config()
        limits = []
        if 0 < getattr(tok, "model_max_length", 0) < 1_000_000:
            limits.append(int(tok.model_max_length))
        n_pos = getattr(cfg, "max_position_embeddings", None)
        if n_pos:
            offset = (cfg.pad_token_id or 0) + 1 if cfg.model_type in _OFFSET_POSITIONS else 0
            limits.append(int(n_pos) - offset)
        return min(limits) if limits else 512

    def load(self) -> None:
        """Load tokenizer and model (validating the label first, so a bad label fails fast)."""
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from dartkit.generate.loading import resolve_device

        self.positive_label()
        path = self._location()
        local_only = self._local_files_only()
        try:
            self._tok = AutoTokenizer.from_pretrained(
                path, revision=self.revision, local_files_only=local_only
            )
            model = AutoModelForSequenceClassification.from_pretrained(
                path, revision=self.revision, local_files_only=local_only
            )
        except (OSError, ValueError) as e:
            raise self._load_error(e) from None
        if self._tok.pad_token_id is None:
            if self._tok.eos_token is None:
                raise DartkitError(f"classifier '{self.name}': tokenizer has no pad or eos token")
            self._tok.pad_token = self._tok.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = self._tok.pad_token_id
        model.to(resolve_device(self.device))
        model.eval()
        self._model = model
        self._max_len = self._resolved_max_length(self._tok)

    def score(self, texts: Sequence[str]) -> list[float]:
        import torch

        if not texts:
            return []
        self.load()
        index, _ = self.positive_label()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i] or ""), reverse=True)
        out = [0.0] * len(texts)
        device = next(self._model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            enc = self._tok(
                [texts[i] or "" for i in rows],
                truncation=True,
                max_length=self._max_len,
                padding=True,
                return_tensors="pt",
            ).to(device)
            with torch.inference_mode():
                logits = self._model(**enc).logits.float()
            probs = torch.softmax(logits, dim=-1)[:, index].tolist()
            for i, p in zip(rows, probs, strict=True):
                out[i] = clip01(p)
        return out
