"""Shared settings of the pipeline tests' tiny runs."""

from __future__ import annotations

import hashlib
import random
import re

from servers import last_user_message

WORDS = [
    f"{a}{b}"
    for a in ("ka", "lo", "mi", "nu", "pe", "ra", "si", "tu")
    for b in ("bar", "dex", "fin", "gol", "hup", "jin")
]


def teacher(request_json):
    """Two sentences of seeded pseudo-words for the label the prompt states, then the conclusion."""
    msg = last_user_message(request_json)
    label = re.findall(r"(?:correct answer is|support the answer) (YES|NO)", msg)
    label = label[-1] if label else "NO"
    rng = random.Random(hashlib.sha256(msg.encode()).hexdigest())
    s = [" ".join(rng.sample(WORDS, 7)).capitalize() + "." for _ in range(2)]
    return f"{s[0]} {s[1]}\nConclusion: {label}"


def tiny_config(out, student, server, **extra) -> dict:
    cfg = {
        "out": str(out),
        "student": f"hf:{student}",
        "teacher": f"openai:fake-teacher@{server.base_url}",
        "decoding": {"max_new_tokens": 24},
        "teacher_decoding": {"max_new_tokens": 64},
        "backend": {"device": "cpu", "dtype": "float32", "batch_size": 16},
        "eval_limit": 16,
        "distill_limit": 24,
        "training": {"epochs": 4, "per_device_batch_size": 4, "grad_accum": 1, "learning_rate": 5e-3},
        "audit": {"tau": 0.0, "null_temperature": 1.0},
        "bootstrap_samples": 200,
        "label_only_baseline": True,
        "evaluations": [{"suite": "transfer", "limit": 8, "max_new_tokens": 16}],
        # Every row of the ablation table, so each optional stage runs end to end in the shared run.
        "ablations": {
            "predicted_labels": True,
            "tox_sft": True,
            "tox_lambdas": [0.1, 0.5],
            "unweighted_repair": True,
            "teacher_harm": True,
            "policy": True,
        },
    }
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg
