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
        ("vllm:org/m@abc+adapter=runs/x/adapter", "vllm", "org/m", "abc", "runs/x/adapter", None),
        ("vllm:/models/with@sign", "vllm", "/models/with@sign", None, None, None),
        # A LoRA adapter served on top of a remote model (registered with the server by name).
        ("openai:m@http://x/v1+adapter=runs/a", "openai", "m", None, "runs/a", "http://x/v1"),
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
        "vllm:",
        "dummy:yes+adapter=runs/x/adapter",
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
        ("data: d\nout: o\nmodle: embedded\n", "modle: unknown key (did you mean model?)"),
        (
            "data: d\nout: o\ndecoding:\n  max_new_token: 5\n",
            "decoding.max_new_token: unknown key (did you mean decoding.max_new_tokens?)",
        ),
        (
            "data: d\nout: o\ndecoding:\n  temperature: -1\n",
            "decoding.temperature: input should be greater than or equal to 0 (got -1)",
        ),
        ("data: d\nout: o\nmodel: gpt4\n", "gpt4"),
        ("out: o\n", "data: missing required key"),
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


def test_an_adapter_on_the_dummy_model_is_refused_not_ignored():
    with pytest.raises(
        SpecError, match=r"'dummy:yes\+adapter=runs/x': the dummy model .* takes no \+adapter="
    ):
        parse_spec("dummy:yes+adapter=runs/x")


def _error(model, tmp_path, yaml_text=None, overrides=None, flags=None) -> str:
    path = None
    if yaml_text is not None:
        path = tmp_path / "c.yaml"
        path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(model, path, overrides, flags)
    return str(err.value)


def test_nested_unknown_keys_are_dotted_with_a_near_miss_and_no_pydantic_wording(tmp_path):
    from dartkit.pipeline.config import RunConfig

    msg = _error(RunConfig, tmp_path, "training: {epoch: 3, lr: 0.1}\n")
    assert msg == (
        f"{tmp_path / 'c.yaml'}: training.epoch: unknown key (did you mean training.epochs?); "
        "training.lr: unknown key (did you mean training.learning_rate?)"
    )
    # A key put at the wrong level is found where it belongs; repair.training gets its full key too.
    assert "epochs: unknown key (did you mean training.epochs?)" in _error(RunConfig, tmp_path, "epochs: 3\n")
    msg = _error(RunConfig, tmp_path, "repair: {training: {base: x}}\n")
    assert msg.endswith("repair.training.base: set by the repair stage; remove it")
    assert "Value error" not in msg and "(root)" not in msg


def test_rules_between_keys_speak_flags_to_flag_users_and_keys_to_file_users(tmp_path):
    from dartkit.config import AuditConfig, cli_flags

    overrides = {"baseline_generations": None, "candidate_generations": "c.jsonl", "out": "o", "null": None}
    msg = _error(AuditConfig, tmp_path, None, overrides, cli_flags(overrides))
    assert msg == "--candidate-generations needs --baseline-generations too"
    msg = _error(
        AuditConfig, tmp_path, "candidate_generations: c.jsonl\nout: o\n", {"null": None}, {"null": "--null"}
    )
    assert msg == f"{tmp_path / 'c.yaml'}: candidate_generations needs baseline_generations too"
    # A required key: the flag when it can only have come from one, else the key (and the flag to use).
    overrides = {"data": "d", "out": None}
    assert _error(EvalConfig, tmp_path, None, overrides, cli_flags(overrides)) == "missing --out"
    assert _error(EvalConfig, tmp_path, "data: d\n", overrides, cli_flags(overrides)).endswith(
        "out: missing required key (or pass --out)"
    )


def test_one_default_answer_length_for_eval_audit_and_run():
    from dartkit.config import DEFAULT_MAX_NEW_TOKENS, AuditConfig
    from dartkit.pipeline.config import RunConfig

    eval_cfg = EvalConfig(data="d", out="o")
    audit_cfg = AuditConfig(out="o", baseline="dummy", candidate="dummy:no", data="d")
    assert eval_cfg.decoding == RunConfig().decoding == audit_cfg.decoding
    assert eval_cfg.decoding.max_new_tokens == DEFAULT_MAX_NEW_TOKENS == 96  # the pipeline's, as shipped


def test_one_default_teacher_answer_length_for_distill_repair_and_run():
    """A standalone distill or repair asks the teacher for as many tokens as the pipeline (was 160 vs 96)."""
    from dartkit.config import DistillConfig, RepairConfig
    from dartkit.pipeline.config import RunConfig

    distill = DistillConfig(data="d", out="o")
    repair = RepairConfig(drift="x.jsonl", data="d", out="o", train=False)
    assert distill.decoding == repair.decoding == RunConfig().teacher_decoding


def test_bare_yaml_on_and_off_are_the_words(tmp_path):
    # YAML 1.1 reads an unquoted on/off as true/false; a config that says `policy: on` means 'on'.
    f = tmp_path / "c.yaml"
    f.write_text("data: d\nout: o\nmodel: dummy\npolicy: on\nbackend:\n  structured_output: off\n")
    cfg = load_config(EvalConfig, f)
    assert (cfg.policy, cfg.backend.structured_output) == ("on", "off")
    f.write_text("data: d\nout: o\nmodel: dummy\npolicy: yes please\n")
    with pytest.raises(ConfigError, match="policy"):
        load_config(EvalConfig, f)
