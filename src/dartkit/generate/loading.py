"""Where a local model lives and what it is: device and dtype choice, directory fingerprints, hub commits.

Shared by the hf generation backend, LoRA adapters, the trainer and the ``hf:`` harm
scorers. It imports none of them, so they can all import it. Nothing here loads weights:
identities are computed from small files (configs, tokenizers, chat templates) and
from size plus the first and last 4 MiB of each weight file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dartkit.errors import DartkitError
from dartkit.generate.spec import ModelSpec

_FULL_HASH_LIMIT = 64 << 20
_EDGE = 4 << 20


def resolve_device(device: str) -> str:
    """The device ``auto`` stands for here: cuda, then mps, then cpu."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for a dtype setting on a device (``auto``: bfloat16 on a GPU that has it, else float32)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


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


def hub_commit(model_id: str, revision: str | None) -> str | None:
    """Commit hash of a hub model already in the local cache, without touching the network."""
    try:
        from transformers.utils.hub import cached_file, extract_commit_hash

        path = cached_file(model_id, "config.json", revision=revision, local_files_only=True)
        return extract_commit_hash(path, None)
    except Exception:
        return None


# How huggingface_hub itself reads its boolean environment variables.
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
HUB_PROBE_TIMEOUT_S = 3.0


def hub_offline_reason(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hugging Face Hub cannot be used now, or None when it can.

    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set means offline, without asking the
    network. Otherwise one request to the hub endpoint decides, bounded by ``timeout_s`` in all
    (name lookup included); its answer is kept for the rest of the process, so loading several
    models costs one probe. Without this, a download attempt against an unreachable hub retries
    with backoff for about a minute before it fails.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _TRUE_VALUES:
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return _probe_hub(endpoint.rstrip("/"), timeout_s)


@functools.cache
def _probe_hub(endpoint: str, timeout_s: float) -> str | None:
    outcome: dict[str, Any] = {}

    def probe() -> None:
        try:
            import requests

            outcome["status"] = requests.head(endpoint, timeout=timeout_s, allow_redirects=False).status_code
        except Exception as e:  # any failure to get an answer means "unreachable"
            outcome["error"] = type(e).__name__

    # requests' timeout does not cover the name lookup, which can hang on a machine without
    # network; a daemon thread bounds the whole attempt.
    thread = threading.Thread(target=probe, name="dartkit-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    if "status" in outcome:
        status = outcome["status"]
        return None if status < 500 else f"{endpoint} answered HTTP {status}"
    if "error" in outcome:
        return f"{endpoint} is unreachable ({outcome['error']})"
    return f"{endpoint} did not answer within {timeout_s:g} s"


def hub_download_hint(model_id: str, revision: str | None = None) -> str:
    """What to do about a hub model that is not in the local cache."""
    rev = f" --revision {revision}" if revision else ""
    return (
        f"download it where the hub is reachable with `hf download {model_id}{rev}` (older "
        f"huggingface_hub: `huggingface-cli download {model_id}{rev}`), or point hf: at a local "
        "directory that holds the model"
    )


def hub_local_files_only(model_id: str, revision: str | None, what: str) -> bool:
    """Decide, before anything downloads, whether loading a hub model must stay in the local cache.

    Args:
        model_id: Hub repository id (not a local path).
        revision: Requested revision, or None.
        what: How messages name the model, e.g. ``"model 'hf:org/name'"``.

    Returns:
        False when the hub is reachable (load normally); True when it is not but the model is
        cached (load with ``local_files_only``, so no request is retried).

    Raises:
        DartkitError: at once, saying what to do, when the model is not cached and the hub
            cannot be reached.
    """
    reason = hub_offline_reason()
    if reason is None:
        return False
    if hub_commit(model_id, revision) is None:
        raise DartkitError(
            f"{what} is not in the local Hugging Face cache and the hub cannot be reached ({reason}): "
            + hub_download_hint(model_id, revision)
        )
    return True


def _hub_snapshot(model_id: str, revision: str | None) -> Path | None:
    """The local snapshot directory of a cached hub model (None when it is not cached)."""
    try:
        from transformers.utils.hub import cached_file

        path = cached_file(model_id, "config.json", revision=revision, local_files_only=True)
    except Exception:
        return None
    return Path(path).parent if path else None


# Where transformers finds a chat template: its own files (newer layout), or the
# ``chat_template`` entry of tokenizer_config.json (older layout).
_TEMPLATE_FILES = ("chat_template*.jinja", "chat_template*.json", "additional_chat_templates/*.jinja")


def chat_template_sha256(directory: Path | None) -> str | None:
    """sha256 of every chat template a tokenizer in ``directory`` may render prompts with.

    Covers ``chat_template*.jinja`` / ``chat_template*.json``, ``additional_chat_templates/``
    and the ``chat_template`` entry of ``tokenizer_config.json``. Editing any of them changes
    the prompts a model sees, so it must change the cache keys of its answers.

    Returns:
        The hex digest, or None when the directory holds no template at all.
    """
    if directory is None or not Path(directory).is_dir():
        return None
    directory = Path(directory)
    h = hashlib.sha256()
    found = False
    for path in sorted({p for pat in _TEMPLATE_FILES for p in directory.glob(pat) if p.is_file()}):
        h.update(f"{path.relative_to(directory).as_posix()}\n".encode())
        h.update(path.read_bytes())
        found = True
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            template = None
        if template is not None:
            h.update(b"tokenizer_config.json:chat_template\n")
            h.update(json.dumps(template, sort_keys=True, ensure_ascii=False).encode("utf-8"))
            found = True
    return h.hexdigest() if found else None


def model_location(spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """Where a spec's weights live and its identity (model, revision, weights/adapter/template hashes).

    Cheap: reads no weights beyond fingerprints, so a fully cached run never loads a model.
    A hub model that is not in the local cache yet gets ``revision`` and
    ``chat_template_sha256`` filled in by the caller once it has been downloaded
    (see :meth:`dartkit.generate.hf.HFBackend.identity`).
    """
    identity: dict[str, Any] = {"backend": "hf"}
    if spec.kind == "embedded":
        from dartkit.generate.embedded import EMBEDDED_NAME, embedded_model_dir, embedded_source

        path = str(embedded_model_dir())
        src = embedded_source()
        identity.update(
            model=f"embedded:{EMBEDDED_NAME}", revision=src["package"], weights_sha256=src["gguf_sha256"]
        )
        template_dir: Path | None = Path(path)
    else:
        local = Path(spec.model).expanduser()
        if not local.exists() and spec.model.startswith((".", "/", "~")):
            raise DartkitError(f"model directory not found: {spec.model}")
        if local.exists():
            path = str(local)
            identity.update(model=spec.model, revision=None, weights_sha256=hash_dir(local))
            template_dir = local
        else:
            path = spec.model
            identity.update(model=spec.model, revision=hub_commit(spec.model, spec.revision) or spec.revision)
            template_dir = _hub_snapshot(spec.model, spec.revision)
    identity["chat_template_sha256"] = chat_template_sha256(template_dir)
    if spec.adapter:
        adapter = Path(spec.adapter).expanduser()
        if not adapter.exists():
            raise DartkitError(f"adapter directory not found: {adapter}")
        identity["adapter_sha256"] = hash_dir(adapter)
    return path, identity


def hub_template_sha256(model_id: str, revision: str | None) -> str | None:
    """``chat_template_sha256`` of a hub model's cached snapshot (after it has been downloaded)."""
    return chat_template_sha256(_hub_snapshot(model_id, revision))


def resolve_hub_identity(
    identity: dict[str, Any], spec: ModelSpec, download: Callable[[], str | None]
) -> None:
    """Put a hub model's commit and chat-template hash into ``identity`` (in place).

    A model not in the local cache is downloaded first (``download``, which may return the commit
    it loaded) so that cache keys name the commit actually used rather than "whatever the branch
    points to today".
    """
    fallback = None
    if hub_commit(spec.model, spec.revision) is None:
        fallback = download()
    commit = hub_commit(spec.model, spec.revision) or fallback
    identity["revision"] = commit or spec.revision
    identity["chat_template_sha256"] = hub_template_sha256(spec.model, spec.revision)


def same_weights(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two model identities name the same weights: the same model (as spelled: ``./m`` and
    ``/abs/m`` count as different), the same ``weights_sha256`` or resolved ``revision``, and the
    same adapter or none on both (the backend aside: ``hf:X`` and ``vllm:X`` are the same weights)."""
    if not a or not b or a.get("model") != b.get("model"):
        return False
    if a.get("adapter_sha256") != b.get("adapter_sha256"):
        return False
    return any(a.get(k) and a.get(k) == b.get(k) for k in ("weights_sha256", "revision"))


def teacher_is_student(teacher: str, student: str, teacher_identity: dict[str, Any] | None) -> bool:
    """Whether the teacher is the student's base: the same spec, or the same weights under another
    spec (``hf:X`` beside ``vllm:X``), compared by identity for local kinds (a teacher with an
    adapter on the student's base is another model). An identity that cannot be had cheaply (a
    remote spec, a missing directory) counts as different."""
    from dartkit.generate.spec import parse_spec

    if teacher == student:
        return True
    try:
        spec = parse_spec(student)
        if spec.kind not in ("hf", "embedded", "vllm") or not teacher_identity:
            return False
        if spec.kind == "embedded":
            from dartkit.generate.embedded import EMBEDDED_NAME

            named = f"embedded:{EMBEDDED_NAME}"
        else:
            named = spec.model
        if teacher_identity.get("model") != named:
            return False  # another model: no need to fingerprint the student's weights
        return same_weights(teacher_identity, model_location(spec)[1])
    except (DartkitError, ValueError):
        return False
