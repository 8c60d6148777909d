"""`dartkit eval --answer-mode loglik`: answers read from option likelihoods, both modes reported."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.config import BackendConfig, DecodingConfig, EvalConfig
from dartkit.data.prepare import prepare_data
from dartkit.generate import load_backend
from dartkit.generate.cache import GenerationCache, cache_key
from dartkit.generate.scoring import CONCLUSION_OPTIONS
from dartkit.parse import split_analysis
from dartkit.stages import evaluate

runner = CliRunner()
YES, NO = CONCLUSION_OPTIONS["YES"], CONCLUSION_OPTIONS["NO"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    prepare_data(out, suite="demo")
    return out


def eval_cli(*args):
    return runner.invoke(app, ["eval", *[str(a) for a in args]])


def read(out: Path):
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    return gens, json.loads((out / "metrics.json").read_text())


def test_loglik_mode_answers_a_model_that_never_writes_a_conclusion(demo_data, tmp_path):
    out = tmp_path / "eval"
    r = eval_cli(
        "--model",
        "dummy:echo",
        "--data",
        demo_data,
        "--split",
        "val",
        "--out",
        out,
        "--answer-mode",
        "loglik",
    )
    assert r.exit_code == 0, r.output
    gens, metrics = read(out)
    for g in gens:
        assert g["answer_mode"] == "loglik" and g["loglik_context"] == "analysis"
        assert g["generated_conclusion"] is None  # echo writes no conclusion line
        assert g["loglik_choice"] == ("YES" if g["loglik_yes"] >= g["loglik_no"] else "NO")
        assert g["conclusion"] == g["loglik_choice"]
    correct = sum(g["conclusion"] == g["gold"] for g in gens)
    assert metrics["answer_mode"] == "loglik" and metrics["loglik_context"] == "analysis"
    assert metrics["accuracy"] == pytest.approx(correct / len(gens))
    assert metrics["unparseable_rate"] == 0.0
    by_mode = metrics["answer_modes"]
    assert by_mode["loglik"]["accuracy"] == metrics["accuracy"]
    assert by_mode["generate"]["accuracy"] == 0.0 and by_mode["generate"]["unparseable_rate"] == 1.0
    assert set(by_mode["loglik"]["per_benchmark"]) == set(metrics["per_benchmark"])
    assert by_mode["agreement"] == {"n": 0, "rate": None}
    text = " ".join(r.output.split())
    assert "answers: loglik after the analysis" in text
    assert "written conclusions (generate): accuracy 0.0%" in text


def test_generate_mode_can_score_options_too_and_keeps_the_written_answer(demo_data, tmp_path):
    out = tmp_path / "eval"
    r = eval_cli(
        "--model", "dummy:mixed", "--data", demo_data, "--split", "val", "--out", out,
        "--score-options", "--loglik-context", "prompt",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    gens, metrics = read(out)
    assert all(g["conclusion"] == g["generated_conclusion"] is not None for g in gens)
    assert all(g["loglik_context"] == "prompt" and g["loglik_choice"] in ("YES", "NO") for g in gens)
    assert metrics["answer_mode"] == "generate"
    assert metrics["answer_modes"]["generate"]["accuracy"] == metrics["accuracy"]
    agree = sum(g["loglik_choice"] == g["generated_conclusion"] for g in gens) / len(gens)
    assert metrics["answer_modes"]["agreement"] == {"n": len(gens), "rate": pytest.approx(agree)}
    assert "answers: generate" in " ".join(r.output.split())


def test_plain_generate_mode_scores_nothing(demo_data, tmp_path):
    out = tmp_path / "eval"
    r = eval_cli("--model", "dummy:mixed", "--data", demo_data, "--split", "val", "--out", out)
    assert r.exit_code == 0, r.output
    gens, metrics = read(out)
    assert all(g["loglik_yes"] is None and g["loglik_choice"] is None for g in gens)
    assert metrics["answer_mode"] == "generate" and "answer_modes" not in metrics
    # The answer mode is an input: changing it on existing results needs --force.
    r = eval_cli(
        "--model",
        "dummy:mixed",
        "--data",
        demo_data,
        "--split",
        "val",
        "--out",
        out,
        "--answer-mode",
        "loglik",
    )
    assert r.exit_code == 2 and "answer_mode" in r.output


def test_rerun_serves_scores_from_the_cache(demo_data, tmp_path, monkeypatch):
    from dartkit.generate.dummy import DummyBackend

    backends = []

    def fresh(spec, cfg=None):
        backends.append(DummyBackend("yes"))
        return backends[-1]

    monkeypatch.setattr(evaluate, "load_backend", fresh)
    cfg = EvalConfig(
        model="dummy:yes", data=demo_data, split="val", out=tmp_path / "eval", answer_mode="loglik"
    )
    first = evaluate.run(cfg)
    assert backends[0].score_calls == first["n"] > 0
    second = evaluate.run(cfg)
    assert backends[1].calls == 0 and backends[1].score_calls == 0
    assert second["answer_modes"] == first["answer_modes"]
    # Another context scores again (another prefix, another key); answers still come from the cache.
    evaluate.run(cfg.model_copy(update={"loglik_context": "prompt"}))
    assert backends[2].calls == 0 and backends[2].score_calls == first["n"]


def test_unscoreable_model_is_a_one_line_error(demo_data, tmp_path, monkeypatch):
    class WriteOnly:
        spec = "fake:writer"

        def identity(self):
            return {"fake": 1}

        def generate(self, conversations, decoding):
            for i, _ in enumerate(conversations):
                yield i, "Conclusion: YES"

        def close(self):
            pass

    monkeypatch.setattr(evaluate, "load_backend", lambda spec, cfg=None: WriteOnly())
    r = eval_cli(
        "--model",
        "dummy:yes",
        "--data",
        demo_data,
        "--split",
        "val",
        "--out",
        tmp_path / "e",
        "--answer-mode",
        "loglik",
    )
    assert r.exit_code == 2
    assert "fake:writer" in r.output and "cannot score answer options" in r.output


def test_eval_help_documents_the_answer_mode_flags():
    r = runner.invoke(app, ["eval", "--help"])
    assert r.exit_code == 0
    for flag in ("--answer-mode", "--loglik-context", "--score-options"):
        assert flag in r.output
    for field in ("answer_mode", "loglik_context", "score_options"):
        assert EvalConfig.model_fields[field].description


def option_logprob(backend, messages, prefix: str, option: str) -> float:
    """log P(option | prompt + prefix) from one unpadded forward pass."""
    prefix_ids, option_ids, _ = backend.continuation_tokens(prefix, option)
    ids = backend.encode(messages) + prefix_ids + option_ids
    with torch.inference_mode():
        logprobs = torch.log_softmax(backend.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    start = len(ids) - len(option_ids)
    return sum(float(logprobs[p - 1, ids[p]]) for p in range(start, len(ids)))


def test_tiny_model_scores_after_its_own_analysis_or_the_prompt(demo_data, tmp_path, tiny_llama):
    from dartkit.prompts import classification_messages
    from dartkit.stages.evaluate import select_examples

    base = dict(
        model=f"hf:{tiny_llama}",
        data=demo_data,
        split="val",
        limit=4,
        answer_mode="loglik",
        decoding=DecodingConfig(max_new_tokens=6),
        backend=BackendConfig(device="cpu", dtype="float32"),
        cache=tmp_path / "cache.jsonl",
    )
    # The model's answers are put in the generation cache first, so the analysis is known text
    # (a random tiny model writes little but special tokens).
    backend = load_backend(f"hf:{tiny_llama}", BackendConfig(device="cpu", dtype="float32"))
    examples = select_examples(demo_data, "val", 4)
    written = {
        e.id: f"Answer {i} weighs the groups in this case.\nConclusion: {'YES' if i % 2 else 'NO'}"
        for i, e in enumerate(examples)
    }
    GenerationCache(tmp_path / "cache.jsonl").put_many(
        [
            (cache_key(backend.identity(), classification_messages(e), base["decoding"]), written[e.id])
            for e in examples
        ]
    )
    evaluate.run(EvalConfig(**base, out=tmp_path / "analysis"))
    evaluate.run(EvalConfig(**base, out=tmp_path / "prompt", loglik_context="prompt"))
    by_analysis, m_analysis = read(tmp_path / "analysis")
    by_prompt, m_prompt = read(tmp_path / "prompt")
    backend._ensure_loaded()
    by_id = {e.id: e for e in examples}
    for a, p in zip(by_analysis, by_prompt, strict=True):
        assert a["text"] == p["text"] == written[a["id"]]  # one generation, two scorings
        assert a["generated_conclusion"] == a["text"][-3:].strip()
        messages = classification_messages(by_id[a["id"]])
        prefix = split_analysis(a["text"]) + "\n"
        assert prefix == a["text"].split("\n")[0] + "\n"
        assert a["loglik_yes"] == pytest.approx(option_logprob(backend, messages, prefix, YES), abs=1e-3)
        assert a["loglik_no"] == pytest.approx(option_logprob(backend, messages, prefix, NO), abs=1e-3)
        assert p["loglik_yes"] == pytest.approx(option_logprob(backend, messages, "", YES), abs=1e-3)
        assert p["loglik_yes"] != pytest.approx(a["loglik_yes"], abs=1e-3)
        assert a["conclusion"] == a["loglik_choice"] and p["conclusion"] == p["loglik_choice"]
    assert m_analysis["loglik_context"] == "analysis" and m_prompt["loglik_context"] == "prompt"
