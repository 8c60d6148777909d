"""`dartkit export-data`: the QC-passed training rows as datasets a TRL-style trainer reads as dartkit trained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.errors import DartkitError
from dartkit.train.batching import IGNORE_INDEX, encode_record
from dartkit.train.config import TrainConfig
from dartkit.train.data import load_training_records
from servers import FakeHubServer
from share_helpers import build_run, hub_online

TOKEN = "hf_exportTOKEN987654321"
COLUMNS_MESSAGES = ["id", "source", "split", "benchmark", "label", "weight", "messages"]
COLUMNS_PC = ["id", "source", "split", "benchmark", "label", "weight", "prompt", "completion"]
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_llama) -> Path:
    return build_run(tmp_path_factory.mktemp("run"), tiny_llama)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_run) -> Path:
    out = tmp_path_factory.mktemp("export") / "data"
    res = export(tiny_run, "--out", out)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)  # the embedded model's tokenizer and chat template


def export(*args):
    return runner.invoke(app, ["export-data", *map(str, args)], prog_name="dartkit")


def trained_records(run: Path, model: str):
    """The records dartkit's trainer read for ``model``, from the config it saved beside the adapter."""
    cfg = TrainConfig.model_validate(yaml.safe_load((run / model / "config.yaml").read_text()))
    return load_training_records(cfg.data, cfg.prepared, cfg.label_only, cfg.policy, cfg.weights_from)


def rows_of(out: Path, fmt: str) -> list[dict]:
    from datasets import load_from_disk

    dd = load_from_disk(str(out / fmt))
    return [row for split in ("distill", "repair") if split in dd for row in dd[split]]


def test_exported_rows_are_exactly_what_m_dart_trained_on(exported, tiny_run):
    from datasets import load_from_disk

    dd = load_from_disk(str(exported / "messages"))
    assert sorted(dd) == ["distill", "repair"]
    assert dd["distill"].column_names == COLUMNS_MESSAGES
    # Only rows that passed QC: 12 of 16 distillation rows, 3 of 4 repairs.
    assert (dd["distill"].num_rows, dd["repair"].num_rows) == (12, 3)

    # M_DART trained on distillation + weighted repairs (recipe mix): same rows, text and weights.
    records = trained_records(tiny_run, "m_dart")
    rows = rows_of(exported, "messages")
    assert [r["id"] for r in rows] == [r.id for r in records]
    for row, record in zip(rows, records, strict=True):
        assert row["messages"] == [*record.messages, {"role": "assistant", "content": record.target}]
        assert row["weight"] == record.weight
    assert [r["weight"] for r in rows if r["source"] == "repair"] == [1.0, 3.0, 4.0]  # mild, severe, extreme
    assert {r["weight"] for r in rows if r["source"] == "distill"} == {1.0}
    # M_int trained on the distillation part alone.
    assert [r["messages"][-1]["content"] for r in rows if r["source"] == "distill"] == [
        r.target for r in trained_records(tiny_run, "m_int")
    ]
    # The student's prompt, never the teacher's (which showed the gold label).
    assert all("teacher's prompt" not in json.dumps(r["messages"]) for r in rows)
    prepared = {
        json.loads(line)["id"]: json.loads(line)
        for split in ("train", "audit")
        for line in (tiny_run / "data" / f"{split}.jsonl").read_text().splitlines()
    }
    for r in rows:
        item = prepared[r["id"]]
        assert (r["split"], r["benchmark"], r["label"]) == (item["split"], item["benchmark"], item["label"])
    assert {r["split"] for r in rows if r["source"] == "repair"} == {"audit"}


