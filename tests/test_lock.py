"""One command per output directory (a lock held by a real second process), stale locks, and
commands that refuse to overwrite results made from other inputs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dartkit.cli import app
from dartkit.data.prepare import prepare_data
from dartkit.errors import DartkitError
from dartkit.lock import LOCK_NAME, LockError, dir_lock

runner = CliRunner()

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from dartkit.lock import dir_lock

    with dir_lock(Path(sys.argv[1]), command="holder --of the lock"):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes stdin
    """
)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "data"
    prepare_data(out, suite="demo")
    return out


@pytest.fixture
def holder(tmp_path):
    """A second, real process holding the lock on ``tmp_path / "out"``; yields (process, directory)."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc, out
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(directory: Path, pid: int, host: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    info = {
        "pid": pid,
        "host": host or socket.gethostname(),
        "command": "dartkit eval --out x",
        "started_utc": "2025-01-01T00:00:00Z",
    }
    path.write_text(json.dumps(info))
    return path


def test_a_second_real_process_is_refused_naming_the_holder_then_runs_once_it_is_released(holder):
    proc, out = holder
    lock = out / LOCK_NAME
    held = lock.read_text()
    assert json.loads(held)["pid"] == proc.pid
    cmd = [sys.executable, "-m", "dartkit.cli", "data", "prepare", "--suite", "demo", "--out", str(out)]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    err = refused.stderr
    assert f"pid {proc.pid} on host {socket.gethostname()}" in err and "holder --of the lock" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert lock.read_text() == held  # the refused command left the holder's lock alone
    assert not (out / "summary.json").exists()

    proc.stdin.close()  # the holder leaves its `with` block normally: the lock goes with it
    assert proc.wait(timeout=30) == 0
    assert not lock.exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "summary.json").is_file() and not lock.exists()


@pytest.mark.parametrize(
    "command, stub",
    [
        (["eval", "--data", "d", "--model", "dummy:yes"], "dartkit.stages.evaluate.run"),
        (
            ["audit", "--baseline", "dummy:yes", "--candidate", "dummy:no", "--data", "d"],
            "dartkit.stages.audit.run",
        ),
        (["distill", "--data", "d", "--no-train"], "dartkit.stages.distill.run"),
        (["repair", "--drift", "d.jsonl", "--data", "d", "--no-train"], "dartkit.stages.repair.run"),
        (["data", "prepare", "--suite", "demo"], "dartkit.data.cli.prepare_data"),
        (["run"], "dartkit.pipeline.runner.Pipeline.run"),
    ],
)
def test_every_writing_command_refuses_a_directory_another_process_holds(holder, monkeypatch, command, stub):
    proc, out = holder
    ran = []
    monkeypatch.setattr(stub, lambda *a, **k: ran.append(1) or {})
    res = runner.invoke(app, [*command, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"pid {proc.pid}" in res.output and "holder --of the lock" in res.output
    assert ran == []  # refused before any work
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(tmp_path):
    out = tmp_path / "data"
    pid = _dead_pid()
    _write_lock(out, pid)
    res = runner.invoke(app, ["data", "prepare", "--suite", "demo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if "took over the lock" in line]
    assert len(notes) == 1 and f"pid {pid}" in notes[0]
    assert (out / "summary.json").is_file()
    assert not (out / LOCK_NAME).exists()  # released at the end like any lock


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are told apart through /proc")
def test_a_killed_but_unreaped_holder_counts_as_dead(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc.kill()
        for _ in range(200):  # until the kernel has made it a zombie
            if Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                break
            time.sleep(0.01)
        _write_lock(tmp_path, proc.pid)
        notes = []
        with dir_lock(tmp_path, note=notes.append):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert len(notes) == 1
    finally:
        proc.wait()


def test_a_lock_naming_our_own_pid_that_we_do_not_hold_is_stale(tmp_path):
    # A restarted container runs the new command under the pid the killed one had.
    _write_lock(tmp_path, os.getpid())
    notes = []
    with dir_lock(tmp_path, note=notes.append):
        pass
    assert len(notes) == 1 and not (tmp_path / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    path = _write_lock(tmp_path, _dead_pid(), host="gpu-node-7")
    with pytest.raises(LockError) as info, dir_lock(tmp_path):
        pass
    message = str(info.value)
    assert "host gpu-node-7" in message and f"delete {path}" in message
    assert path.exists()


def test_an_unreadable_lock_is_not_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr("dartkit.lock._UNREADABLE_GRACE_S", 0.1)
    path = tmp_path / LOCK_NAME
    path.write_text("{half a lo")
    with pytest.raises(LockError, match=f"delete {path}"), dir_lock(tmp_path):
        pass
    assert path.read_text() == "{half a lo"


def test_the_lock_is_released_on_errors_and_ctrl_c_and_is_reentrant(tmp_path):
    lock = tmp_path / LOCK_NAME
    for exc in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), dir_lock(tmp_path):
            assert lock.exists()
            raise exc
        assert not lock.exists()
    with dir_lock(tmp_path):
        with dir_lock(tmp_path / "." / ""):  # the same directory again, from the same process
            assert lock.exists()
        assert lock.exists()  # the inner block does not release the outer one's lock
    assert not lock.exists()


def test_a_failed_command_leaves_no_empty_output_directory(tmp_path):
    res = runner.invoke(
        app,
        ["data", "prepare", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "new" / "data")],
    )
    assert res.exit_code == 2 and "nowhere" in res.output
    assert not (tmp_path / "new").exists()


# --- results of other inputs are not overwritten silently ---------------------------------------


def _eval(demo_data: Path, out: Path, *extra: str):
    return runner.invoke(app, ["eval", "--data", str(demo_data), "--out", str(out), "--limit", "8", *extra])


def test_eval_refuses_to_overwrite_results_of_another_model_unless_forced(demo_data, tmp_path):
    out = tmp_path / "eval"
    assert _eval(demo_data, out, "--model", "dummy:yes").exit_code == 0
    first = (out / "generations.jsonl").read_text()
    again = _eval(demo_data, out, "--model", "dummy:yes", "--batch-size", "3")  # same inputs: resumes
    assert again.exit_code == 0, again.output
    assert (out / "generations.jsonl").read_text() == first

    other = _eval(demo_data, out, "--model", "dummy:no")
    assert other.exit_code == 2
    message = " ".join(other.output.split())
    assert 'model: "dummy:yes" there, "dummy:no" now' in message and "--force" in message
    assert (out / "generations.jsonl").read_text() == first  # nothing was touched

    forced = _eval(demo_data, out, "--model", "dummy:no", "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "metrics.json").read_text())["model"] == "dummy:no"


def test_eval_compares_the_data_directory_by_where_it_is(demo_data, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    assert _eval(demo_data, out, "--model", "dummy:yes").exit_code == 0
    monkeypatch.chdir(demo_data.parent)  # the same directory named relatively: same inputs
    res = runner.invoke(
        app, ["eval", "--data", demo_data.name, "--out", str(out), "--limit", "8", "--model", "dummy:yes"]
    )
    assert res.exit_code == 0, res.output
    res = _eval(demo_data, out, "--model", "dummy:yes", "--split", "val")
    assert res.exit_code == 2 and "split" in res.output


def test_results_without_a_record_of_their_inputs_are_not_overwritten(demo_data, tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    res = _eval(demo_data, out, "--model", "dummy:yes")
    assert res.exit_code == 2 and "no config.yaml" in res.output
    assert (out / "metrics.json").read_text() == "{}"


def test_audit_refuses_other_settings_unless_forced(demo_data, tmp_path):
    out = tmp_path / "audit"
    args = ["audit", "--baseline", "dummy:yes", "--candidate", "dummy:mixed", "--data", str(demo_data)]
    args += ["--limit", "8", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0  # same inputs: served from the caches
    res = runner.invoke(app, [*args, "--tau", "0.05"])
    assert res.exit_code == 2
    assert "tau: 0.01 there, 0.05 now" in " ".join(res.output.split())
    assert runner.invoke(app, [*args, "--tau", "0.05", "--force"]).exit_code == 0
    assert json.loads((out / "summary.json").read_text())["tau"] == 0.05


def test_data_prepare_refuses_to_overwrite_other_splits_unless_forced(tmp_path):
    out = tmp_path / "data"
    prepare = ["data", "prepare", "--suite", "demo", "--out", str(out)]
    assert runner.invoke(app, prepare).exit_code == 0
    train = (out / "train.jsonl").read_text()
    assert runner.invoke(app, prepare).exit_code == 0  # same inputs: the same splits again
    res = runner.invoke(app, [*prepare, "--seed", "7"])
    assert res.exit_code == 2
    message = " ".join(res.output.split())
    assert "seed: 42 there, 7 now" in message and "--force" in message
    assert (out / "train.jsonl").read_text() == train
    assert runner.invoke(app, [*prepare, "--seed", "7", "--force"]).exit_code == 0
    assert json.loads((out / "summary.json").read_text())["seed"] == 7


def test_data_prepare_will_not_write_over_jsonl_it_did_not_prepare(tmp_path):
    (tmp_path / "train.jsonl").write_text("my own questions\n")
    res = runner.invoke(app, ["data", "prepare", "--suite", "demo", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no summary.json" in res.output
    assert (tmp_path / "train.jsonl").read_text() == "my own questions\n"


def test_the_input_check_reports_what_differs():
    from dartkit.lock import check_same_inputs

    with pytest.raises(DartkitError, match=r"a.b: 1 there, 2 now; c: null there, \"x\" now"):
        check_same_inputs(
            Path("."),
            ["."],
            {"a": {"b": 1}, "o": 1},
            {"a": {"b": 2}, "c": "x", "o": 2},
            record="r",
            force=False,
            ignore=["o"],
        )
