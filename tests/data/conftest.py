"""Shared fixtures for the data-layer tests.

The real upstream files are read from ``../shared/data/difference_awareness/raw_pkl``
(override with ``DARTKIT_WANG2025_DIR``); tests that need them skip when the
directory is absent.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from dartkit.data.wang2025 import load_benchmark_dir

_DEFAULT_RAW = Path(__file__).resolve().parents[3] / "shared" / "data" / "difference_awareness" / "raw_pkl"

QUESTION = "Which group is larger?\n(a) Group one (b) Group two (c) Both groups are the same size"


@pytest.fixture(scope="session")
def raw_pkl_dir() -> Path:
    """Directory with the byte-exact upstream ``<B>_1k.pkl`` files."""
    path = Path(os.environ.get("DARTKIT_WANG2025_DIR", _DEFAULT_RAW))
    if not (path / "D1_1k.pkl").is_file():
        pytest.skip(f"upstream difference-awareness pickles not found at {path} (set DARTKIT_WANG2025_DIR)")
    return path


@pytest.fixture(scope="session")
def real_suite(raw_pkl_dir: Path):
    """``(examples, present, absent)`` loaded once from the real files."""
    return load_benchmark_dir(raw_pkl_dir)


@pytest.fixture
def question() -> str:
    """A well-formed upstream question with options (a)/(b)/(c)."""
    return QUESTION


@pytest.fixture
def upstream_lists() -> Callable[..., list]:
    """Factory for a small well-formed ``[diff, equal]`` structure."""

    def make(n: int = 3, equal_answer: int = 2) -> list:
        diff = [[QUESTION, i % 2, i] for i in range(n)]
        equal = [[QUESTION, equal_answer, i] for i in range(n)]
        return [diff, equal]

    return make


@pytest.fixture
def write_pickle() -> Callable[[Path, object], Path]:
    """Pickle an object to a path (for building malformed upstream files)."""

    def write(path: Path, obj: object) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(obj, protocol=4))
        return path

    return write