def test_a_trl_style_consumer_gets_the_tokens_dartkit_trained_on(exported, tiny_run, tokenizer):
    # What TRL's SFTTrainer does with each format: apply the chat template to `messages`, or to
    # `prompt` (with the generation prompt) and `prompt + completion`, and train on the difference.
    records = trained_records(tiny_run, "m_dart")
    messages, pairs = rows_of(exported, "messages"), rows_of(exported, "prompt_completion")
    for record, row, pair in zip(records, messages, pairs, strict=True):
        trained = encode_record(tokenizer, record, max_length=4096)
        n_prompt = sum(label == IGNORE_INDEX for label in trained.labels)

        full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False)
        # dartkit's example ends at the end-of-turn token; the template may add a newline after it.
        assert full[: len(trained)] == trained.input_ids
        assert tokenizer.decode(full[len(trained) :]).strip() == ""

        prompt = tokenizer.apply_chat_template(
            pair["prompt"], tokenize=True, add_generation_prompt=True, return_dict=False
        )
        assert prompt == trained.input_ids[:n_prompt]  # the masked part is the prompt
        both = tokenizer.apply_chat_template(
            [*pair["prompt"], *pair["completion"]], tokenize=True, return_dict=False
        )
        assert both[: len(trained)] == trained.input_ids


def test_jsonl_card_and_export_record(exported):
    for fmt, columns in (("messages", COLUMNS_MESSAGES), ("prompt_completion", COLUMNS_PC)):
        lines = (exported / "jsonl" / fmt / "distill.jsonl").read_text().splitlines()
        assert len(lines) == 12 and list(json.loads(lines[0])) == columns
    card = (exported / "README.md").read_text()
    meta = yaml.safe_load(card.split("---", 2)[1])
    configs = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert sorted(configs) == ["messages", "prompt_completion"]
    for files in configs.values():
        assert all((exported / f["path"]).is_file() for f in files)
    assert "These are training items" in card
    assert "| distill | 12 / 16 | train (12) | 1 (12) |" in card
    assert "| repair | 3 / 4 | audit (3) | 1 (1), 3 (1), 4 (1) |" in card
    record = json.loads((exported / "dartkit_export.json").read_text())
    assert record["counts"] == {"distill": 12, "repair": 3}
    assert record["sources"]["repair"]["rows_in_file"] == 4


