"""One command per output directory, and no silent overwrite of other inputs' results.

Every command that writes a directory (``dartkit run``, ``eval``, ``audit``, ``distill``,
``repair``, ``data prepare``) holds ``<dir>/.dartkit.lock`` for its whole life. The file is
created atomically (``O_CREAT | O_EXCL``) and holds who holds it: ``pid``, ``host``,
``command`` and ``started_utc``. A second command on the same directory stops at once and
names the holder. A lock whose process is gone (killed, crashed, power cut) is stale and
taken over with a one-line note; a lock written on another host is never taken over, since
its process cannot be checked from here.

:func:`check_same_inputs` is the other half: a command that would overwrite results made
from different inputs refuses unless the user says ``--force``.

Example::

    with dir_lock(Path("runs/demo")):
        ...  # nobody else writes runs/demo meanwhile
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from dartkit.errors import DartkitError

LOCK_NAME = ".dartkit.lock"

# A lock file is written right after it is created; a reader that finds it empty or cut
# waits this long for the holder to finish writing before calling it unreadable.
_UNREADABLE_GRACE_S = 2.0

# Locks this process holds, by real directory path: a nested dir_lock on the same directory
# (the CLI locking a directory that a function it calls locks again) just counts up.
_held: dict[str, list[Any]] = {}
_held_guard = threading.Lock()


class LockError(DartkitError):
    """The directory is in use by another command (or its lock cannot be judged)."""


def default_command() -> str:
    """This process's command line, as the lock records it (``dartkit eval --out ...``)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name in ("__main__.py", "cli.py"):  # python -m dartkit.cli
        name = "dartkit"
    return shlex.join([name, *sys.argv[1:]])


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` names a running process on this host (unsure means yes)."""
    if pid <= 0:
        return False
    if os.name != "posix":
        return True  # no signal-0 probe: never take over a lock we cannot judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, it is another user's
    # A killed child its parent has not reaped yet is a zombie: it will never release the lock.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
        return None
    return info


def _holder(info: Mapping[str, Any]) -> str:
    return (
        f"pid {info.get('pid')} on host {info.get('host', '?')} "
        f"(`{info.get('command', '?')}`, started {info.get('started_utc', '?')})"
    )


def _take_over(path: Path, seen: bytes) -> bool:
    """Remove the stale lock ``path`` if it still holds exactly ``seen``.

    Renaming first makes the removal atomic: of two processes that both found the lock stale,
    one renames it and the other's rename fails. If what was renamed is not what was judged
    stale (a third process took the lock over in between), it is put back.
    """
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}.{threading.get_ident()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if _read(aside) == seen:
            return True
        # Put the live lock back; this fails (and leaves the newer one) if yet another appeared.
        with contextlib.suppress(OSError):
            os.link(aside, path)
        return False
    finally:
        aside.unlink(missing_ok=True)


def _acquire(path: Path, content: bytes, note: Callable[[str], None]) -> None:
    unreadable_since: float | None = None
    for _ in range(100):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pass
        except OSError as exc:
            raise LockError(f"{path}: cannot create the lock file ({exc.strerror or exc})") from None
        else:
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        raw = _read(path)
        if raw is None:
            continue  # released between our create and our read: try again
        info = _parse(raw)
        directory = path.parent
        if info is None:
            unreadable_since = unreadable_since or time.monotonic()
            if time.monotonic() - unreadable_since < _UNREADABLE_GRACE_S:
                time.sleep(0.05)
                continue
            raise LockError(
                f"{directory} is locked by {path}, which cannot be read; if no dartkit command is "
                f"using {directory}, delete {path} and run again"
            )
        unreadable_since = None
        if info.get("host") != socket.gethostname():
            raise LockError(
                f"{directory} is in use by {_holder(info)}; a lock from another host is never taken over: "
                f"if that command is no longer running, delete {path} and run again"
            )
        pid = info["pid"]
        # Our own pid in a lock we do not hold: a previous process with this pid (a restarted
        # container starts at the same pid) died holding it.
        if pid != os.getpid() and _pid_alive(pid):
            raise LockError(
                f"{directory} is in use by {_holder(info)}; wait for it to finish, stop it, "
                f"or use another output directory"
            )
        if _take_over(path, raw):
            note(
                f"note: took over the lock on {directory} left by {_holder(info)}, which is no longer running"
            )
    raise LockError(f"{path}: could not take the lock (it kept changing hands)")


@contextlib.contextmanager
def dir_lock(
    directory: Path,
    command: str | None = None,
    note: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold ``<directory>/.dartkit.lock`` for the life of the ``with`` block.

    The directory is created if needed. The lock is removed when the block ends, also on an
    exception or Ctrl-C; a process killed outright leaves it behind, and the next command
    finds its pid dead and takes it over. Re-entrant within one process.

    Args:
        directory: The output directory to lock.
        command: What the lock says is running (default: this process's command line).
        note: Where the one-line take-over note goes (default: stderr).

    Yields:
        The lock file's path.

    Raises:
        LockError: Another live process on this host holds the lock (its pid, host and
            command are named), or a lock from another host or an unreadable one is there
            (the message says which file to delete once nothing uses the directory).
    """
    directory = Path(directory)
    # The directories made here are removed again if the command leaves them empty (it failed
    # before writing anything), so a mistyped argument does not leave an empty --out behind.
    created = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LockError(f"{directory}: cannot create the directory ({exc.strerror or exc})") from None
    path = directory / LOCK_NAME
    key = os.path.realpath(directory)
    # Held while acquiring, so two threads of one process cannot both take the file.
    with _held_guard:
        entry = _held.get(key)
        if entry is not None:
            entry[0] += 1
        else:
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": command or default_command(),
                "started_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            content = (json.dumps(info) + "\n").encode("utf-8")
            _acquire(path, content, note or (lambda msg: print(msg, file=sys.stderr)))
            entry = _held[key] = [1, content, os.getpid()]
    try:
        yield path
    finally:
        with _held_guard:
            entry[0] -= 1
            last = entry[0] == 0
            if last:
                _held.pop(key, None)
        # Only the process that took the lock removes it, and only while it is still its own
        # (a forked child leaving the block, or a lock someone deleted and retook, is left alone).
        if last and entry[2] == os.getpid() and _read(path) == entry[1]:
            path.unlink(missing_ok=True)
            for d in created:  # deepest first; stops at the first one something was written to
                try:
                    d.rmdir()
                except OSError:
                    break


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        flat: dict[str, Any] = {}
        for k, v in obj.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: obj}


def _normalise_path(value: Any) -> Any:
    if value in (None, ""):
        return value
    return str(Path(str(value)).expanduser().resolve())


def input_differences(
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
    ignore: Iterable[str] = (),
    paths: Iterable[str] = (),
) -> list[str]:
    """The settings that differ between two resolved configs, as ``key: A there, B now``.

    Args:
        previous: The config the directory's results were made with (nested dict).
        current: The config of this command (nested dict).
        ignore: Dotted keys that do not change results (batch size, output path, ...).
        paths: Dotted keys holding file paths, compared after resolving them (relative paths
            against the current directory).

    Returns:
        One entry per differing key, in the current config's order.
    """
    old, new = _flatten(previous), _flatten(current)
    skip = set(ignore)
    path_keys = set(paths)
    diffs = []
    for key in [*new, *(k for k in old if k not in new)]:
        if key in skip or any(key.startswith(f"{s}.") for s in skip):
            continue
        a, b = old.get(key), new.get(key)
        if key in path_keys:
            a, b = _normalise_path(a), _normalise_path(b)
        if a != b:
            diffs.append(f"{key}: {json.dumps(a, default=str)} there, {json.dumps(b, default=str)} now")
    return diffs


def check_same_inputs(
    out: Path,
    results: Iterable[str],
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    *,
    record: str,
    force: bool,
    ignore: Iterable[str] = (),
    paths: Iterable[str] = (),
) -> None:
    """Refuse to write over results in ``out`` that were made from other inputs.

    Nothing is checked when ``force`` is set or ``out`` holds none of ``results``. Results
    with the same inputs pass, so an interrupted or repeated command resumes through its caches.

    Args:
        out: The output directory.
        results: File names whose presence means the directory holds results.
        previous: The inputs recorded beside those results (None: no record was found).
        current: This command's inputs, in the same shape.
        record: The file ``previous`` was read from, for the message.
        force: ``--force``: overwrite whatever is there.
        ignore: Dotted keys that do not change results.
        paths: Dotted keys holding file paths.

    Raises:
        DartkitError: The results were made from other inputs (naming up to three
            differences), or there is no record to compare with.
    """
    if force:
        return
    found = [name for name in results if (Path(out) / name).exists()]
    if not found:
        return
    if previous is None:
        raise DartkitError(
            f"{out} already holds {found[0]} but no {record} saying what it was made from; "
            "use another --out, or --force to overwrite it"
        )
    diffs = input_differences(previous, current, ignore=ignore, paths=paths)
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise DartkitError(
            f"{out} already holds results made from other inputs ({record}: {'; '.join(diffs[:3])}{more}); "
            "use another --out, or --force to overwrite them"
        )


# Config keys that change where results go or how fast they come, never what they are
# (batch_size and prefix_cache_min_tokens as in generate.base.text_settings).
NOT_INPUTS = (
    "out",
    "cache",
    "backend.batch_size",
    "backend.prefix_cache_min_tokens",
    "backend.concurrency",
    "backend.timeout_s",
    "backend.max_retries",
    "backend.api_key_env",
    "scorer_device",
)


def check_config_inputs(cfg: BaseModel, results: Iterable[str], force: bool) -> None:
    """:func:`check_same_inputs` against the ``config.yaml`` a command wrote in ``cfg.out``.

    The recorded config is read through ``cfg``'s own model, so keys it lacks (written by an
    older dartkit) take today's defaults instead of counting as differences.

    Args:
        cfg: This command's resolved config (``EvalConfig``, ``AuditConfig``, ...).
        results: File names in ``cfg.out`` whose presence means it holds results.
        force: ``--force``: overwrite whatever is there.

    Raises:
        DartkitError: ``cfg.out`` holds results of another config, or results and no config.
    """
    out = Path(cfg.out)
    record = out / "config.yaml"
    previous = None
    if record.is_file():
        try:
            raw = yaml.safe_load(record.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            raw = None
        if isinstance(raw, dict):
            try:
                previous = type(cfg).model_validate(raw).model_dump(mode="json")
            except ValueError:  # keys this version no longer knows: compare as written
                previous = raw
    paths = [name for name, field in type(cfg).model_fields.items() if "Path" in str(field.annotation)]
    check_same_inputs(
        out,
        results,
        previous,
        cfg.model_dump(mode="json"),
        record="config.yaml",
        force=force,
        ignore=NOT_INPUTS,
        paths=paths,
    )
