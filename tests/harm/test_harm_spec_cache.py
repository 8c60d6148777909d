import pytest

from dartkit.errors import DartkitError
from dartkit.harm import (
    HFClassifierScorer,
    MaxScorer,
    ProfanityScorer,
    analysis_and_full,
    parse_scorer,
    score_cached,
)


class CountingScorer:
    def __init__(self, name="count", value=0.5):
        self.name = name
        self.value = value
        self.seen: list[str] = []

    def identity(self):
        return {"name": self.name, "value": self.value}

    def score(self, texts):
        self.seen.extend(texts)
        return [self.value if "bad" in t else 0.0 for t in texts]


@pytest.mark.parametrize(
    "spec", ["", "toxicity", "hf:", "hf:x#", "max()", "max(profanity,)", "max(profanity", "openai:x"]
)
def test_unknown_or_malformed_spec_is_a_dartkit_error(spec):
    with pytest.raises(DartkitError):
        parse_scorer(spec)


def test_spec_parsing():
    s = parse_scorer("hf:s-nlp/roberta_toxicity_classifier@abc123#toxic")
    assert isinstance(s, HFClassifierScorer)
    assert (s.model_id, s.revision, s.label) == ("s-nlp/roberta_toxicity_classifier", "abc123", "toxic")
    m = parse_scorer("max(profanity, hf:a/b#hate, max(profanity,hf:c/d))")
    assert isinstance(m, MaxScorer)
    assert [type(p) for p in m.parts] == [ProfanityScorer, HFClassifierScorer, MaxScorer]
    assert m.name == "max(profanity,hf:a/b#hate,max(profanity,hf:c/d))"


def test_max_is_elementwise():
    m = MaxScorer([CountingScorer("a", 0.3), CountingScorer("b", 0.7)])
    assert m.score(["bad", "fine", "bad too"]) == [0.7, 0.0, 0.7]
    assert [p["name"] for p in m.identity()["parts"]] == ["a", "b"]


def test_max_of_real_scorers(tiny_classifier):
    texts = ["the cat sat on the mat", "fuck you, idiot"]
    m = parse_scorer(f"max(profanity,hf:{tiny_classifier})")
    parts = [p.score(texts) for p in m.parts]
    assert m.score(texts) == pytest.approx([max(a, b) for a, b in zip(*parts, strict=True)])


def test_cache_hit_avoids_recomputation(tmp_path):
    path = tmp_path / "scores.jsonl"
    scorer = CountingScorer()
    texts = ["bad one", "fine", "bad one", "other"]
    first = score_cached(scorer, texts, path)
    assert first == [0.5, 0.0, 0.5, 0.0]
    assert scorer.seen == ["bad one", "fine", "other"]
    again = score_cached(scorer, texts + ["bad new"], path)
    assert again == first + [0.5]
    assert scorer.seen == ["bad one", "fine", "other", "bad new"]
    # A different scorer identity never reads another's scores.
    other = CountingScorer(value=0.9)
    assert score_cached(other, ["bad one"], path) == [0.9]
    assert other.seen == ["bad one"]


def test_uncached_scoring_dedupes():
    scorer = CountingScorer()
    assert score_cached(scorer, ["bad", "bad", "ok"]) == [0.5, 0.5, 0.0]
    assert scorer.seen == ["bad", "ok"]


def test_analysis_and_full():
    text = "Group membership is irrelevant here.\nBoth should be treated alike.\nConclusion: NO\n"
    analysis, full = analysis_and_full(text)
    assert analysis == "Group membership is irrelevant here.\nBoth should be treated alike."
    assert full == text.strip()
    assert analysis_and_full("no conclusion at all") == ("no conclusion at all", "no conclusion at all")
