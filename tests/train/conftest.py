"""Fixtures for the trainer tests: a tiny random llama that uses the embedded model's tokenizer.

The tiny model (hidden 64, 2 layers) trains in milliseconds per step, yet has the real
chat template, vocabulary and llama projection names, so masking, LoRA targeting,
checkpointing and adapter identity are exercised exactly as on a real student.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from dartkit.generate.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())
