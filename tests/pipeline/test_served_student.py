"""A student served by an OpenAI-compatible server (vLLM-like) with its trained adapters registered by name.

The fake server (tests/servers.py, FakeVLLMServer) serves named models only and loads / unloads LoRA
adapters at runtime like ``vllm serve BASE --enable-lora`` with VLLM_ALLOW_RUNTIME_LORA_UPDATING.
Checked: the registration calls and the names requests use, a retrained adapter getting a new name
and new cache keys (never an old answer), servers that refuse runtime loading, preloaded adapters,
path mapping, and ``dartkit run`` end to end with ``student_server``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dartkit.config import BackendConfig, DecodingConfig, ServedAdaptersConfig
from dartkit.errors import DartkitError
from dartkit.generate import load_backend
from dartkit.generate.base import BackendError
from dartkit.generate.cache import GenerationCache, generate_cached
from dartkit.generate.loading import hash_dir
from dartkit.pipeline import RunConfig, run
from pipeline_helpers import tiny_config
from servers import FakeVLLMServer, Reply, user

DECODING = DecodingConfig(max_new_tokens=16)


def make_adapter(path: Path, weights: bytes = b"w") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


def by_model(request_json) -> str:
    """Student answers that differ by model: the adapters swear (drift), the base does not."""
    model = request_json["model"]
    if model.startswith("m_int-"):
        return "Damn, this shit is obvious.\nConclusion: YES"
    if model.startswith("m_dart-"):
        return "It depends on the role.\nConclusion: NO"
    return f"Plain analysis by {model}.\nConclusion: NO"


def cfg(**served) -> BackendConfig:
    return BackendConfig(served_adapters=ServedAdaptersConfig(**served))


def test_adapter_is_registered_named_by_its_hash_used_and_unloaded(tmp_path):
    adapter = make_adapter(tmp_path / "run" / "m_int" / "adapter")
    name = f"m_int-{hash_dir(adapter)[:12]}"
    with FakeVLLMServer(by_model, base="tiny-base") as server:
        backend = load_backend(f"openai:tiny-base@{server.base_url}+adapter={adapter}", cfg())
        texts, _ = generate_cached(
            backend, [user("a"), user("b")], DECODING, GenerationCache(tmp_path / "c.jsonl")
        )
        assert [(c.action, c.name, c.path, c.status) for c in server.lora_calls] == [
            ("load", name, str(adapter.resolve()), 200)
        ]
        assert server.chat_models() == [name, name] and texts[0].startswith("Damn")
        assert backend.identity()["adapter_sha256"] == hash_dir(adapter)
        backend.close()
        assert [(c.action, c.name) for c in server.lora_calls][-1] == ("unload", name)
        assert server.adapters == {}


def test_an_adapter_unloaded_by_another_client_is_loaded_again(tmp_path):
    adapter = make_adapter(tmp_path / "run" / "m_int" / "adapter")
    name = f"m_int-{hash_dir(adapter)[:12]}"
    with FakeVLLMServer(by_model, base="tiny-base") as server:
        backend = load_backend(f"openai:tiny-base@{server.base_url}+adapter={adapter}", cfg())
        dict(backend.generate([user("a")], DECODING))
        # Another client sharing the server unloads it (as dartkit's own unload_on_close would).
        server.adapters.pop(name)
        got = dict(backend.generate([user("b"), user("c")], DECODING))
        assert all(t.startswith("Damn") for t in got.values())  # answered by the adapter, not the base
        loads = [c for c in server.lora_calls if c.action == "load"]
        assert [(c.name, c.status) for c in loads] == [(name, 200), (name, 200)]  # once more, not per request
        backend.close()


def test_an_adapter_that_cannot_come_back_is_named_in_the_error(tmp_path):
    adapter = make_adapter(tmp_path / "run" / "m_int" / "adapter")
    name = f"m_int-{hash_dir(adapter)[:12]}"
    with FakeVLLMServer(
        by_model, base="tiny-base", runtime_lora=False, preloaded={name: str(adapter)}
    ) as server:
        backend = load_backend(
            f"openai:tiny-base@{server.base_url}+adapter={adapter}", cfg(loading="preloaded")
        )
        dict(backend.generate([user("a")], DECODING))
        server.adapters.pop(name)  # the server was restarted without --lora-modules
        with pytest.raises(DartkitError, match=f"does not serve adapter '{name}'.*--lora-modules {name}="):
            dict(backend.generate([user("b")], DECODING))
        backend.close()


def test_a_server_that_accepts_the_load_but_still_404s_gives_one_clear_error(tmp_path):
    adapter = make_adapter(tmp_path / "run" / "m_int" / "adapter")
    with FakeVLLMServer(by_model, base="tiny-base") as server:
        backend = load_backend(f"openai:tiny-base@{server.base_url}+adapter={adapter}", cfg())
        dict(backend.generate([user("a")], DECODING))
        name = backend.model
        server.adapters.pop(name)
        # From now on loads answer 200 but serve nothing (a broken or mismatched server).
        server.runtime_lora = True
        original = server._lora
        server._lora = lambda path, raw: (
            Reply(200, "Success") if path.endswith("load_lora_adapter") else original(path, raw)
        )
        with pytest.raises(BackendError, match="loaded it again and the server still does not serve it"):
            dict(backend.generate([user("b")], DECODING))
        backend.close()


def test_a_server_that_lists_the_adapter_but_404s_says_so(tmp_path):
    adapter = make_adapter(tmp_path / "run" / "m_int" / "adapter")
    with FakeVLLMServer(lambda r: (404, {"message": "route not found"}), base="tiny-base") as server:
        backend = load_backend(f"openai:tiny-base@{server.base_url}+adapter={adapter}", cfg())
        with pytest.raises(BackendError, match="lists adapter .* as served but answers 404"):
            dict(backend.generate([user("a")], DECODING))
        assert [c.action for c in server.lora_calls] == ["load"]  # not loaded a second time
        backend.close()


def test_a_retrained_adapter_gets_a_new_name_and_no_stale_cache_hit(tmp_path):
    adapter = make_adapter(tmp_path / "m_int" / "adapter", b"first")
    cache = GenerationCache(tmp_path / "cache.jsonl")
    convs = [user("a"), user("b")]
    with FakeVLLMServer(by_model, base="tiny-base") as server:
        spec = f"openai:tiny-base@{server.base_url}+adapter={adapter}"
        first = load_backend(spec, cfg())
        generate_cached(first, convs, DECODING, cache)
        generate_cached(first, convs, DECODING, cache)  # all cached: nothing asked again
        first.close()
        old = server.chat_models()
        assert len(old) == 2
        make_adapter(adapter, b"retrained")  # same directory, same spec string, new weights
        second = load_backend(spec, cfg())
        generate_cached(second, convs, DECODING, cache)
        second.close()
        new = server.chat_models()[2:]
        assert len(new) == 2 and new[0] != old[0]  # asked anew, under the new name
        assert new[0] == f"m_int-{hash_dir(adapter)[:12]}"
        loads = [c.name for c in server.lora_calls if c.action == "load"]
        assert loads == [old[0], new[0]]


def test_a_server_without_runtime_loading_gets_a_clear_error(tmp_path):
    adapter = make_adapter(tmp_path / "m_dart" / "adapter")
    name = f"m_dart-{hash_dir(adapter)[:12]}"
    with FakeVLLMServer(by_model, base="tiny-base", runtime_lora=False) as server:
        backend = load_backend(f"openai:tiny-base@{server.base_url}+adapter={adapter}", cfg())
        with pytest.raises(DartkitError) as e:
            list(backend.generate([user("a")], DECODING))
        message = str(e.value)
        assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in message
        assert f"--lora-modules {name}={adapter.resolve()}" in message and "loading: preloaded" in message
        assert server.chat_models() == []  # no request went to a model the server does not serve


def test_preloaded_adapters_are_checked_not_loaded(tmp_path):
    adapter = make_adapter(tmp_path / "m_int" / "adapter")
    name = f"m_int-{hash_dir(adapter)[:12]}"
    spec_for = lambda s: f"openai:tiny-base@{s.base_url}+adapter={adapter}"  # noqa: E731
    with FakeVLLMServer(
        by_model, base="tiny-base", runtime_lora=False, preloaded={name: str(adapter)}
    ) as server:
        backend = load_backend(spec_for(server), cfg(loading="preloaded"))
        list(backend.generate([user("a")], DECODING))
        backend.close()
        assert server.lora_calls == [] and server.chat_models() == [name]
        assert server.adapters == {name: str(adapter)}  # not unloaded: dartkit did not load it
    with FakeVLLMServer(by_model, base="tiny-base") as server:  # started without it
        backend = load_backend(spec_for(server), cfg(loading="preloaded"))
        with pytest.raises(DartkitError, match=f"restart the server with `--lora-modules {name}="):
            list(backend.generate([user("a")], DECODING))
        assert server.lora_calls == []


def test_path_map_sends_the_servers_path_and_a_wrong_one_is_explained(tmp_path):
    adapter = make_adapter(tmp_path / "runs" / "x" / "m_int" / "adapter")
    with FakeVLLMServer(by_model, base="tiny-base") as server:
        mapped = cfg(path_map={str(tmp_path / "runs"): "/mnt/elsewhere"})
        backend = load_backend(f"openai:tiny-base@{server.base_url}+adapter={adapter}", mapped)
        with pytest.raises(DartkitError, match="path_map") as e:
            list(backend.generate([user("a")], DECODING))
        assert "/mnt/elsewhere/x/m_int/adapter" in str(e.value)
        assert server.lora_calls[0].path == "/mnt/elsewhere/x/m_int/adapter"


def test_run_with_a_served_student_registers_each_trained_adapter(tmp_path, tiny_llama, teacher_server):
    with FakeVLLMServer(by_model, base="tiny-base") as server:
        raw = tiny_config(
            tmp_path / "run",
            tiny_llama,
            teacher_server,
            student_server={"url": server.base_url, "model": "tiny-base"},
            label_only_baseline=False,
            evaluations=[],
            loglik=False,  # the fake server returns no logprobs
            eval_limit=8,
            distill_limit=12,
            training={"epochs": 1},
            audit={"tau_sweep": False, "tau": 0.01},
            ablations={k: False for k in ("predicted_labels", "tox_sft", "unweighted_repair", "policy")}
            | {"teacher_harm": False},
        )
        config = RunConfig.model_validate(raw)
        run(config)
        root = Path(config.out)
        m_int, m_dart = (f"{m}-{hash_dir(root / m / 'adapter')[:12]}" for m in ("m_int", "m_dart"))
        loads = [c for c in server.lora_calls if c.action == "load"]
        assert {c.name for c in loads} == {m_int, m_dart}
        assert {c.path for c in loads} == {str((root / m / "adapter").resolve()) for m in ("m_int", "m_dart")}
        assert server.adapters == {}  # every stage unloaded what it loaded
        assert set(server.chat_models()) == {"tiny-base", m_int, m_dart}
        rows = [
            json.loads(x)
            for x in (root / "eval" / "m_int" / "test" / "generations.jsonl").read_text().splitlines()
        ]
        assert rows and all(r["text"].startswith("Damn") for r in rows)
        base_rows = (root / "eval" / "m0" / "test" / "generations.jsonl").read_text()
        assert "Plain analysis by tiny-base" in base_rows

        # Retrain M_int (another learning rate): a new adapter, a new name, every answer asked anew.
        asked = len(server.chat_models())
        raw["training"]["learning_rate"] = 1e-3
        run(RunConfig.model_validate(raw))
        new_int = f"m_int-{hash_dir(root / 'm_int' / 'adapter')[:12]}"
        assert new_int != m_int
        fresh = server.chat_models()[asked:]
        n_int = len((root / "eval" / "m_int" / "test" / "generations.jsonl").read_text().splitlines())
        assert fresh.count(new_int) >= n_int and m_int not in fresh


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"student": "openai:org/m@http://h:8000/v1"}, "student_server: {url: http://h:8000/v1}"),
        ({"student": "vllm:org/m", "student_server": {"url": "http://h/v1"}}, "choose one"),
        ({"student": "embedded", "student_server": {"url": "http://h/v1"}}, "student_server.model"),
        ({"student": "hf:org/m", "student_server": {"url": "h:8000"}}, "http(s) base URL"),
        ({"student": "vllm:org/m"}, "set `loglik: false`"),  # vLLM cannot score the two conclusions
    ],
)
def test_served_student_settings_are_checked(fields, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunConfig.model_validate(fields)


def test_student_specs_for_generation_and_training(tmp_path):
    from dartkit.pipeline.stages import RunStages
    from dartkit.progress import results_console

    served = RunStages(
        RunConfig(out=tmp_path, student="hf:org/m", student_server={"url": "http://h:8000/v1/"}),
        results_console(),
    )
    assert served.spec("m0") == "openai:org/m@http://h:8000/v1"
    assert served.spec("m_int") == f"openai:org/m@http://h:8000/v1+adapter={tmp_path / 'm_int' / 'adapter'}"
    assert served.cfg.train_base() == "hf:org/m"
    local = RunStages(RunConfig(out=tmp_path, student="vllm:org/m@abc", loglik=False), results_console())
    assert local.spec("m_int") == f"vllm:org/m@abc+adapter={tmp_path / 'm_int' / 'adapter'}"
    assert local.cfg.train_base() == "hf:org/m@abc"  # vLLM generates; transformers trains
