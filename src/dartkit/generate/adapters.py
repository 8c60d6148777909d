"""LoRA adapters: attach one to a base model, refusing an adapter trained on another base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dartkit.errors import DartkitError
from dartkit.generate.loading import hash_dir

# Written next to adapter_config.json by dartkit's trainer: which base it was trained on.
ADAPTER_META = "dartkit_adapter.json"


def attach_adapter(model, adapter_dir: Path, base_identity: dict[str, Any], trainable: bool = False):
    """Wrap ``model`` with the PEFT adapter in ``adapter_dir``.

    Returns:
        (peft_model, adapter_sha256)

    Raises:
        DartkitError: when the directory is not a PEFT adapter, or when its metadata names
            a different base model than ``base_identity``.
    """
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    check_adapter_base(adapter_dir, base_identity)
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable), hash_dir(adapter_dir)


def check_adapter_base(adapter_dir: Path, base_identity: dict[str, Any]) -> None:
    """Refuse a directory that is not a PEFT adapter, or one dartkit trained on another base.

    Raises:
        DartkitError: no ``adapter_config.json``, or the adapter's metadata names a different base
            model or base weights than ``base_identity``.
    """
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise DartkitError(f"{adapter_dir}: not a PEFT adapter directory (no adapter_config.json)")
    meta_path = adapter_dir / ADAPTER_META
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        trained_on = meta.get("base", {})
        for field in ("model", "weights_sha256"):
            want, have = trained_on.get(field), base_identity.get(field)
            if want and have and want != have:
                raise DartkitError(
                    f"{adapter_dir}: adapter was trained on base {field}={want!r}, "
                    f"but it is being loaded onto {field}={have!r}"
                )
