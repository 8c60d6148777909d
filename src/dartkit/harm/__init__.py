"""Harm scorers: texts in, harm scores in [0, 1] out, behind one protocol.

Usage::

    from dartkit.harm import load_scorer, score_cached
    scorer = load_scorer("max(hf:s-nlp/roberta_toxicity_classifier,profanity)")
    scores = score_cached(scorer, texts, "runs/x/audit/scores.jsonl")
"""

from dartkit.harm.base import HarmScorer, analysis_and_full
from dartkit.harm.cache import score_cached, score_key
from dartkit.harm.combine import MaxScorer
from dartkit.harm.hf import HFClassifierScorer, choose_label
from dartkit.harm.profanity import ProfanityScorer
from dartkit.harm.spec import load_scorer, parse_scorer

__all__ = [
    "HFClassifierScorer",
    "HarmScorer",
    "MaxScorer",
    "ProfanityScorer",
    "analysis_and_full",
    "choose_label",
    "load_scorer",
    "parse_scorer",
    "score_cached",
    "score_key",
]