def test_one_format_one_part_and_a_rerun_leaves_nothing_stale(tiny_run, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "exp"
    assert export(tiny_run, "--out", out).exit_code == 0
    res = export(tiny_run, "--out", out, "--format", "messages", "--parts", "repair")
    assert res.exit_code == 0, res.output
    assert "exported 3 repair row(s) as messages" in res.output
    assert sorted(load_from_disk(str(out / "messages"))) == ["repair"]
    assert not (out / "prompt_completion").exists()
    assert sorted(p.name for p in (out / "jsonl").rglob("*.jsonl")) == ["repair.jsonl"]


def test_without_datasets_it_writes_jsonl_and_says_so(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    out = tmp_path / "exp"
    res = export(tiny_run, "--out", out, "--format", "prompt-completion")
    assert res.exit_code == 0, res.output
    assert "note: the `datasets` package is not installed, so only JSONL was written" in res.stderr
    assert (out / "jsonl" / "prompt_completion" / "repair.jsonl").is_file()
    assert not (out / "prompt_completion").exists()


def test_bad_input_is_one_line(tiny_run, tmp_path):
    res = export(tiny_run, "--out", tmp_path / "x", "--parts", "distill,labels")
    assert res.exit_code == 2 and res.stderr.startswith("error: --parts 'distill,labels'")
    res = export(tmp_path, "--out", tmp_path / "x")
    assert res.exit_code == 2 and "not a dartkit run directory" in res.stderr
    no_repair = tmp_path / "run"
    (no_repair / "distill").mkdir(parents=True)
    (no_repair / "run_config.yaml").write_text("protocol: heldout\n")
    res = export(no_repair, "--out", tmp_path / "y", "--parts", "repair")
    assert res.exit_code == 2 and "no repair rows" in res.stderr
    # Directories of those names that no export wrote are never deleted.
    (tmp_path / "z" / "messages").mkdir(parents=True)
    res = export(tiny_run, "--out", tmp_path / "z")
    assert res.exit_code == 2 and "not written by `dartkit export-data`" in res.stderr
    # Nor is a README.md of someone else's, and the run directory itself is not an --out.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("# my notes\n")
    for args in (["--out", tmp_path / "notes"], ["--out", tmp_path / "notes", "--dry-run"]):
        res = export(tiny_run, *args)
        assert res.exit_code == 2 and "README.md exists and was not written" in res.stderr
    assert (tmp_path / "notes" / "README.md").read_text() == "# my notes\n"
    res = export(tiny_run, "--out", tiny_run)
    assert res.exit_code == 2 and "is the run directory itself" in res.stderr


def test_the_card_describes_only_the_formats_exported(tiny_run, tmp_path):
    res = export(tiny_run, "--out", tmp_path / "pc", "--format", "prompt-completion", "--parts", "repair")
    assert res.exit_code == 0, res.output
    card = (tmp_path / "pc" / "README.md").read_text()
    assert 'load_from_disk("<this directory>/prompt_completion")' in card
    assert "- `messages`:" not in card and "- `prompt_completion`:" in card
    # A second export into the same directory replaces the first one's card (its own file).
    assert export(tiny_run, "--out", tmp_path / "pc", "--format", "messages").exit_code == 0
    assert 'load_from_disk("<this directory>/messages")' in (tmp_path / "pc" / "README.md").read_text()


def test_push_the_dataset_to_the_hub(tiny_run, tmp_path, monkeypatch):
    with FakeHubServer(token=TOKEN) as hub, hub_online(monkeypatch, hub, TOKEN, tmp_path):
        res = export(tiny_run, "--out", tmp_path / "exp", "--push", "my-org/dart-data")
        assert res.exit_code == 0, res.output
        sent = hub.files("my-org/dart-data", repo_type="dataset")
    assert sorted(sent) == [
        "README.md",
        "dartkit_export.json",
        "jsonl/messages/distill.jsonl",
        "jsonl/messages/repair.jsonl",
        "jsonl/prompt_completion/distill.jsonl",
        "jsonl/prompt_completion/repair.jsonl",
    ]
    assert (
        sent["jsonl/messages/repair.jsonl"] == (tmp_path / "exp" / "jsonl/messages/repair.jsonl").read_bytes()
    )
    assert "configs:" in sent["README.md"].decode()
    # Every write carries the token (huggingface_hub 2.x also makes an unauthenticated GET of its own).
    writes = [r for r in hub.requests if r.method == "POST"]
    assert writes and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in writes)
    assert TOKEN not in res.output + res.stderr
    assert all(TOKEN.encode() not in p.read_bytes() for p in (tmp_path / "exp").rglob("*") if p.is_file())
    # The push is logged in the run, as model pushes are (never the token).
    log = (tiny_run / "hub" / "pushes.jsonl").read_text()
    row = json.loads(log.splitlines()[-1])
    assert (row["kind"], row["repo_type"], row["repo_id"]) == ("dataset", "dataset", "my-org/dart-data")
    assert row["counts"] == {"distill": 12, "repair": 3} and row["commit_oid"]
    assert "jsonl/messages/repair.jsonl" in row["files"] and TOKEN not in log


def test_a_local_teacher_path_never_reaches_the_card(tiny_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    home_teacher = f"hf:{Path.home()}/models/my-teacher+adapter={run}/m_int/adapter"
    metrics = run / "distill" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "teacher": home_teacher}))
    res = export(run, "--out", tmp_path / "exp")
    assert res.exit_code == 0, res.output
    card = (tmp_path / "exp" / "README.md").read_text()
    # Each local part of the spec rewritten on its own: the base by name, the adapter by its place in the run.
    assert str(Path.home()) not in card and "| hf:my-teacher+adapter=m_int/adapter |" in card
    # A push checks the card and the export record before anything is sent.
    from dartkit.share.portable import check_portable

    (tmp_path / "exp" / "README.md").write_text(card + f"\nmade in {Path.home()}/work\n")
    with pytest.raises(DartkitError, match="README.md would carry the local path"):
        check_portable({"README.md": tmp_path / "exp" / "README.md"})
    with FakeHubServer(token=TOKEN) as hub, hub_online(monkeypatch, hub, TOKEN, tmp_path):
        from dartkit.share.export_data import ExportResult, push_export

        result = ExportResult(tmp_path / "exp", {"distill": 12}, ["README.md", "dartkit_export.json"])
        with pytest.raises(DartkitError, match="nothing was uploaded"):
            push_export(result, run, "my-org/dart-data")
        assert not [r for r in hub.requests if r.method == "POST"]


