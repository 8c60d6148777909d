"""`dartkit push`: an adapter reaches a (fake, local) Hub with PEFT's card front matter and the run summary."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dartkit import __version__
from dartkit.cli import app
from dartkit.errors import DartkitError
from dartkit.generate.embedded import EMBEDDED_HUB_ID
from dartkit.share.push import hub_base_model, run_adapter
from servers import FakeHubServer
from share_helpers import as_embedded, build_run, hub_online

TOKEN = "hf_secretTOKEN0123456789"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_llama) -> Path:
    return build_run(tmp_path_factory.mktemp("run"), tiny_llama)


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory, tiny_run) -> Path:
    from dartkit.generate.embedded import embedded_model_dir

    return as_embedded(tiny_run, tmp_path_factory.mktemp("embedded") / "run", embedded_model_dir())


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    with FakeHubServer(token=TOKEN) as server, hub_online(monkeypatch, server, TOKEN, tmp_path):
        yield server


def push(*args: str):
    return runner.invoke(app, ["push", *map(str, args)], prog_name="dartkit")


def front_matter(readme: bytes) -> dict:
    text = readme.decode("utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_push_sends_peft_card_identical_adapter_and_run_summary(hub, embedded_run):
    res = push(embedded_run, "--to", "my-org/smollm2-dart")
    assert res.exit_code == 0, res.output
    repo = hub.repos[("model", "my-org/smollm2-dart")]
    assert not repo.private and repo.commits == [
        f"dartkit {__version__}: DART (M_DART) adapter of {EMBEDDED_HUB_ID}"
    ]
    sent = hub.files("my-org/smollm2-dart")
    adapter = embedded_run / "m_dart" / "adapter"
    assert sorted(sent) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "dartkit_adapter.json",
        "dartkit_run.json",
    ]

    # The card's front matter is PEFT's, with the embedded model's Hub id as the base.
    meta = front_matter(sent["README.md"])
    assert meta["library_name"] == "peft"
    assert meta["base_model"] == EMBEDDED_HUB_ID
    assert f"base_model:adapter:{EMBEDDED_HUB_ID}" in meta["tags"]
    card = sent["README.md"].decode()
    assert "# dartkit LoRA adapter" in card  # dartkit's own card body is kept
    # Accuracy with its split and items; M0's beside it on the same items, with its interval.
    assert (
        "| test | 8 | 62.5% [37.5%, 87.5%] | 62.5% of 4 | 62.5% of 4 | 12.5% | 25.0% [0.0%, 50.0%] | 12.5% |"
        in card
    )
    assert "| `audit/m_dart` | test split | test | 8 | 0.01 | 1 | 2 | 12.5% [0.0%, 50.0%] |" in card
    assert "quantised GGUF" in card  # the embedded weights are not the Hub's full-precision ones

    # The weights byte for byte; adapter_config.json names the Hub base instead of a cache path;
    # dartkit_adapter.json is the same record with paths relative to the run.
    assert sent["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    local_meta = json.loads((adapter / "dartkit_adapter.json").read_text())
    sent_meta = json.loads(sent["dartkit_adapter.json"])
    assert sent_meta.keys() == local_meta.keys()
    for key in ("base", "base_spec", "data_sha256", "lora", "fingerprint", "steps", "final_loss"):
        assert sent_meta[key] == local_meta[key], key
    local_config = json.loads((adapter / "adapter_config.json").read_text())
    sent_config = json.loads(sent["adapter_config.json"])
    assert sent_config["base_model_name_or_path"] == EMBEDDED_HUB_ID
    assert {**sent_config, "base_model_name_or_path": None} == {
        **local_config,
        "base_model_name_or_path": None,
    }

    summary = json.loads(sent["dartkit_run.json"])
    assert summary["model"] == "m_dart" and summary["protocol"] == "heldout"
    assert "local_base_model_name_or_path" not in summary["adapter"]  # a cache path means nothing there
    assert summary["adapter"]["path"] == "m_dart/adapter"
    test_eval = summary["evaluation"][0]
    assert (test_eval["split"], test_eval["items"], test_eval["accuracy"]) == ("test", 8, 0.625)
    assert test_eval["m0"]["accuracy"] == 0.25
    assert [(d["audit"], d["split"], d["items"], d["n_drift"], d["n_mirror"]) for d in summary["drift"]] == [
        ("audit/m_dart", "test", 8, 1, 2),
        ("audit/m_dart_audit", "audit", 8, 2, 3),
    ]
    assert summary["drift_reduction"]["split"] == "test (held out)"
    assert summary["drift_reduction"]["n_items"] == 8
    assert summary["versions"]["packages"]["peft"]  # from the training directory's manifest.json
    assert summary["training"]["weights_from"] == "severity_weight"

    # The token went as a header and nowhere else.
    # Every write carries the token (huggingface_hub 2.x also makes an unauthenticated GET of its own).
    writes = [r for r in hub.requests if r.method == "POST"]
    assert writes and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in writes)
    assert TOKEN not in res.output
    assert all(TOKEN.encode() not in data for data in sent.values())
    assert all(TOKEN.encode() not in p.read_bytes() for p in files_under(embedded_run))
    pushes = [json.loads(line) for line in (embedded_run / "hub" / "pushes.jsonl").read_text().splitlines()]
    assert pushes[-1]["repo_id"] == "my-org/smollm2-dart" and pushes[-1]["model"] == "m_dart"
    assert "my-org/smollm2-dart" in res.output


def test_m_int_on_a_branch_of_a_private_repository(hub, embedded_run):
    res = push(embedded_run, "--to", "my-org/x", "--model", "m_int", "--branch", "stage-1", "--private")
    assert res.exit_code == 0, res.output
    repo = hub.repos[("model", "my-org/x")]
    assert repo.private
    assert repo.branches["main"] == {}  # the commit went to the branch only
    sent = repo.branches["stage-1"]
    adapter = embedded_run / "m_int" / "adapter"
    assert sent["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
    assert json.loads(sent["dartkit_run.json"])["model"] == "m_int"
    assert json.loads(sent["dartkit_run.json"])["drift_reduction"] is None  # the headline belongs to M_DART

    # Pushing again updates the same repository (create_repo answers 409, which is fine).
    again = push(embedded_run, "--to", "my-org/x", "--model", "m_int", "--commit-message", "second")
    assert again.exit_code == 0, again.output
    assert repo.commits[-1] == "second"


def test_a_bare_peft_adapter_on_the_embedded_model_maps_to_the_hub_id(hub, embedded_run, tmp_path):
    # An adapter directory outside any run, without dartkit's metadata: PEFT's base path decides.
    bare = tmp_path / "adapter"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (bare / name).write_bytes((embedded_run / "m_int" / "adapter" / name).read_bytes())
    res = push(bare, "--to", "someone/bare")
    assert res.exit_code == 0, res.output
    sent = hub.files("someone/bare")
    assert front_matter(sent["README.md"])["base_model"] == EMBEDDED_HUB_ID
    assert json.loads(sent["dartkit_run.json"])["model"] is None


def test_dry_run_prints_card_and_files_and_sends_nothing(hub, embedded_run, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # a dry run needs no token
    res = push(embedded_run, "--to", "my-org/y", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "library_name: peft" in res.output and f"base_model: {EMBEDDED_HUB_ID}" in res.output
    assert "adapter_model.safetensors" in res.output and "dartkit_run.json" in res.output
    assert "nothing uploaded" in res.output
    assert hub.requests == []


def test_without_a_token_push_refuses_in_one_line(hub, embedded_run, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    res = push(embedded_run, "--to", "my-org/z")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: no Hugging Face token")
    assert "HF_TOKEN" in res.stderr
    assert hub.requests == []


def test_a_token_the_hub_refuses_is_one_line_and_never_shown(hub, embedded_run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongTOKENabcdef")
    res = push(embedded_run, "--to", "my-org/z")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "HTTP 401" in res.stderr and "write access to my-org" in res.stderr
    assert "hf_wrongTOKENabcdef" not in res.output + res.stderr


def test_offline_mode_refuses_before_any_request(hub, embedded_run, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = push(embedded_run, "--to", "my-org/z")
    assert res.exit_code == 2 and "HF_HUB_OFFLINE is set" in res.stderr
    assert hub.requests == []


def test_unknown_model_and_missing_adapter_name_what_there_is(hub, embedded_run):
    res = push(embedded_run, "--to", "my-org/z", "--model", "m_final")
    assert res.exit_code == 2
    assert "unknown model" in res.stderr and "m_int" in res.stderr and "m_dart" in res.stderr
    res = push(embedded_run, "--to", "my-org/z", "--model", "label_only")
    assert res.exit_code == 2
    assert "no label-only SFT adapter" in res.stderr and "adapters in this run: m_int, m_dart" in res.stderr
    assert hub.requests == []


def test_m_dart_that_is_m_int_unchanged_is_refused(tmp_path, tiny_run):
    run = tmp_path / "run"
    (run / "m_dart").mkdir(parents=True)
    (run / "run_config.yaml").write_text("protocol: heldout\n")
    (run / "m_dart" / "SAME_AS_M_INT").write_text("no repair example was accepted\n")
    with pytest.raises(DartkitError, match="M_int unchanged.*push --model m_int"):
        run_adapter(run, "m_dart")


def test_a_local_base_needs_base_model(hub, tiny_run):
    # The tiny run's student is hf:<a local directory>: no Hub id is known for it.
    res = push(tiny_run, "--to", "my-org/local")
    assert res.exit_code == 2
    assert "has no known Hub id" in res.stderr and "--base-model ORG/NAME" in res.stderr
    assert hub.requests == []
    res = push(tiny_run, "--to", "my-org/local", "--base-model", "my-org/tiny-llama")
    assert res.exit_code == 0, res.output
    assert front_matter(hub.files("my-org/local")["README.md"])["base_model"] == "my-org/tiny-llama"


def test_hub_ids_of_specs():
    adapter = Path("unused")
    assert hub_base_model(adapter, "org/base") == ("org/base", "given with --base-model")
    with pytest.raises(DartkitError, match="--base-model"):
        hub_base_model(adapter, "not a repo id")


def test_hf_hub_spec_maps_to_its_id(tmp_path, tiny_run):
    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/some/where"}))
    (adapter / "dartkit_adapter.json").write_text(
        json.dumps({"base_spec": "hf:meta-llama/Meta-Llama-3-8B@abc"})
    )
    assert hub_base_model(adapter)[0] == "meta-llama/Meta-Llama-3-8B"
    # A PEFT adapter naming a Hub id (not a path) keeps it.
    (adapter / "dartkit_adapter.json").unlink()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    assert hub_base_model(adapter)[0] == "org/base"


# An absolute path (or ~/...) where a card or a JSON value would show one: after a space, a quote,
# a backtick, "=", "(" or ":" (as in `hf:/models/x`), but not a URL's "//".
ABSOLUTE_PATH = re.compile(r"(?<![^\s`'\"(=:,\[])(?:~/|/(?=[^\s/]))[^\s`'\"|),\]]*")


def local_paths(sent: dict[str, bytes]) -> dict[str, list[str]]:
    """Absolute paths and the home directory in every text file that was sent, by file."""
    found = {}
    for name, data in sent.items():
        if name.endswith(".safetensors"):
            continue
        text = data.decode("utf-8")
        hits = ABSOLUTE_PATH.findall(text) + [h for h in (str(Path.home()),) if h in text]
        if hits:
            found[name] = hits
    return found


def test_every_audit_of_the_model_against_m0_is_listed_the_val_sweep_labelled(hub, embedded_run):
    res = push(embedded_run, "--to", "my-org/int", "--model", "m_int")
    assert res.exit_code == 0, res.output
    sent = hub.files("my-org/int")
    summary = json.loads(sent["dartkit_run.json"])
    # Not audit/null or audit/policy_m0: those audit M0 against itself.
    assert [d["audit"] for d in summary["drift"]] == [
        "audit/m_int",
        "audit/m_int_audit",
        "audit/m_int_val",
        "audit/policy_m_int",
    ]
    rows = [
        (d["audit"], d["kind"], d["split"], d["items"], d["n_drift"], d["n_mirror"]) for d in summary["drift"]
    ]
    assert rows == [
        ("audit/m_int", "test", "test", 8, 3, 4),
        ("audit/m_int_audit", "repair_source", "audit", 8, 3, 4),
        ("audit/m_int_val", "tau_sweep", "val", 4, 1, 2),
        ("audit/policy_m_int", "explanation_policy", "test", 8, 2, 3),
    ]
    card = sent["README.md"].decode()
    assert (
        "| `audit/m_int_val` | τ sweep on the validation split | val | 4 | 0.01 | 1 | 2 | 25.0% [0.0%, 50.0%] |"
        in card
    )
    assert "| `audit/policy_m_int` | test split, explanation policy on (M0 with it too) | test | 8 |" in card
    assert "audit/null" not in card and "policy_m0" not in card


def test_no_local_path_or_home_directory_reaches_the_hub(hub, embedded_run, tiny_run, tmp_path):
    from dartkit.generate.adapters import check_adapter_base

    # M_DART of the embedded run: continued from M_int, trained on files given by absolute path,
    # with the embedded model's cache directory in adapter_config.json.
    res = push(embedded_run, "--to", "my-org/dart")
    assert res.exit_code == 0, res.output
    sent = hub.files("my-org/dart")
    meta = json.loads((embedded_run / "m_dart" / "adapter" / "dartkit_adapter.json").read_text())
    assert Path(meta["train_config"]["out"]).is_absolute()  # the trainer records local paths
    assert local_paths(sent) == {}
    summary = json.loads(sent["dartkit_run.json"])
    init = summary["training"]["init_adapter"]
    assert init == {"path": "m_int/adapter", "sha256": meta["init_adapter"]["sha256"]}
    assert "platform" not in summary["versions"] and summary["versions"]["os"] == platform.system()
    card = sent["README.md"].decode()
    assert f"| continued from | `m_int/adapter` (adapter sha256 `{init['sha256']}`) |" in card
    sent_meta = json.loads(sent["dartkit_adapter.json"])
    assert sent_meta["data_files"] == ["distill/teacher.jsonl", "repair/repair.jsonl"]
    assert (
        sent_meta["train_config"]["prepared"] == "data"
        and sent_meta["init_adapter"]["path"] == "m_int/adapter"
    )
    assert sent_meta["base"] == meta["base"]  # embedded:... with its weights sha256: nothing local in it

    # A base that is a local directory: the Hub id given for it, and the weights' sha256.
    res = push(tiny_run, "--to", "my-org/local-base", "--model", "m_int", "--base-model", "my-org/tiny-llama")
    assert res.exit_code == 0, res.output
    sent = hub.files("my-org/local-base")
    assert local_paths(sent) == {}
    local_meta = json.loads((tiny_run / "m_int" / "adapter" / "dartkit_adapter.json").read_text())
    sent_meta = json.loads(sent["dartkit_adapter.json"])
    assert sent_meta["base_spec"] == "hf:my-org/tiny-llama"
    assert sent_meta["base"]["model"] == "my-org/tiny-llama"
    assert sent_meta["base"]["weights_sha256"] == local_meta["base"]["weights_sha256"]
    assert "`my-org/tiny-llama`" in sent["README.md"].decode()
    # The downloaded adapter still refuses other base weights.
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for name, data in sent.items():
        (downloaded / name).write_bytes(data)
    check_adapter_base(
        downloaded, {"model": "my-org/tiny-llama", "weights_sha256": local_meta["base"]["weights_sha256"]}
    )
    with pytest.raises(DartkitError, match="weights_sha256"):
        check_adapter_base(downloaded, {"model": "my-org/tiny-llama", "weights_sha256": "0" * 64})


def test_dry_run_shows_exactly_the_files_that_would_go_up(hub, embedded_run, monkeypatch):
    from dartkit.share.push import plan_push

    monkeypatch.delenv("HF_TOKEN")
    res = push(embedded_run, "--to", "my-org/y", "--dry-run")
    assert res.exit_code == 0, res.output
    plan = plan_push(embedded_run, "my-org/y")
    for name in ("README.md", "dartkit_run.json", "dartkit_adapter.json", "adapter_config.json"):
        built = plan.files[name]
        assert isinstance(built, bytes), name
        assert built.decode().strip() in res.output, name
    assert "adapter_model.safetensors" in res.output and "unchanged" in res.output
    assert hub.requests == []


def test_card_numbers_name_their_items_and_the_reduction_interval_says_how_it_is_made(hub, embedded_run):
    res = push(embedded_run, "--to", "my-org/numbers")
    assert res.exit_code == 0, res.output
    card = hub.files("my-org/numbers")["README.md"].decode()
    # Accuracy per gold label with the number of items it is over; M0 with its interval and unparseable rate.
    assert "| accuracy on NO items | accuracy on YES items |" in card
    assert "M0 accuracy (same items) | M0 unparseable |" in card
    # The mirror beside drift.
    assert "| drift cases (ΔH > τ) | mirror cases (ΔH < −τ) |" in card
    # The reduction's interval: how it is computed, and that its −100% end is no clip.
    line = next(x for x in card.splitlines() if x.startswith("Drift reduction M_int → M_DART"))
    assert "66.7% [−100.0%, 100.0%]" in line
    assert "cluster bootstrap over 8 scenario groups, 2000 resamples" in line
    assert "no lower bound" in line and "not clipped" in line
    assert "mirror cases 4 → 2" in line


def test_m0_mostly_unparseable_is_flagged(hub, embedded_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    metrics = run / "eval" / "m0" / "test" / "metrics.json"
    m0 = json.loads(metrics.read_text())
    metrics.write_text(
        json.dumps({**m0, "accuracy": 0.0, "accuracy_ci95": [0.0, 0.32], "unparseable_rate": 1.0})
    )
    res = push(run, "--to", "my-org/m0", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "| 0.0% [0.0%, 32.0%] | 100.0% |" in res.output
    assert "M0's answers are unparseable (no `Conclusion:` line) for 100.0% of test items" in res.output


@pytest.mark.slow
def test_an_adapter_trained_on_the_real_embedded_model_names_its_hub_base(hub, tiny_run, tmp_path):
    # Checks what as_embedded() assumes: training on `embedded` leaves a local cache path in
    # adapter_config.json, and push maps it to the Hub id.
    from dartkit.generate.embedded import embedded_model_dir
    from dartkit.train import TrainConfig, run

    out = tmp_path / "m_int"
    run(
        TrainConfig(
            base="embedded",
            data=[tiny_run / "distill" / "teacher.jsonl"],
            prepared=tiny_run / "data",
            out=out,
            max_steps=1,
            per_device_batch_size=1,
            lora_r=2,
            target_modules=["q_proj"],
        )
    )
    adapter = out / "adapter"
    local = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(local) == embedded_model_dir()
    res = push(adapter, "--to", "my-org/embedded")
    assert res.exit_code == 0, res.output
    sent = hub.files("my-org/embedded")
    assert front_matter(sent["README.md"])["base_model"] == EMBEDDED_HUB_ID
    assert json.loads(sent["adapter_config.json"])["base_model_name_or_path"] == EMBEDDED_HUB_ID
    assert sent["adapter_model.safetensors"] == (adapter / "adapter_model.safetensors").read_bytes()
