import pytest

from dartkit.config import ConfigError, DecodingConfig, EvalConfig, load_config
from dartkit.generate.spec import SpecError, parse_spec


@pytest.mark.parametrize(
    "spec, kind, model, revision, adapter, url",
    [
        ("embedded", "embedded", "SmolLM2-135M-Instruct", None, None, None),
        (
            "embedded+adapter=runs/x/adapter",
            "embedded",
            "SmolLM2-135M-Instruct",
            None,
            "runs/x/adapter",
            None,
        ),
        (
            "hf:meta-llama/Meta-Llama-3-8B-Instruct@abc123",
            "hf",
            "meta-llama/Meta-Llama-3-8B-Instruct",
            "abc123",
            None,
            None,
        ),
        (
            "hf:./runs/x/base+adapter=./runs/x/distill/adapter",
            "hf",
            "./runs/x/base",
            None,
            "./runs/x/distill/adapter",
            None,
        ),
        ("hf:/models/with@sign", "hf", "/models/with@sign", None, None, None),
        (
            "openai:deepseek-chat@https://api.deepseek.com/v1",
            "openai",
            "deepseek-chat",
            None,
            None,
            "https://api.deepseek.com/v1",
        ),
        ("dummy", "dummy", "mixed", None, None, None),
        ("dummy:no", "dummy", "no", None, None, None),
    ],
)
def test_spec_grammar(spec, kind, model, revision, adapter, url):
    s = parse_spec(spec)
    assert (s.kind, s.model, s.revision, s.adapter, s.base_url) == (kind, model, revision, adapter, url)
    assert parse_spec(str(s)) == s


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "gpt4",
        "hf:",
        "openai:deepseek-chat",
        "openai:m@ftp://x",
        "dummy:maybe",
        "embedded+adapter=",
        "openai:m@http://x+adapter=a",
    ],
)
def test_bad_specs_rejected(spec):
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_yaml_config_with_overrides(tmp_path):
    f = tmp_path / "eval.yaml"
    f.write_text("model: dummy:yes\ndata: d\nout: o\ndecoding:\n  max_new_tokens: 64\n")
    cfg = load_config(EvalConfig, f, {"decoding.seed": 7, "limit": None, "split": "val"})
    assert cfg.model == "dummy:yes" and cfg.split == "val"
    assert cfg.decoding.max_new_tokens == 64 and cfg.decoding.seed == 7
    assert cfg.limit is None


@pytest.mark.parametrize(
    "yaml_text, needle",
    [
        ("data: d\nout: o\nmodle: embedded\n", "unknown key 'modle'"),
        ("data: d\nout: o\ndecoding:\n  max_new_token: 5\n", "unknown key 'decoding.max_new_token'"),
        ("data: d\nout: o\ndecoding:\n  temperature: -1\n", "'decoding.temperature'"),
        ("data: d\nout: o\nmodel: gpt4\n", "gpt4"),
        ("out: o\n", "missing required key 'data'"),
        ("- a\n- b\n", "mapping"),
        ("data: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, yaml_text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(EvalConfig, f)
    assert needle in str(err.value)
    assert str(f) in str(err.value)


def test_sampling_fields_only_matter_when_sampling():
    greedy_a, greedy_b = DecodingConfig(seed=1), DecodingConfig(seed=2, top_p=0.5)
    assert greedy_a.cache_fields() == greedy_b.cache_fields()
    assert (
        DecodingConfig(temperature=0.7, seed=1).cache_fields()
        != DecodingConfig(temperature=0.7, seed=2).cache_fields()
    )