def test_push_without_a_token_stops_before_exporting(tiny_run, tmp_path, monkeypatch):
    with FakeHubServer(token=TOKEN) as hub, hub_online(monkeypatch, hub, None, tmp_path):
        res = export(tiny_run, "--out", tmp_path / "exp", "--push", "my-org/dart-data")
        assert hub.requests == []
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: no Hugging Face token")
    assert not (tmp_path / "exp").exists()  # nothing was exported first


def test_dry_run_lists_what_would_be_written_and_pushed(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    with FakeHubServer(token=TOKEN) as hub, hub_online(monkeypatch, hub, None, tmp_path):
        res = export(tiny_run, "--out", out, "--format", "messages", "--push", "my-org/d", "--dry-run")
        assert hub.requests == []
    assert res.exit_code == 0, res.output
    assert not out.exists()
    assert "nothing written: --dry-run" in res.output
    assert "jsonl/messages/distill.jsonl  12 rows" in res.output
    assert "jsonl/messages/repair.jsonl  3 rows" in res.output
    assert "messages/  datasets save_to_disk directory (splits: distill, repair)" in res.output
    assert "prompt_completion/" not in res.output  # only the format asked for
    assert "would push to the dataset repository my-org/d" in res.output
    assert "no Hugging Face token" in res.stderr  # a real push would stop: said now


def test_an_unknown_format_is_one_line_listing_the_choices(tiny_run, tmp_path):
    res = export(tiny_run, "--out", tmp_path / "x", "--format", "jsonl")
    assert res.exit_code == 2
    assert res.stderr == "error: --format 'jsonl': expected one of messages, prompt-completion, both\n"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        (
            "openai:deepseek-chat@http://alice:secret@10.0.0.5:8000/v1",
            "openai:deepseek-chat@http://10.0.0.5:8000/v1",
        ),
        ("openai:gpt-4o@https://api.openai.com/v1", "openai:gpt-4o@https://api.openai.com/v1"),
        ("openai:m@http://alice:p@ss@host:1/v1//x", "openai:m@http://host:1/v1//x"),  # '@' in the password
        (
            "openai:/home/me/models/Llama-3-8B@http://localhost:8000/v1",
            "openai:Llama-3-8B@http://localhost:8000/v1",
        ),
        ("hf:meta-llama/Meta-Llama-3-8B-Instruct@main", "hf:meta-llama/Meta-Llama-3-8B-Instruct@main"),
        ("file:/home/alice/teacher.jsonl", "file:teacher.jsonl"),
    ],
)
def test_a_teacher_spec_on_the_card_carries_no_credentials_or_local_paths(spec, shown):
    from dartkit.share.portable import Portable

    assert Portable(None).spec(spec) == shown


def test_an_export_that_died_half_way_is_replaced_by_the_next(tiny_run, tmp_path, monkeypatch):
    from dartkit.share import export_data as ed

    def crash(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(ed, "_save_to_disk", crash)
    with pytest.raises(OSError):
        ed.export_data(tiny_run, tmp_path / "exp")
    assert (tmp_path / "exp" / "jsonl").is_dir()  # written before the crash
    monkeypatch.undo()
    res = export(tiny_run, "--out", tmp_path / "exp")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "exp" / "dartkit_export.json").read_text())["complete"] is True
