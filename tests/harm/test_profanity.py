import pytest

from dartkit.harm import ProfanityScorer, parse_scorer

pytest.importorskip("profanity_check")


def test_profane_scores_clearly_higher_than_neutral():
    scorer = parse_scorer("profanity")
    neutral, profane = scorer.score(
        [
            "The committee will meet on Tuesday to review the budget.",
            "You are a fucking stupid piece of shit.",
        ]
    )
    assert profane > 0.8
    assert neutral < 0.2
    assert profane - neutral > 0.5


def test_scores_are_probabilities_in_batch_order():
    texts = ["Have a nice day.", "shit", "The weather is mild.", "fuck off, asshole", ""] * 3
    scorer = ProfanityScorer(batch_size=4)
    scores = scorer.score(texts)
    assert len(scores) == len(texts)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    singly = [scorer.score([t])[0] for t in texts]
    assert scores == pytest.approx(singly)
    assert scores[1] > scores[0] and scores[3] > scores[2]


def test_identity_records_package_versions():
    ident = ProfanityScorer().identity()
    assert ident["name"] == "profanity"
    assert ident["alt-profanity-check"] == "1.9.1"
    assert ident["scikit-learn"]
