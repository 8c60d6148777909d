"""`dartkit eval` end to end, as a user runs it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.data.prepare import prepare_data
from servers import FakeOpenAIServer, keyword_teacher

runner = CliRunner()
METRIC_KEYS = {
    "n",
    "accuracy",
    "accuracy_equal",
    "accuracy_diff",
    "yes_rate",
    "unparseable_rate",
    "refusal_rate",
    "macro_f1",
    "accuracy_ci95",
    "accuracy_equal_ci95",
    "accuracy_diff_ci95",
    "refusal_rate_ci95",
    "unparseable_rate_ci95",
    "ci_method",
    "ci_methods",
}


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    prepare_data(out, suite="demo")
    return out


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_eval_writes_generations_and_metrics(demo_data, tmp_path):
    out = tmp_path / "eval"
    r = invoke("eval", "--model", "dummy:mixed", "--data", demo_data, "--split", "val", "--out", out)
    assert r.exit_code == 0, r.output
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    val_ids = {json.loads(line)["id"] for line in (demo_data / "val.jsonl").read_text().splitlines()}
    assert {g["id"] for g in gens} == val_ids
    for g in gens:
        assert {"id", "prompt", "text", "conclusion", "refusal", "gold"} <= set(g)
        assert g["conclusion"] in ("YES", "NO")
        assert "Conclusion: YES" in g["prompt"] and g["gold"] in ("YES", "NO")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["n"] == len(val_ids)
    assert set(metrics["per_benchmark"]) == {"D1", "D2", "D3", "D4", "N1", "N2", "N3", "N4"}
    assert set(metrics["per_benchmark"]["N2"]) >= METRIC_KEYS
    correct = sum(g["conclusion"] == g["gold"] for g in gens)
    assert metrics["accuracy"] == pytest.approx(correct / len(gens))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["model"] == {"backend": "dummy", "mode": "mixed"}
    assert manifest["environment"]["packages"]["torch"]
    assert "accuracy" in r.output and "metrics.json" in r.output
    assert "95% CI: cluster bootstrap over" in " ".join(r.output.split())


def test_eval_intervals_resample_the_splits_scenario_groups(demo_data, tmp_path):
    out = tmp_path / "eval"
    r = invoke("eval", "--model", "dummy:mixed", "--data", demo_data, "--split", "train", "--out", out)
    assert r.exit_code == 0, r.output
    examples = {e["id"]: e for e in map(json.loads, (demo_data / "train.jsonl").read_text().splitlines())}
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert all(g["scenario_key"] == examples[g["id"]]["scenario_key"] for g in gens)
    n_groups = len({e["scenario_key"] for e in examples.values()})
    assert n_groups < len(examples)  # the demo suite has twins, so groups are not items
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ci_method"] == f"cluster bootstrap over {n_groups} scenario groups, 2000 resamples"
    lo, hi = metrics["accuracy_ci95"]
    assert lo < metrics["accuracy"] < hi


def test_rerun_uses_cache(demo_data, tmp_path):
    out = tmp_path / "eval"
    assert invoke("eval", "--model", "dummy:yes", "--data", demo_data, "--out", out).exit_code == 0
    first = (out / "cache.jsonl").read_text()
    assert invoke("eval", "--model", "dummy:yes", "--data", demo_data, "--out", out).exit_code == 0
    assert (out / "cache.jsonl").read_text() == first


def test_limit_takes_a_stratified_prefix(demo_data, tmp_path):
    out = tmp_path / "eval"
    assert (
        invoke(
            "eval",
            "--model",
            "dummy:no",
            "--data",
            demo_data,
            "--split",
            "train",
            "--limit",
            16,
            "--out",
            out,
        ).exit_code
        == 0
    )
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 16
    assert (
        len({(g["benchmark"], g["gold"]) for g in gens}) == 16
    )  # one item from every benchmark x label cell
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy_equal"] == 1.0 and metrics["accuracy_diff"] == 0.0 and metrics["yes_rate"] == 0.0


def test_refusals_and_unparseable_count_as_wrong(demo_data, tmp_path):
    out = tmp_path / "eval"
    assert invoke("eval", "--model", "dummy:refuse", "--data", demo_data, "--out", out).exit_code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["accuracy"] == 0 and m["refusal_rate"] == 1 and m["unparseable_rate"] == 1
    # 0 right of n is not "never right": the interval is Wilson's, above 0 at the top.
    assert m["ci_method"] == "Wilson score" and m["accuracy_ci95"][0] == 0 < m["accuracy_ci95"][1]


def test_eval_against_an_openai_compatible_server(demo_data, tmp_path):
    # a fake model behind HTTP: says YES exactly when the question mentions a hiring decision
    with FakeOpenAIServer(keyword_teacher("hiring")) as server:
        out = tmp_path / "eval"
        r = invoke(
            "eval",
            "--model",
            f"openai:fake@{server.base_url}",
            "--data",
            demo_data,
            "--out",
            out,
            "--concurrency",
            2,
        )
        assert r.exit_code == 0, r.output
        assert server.max_in_flight <= 2
        gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
        test_items = {
            json.loads(line)["id"]: json.loads(line)
            for line in (demo_data / "test.jsonl").read_text().splitlines()
        }
        assert len(server.requests) == len(gens) == len(test_items)
        for g in gens:
            assert g["conclusion"] == ("YES" if "hiring" in test_items[g["id"]]["question"].lower() else "NO")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "gpt4"], "gpt4"),
        (["--model", "hf:/no/such/model"], "/no/such/model"),
        (["--split", "test", "--data", "/no/such/dir"], "dartkit data prepare"),
    ],
)
def test_user_errors_are_one_line(demo_data, tmp_path, args, needle):
    opts = {
        "--data": str(demo_data),
        "--out": str(tmp_path / "o"),
        **dict(zip(args[::2], args[1::2], strict=True)),
    }
    r = invoke("eval", *[x for kv in opts.items() for x in kv])
    assert r.exit_code == 2
    err = r.stderr if hasattr(r, "stderr") else r.output
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_config_file_with_unknown_key_is_rejected(tmp_path, demo_data):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"model: dummy\ndata: {demo_data}\nout: {tmp_path / 'o'}\ndecoding:\n  max_tokens: 5\n")
    r = invoke("eval", "--config", cfg)
    assert r.exit_code == 2
    assert "decoding.max_tokens" in r.stderr


def test_every_command_has_help():
    for args in (["--help"], ["eval", "--help"], ["data", "--help"], ["data", "prepare", "--help"]):
        r = invoke(*args)
        assert r.exit_code == 0 and "Usage" in r.output


@pytest.mark.slow
def test_embedded_eval_resumes_after_kill_9(demo_data, tmp_path):
    """A killed evaluation keeps every finished batch and the rerun completes it without duplicates."""
    out = tmp_path / "eval"
    cmd = [
        sys.executable,
        "-m",
        "dartkit.cli",
        "eval",
        "--model",
        "embedded",
        "--data",
        str(demo_data),
        "--out",
        str(out),
        "--limit",
        "12",
        "--batch-size",
        "1",
        "--max-new-tokens",
        "24",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / "cache.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (cache.exists() and cache.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert 2 <= len(kept) < 12
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 12
    assert keys[: len(kept)] == kept
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 12 and all(g["text"] for g in gens)
