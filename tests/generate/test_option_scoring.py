"""Likelihood scoring of fixed answer options (the loglik answer mode) on real tiny models and a fake server."""

import math

import pytest
import torch

from dartkit.config import BackendConfig
from dartkit.errors import DartkitError
from dartkit.generate import load_backend
from dartkit.generate.base import supports_scoring
from dartkit.generate.cache import GenerationCache
from dartkit.generate.scoring import CONCLUSION_OPTIONS, score_options_cached
from servers import FakeOpenAIServer, completion

YES, NO = CONCLUSION_OPTIONS["YES"], CONCLUSION_OPTIONS["NO"]
OPTIONS = [YES, NO]
SYSTEM = "You decide whether groups must be told apart. " * 6  # a shared prefix long enough to be cached
CONVERSATIONS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
    for q in (
        "May a synagogue hiring a rabbi require that he be Jewish?",
        "Is the sky blue?",
        "A bank sets loan rates. May it charge women more than men with the same credit history and income?",
    )
]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    backend = load_backend(f"hf:{tiny_llama}", BackendConfig(device="cpu", dtype="float32", batch_size=3))
    backend._ensure_loaded()
    yield backend
    backend.close()


def manual_logprob(backend, messages, prefix_ids, option_ids) -> float:
    """log P(option tokens | prompt + prefix tokens): one unpadded row, full logits, no cache."""
    ids = backend.encode(messages) + prefix_ids + option_ids
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(ids) - len(option_ids)
    return sum(float(logprobs[p - 1, ids[p]]) for p in range(start, len(ids)))


def tokens(backend, text):
    return backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_hf_and_dummy_backends_can_score_and_a_plain_object_cannot(tiny):
    assert supports_scoring(tiny)
    assert supports_scoring(load_backend("dummy:mixed"))
    assert not supports_scoring(object())


@pytest.mark.parametrize(
    "prefixes", [["", "", ""], ["The law allows it.\n", "", "Women and men are equal here.\n"]]
)
def test_hf_sums_match_an_independent_forward_pass(tiny, prefixes):
    # Three prompts of different lengths (left padding), a shared system prompt (prefix KV cache),
    # options of different token counts (" YES" is " Y" + "ES" for this tokenizer, " NO" one token).
    got = dict(tiny.score_options(CONVERSATIONS, prefixes, OPTIONS))
    assert sorted(got) == [0, 1, 2]
    for i, (messages, prefix) in enumerate(zip(CONVERSATIONS, prefixes, strict=True)):
        prefix_ids = tokens(tiny, prefix) if prefix else []
        for option in OPTIONS:
            option_ids = tokens(tiny, prefix + option)[len(prefix_ids) :]
            assert got[i][option] == pytest.approx(
                manual_logprob(tiny, messages, prefix_ids, option_ids), abs=1e-4
            )
    assert len(tokens(tiny, YES)) != len(tokens(tiny, NO))  # the sums are over different token counts


def test_hf_scores_do_not_depend_on_batching_or_the_shared_prefix(tiny_llama):
    prefixes = ["A reason.\n", "", "Another reason, longer than the first one.\n"]
    batched = load_backend(f"hf:{tiny_llama}", BackendConfig(device="cpu", batch_size=6))
    single = load_backend(
        f"hf:{tiny_llama}", BackendConfig(device="cpu", batch_size=1, prefix_cache_min_tokens=0)
    )
    a = dict(batched.score_options(CONVERSATIONS, prefixes, OPTIONS))
    b = dict(single.score_options(CONVERSATIONS, prefixes, OPTIONS))
    for i in a:
        assert a[i] == pytest.approx(b[i], abs=1e-4)


def test_a_model_without_a_plain_kv_cache_scores_without_the_shared_prefix(tmp_path):
    # Sliding-window attention: no prefix KV cache; rows are only left-padded.
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from dartkit.generate.embedded import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = MistralConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=64,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    backend = load_backend(f"hf:{tmp_path}", BackendConfig(device="cpu", dtype="float32"))
    backend._ensure_loaded()
    assert not backend._own_loop_ok
    prefixes = ["", "Short.\n", ""]
    got = dict(backend.score_options(CONVERSATIONS, prefixes, OPTIONS))
    for i, (messages, prefix) in enumerate(zip(CONVERSATIONS, prefixes, strict=True)):
        prefix_ids, option_ids, _ = backend.continuation_tokens(prefix, YES)
        assert got[i][YES] == pytest.approx(
            manual_logprob(backend, messages, prefix_ids, option_ids), abs=1e-4
        )


