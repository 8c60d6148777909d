"""Stage bookkeeping for `dartkit run`: fingerprints, completion records, skip / resume / redo.

Every stage writes its files, then a record ``<run>/stages/<name>.json`` holding
its fingerprint and the sha256 of each output file. A stage is *done* when its
record exists, its fingerprint matches, and every output still hashes the same.
The fingerprint covers the config fields the stage reads and the output hashes
of the stages it depends on, so a changed setting reruns exactly the stages
downstream of it, and a stage whose inputs were redone with different results
reruns too. An edited or corrupted output is detected by its hash and that
stage is redone (with a message). Work inside a stage survives a kill through
the generation and score caches and training checkpoints; records are written
atomically and last.

While a stage runs, ``<run>/stages/<name>.started`` holds its fingerprint and its
attempts (start time, seconds so far, refreshed every few seconds), so a resumed
stage's record counts the time of the attempts a kill or an error interrupted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dartkit.data.jsonl import write_json
from dartkit.files import file_sha256
from dartkit.memory import PeakRss, release_freed_memory


@dataclass
class Stage:
    """One step of the pipeline.

    Attributes:
        name: short id (also the record's file name and the ``--from`` value).
        title: what it does, for the plan.
        deps: stages whose outputs it reads.
        outputs: files or directories (relative to the run dir) it must leave behind.
        params: the config fields it reads (JSON-able), part of its fingerprint.
        run: does the work; returns extra facts kept in the record.
        workdirs: directories emptied before a rerun caused by a changed fingerprint (training
            output, so that a stale checkpoint is not resumed); kept on a plain resume.
    """

    name: str
    title: str
    deps: tuple[str, ...]
    outputs: tuple[str, ...]
    params: Callable[[], Any]
    run: Callable[[], dict[str, Any] | None]
    workdirs: tuple[str, ...] = ()
    enabled: bool = True
    info: dict[str, Any] = field(default_factory=dict)


def _hash_path(path: Path) -> dict[str, str]:
    if path.is_dir():
        return {
            str(p.relative_to(path)): file_sha256(p)
            for p in sorted(path.rglob("*"))
            if p.is_file() and "checkpoints" not in p.relative_to(path).parts
        }
    if path.is_file():
        return {".": file_sha256(path)}
    return {}


def output_hashes(root: Path, outputs: Sequence[str]) -> dict[str, dict[str, str]]:
    return {o: _hash_path(root / o) for o in outputs}


# How often a running stage writes its elapsed time to its ``.started`` marker: a kill -9 loses at
# most this much of the attempt's time.
HEARTBEAT_SECONDS = 5.0


def read_marker(path: Path) -> dict[str, Any] | None:
    """A ``.started`` marker: ``{"fingerprint", "attempts": [{"started_utc", "seconds"}, ...]}``.

    Markers written before attempts were kept hold the bare fingerprint; they read as no attempts.
    """
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8").strip()
    try:
        marker = json.loads(text)
    except json.JSONDecodeError:
        marker = None
    if not isinstance(marker, dict) or "fingerprint" not in marker:
        return {"fingerprint": text, "attempts": []}
    attempts = [
        a
        for a in marker.get("attempts") or []
        if isinstance(a, dict) and isinstance(a.get("seconds"), (int, float))
    ]
    return {"fingerprint": marker["fingerprint"], "attempts": attempts}


class _AttemptClock:
    """Keeps the current attempt's elapsed seconds in the stage's ``.started`` marker while it runs.

    A thread rewrites the marker every ``HEARTBEAT_SECONDS``; leaving the block (normally, by an
    exception or by Ctrl-C) writes the exact time, so only a kill -9 loses the last few seconds.
    """

    def __init__(self, path: Path, fingerprint: str, earlier: list[dict[str, Any]]):
        self.path = path
        self.fingerprint = fingerprint
        self.earlier = earlier
        self.attempt = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": 0.0}
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dartkit-stage-clock", daemon=True)

    def seconds(self) -> float:
        return time.perf_counter() - self._t0

    def _write(self) -> None:
        self.attempt["seconds"] = round(self.seconds(), 2)
        write_json(self.path, {"fingerprint": self.fingerprint, "attempts": [*self.earlier, self.attempt]})

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._write()

    def __enter__(self) -> _AttemptClock:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._write()


class Pipeline:
    """Runs stages in order, skipping the done ones."""

    def __init__(self, root: Path, stages: Sequence[Stage], echo: Callable[[str], None]):
        self.root = Path(root)
        self.stages = [s for s in stages if s.enabled]
        self.by_name = {s.name: s for s in self.stages}
        self.echo = echo

    def record_path(self, name: str) -> Path:
        return self.root / "stages" / f"{name}.json"

    def read_record(self, name: str) -> dict[str, Any] | None:
        path = self.record_path(name)
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            return rec if isinstance(rec, dict) and "fingerprint" in rec else None
        except (json.JSONDecodeError, OSError):
            return None

    def fingerprint(self, stage: Stage) -> str | None:
        """sha256 of the stage's params and its deps' recorded outputs (None while a dep is not done)."""
        deps = {}
        for d in stage.deps:
            if d not in self.by_name:
                continue
            rec = self.read_record(d)
            if rec is None:
                return None
            deps[d] = rec["outputs"]
        blob = json.dumps(
            {"stage": stage.name, "params": stage.params(), "deps": deps}, sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def status(self, stage: Stage, forced: set[str]) -> tuple[bool, str]:
        """(done, why) for one stage, judged from the files on disk now."""
        if stage.name in forced:
            return False, "rerun (--from)"
        fp = self.fingerprint(stage)
        if fp is None:
            return False, "run (after its inputs)"
        rec = self.read_record(stage.name)
        if rec is None:
            started = self._started(stage.name)
            return False, "resume (interrupted)" if started == fp else "run"
        if rec["fingerprint"] != fp:
            return False, "rerun (settings or inputs changed)"
        now = output_hashes(self.root, stage.outputs)
        for o in stage.outputs:
            if not now.get(o):
                return False, f"redo ({o} is missing)"
            if now[o] != rec["outputs"].get(o):
                changed = sorted(set(now[o].items()) ^ set((rec["outputs"].get(o) or {}).items()))
                name = o if not changed or changed[0][0] == "." else f"{o}/{changed[0][0]}"
                return False, f"redo ({name} changed or is corrupted)"
        return True, "done"

    def _started(self, name: str) -> str | None:
        marker = read_marker(self.root / "stages" / f"{name}.started")
        return marker["fingerprint"] if marker else None

    def check_start(self, start: str | None) -> None:
        """Refuse a ``--from`` that names no stage of this pipeline."""
        if start is not None and start not in self.by_name:
            from dartkit.errors import DartkitError

            raise DartkitError(f"--from: unknown stage '{start}' (stages: {', '.join(self.by_name)})")

    def downstream(self, name: str) -> set[str]:
        out = {name}
        for s in self.stages:
            if any(d in out for d in s.deps):
                out.add(s.name)
        return out

    def plan(self, start: str | None = None) -> list[tuple[Stage, str]]:
        """What a run would do now, without running anything."""
        forced = self.downstream(start) if start else set()
        rows = []
        pending: set[str] = set()
        for s in self.stages:
            done, why = self.status(s, forced)
            if done and any(d in pending for d in s.deps):
                done, why = False, "rerun if its inputs change"
            if not done:
                pending.add(s.name)
            rows.append((s, why))
        return rows

    def run(self, start: str | None = None) -> dict[str, dict[str, Any]]:
        self.check_start(start)
        forced = self.downstream(start) if start else set()
        records: dict[str, dict[str, Any]] = {}
        for i, s in enumerate(self.stages, 1):
            done, why = self.status(s, forced)
            head = f"[{i}/{len(self.stages)}] {s.name}: {s.title}"
            if done:
                self.echo(f"{head} — done, skipped")
                records[s.name] = self.read_record(s.name)  # type: ignore[assignment]
                continue
            self.echo(f"{head} — {why}")
            fp = self.fingerprint(s)
            started = self.root / "stages" / f"{s.name}.started"
            marker = read_marker(started)
            if marker is None or marker["fingerprint"] != fp:
                for w in s.workdirs:
                    shutil.rmtree(self.root / w, ignore_errors=True)
                earlier = []  # time spent under other settings is not this stage's time
            else:
                earlier = marker["attempts"]  # resume: interrupted attempts count
            with _AttemptClock(started, fp or "", earlier) as clock, PeakRss() as memory:
                # The marker is written before the old record goes: a kill between leaves a resume.
                self.record_path(s.name).unlink(missing_ok=True)
                info = s.run() or {}
                release_freed_memory()  # the next stage starts from what is really in use
                if "dartkit.generate.vllm_backend" in sys.modules:
                    # An in-process vLLM engine holds most of a GPU; a later stage may load a local
                    # model (a teacher, judge, scorer, trainer). Engines are shared within a stage.
                    sys.modules["dartkit.generate.vllm_backend"].release_engines()
            missing = [o for o in s.outputs if not output_hashes(self.root, [o])[o]]
            if missing:
                raise RuntimeError(f"stage {s.name} finished without writing {', '.join(missing)}")
            rec = {
                "name": s.name,
                "fingerprint": fp,
                "outputs": output_hashes(self.root, s.outputs),
                # Every attempt under this fingerprint: a resumed stage's time includes the attempts
                # before it, not only the invocation that finished it.
                "seconds": round(sum(a["seconds"] for a in earlier) + clock.attempt["seconds"], 2),
                "seconds_last_attempt": clock.attempt["seconds"],
                "attempts": len(earlier) + 1,
                # Peak resident memory of the attempt that finished the stage (see dartkit.memory).
                "memory": memory.result(),
                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "info": info,
            }
            write_json(self.record_path(s.name), rec)
            started.unlink(missing_ok=True)
            forced.discard(s.name)
            records[s.name] = rec
        return records
