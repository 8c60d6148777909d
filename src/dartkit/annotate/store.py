"""The annotation store: one SQLite file, ``DIR/annotations.sqlite``, one row per annotator and item.

The annotation page writes here (every answer at once, one transaction per answer) and the
agreement statistics read from here. The file uses SQLite's write-ahead log (WAL), so readers never
block the writer and a crash or a closed browser loses at most the answer being sent.

Each call opens its own connection and closes it again. The web server may run request handlers on
several threads at once (two annotators saving at the same moment); a connection per call keeps
SQLite's threading rules out of the picture, and WAL plus a busy timeout serialises the writers.
Opening a connection to a local file costs well under a millisecond, far below a person's pace.

Table ``answers`` (see the issue 13 file contract)::

    annotator TEXT, item_id TEXT, drift INTEGER NOT NULL (0|1), which TEXT ('A'|'B'|NULL),
    severity TEXT (mild|moderate|severe|extreme|NULL), note TEXT, saved_at TEXT (UTC ISO),
    PRIMARY KEY (annotator, item_id)

``drift = 1`` needs ``which`` and ``severity``; ``drift = 0`` has both NULL. Re-answering an item
replaces the annotator's earlier answer.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dartkit.annotate import STORE_NAME
from dartkit.audit.core import SEVERITIES
from dartkit.errors import DataError

LETTERS = ("A", "B")
NOTE_MAX_CHARS = 2000
COLUMNS = ("annotator", "item_id", "drift", "which", "severity", "note", "saved_at")

# The CHECK constraints repeat the rules save_answer enforces, so a row written by another tool
# (or an older dartkit) that breaks them is refused by SQLite itself instead of confusing the
# agreement statistics later.
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS answers (
    annotator TEXT NOT NULL,
    item_id TEXT NOT NULL,
    drift INTEGER NOT NULL CHECK (drift IN (0, 1)),
    which TEXT CHECK (which IN ('A', 'B')),
    severity TEXT CHECK (severity IN ({", ".join(f"'{s}'" for s in SEVERITIES)})),
    note TEXT,
    saved_at TEXT NOT NULL,
    PRIMARY KEY (annotator, item_id),
    CHECK ((drift = 1 AND which IS NOT NULL AND severity IS NOT NULL)
        OR (drift = 0 AND which IS NULL AND severity IS NULL))
)
"""

_UPSERT = """
INSERT INTO answers (annotator, item_id, drift, which, severity, note, saved_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (annotator, item_id) DO UPDATE SET
    drift = excluded.drift, which = excluded.which, severity = excluded.severity,
    note = excluded.note, saved_at = excluded.saved_at
"""


class StoreError(DataError):
    """The store cannot be opened, read or written (as opposed to an answer that breaks a rule)."""


# Seconds a writer waits for another writer's transaction before giving up; each transaction here
# is one row, so the wait is normally a few milliseconds.
BUSY_TIMEOUT_S = 10.0


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds and a ``+00:00`` offset."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def check_answer(drift: bool, which: str | None, severity: str | None, note: str | None) -> None:
    """Check one answer against the store's rules.

    Raises:
        DataError: The answer breaks a rule; the message says which.
    """
    if not isinstance(drift, bool):
        raise DataError(f"drift must be true or false, not {drift!r}")
    if drift:
        if which not in LETTERS:
            raise DataError("drift = yes needs which answer (A or B)")
        if severity not in SEVERITIES:
            raise DataError(f"drift = yes needs a severity ({', '.join(SEVERITIES)})")
    elif which is not None or severity is not None:
        raise DataError("drift = no takes no answer letter and no severity")
    if note is not None:
        if not isinstance(note, str):
            raise DataError("note must be text")
        if len(note) > NOTE_MAX_CHARS:
            raise DataError(f"note is longer than {NOTE_MAX_CHARS} characters")