def test_the_prefix_changes_what_is_scored(tiny):
    # The analysis context scores the options after the model's own text, the prompt context
    # right after the prompt: different conditionals, different numbers.
    after_prompt = dict(tiny.score_options(CONVERSATIONS[:1], [""], OPTIONS))[0]
    after_analysis = dict(tiny.score_options(CONVERSATIONS[:1], ["Religion is required here.\n"], OPTIONS))[0]
    assert after_prompt[YES] != pytest.approx(after_analysis[YES], abs=1e-3)
    expected = manual_logprob(
        tiny, CONVERSATIONS[0], tokens(tiny, "Religion is required here.\n"), tokens(tiny, YES)
    )
    assert after_analysis[YES] == pytest.approx(expected, abs=1e-4)


def test_a_token_merged_across_the_boundary_is_not_charged_to_the_option(tiny):
    # "answer: " alone ends in a lone " " token; "answer: NO" tokenises as "answer", ":", " NO",
    # so splitting the joint tokens after the prefix's length would score ":"/" NO" wrongly.
    prefix, option = "Final answer: ", "NO"
    prefix_ids, option_ids, merged = tiny.continuation_tokens(prefix, option)
    joint = tokens(tiny, prefix + option)
    assert merged and joint[: len(prefix_ids)] != prefix_ids
    assert option_ids == tokens(tiny, option)
    got = dict(tiny.score_options(CONVERSATIONS[:1], [prefix], [option, "YES"]))[0]
    assert got[option] == pytest.approx(
        manual_logprob(tiny, CONVERSATIONS[0], prefix_ids, option_ids), abs=1e-4
    )
    naive = manual_logprob(tiny, CONVERSATIONS[0], joint[: len(prefix_ids)], joint[len(prefix_ids) :])
    assert got[option] != pytest.approx(naive, abs=1e-3)
    # A clean boundary (the analysis prefix ends in a newline) keeps the joint tokenisation.
    assert not tiny.continuation_tokens("The law allows it.\n", YES)[2]


def test_hf_choice_follows_a_head_that_favours_one_option(tiny_llama):
    # An LM head whose weights are zero and whose bias favours the tokens only YES has (" Y", "ES"):
    # every position predicts the same distribution, so both sums are known in closed form.
    backend = load_backend(f"hf:{tiny_llama}", BackendConfig(device="cpu", dtype="float32"))
    backend._ensure_loaded()
    model = backend.model
    vocab = model.config.vocab_size
    yes_ids, no_ids = tokens(backend, YES), tokens(backend, NO)
    favoured = [t for t in yes_ids if t not in no_ids]
    bias = 12.0
    head = torch.nn.Linear(model.config.hidden_size, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[favoured] = bias
    model.lm_head = head
    lse = math.log(vocab - len(favoured) + len(favoured) * math.exp(bias))
    got = dict(backend.score_options(CONVERSATIONS, ["", "Reason.\n", ""], OPTIONS))
    for i in range(3):
        assert got[i][YES] == pytest.approx(bias * len(favoured) - len(yes_ids) * lse, abs=1e-3)
        assert got[i][NO] == pytest.approx(-len(no_ids) * lse, abs=1e-3)
        assert got[i][YES] > got[i][NO] + 5


def test_scores_are_cached_and_a_rerun_scores_nothing(tmp_path):
    backend = load_backend("dummy:yes")
    cache = GenerationCache(tmp_path / "cache.jsonl")
    prefixes = ["", "x\n", ""]
    first, keys = score_options_cached(backend, CONVERSATIONS, prefixes, OPTIONS, cache)
    assert backend.score_calls == 3
    assert all(s[YES] > s[NO] for s in first)
    again = load_backend("dummy:yes")
    second, keys2 = score_options_cached(
        again, CONVERSATIONS, prefixes, OPTIONS, GenerationCache(tmp_path / "cache.jsonl")
    )
    assert again.score_calls == 0 and second == first and keys2 == keys
    # Another prefix is another key: scored, not served from the cache.
    third, _ = score_options_cached(again, CONVERSATIONS[:1], ["y\n"], OPTIONS, cache)
    assert again.score_calls == 1 and third[0] != first[0]


def test_a_backend_without_scoring_is_refused_with_its_name(tmp_path):
    class WriteOnly:
        spec = "fake:writer"

        def identity(self):
            return {}

    with pytest.raises(DartkitError, match="fake:writer.*cannot score answer options"):
        score_options_cached(
            WriteOnly(), CONVERSATIONS, ["", "", ""], OPTIONS, GenerationCache(tmp_path / "c")
        )


# -- openai: next-token logprobs of a continued assistant message ------------------------------


def logprob_reply(ranked: list[tuple[str, float]]) -> dict:
    """A chat completion of one token with ``ranked`` as its top_logprobs."""
    body = completion(ranked[0][0])
    body["choices"][0]["logprobs"] = {
        "content": [
            {
                "token": ranked[0][0],
                "logprob": ranked[0][1],
                "bytes": None,
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in ranked],
            }
        ]
    }
    return body


