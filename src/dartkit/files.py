"""Small file helpers shared across stages: the dartkit cache directory and file hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_ENV = "DARTKIT_CACHE"


def cache_root() -> Path:
    """Where dartkit keeps converted models and downloads (``$DARTKIT_CACHE`` or ``~/.cache/dartkit``)."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/dartkit").expanduser()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