class AnnotationStore:
    """The answers of every annotator of one export directory (``DIR/annotations.sqlite``).

    Safe to share between threads: every method opens and closes its own connection.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the annotation store ({exc})") from None
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: annotation store error ({exc})") from None
        finally:
            conn.close()

    def _init(self) -> None:
        with self._connect() as conn:
            # WAL is a property of the file: set once, every later connection uses it.
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DataError(f"{self.path}: SQLite could not switch to WAL mode (got {mode!r})")
            with conn:
                conn.execute(_SCHEMA)
            names = [row[1] for row in conn.execute("PRAGMA table_info(answers)")]
            if tuple(names) != COLUMNS:
                raise DataError(f"{self.path}: table 'answers' has columns {names}, expected {list(COLUMNS)}")

    def save_answer(
        self,
        annotator: str,
        item_id: str,
        drift: bool,
        which: str | None = None,
        severity: str | None = None,
        note: str | None = None,
        saved_at: str | None = None,
    ) -> dict[str, Any]:
        """Save (or replace) one annotator's answer to one item, committed before returning.

        Args:
            annotator: Annotator id, e.g. ``"a1"``.
            item_id: The item's pseudonymous id.
            drift: Whether one answer shows harm drift.
            which: ``"A"`` or ``"B"`` when ``drift``; None otherwise.
            severity: One of mild / moderate / severe / extreme when ``drift``; None otherwise.
            note: Optional free text (at most 2000 characters); empty text is stored as None.
            saved_at: UTC ISO time; default now.

        Returns:
            The saved row as a dict (``drift`` as 0 or 1).

        Raises:
            DataError: The answer breaks a rule (see ``check_answer``) or the file cannot be written.
        """
        check_answer(drift, which, severity, note)
        row = {
            "annotator": annotator,
            "item_id": item_id,
            "drift": int(drift),
            "which": which,
            "severity": severity,
            "note": note or None,
            "saved_at": saved_at or utc_now_iso(),
        }
        with self._connect() as conn, conn:
            conn.execute(_UPSERT, tuple(row[c] for c in COLUMNS))
        return row

    def answers_of(self, annotator: str) -> dict[str, dict[str, Any]]:
        """One annotator's answers, keyed by item id."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM answers WHERE annotator = ? ORDER BY item_id", (annotator,)
            ).fetchall()
        return {row["item_id"]: dict(row) for row in rows}

    def all_answers(self) -> list[dict[str, Any]]:
        """Every saved answer, ordered by annotator then item id; keys are the column names."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM answers ORDER BY annotator, item_id").fetchall()
        return [dict(row) for row in rows]


def open_store(export_dir: Path, create: bool = True) -> AnnotationStore:
    """Open the annotation store of an export directory, creating it (and its table) if asked.

    Args:
        export_dir: The export directory (``dartkit annotate export --out``).
        create: Create ``annotations.sqlite`` when it does not exist; when False, a missing file is
            an error (a reader such as the agreement statistics has nothing to read).

    Raises:
        DataError: The directory or file is missing, or the file is not an annotation store.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise DataError(f"{export_dir}: no such directory")
    path = export_dir / STORE_NAME
    if not create and not path.is_file():
        raise DataError(f"{path}: no annotations yet (run `dartkit annotate serve {export_dir}`)")
    store = AnnotationStore(path)
    store._init()
    return store


def read_answers(export_dir: Path) -> list[dict[str, Any]]:
    """Every saved answer of an export, opened read-only (safe while the page serves: WAL lets a
    reader in beside the writer, and nothing here can change an answer).

    Raises:
        DataError: No store yet, or a file that is not an annotation store.
    """
    path = Path(export_dir) / STORE_NAME
    if not path.is_file():
        raise DataError(
            f"{path}: no such file (no answers saved yet? start the page with dartkit annotate serve)"
        )
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot open ({exc})") from None
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM answers ORDER BY annotator, item_id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise DataError(f"{path}: not an annotation store ({exc})") from None
    finally:
        conn.close()
    return [dict(row) for row in rows]


def answers_state(export_dir: Path) -> dict[str, Any]:
    """How many answers an export holds, when the last was saved, and a digest of them all (an
    answer changed within the same second still changes the digest): tells a stale summary."""
    rows = read_answers(export_dir)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return {
        "n_answers": len(rows),
        "last_saved": max((r["saved_at"] or "" for r in rows), default=None),
        "sha256": digest,
    }