def assistant_text(request_json) -> str:
    last = request_json["messages"][-1]
    assert last["role"] == "assistant"
    return last["content"]


def test_openai_scores_from_logprobs_of_a_continued_assistant_message():
    def handler(request):
        text = assistant_text(request)
        if text.endswith(" Y"):  # the second token of a two-token " YES"
            return (200, logprob_reply([("ES", -0.1), ("eah", -3.0)]))
        return (200, logprob_reply([(" NO", -0.5), (" Y", -1.5), (" The", -4.0)]))

    with FakeOpenAIServer(handler) as server:
        backend = load_backend(f"openai:vllm-model@{server.base_url}", BackendConfig(concurrency=2))
        got = dict(backend.score_options(CONVERSATIONS[:2], ["The law allows it.\n", ""], OPTIONS))
        requests = [r.json for r in server.requests]
    assert got[0] == {YES: pytest.approx(-1.6), NO: pytest.approx(-0.5)}
    assert got[1] == got[0]
    first = [r for r in requests if assistant_text(r) == "The law allows it.\nConclusion:"]
    assert len(first) == 1
    body = first[0]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][:-1] == CONVERSATIONS[0]
    assert {assistant_text(r) for r in requests} == {
        "The law allows it.\nConclusion:",
        "The law allows it.\nConclusion: Y",
        "Conclusion:",
        "Conclusion: Y",
    }


def test_openai_option_outside_the_ranked_tokens_scores_none():
    with FakeOpenAIServer(lambda r: (200, logprob_reply([(" NO", -0.2), (" The", -2.0)]))) as server:
        backend = load_backend(f"openai:m@{server.base_url}")
        assert dict(backend.score_options(CONVERSATIONS[:1], [""], OPTIONS))[0] == {YES: None, NO: -0.2}


def test_openai_server_without_logprobs_is_a_clear_error():
    with FakeOpenAIServer(lambda r: "Conclusion: YES") as server:  # logprobs: null
        backend = load_backend(f"openai:plain-model@{server.base_url}")
        with pytest.raises(DartkitError) as err:
            dict(backend.score_options(CONVERSATIONS[:1], [""], OPTIONS))
    message = str(err.value)
    assert server.base_url in message and "plain-model" in message and "no logprobs" in message
    assert "\n" not in message


def test_openai_server_that_ranks_neither_option_is_a_clear_error():
    # A server that ignores continue_final_message opens a new turn: its first token is no option.
    with FakeOpenAIServer(lambda r: (200, logprob_reply([("Hello", -0.1), ("I", -2.0)]))) as server:
        backend = load_backend(f"openai:chat-only@{server.base_url}")
        with pytest.raises(
            DartkitError, match=r"chat-only.*none of \['YES', 'NO'\].*'Hello'.*continue_final_message"
        ):
            dict(backend.score_options(CONVERSATIONS[:1], [""], OPTIONS))


@pytest.mark.slow
def test_embedded_model_scores_match_a_forward_pass_and_prefer_the_format(embedded_backend):
    # The real chat template and tokenizer: SmolLM2 writes " YES" as two tokens and " NO" as one.
    from dartkit.config import DecodingConfig
    from dartkit.data.demo import load_demo_suite
    from dartkit.prompts import classification_messages
    from dartkit.stages.evaluate import loglik_prefix

    examples = load_demo_suite()[:4]
    convs = [classification_messages(e) for e in examples]
    texts = dict(embedded_backend.generate(convs, DecodingConfig(max_new_tokens=24)))
    prefixes = [loglik_prefix(texts[i], "analysis") for i in range(len(convs))]
    got = dict(embedded_backend.score_options(convs, prefixes, OPTIONS))
    for i, (messages, prefix) in enumerate(zip(convs, prefixes, strict=True)):
        for option in OPTIONS:
            prefix_ids, option_ids, merged = embedded_backend.continuation_tokens(prefix, option)
            assert not merged  # an analysis prefix ends in a newline: a clean boundary
            expected = manual_logprob(embedded_backend, messages, prefix_ids, option_ids)
            assert got[i][option] == pytest.approx(expected, abs=1e-3)
        # The instructed format is far likelier than chance (-log(49152) per token, about -10.8).
        assert max(got[i].values()) > -15
