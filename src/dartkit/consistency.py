"""Does a teacher rationale argue against its own conclusion? A small learned check that ships with dartkit.

Stage I quality control rejects a rationale whose analysis argues for the opposite of its
``Conclusion:`` line: a YES rationale (a correct answer needs a difference between the groups) that
argues the groups must be treated the same, or a NO rationale that argues a difference matters.

The check is a logistic regression over tf-idf features of the analysis, trained on first use
(deterministically, in about a second) from ``data/consistency_rationales.jsonl``: 1,640 short
rationales by three writers (A: 960 across six writing batches, B: 200, D: 480; CC0), each marked
as sound or as contradicting its label. The model predicts the analysis's *stance* (does it argue
that a difference matters?) and the label decides which stance contradicts it, so every example
teaches both labels. Features:

- word 1-3-grams within a clause, with words after a negation marked (``not relevant`` ->
  ``NOT_relevant``) and words of a conceded clause marked (``Although hiring should normally ignore
  sex, ...``, ``X, but ...``, ``X. Still, ...``), so a conceded general rule is not the argument;
- the same clauses mapped to word classes (sameness, difference, comparison, relevance, lawful,
  unlawful, both/neither, merit, ...), so what is learned from one writer or theme carries to words
  and themes it has not seen (``equivalent`` reads like ``identical``);
- both again for the last sentence alone, where a rationale usually states where it lands.

Word n-grams count only when they occur in at least half of the themes, so topic nouns do not
decide; the model has no intercept, so a text with no argument in it stays at 0.5. Model choices
were made by leave-one-writer-out cross-validation: numbers within one writer's text overstate what
happens on another writer's.

No network, no pickle: the model is rebuilt from the packaged JSONL. Measured numbers are in
``docs/consistency.md``; ``benchmarks/consistency.py`` reproduces them.

    >>> contradicts("Both applicants deserve equal treatment. Religion is irrelevant here.", "YES")
    True
    >>> contradicts("Although hiring should normally ignore sex, a shelter may require women staff. "
    ...             "Sex is a bona fide occupational qualification here.", "YES")
    False
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from dartkit.errors import DataError
from dartkit.parse import parse_conclusion, split_analysis

DATA_FILE = "consistency_rationales.jsonl"

# What the check must reach on text it was not trained on (issue 9): recall on contradicting
# rationales, and the share of sound rationales flagged.
TARGET_RECALL = 0.85
TARGET_FALSE_ALARMS = 0.10

# Probability at or above which a rationale counts as contradicting its label. Chosen on the
# packaged (training) data only (``choose_threshold``: leave-one-writer-out cross-validation, the
# threshold that leaves the most room under both targets); a test recomputes it and fails if this
# constant is stale.
THRESHOLD = 0.66


class LabelledRationale(BaseModel):
    """One row of a consistency data set: a rationale, its label, and whether it argues against it."""

    model_config = ConfigDict(extra="ignore")

    text: str
    label: Literal["YES", "NO"]
    contradicts: bool
    split: Literal["train", "heldout"] | None = None
    theme: str | None = None
    writer: str | None = None
    batch: str | None = None

    @model_validator(mode="after")
    def _conclusion_matches_label(self) -> LabelledRationale:
        conclusion = parse_conclusion(self.text)
        if conclusion is not None and conclusion != self.label:
            raise ValueError(f"the text concludes {conclusion} but the label is {self.label}")
        return self

    @property
    def analysis(self) -> str:
        """The text before its ``Conclusion:`` line."""
        return split_analysis(self.text)

    @property
    def argues_difference(self) -> bool:
        """The analysis's stance: True when it argues that a difference between the groups matters."""
        return (self.label == "YES") != self.contradicts


