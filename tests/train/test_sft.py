"""The trainer end to end on a tiny random llama: resume, skip, adapter identity, init adapter, weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import demo_records, run_killed_after, save_tiny_llama, write_records

from dartkit.errors import DartkitError, DataError
from dartkit.generate.adapters import ADAPTER_META
from dartkit.train import TrainConfig, run


def config(tiny_llama, data, out, **kw) -> TrainConfig:
    settings = dict(
        base=f"hf:{tiny_llama}",
        data=[data],
        out=out,
        per_device_batch_size=2,
        grad_accum=2,
        lora_r=4,
        save_every=2,
    )
    return TrainConfig(**{**settings, **kw})


def adapter_weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def log_rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture()
def data(tmp_path):
    return write_records(tmp_path / "records.jsonl", demo_records(10))


def test_resumed_run_ends_with_the_same_adapter(tiny_llama, data, tmp_path):
    # 10 examples, 4 per step: 3 steps per epoch, 2 epochs; dropout on, so the RNG must be restored too.
    straight = run(config(tiny_llama, data, tmp_path / "straight", epochs=2))
    assert straight["steps"] == 6

    interrupted = config(tiny_llama, data, tmp_path / "resumed", epochs=2)
    run_killed_after(interrupted, 3)
    assert not (tmp_path / "resumed" / "adapter").exists()
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step-2"]

    resumed = run(interrupted)  # the same command again
    assert resumed["resumed_from_step"] == 2
    a, b = adapter_weights(tmp_path / "straight"), adapter_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) == 2 * 7 * 2  # (A, B) x 7 projections x 2 layers
    for name in a:
        torch.testing.assert_close(b[name], a[name], msg=name)
    # The log holds each step once, with the uninterrupted run's losses.
    assert [r["step"] for r in log_rows(tmp_path / "resumed")] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log_rows(tmp_path / "resumed")] == pytest.approx(
        [r["loss"] for r in log_rows(tmp_path / "straight")], rel=1e-5
    )
    # Only the newest two checkpoints are kept.
    assert sorted(p.name for p in (tmp_path / "straight" / "checkpoints").iterdir()) == ["step-2", "step-4"]


def test_finished_run_is_skipped_and_a_changed_run_is_refused(tiny_llama, data, tmp_path):
    cfg = config(tiny_llama, data, tmp_path / "out", max_steps=2)
    first = run(cfg)
    again = run(cfg)
    assert again["skipped"] is True
    assert again["final_loss"] == first["final_loss"]
    # Checkpoint cadence does not change the weights, so it does not invalidate the run.
    assert run(cfg.model_copy(update={"save_every": 7}))["skipped"] is True
    with pytest.raises(DartkitError, match="different config"):
        run(cfg.model_copy(update={"learning_rate": 1e-3}))


def test_resuming_with_another_process_count_is_refused_and_says_why(tiny_llama, data, tmp_path, monkeypatch):
    from accelerate import Accelerator

    cfg = config(tiny_llama, data, tmp_path / "out", epochs=2)
    run_killed_after(cfg, 2)
    assert (tmp_path / "out" / "checkpoints" / "step-2").is_dir()
    # The same command under a 2-process launch: another global batch and data split per process.
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    with pytest.raises(DartkitError, match=r"1 process\(es\) \(this run has 2\).*run again with 1 process"):
        run(cfg)
    # A finished adapter is not taken for the 2-process run's either.
    monkeypatch.undo()
    run(cfg)
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    with pytest.raises(DartkitError, match=r"trained by a run with 1 process\(es\) \(this run has 2\)"):
        run(cfg)


def test_adapter_metadata_names_the_base_and_the_run(tiny_llama, data, tmp_path):
    from dartkit.generate.loading import model_location
    from dartkit.generate.spec import parse_spec
    from dartkit.train.data import data_sha256, load_training_records

    run(config(tiny_llama, data, tmp_path / "out", max_steps=2))
    adapter = tmp_path / "out" / "adapter"
    meta = json.loads((adapter / ADAPTER_META).read_text())
    _, identity = model_location(parse_spec(f"hf:{tiny_llama}"))
    assert meta["base"] == {
        k: identity[k] for k in ("model", "revision", "weights_sha256", "chat_template_sha256")
    }
    assert meta["setup"] == {"processes": 1, "base_dtype": "float32"}
    assert meta["data_sha256"] == data_sha256(load_training_records([data]))
    assert meta["num_examples"] == 10
    assert meta["weighting"] == "loss"
    assert meta["train_config"]["lora_r"] == 4
    assert meta["lora"]["r"] == 4 and "gate_proj" in meta["lora"]["target_modules"]
    assert isinstance(meta["final_loss"], float)
    assert meta["dartkit_version"]
    assert "dartkit LoRA adapter" in (adapter / "README.md").read_text()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and 0 <= metrics["padding_fraction"] < 1 and metrics["tokens_per_s"] > 0


def test_adapter_is_refused_on_another_base(tiny_llama, data, tmp_path):
    from dartkit.config import BackendConfig
    from dartkit.generate.hf import load_model_and_tokenizer
    from dartkit.generate.spec import parse_spec

    base = shutil.copytree(tiny_llama, tmp_path / "tiny")
    run(config(base, data, tmp_path / "out", max_steps=3, learning_rate=1e-2))
    adapter = tmp_path / "out" / "adapter"
    cpu = BackendConfig(device="cpu")

    # Same base: loads, and the adapter is folded into the weights (generation runs the plain model)...
    model, _, identity = load_model_and_tokenizer(parse_spec(f"hf:{base}+adapter={adapter}"), cpu)
    assert "adapter_sha256" in identity and not hasattr(model, "peft_config")
    # ... which computes what base + adapter computes.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    with torch.inference_mode():
        plain = AutoModelForCausalLM.from_pretrained(base).eval()(ids).logits
        assert torch.allclose(model(ids).logits, unmerged(ids).logits, atol=1e-5)
        assert not torch.allclose(model(ids).logits, plain, atol=1e-4)  # the adapter did change something
    # The embedded model is another base.
    with pytest.raises(DartkitError, match=r"trained on base model=.*tiny.*embedded:SmolLM2"):
        load_model_and_tokenizer(parse_spec(f"embedded+adapter={adapter}"), cpu)
    # Same path, different weights.
    save_tiny_llama(base, seed=1)
    with pytest.raises(DartkitError, match="weights_sha256"):
        load_model_and_tokenizer(parse_spec(f"hf:{base}+adapter={adapter}"), cpu)


def test_init_adapter_continues_from_its_weights(tiny_llama, data, tmp_path):
    run(config(tiny_llama, data, tmp_path / "first", max_steps=3, learning_rate=1e-2))
    first = adapter_weights(tmp_path / "first")
    # A tiny learning rate: the continued adapter must stay next to the first one, which a fresh
    # LoRA (B = 0, A random) would not be. Its own r=4 wins over the config's default 16.
    cont = config(
        tiny_llama,
        data,
        tmp_path / "second",
        max_steps=1,
        learning_rate=1e-7,
        warmup_ratio=0.0,
        lora_r=16,
        init_adapter=tmp_path / "first" / "adapter",
    )
    run(cont)
    second = adapter_weights(tmp_path / "second")
    assert second.keys() == first.keys()
    for name in first:
        assert first[name].abs().max() > 1e-3  # the first run moved away from zero
        torch.testing.assert_close(second[name], first[name], rtol=0, atol=1e-5, msg=name)
    assert any(not torch.equal(second[n], first[n]) for n in first)  # and it did train
    meta = json.loads((tmp_path / "second" / "adapter" / ADAPTER_META).read_text())
    assert meta["lora"]["r"] == 4
    assert meta["init_adapter"]["path"] == str(tmp_path / "first" / "adapter")
    assert len(meta["init_adapter"]["sha256"]) == 64


def test_oversample_mode_repeats_examples(tiny_llama, tmp_path):
    records = demo_records(4)
    rows = [
        {**r.model_dump(exclude={"source", "weight"}), "severity_weight": w}
        for r, w in zip(records, [1, 3, 1, 2], strict=True)
    ]
    (tmp_path / "w.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(
        tiny_llama,
        tmp_path / "w.jsonl",
        tmp_path / "out",
        weights_from="severity_weight",
        weighting="oversample",
    )
    metrics = run(cfg.model_copy(update={"max_steps": 1}))
    assert metrics["examples"] == 4 and metrics["trained_examples"] == 7
    meta = json.loads((tmp_path / "out" / "adapter" / ADAPTER_META).read_text())
    assert meta["weighting"] == "oversample" and meta["weights_from"] == "severity_weight"

    rows[1]["severity_weight"] = 1.5
    (tmp_path / "w.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"w\.jsonl:2: weight 1.5 is not a whole number"):
        run(cfg.model_copy(update={"out": tmp_path / "out2"}))
