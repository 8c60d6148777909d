import pytest


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory):
    """A 2-layer BERT classifier with a word-level tokenizer, labels neutral / toxic, 64 positions."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = [
        "the",
        "a",
        "cat",
        "dog",
        "sat",
        "on",
        "mat",
        "you",
        "are",
        "nice",
        "stupid",
        "idiot",
        "hate",
        "people",
        "good",
        "day",
    ]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label={0: "neutral", 1: "toxic"},
        label2id={"neutral": 0, "toxic": 1},
        pad_token_id=0,
    )
    model = BertForSequenceClassification(config)
    path = tmp_path_factory.mktemp("tiny_classifier")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path