def load_rationales(path: str | Path | None = None) -> list[LabelledRationale]:
    """Rows of a JSONL consistency set (``text``, ``label``, ``contradicts``; ``writer``, ``batch``,
    ``theme`` and ``split`` optional).

    Args:
        path: A JSONL file; None reads the set packaged with dartkit.

    Raises:
        DataError: The file is missing or a line is not a valid row.
    """
    if path is None:
        text = resources.files("dartkit.data").joinpath(DATA_FILE).read_text(encoding="utf-8")
        where = DATA_FILE
    else:
        if not Path(path).is_file():
            raise DataError(f"{path}: consistency data file not found")
        text = Path(path).read_text(encoding="utf-8")
        where = str(path)
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(LabelledRationale.model_validate(json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{n}: not valid JSON ({e.msg})") from None
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "row"
            raise DataError(f"{where}:{n}: {field}: {err['msg']}") from None
    if not rows:
        raise DataError(f"{where}: no rows")
    return rows


# --- features ------------------------------------------------------------------------------------

_CONTRACTIONS = [
    (re.compile(r"\bcan[’']t\b"), "can not"),
    (re.compile(r"\bwon[’']t\b"), "will not"),
    (re.compile(r"n[’']t\b"), " not"),
    (re.compile(r"[’']s\b"), " s"),
    (re.compile(r"[’']"), " "),
]
_NEGATORS = frozenset(
    ["not", "no", "never", "nothing", "neither", "nor", "cannot", "none", "nobody", "hardly", "barely"]
    + ["without", "nowhere"]
)
# Words that open a clause conceding the general rule before the case's own argument.
_CONCEDERS = re.compile(
    r"^(?:(?:although|though|even though|while|whereas|normally|usually|ordinarily|typically|"
    r"in general|in most|admittedly|granted|of course|it is true|i know|one might|"
    r"some people|it is tempting|it may seem|at first glance)\b|(?:true|sure),)"
)
# Clause breaks: "A, but B" (and however, yet, except, unless, ...) concedes A; "A, so B" only splits.
_CONTRAST_WORDS = r"but|however|yet|though|still|nonetheless|nevertheless|except|unless|apart from"
_CLAUSE_BREAK = re.compile(rf"[,;:]\s*(?=(?:{_CONTRAST_WORDS}|so)\b)")
_CONTRAST_START = re.compile(rf"^\s*(?:{_CONTRAST_WORDS})\b")
_CONTRAST_OPENING = re.compile(
    r"^\s*(?:(?:but|however|yet|still|even so|nonetheless|nevertheless|in fact|in practice|that said)\b"
    r"|(?:\S+\s+){1,4}?(?:however|though),)"
)
_TOKEN = re.compile(r"[a-z0-9%]+")

_WORD_CLASSES = {
    "SAME": "same equal equally equality equivalent equivalently identical identically alike similar "
    "similarly comparable comparably even evenly balanced parity par tie level proportional "
    "proportionally proportion proportions proportionate commensurate interchangeable mirror mirrors "
    "match matches matching close neck wash uniform uniformly indistinguishable likewise regardless "
    "irrespective impartial impartially symmetric symmetrical consistent consistently neutral neutrally "
    "universal universally undifferentiated evenhanded single",
    "DIFF": "different differently differ differs differed difference differences distinct distinction "
    "distinctions distinguish distinguishes gap gaps disparity disparities discrepancy imbalance "
    "imbalanced skew skewed lopsided uneven unevenly unequal unequally unlike contrast contrasts "
    "diverge diverges asymmetry asymmetric apart dwarfs outpaces outnumber outnumbers outnumbered "
    "exceed exceeds exceeding surpasses disproportionate disproportionately overrepresented "
    "underrepresented overrepresentation underrepresentation dominate dominates dominated "
    "predominate scarce lacks lacking singled separate differentiate differentiates differentiated "
    "differentiating differentiation distinguishing divergent vary varies varying variation segregate "
    "segregated segregation separately",
    "MORE": "more less most least higher lower highest lowest larger smaller greater fewer bigger "
    "worse worst stronger weaker far much considerably markedly substantially significantly vastly "
    "notably sharply ahead twice double",
    "MATTER": "matter matters mattered relevant relevance pertinent bearing factor important "
    "decisive determinative central crucial material weight consideration considerations essential key "
    "necessary needed require requires required",
    "IRRELEVANT": "irrelevant immaterial unrelated unconnected extraneous arbitrary beside irrelevance "
    "inconsequential meaningless incidental unimportant insignificant negligible",
    "LAWFUL": "lawful lawfully legal legally permitted permissible permit permits allowed allow "
    "allows exception exceptions exemption exempt authorised authorized bfoq bona fide qualification "
    "requirement genuine legitimate legitimately justified justify justifies justifiable warranted valid "
    "appropriate appropriately reasonable reasonably sensible entitled proper properly rightly",
    "UNLAWFUL": "illegal unlawful unlawfully discrimination discriminatory discriminate discriminating "
    "violate violates violation forbids forbidden prohibited prohibits impermissible outlawed "
    "unconstitutional unfair unfairly unjust unjustified illegitimate inappropriate improper wrong "
    "wrongly unacceptable unreasonable baseless unfounded unsupported misplaced",
    "ONLY": "only solely exclusively just",
    "BOTH": "both either neither each everyone everybody anyone anybody all every whoever whichever",
    "HARM": "harmful harm harms stereotype stereotypes stereotyping stereotypical trope tropes prejudice "
    "prejudiced racist sexist ageist ableist antisemitic bigoted bias biased offensive demeaning mock "
    "mocks mocking disrespect disrespectful trivialise trivialize sacred persecution persecuted "
    "targeted appropriation slur slurs derogatory generalisation generalization generalisations "
    "generalizations insult insulting pejorative caricature hateful",
    "MERIT": "merit merits qualifications qualified skill skills ability abilities competence competent "
    "performance experience",
    "IGNORE": "ignore ignores ignored ignoring disregard disregards disregarded overlook overlooks blind",
    "AVOID": "avoid avoids refrain skip shun steer decline reject refuse exclude",
    "FREE": "free freely welcome fine okay ok acceptable harmless",
}
_CLASS_OF = {w: cls for cls, words in _WORD_CLASSES.items() for w in words.split()}


def _normalise(text: str) -> str:
    text = text.lower()
    for pattern, repl in _CONTRACTIONS:
        text = pattern.sub(repl, text)
    return text


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def _marked_tokens(analysis: str) -> list[tuple[str, bool, bool]]:
    """(word, negated, conceded) for each word of the analysis; '|' ends a clause."""
    out: list[tuple[str, bool, bool]] = []
    sentences = _sentences(_normalise(analysis))
    for i, sentence in enumerate(sentences):
        # "X. Still, Y." / "X. Y, however, Z.": the sentence before a contrast is conceded too.
        before_contrast = i + 1 < len(sentences) and bool(_CONTRAST_OPENING.match(sentences[i + 1]))
        clauses = _CLAUSE_BREAK.split(sentence)
        if len(clauses) == 1 and _CONCEDERS.match(sentence.strip()) and "," in sentence:
            clauses = sentence.split(",", 1)  # "Although X, Y": X is conceded
        for k, clause in enumerate(clauses):
            last = k == len(clauses) - 1
            conceded = (
                not last and bool(_CONCEDERS.match(clause.strip()) or _CONTRAST_START.match(clauses[k + 1]))
            ) or (before_contrast and last and k == 0)
            negated = False
            for piece in re.split(r"([,;:?!.])", clause):
                if piece in {",", ";", ":", "?", "!", "."}:
                    negated = False  # negation scope ends at punctuation
                    continue
                for word in _TOKEN.findall(piece):
                    out.append((word, negated, conceded))
                    if word in _NEGATORS:
                        negated = True
            out.append(("|", False, False))
    return out


def word_view(analysis: str) -> str:
    """The analysis as marked words: ``NOT_`` after a negation, ``C_`` inside a conceding clause."""
    return " ".join(
        ("C_" if c else "") + ("NOT_" if n and w != "|" else "") + w for w, n, c in _marked_tokens(analysis)
    )


def class_view(analysis: str) -> str:
    """The analysis as a sequence of word classes (with the same marks); other words are dropped."""
    out = []
    for w, n, c in _marked_tokens(analysis):
        if w == "|":
            out.append("|")
        elif w in _NEGATORS:
            out.append("C_NEG" if c else "NEG")
        elif w in _CLASS_OF:
            out.append(("C_" if c else "") + ("NOT_" if n else "") + _CLASS_OF[w])
    return " ".join(out)


def _clause_ngrams(view: str) -> list[str]:
    """Word 1-3-grams of a view, never across a clause break ('|'), which is not a feature itself."""
    grams: list[str] = []
    for clause in view.split("|"):
        words = clause.split()
        for n in (1, 2, 3):
            grams += [" ".join(words[k : k + n]) for k in range(len(words) - n + 1)]
    return grams


def _word_features(analysis: str) -> list[str]:
    return _clause_ngrams(word_view(analysis))


def _class_features(analysis: str) -> list[str]:
    return _clause_ngrams(class_view(analysis))


def _last_sentence(analysis: str) -> str:
    sentences = _sentences(analysis)
    return sentences[-1] if sentences else analysis


def _last_word_features(analysis: str) -> list[str]:
    return _word_features(_last_sentence(analysis))


def _last_class_features(analysis: str) -> list[str]:
    return _class_features(_last_sentence(analysis))


def _shared_vocabulary(rows: Sequence[LabelledRationale], features, min_themes: int) -> list[str]:
    """The features that occur in rationales of at least ``min_themes`` themes."""
    themes: dict[str, set[str | None]] = {}
    for r in rows:
        for f in set(features(r.analysis)):
            themes.setdefault(f, set()).add(r.theme)
    return sorted(f for f, t in themes.items() if len(t) >= min_themes)


def train(rows: Sequence[LabelledRationale], c: float = 4.0) -> Any:
    """A fitted stance model (sklearn pipeline: analysis text -> P(argues a difference matters)).

    Word n-grams count only when they occur in at least half of the themes of ``rows`` (when the rows
    name several themes; rows without a theme count as one): wording that argues carries across
    themes, topic nouns ("synagogue", "turban") do not, and a model that leans on them misreads new
    text about a familiar topic. Training is deterministic (lbfgs on a fixed feature order).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    n_themes = len({r.theme for r in rows})
    min_themes = (n_themes + 1) // 2

    def vectorizer(features, shared: bool):
        vocabulary = _shared_vocabulary(rows, features, min_themes) if shared and n_themes > 1 else None
        return TfidfVectorizer(analyzer=features, vocabulary=vocabulary, lowercase=False, sublinear_tf=True)

    model = make_pipeline(
        make_union(
            vectorizer(_word_features, shared=True),
            vectorizer(_class_features, shared=False),
            # The last sentence again, on its own: it is where a rationale usually states where it
            # lands, and it weighed more than the rest in leave-one-writer-out cross-validation.
            vectorizer(_last_word_features, shared=True),
            vectorizer(_last_class_features, shared=False),
        ),
        # No intercept: a text with no argument in it (no features) stays at 0.5 under either label,
        # below the threshold, instead of inheriting the training set's lean.
        LogisticRegression(C=c, max_iter=5000, fit_intercept=False),
    )
    model.fit([r.analysis for r in rows], [int(r.argues_difference) for r in rows])
    return model


@functools.lru_cache(maxsize=1)
def default_model() -> Any:
    """The stance model trained on every row of the packaged set (built once per process)."""
    return train(load_rationales())


def contradiction_probabilities(
    analyses: Sequence[str], labels: Sequence[str], model: Any = None
) -> np.ndarray:
    """For each (analysis, label): the probability that the analysis argues against the label."""
    if len(analyses) != len(labels):
        raise ValueError("analyses and labels differ in length")
    if not analyses:
        return np.zeros(0)
    bad = sorted({str(label) for label in labels} - {"YES", "NO"})
    if bad:
        raise ValueError(f"labels must be YES or NO, not {', '.join(bad)}")
    model = default_model() if model is None else model
    p_diff = model.predict_proba(list(analyses))[:, 1]
    return np.where(np.asarray(labels) == "YES", 1.0 - p_diff, p_diff)


def contradiction_probability(analysis: str, label: str, model: Any = None) -> float:
    """The probability that ``analysis`` argues against the conclusion ``label`` (YES or NO)."""
    return float(contradiction_probabilities([analysis], [label], model)[0])


def contradicts(analysis: str, label: str, threshold: float = THRESHOLD) -> bool:
    """True when the classifier says ``analysis`` argues against ``label``."""
    return contradiction_probability(analysis, label) >= threshold


def scores(flagged: Sequence[bool], truth: Sequence[bool]) -> dict[str, Any]:
    """Precision, recall and false-alarm rate of contradiction flags against the truth."""
    f = np.asarray(flagged, bool)
    t = np.asarray(truth, bool)
    tp, fp = int((f & t).sum()), int((f & ~t).sum())
    return {
        "n": len(t),
        "contradicting": int(t.sum()),
        "sound": int((~t).sum()),
        "flagged": int(f.sum()),
        "precision": tp / int(f.sum()) if f.any() else None,
        "recall": tp / int(t.sum()) if t.any() else None,
        "false_alarm_rate": fp / int((~t).sum()) if (~t).any() else None,
    }


def out_of_fold_probabilities(rows: Sequence[LabelledRationale], c: float = 4.0) -> np.ndarray:
    """Contradiction probabilities for ``rows`` from models that never saw the row's writer.

    Leave-one-writer-out: within one writer's text, held-out numbers overstate (the writer's habits
    are in both parts), so every model choice and the threshold are made on these predictions.

    Raises:
        DataError: The rows name fewer than two writers.
    """
    writers = sorted({r.writer or "" for r in rows})
    if len(writers) < 2:
        raise DataError("cross-validation needs rows from at least two writers")
    out = np.zeros(len(rows))
    for writer in writers:
        held = [i for i, r in enumerate(rows) if (r.writer or "") == writer]
        model = train([r for r in rows if (r.writer or "") != writer], c)
        out[held] = contradiction_probabilities(
            [rows[i].analysis for i in held], [rows[i].label for i in held], model
        )
    return out


def choose_threshold(rows: Sequence[LabelledRationale], c: float = 4.0) -> float:
    """The threshold rule behind ``THRESHOLD``, applied to leave-one-writer-out probabilities.

    The rule: on a 0.01 grid, the threshold that leaves the most room under both targets of the
    check, i.e. maximises ``min(recall - TARGET_RECALL, TARGET_FALSE_ALARMS - false_alarm_rate)``
    over the pooled out-of-fold predictions; the lowest such threshold on ties.

    Raises:
        DataError: The rows name fewer than two writers, or lack sound or contradicting rationales.
    """
    truth = np.array([r.contradicts for r in rows])
    if truth.all() or not truth.any():
        raise DataError("choosing a threshold needs both sound and contradicting rationales")
    p = out_of_fold_probabilities(rows, c)
    grid = np.round(np.arange(0.05, 0.96, 0.01), 2)
    room = [
        min(
            ((p >= t) & truth).sum() / truth.sum() - TARGET_RECALL,
            TARGET_FALSE_ALARMS - ((p >= t) & ~truth).sum() / (~truth).sum(),
        )
        for t in grid
    ]
    return float(grid[int(np.argmax(room))])


def model_fingerprint() -> str:
    """sha256 of what decides the built-in check's verdicts: this module's code, its data, its threshold.

    Stage fingerprints include it, so a run whose Stage I was checked by another version of the
    classifier redoes Stage I instead of keeping rationales the current check would reject.
    """
    import hashlib

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(resources.files("dartkit.data").joinpath(DATA_FILE).read_bytes())
    h.update(repr(THRESHOLD).encode())
    return h.hexdigest()
