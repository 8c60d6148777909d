import shutil

import pytest

from dartkit.errors import DartkitError
from dartkit.harm import HFClassifierScorer, choose_label, load_scorer, parse_scorer

TEXTS = ["the cat sat on the mat", "you are stupid idiot", "good day", "hate people"]


def test_scores_are_softmax_of_positive_label(tiny_classifier):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    scorer = load_scorer(f"hf:{tiny_classifier}", device="cpu")
    scores = scorer.score(TEXTS)
    tok = AutoTokenizer.from_pretrained(tiny_classifier)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier).eval()
    for text, s in zip(TEXTS, scores, strict=True):
        with torch.no_grad():
            expected = torch.softmax(model(**tok(text, return_tensors="pt")).logits, -1)[0, 1].item()
        assert s == pytest.approx(expected, abs=1e-5)
        assert 0.0 <= s <= 1.0


def test_label_chosen_by_name(tiny_classifier):
    toxic = parse_scorer(f"hf:{tiny_classifier}#toxic", batch_size=3).score(TEXTS)
    neutral = parse_scorer(f"hf:{tiny_classifier}#NEUTRAL", batch_size=3).score(TEXTS)
    assert [a + b for a, b in zip(toxic, neutral, strict=True)] == pytest.approx([1.0] * len(TEXTS))
    assert parse_scorer(f"hf:{tiny_classifier}").identity()["label"] == "toxic"


def test_unknown_label_lists_the_labels(tiny_classifier):
    scorer = parse_scorer(f"hf:{tiny_classifier}#hate")
    with pytest.raises(DartkitError, match="neutral, toxic"):
        scorer.score(TEXTS)


def test_default_label_must_be_unambiguous():
    assert choose_label({0: "nothate", 1: "hate"}, None) == (1, "hate")
    assert choose_label({0: "LABEL_0", 1: "LABEL_1"}, None) == (1, "LABEL_1")
    with pytest.raises(DartkitError, match="positive, negative"):
        choose_label({0: "positive", 1: "negative"}, None)


def test_long_text_is_truncated(tiny_classifier):
    scorer = HFClassifierScorer(str(tiny_classifier), device="cpu")
    long = " ".join(["stupid idiot"] * 500)
    scores = scorer.score([long, "good day"])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_batching_preserves_order(tiny_classifier):
    texts = TEXTS * 3
    batched = HFClassifierScorer(str(tiny_classifier), batch_size=2).score(texts)
    single = HFClassifierScorer(str(tiny_classifier), batch_size=1).score(texts)
    assert batched == pytest.approx(single, abs=1e-5)


def test_identity_hashes_local_weights(tiny_classifier):
    ident = parse_scorer(f"hf:{tiny_classifier}#toxic").identity()
    assert ident["model"] == str(tiny_classifier)
    assert len(ident["weights_sha256"]) == 64


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(DartkitError, match="not found"):
        load_scorer(f"hf:{tmp_path}/nope")


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_hub_scorer_keys_name_the_commit_even_on_first_download(tiny_classifier, tmp_path, monkeypatch):
    """The first use of a hub classifier downloads it; its score-cache keys must still name the commit."""
    import huggingface_hub.constants
    import transformers

    from dartkit.harm import score_cached

    hub = tmp_path / "hub"
    repo = hub / "models--org--tiny-toxic"
    import transformers.utils.hub

    # transformers 4.x reads its own cache constant; 5.x reads huggingface_hub's.
    if hasattr(transformers.utils.hub, "TRANSFORMERS_CACHE"):
        monkeypatch.setattr(transformers.utils.hub, "TRANSFORMERS_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # The stand-in hub below is "reachable"; the real one is never asked.
    monkeypatch.setattr("dartkit.generate.loading.hub_offline_reason", lambda *a, **k: None)
    original = transformers.AutoConfig.from_pretrained

    def from_pretrained(name, *args, **kwargs):
        # Stands in for the hub: the first load "downloads" the snapshot into the local cache.
        if name == "org/tiny-toxic" and not repo.exists():
            shutil.copytree(tiny_classifier, repo / "snapshots" / COMMIT)
            (repo / "refs").mkdir()
            (repo / "refs" / "main").write_text(COMMIT)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    scorer = parse_scorer("hf:org/tiny-toxic#toxic")
    assert not repo.exists()
    scores = score_cached(scorer, TEXTS[:2], tmp_path / "scores.jsonl")
    assert scorer.identity()["revision"] == COMMIT
    assert len(scores) == 2
    record = (tmp_path / "scores.jsonl").read_text().splitlines()[0]
    assert '"scorer": "hf:org/tiny-toxic#toxic"' in record
