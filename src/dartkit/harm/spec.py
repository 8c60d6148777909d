"""Scorer spec strings: one name for a harm scorer across the CLI, configs and manifests.

Grammar::

    profanity                          alt-profanity-check (offline, fast, word-level)
    hf:MODEL_OR_DIR[@REVISION][#LABEL] a transformers sequence-classification model
    max(SPEC,SPEC,...)                 element-wise maximum of several scorers
"""

from __future__ import annotations

from dartkit.errors import DartkitError
from dartkit.harm.base import HarmScorer
from dartkit.harm.combine import MaxScorer
from dartkit.harm.hf import HFClassifierScorer
from dartkit.harm.profanity import ProfanityScorer

SCORER_FORMS = "profanity, hf:MODEL[@REV][#LABEL] or max(SPEC,SPEC,...)"


def _split_top_level(s: str, spec: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise DartkitError(f"unbalanced parentheses in scorer spec '{spec}'")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise DartkitError(f"unbalanced parentheses in scorer spec '{spec}'")
    parts.append("".join(cur))
    return parts


def parse_scorer(spec: str, device: str = "auto", batch_size: int = 32) -> HarmScorer:
    """Build the scorer a spec names, without loading any model yet.

    Args:
        spec: see the module docstring for the grammar.
        device: ``auto``, ``cpu``, ``cuda``, ... for ``hf:`` scorers.
        batch_size: texts per forward pass for ``hf:`` scorers.

    Raises:
        DartkitError: naming the accepted forms when ``spec`` fits none of them.
    """
    s = (spec or "").strip()
    if s == "profanity":
        return ProfanityScorer()
    if s.startswith("hf:"):
        rest = s[3:]
        label = None
        if "#" in rest:
            rest, label = rest.rsplit("#", 1)
            if not label:
                raise DartkitError(f"scorer spec '{spec}': '#' needs a label name")
        revision = None
        if "@" in rest:
            rest, revision = rest.rsplit("@", 1)
            if not revision:
                raise DartkitError(f"scorer spec '{spec}': '@' needs a revision")
        if not rest:
            raise DartkitError(f"scorer spec '{spec}': hf: needs a model id or directory")
        return HFClassifierScorer(rest, revision=revision, label=label, device=device, batch_size=batch_size)
    if s.startswith("max(") and s.endswith(")"):
        inner = [p.strip() for p in _split_top_level(s[4:-1], spec)]
        if not inner or any(not p for p in inner):
            raise DartkitError(f"scorer spec '{spec}': max(...) needs one or more comma-separated specs")
        return MaxScorer([parse_scorer(p, device=device, batch_size=batch_size) for p in inner])
    raise DartkitError(f"unknown harm scorer '{spec}' (expected {SCORER_FORMS})")


def load_scorer(spec: str, device: str = "auto", batch_size: int = 32) -> HarmScorer:
    """Like :func:`parse_scorer`, but loads the models now so that a bad spec fails before any work."""
    scorer = parse_scorer(spec, device=device, batch_size=batch_size)
    load = getattr(scorer, "load", None)
    if load is not None:
        load()
    return scorer
