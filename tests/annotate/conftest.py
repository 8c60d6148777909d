"""Shared fixtures for the annotation tests: a small judged audit and its export."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotate_helpers import make_audit
from dartkit.annotate.export import export


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    """A judged audit (see ``make_audit``)."""
    return make_audit(tmp_path / "audit")


@pytest.fixture
def export_result(tmp_path: Path, audit_dir: Path):
    """A 2-annotator export of ``audit_dir``: 12 items, half seen by both; the key beside it."""
    return export(audit_dir, tmp_path / "annotate" / "m_dart", n=12, annotators=2, overlap=0.5, seed=3)
