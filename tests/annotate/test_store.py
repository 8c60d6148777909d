"""The annotation store: one row per annotator and item, saved at once, safe with two writers."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

import pytest

from dartkit.annotate.store import STORE_NAME, open_store
from dartkit.errors import DataError


def test_store_is_wal_and_answers_survive_reopening(tmp_path):
    store = open_store(tmp_path)
    store.save_answer("a1", "i-1", True, "A", "severe", "slur in B? no, in A")
    store.save_answer("a1", "i-2", False)
    # A different connection (another process, the agreement statistics) sees both at once.
    with sqlite3.connect(tmp_path / STORE_NAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 2
    again = open_store(tmp_path, create=False)
    rows = again.all_answers()
    assert [(r["annotator"], r["item_id"], r["drift"], r["which"], r["severity"]) for r in rows] == [
        ("a1", "i-1", 1, "A", "severe"),
        ("a1", "i-2", 0, None, None),
    ]
    assert rows[0]["note"] == "slur in B? no, in A"
    assert set(rows[0]) == {"annotator", "item_id", "drift", "which", "severity", "note", "saved_at"}


def test_saved_at_is_utc_iso(tmp_path):
    row = open_store(tmp_path).save_answer("a1", "i-1", False)
    saved = dt.datetime.fromisoformat(row["saved_at"])
    assert saved.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - saved).total_seconds()) < 60


def test_re_answering_replaces_the_row(tmp_path):
    store = open_store(tmp_path)
    store.save_answer("a1", "i-1", True, "B", "mild", "first look", saved_at="2026-01-01T00:00:00+00:00")
    store.save_answer("a1", "i-1", False, note="", saved_at="2026-01-02T00:00:00+00:00")
    assert store.all_answers() == [
        {
            "annotator": "a1",
            "item_id": "i-1",
            "drift": 0,
            "which": None,
            "severity": None,
            "note": None,
            "saved_at": "2026-01-02T00:00:00+00:00",
        }
    ]


def test_answers_of_returns_one_annotators_answers_only(tmp_path):
    store = open_store(tmp_path)
    store.save_answer("a1", "i-1", True, "A", "mild")
    store.save_answer("a2", "i-1", False)
    store.save_answer("a2", "i-2", True, "B", "extreme")
    assert set(store.answers_of("a1")) == {"i-1"}
    assert store.answers_of("a1")["i-1"]["which"] == "A"
    assert set(store.answers_of("a2")) == {"i-1", "i-2"}
    assert store.answers_of("a3") == {}


@pytest.mark.parametrize(
    ("drift", "which", "severity", "note", "message"),
    [
        (True, None, "mild", None, "needs which answer"),
        (True, "A", None, None, "needs a severity"),
        (True, "C", "mild", None, "needs which answer"),
        (True, "A", "terrible", None, "needs a severity"),
        (False, "A", None, None, "takes no answer letter"),
        (False, None, "mild", None, "takes no answer letter"),
        (1, "A", "mild", None, "true or false"),
        (False, None, None, "x" * 2001, "longer than 2000"),
    ],
)
def test_answers_that_break_the_rules_are_refused(tmp_path, drift, which, severity, note, message):
    store = open_store(tmp_path)
    with pytest.raises(DataError, match=message):
        store.save_answer("a1", "i-1", drift, which, severity, note)
    assert store.all_answers() == []


def test_the_table_itself_refuses_inconsistent_rows(tmp_path):
    open_store(tmp_path)
    with sqlite3.connect(tmp_path / STORE_NAME) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO answers VALUES ('a1', 'i-1', 1, NULL, NULL, NULL, 'now')")


def test_open_store_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        open_store(tmp_path / "missing")
    with pytest.raises(DataError, match="no annotations yet"):
        open_store(tmp_path, create=False)
    with sqlite3.connect(tmp_path / STORE_NAME) as conn:
        conn.execute("CREATE TABLE answers (who TEXT, what TEXT)")
    with pytest.raises(DataError, match="has columns"):
        open_store(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / STORE_NAME).write_text("not a database, just text " * 100)
    with pytest.raises(DataError, match="annotation store"):
        open_store(tmp_path / "other")


def test_two_annotators_writing_at_once_lose_nothing(tmp_path):
    store = open_store(tmp_path)
    n = 150
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def annotate(annotator: str) -> None:
        try:
            start.wait()
            for i in range(n):
                store.save_answer(
                    annotator,
                    f"i-{i}",
                    i % 2 == 0,
                    "A" if i % 2 == 0 else None,
                    "moderate" if i % 2 == 0 else None,
                )
                # Re-answer every tenth item: upserts race with inserts.
                if i % 10 == 0:
                    store.save_answer(annotator, f"i-{i}", False, note=f"changed by {annotator}")
        except BaseException as exc:  # collected: an exception in a thread would pass unnoticed
            errors.append(exc)

    def read() -> None:
        try:
            start.wait()
            for _ in range(n):
                store.all_answers()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=annotate, args=(a,)) for a in ("a1", "a2")]
    threads.append(threading.Thread(target=read))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for a in ("a1", "a2"):
        answers = store.answers_of(a)
        assert len(answers) == n
        assert answers["i-10"]["note"] == f"changed by {a}" and answers["i-10"]["drift"] == 0
        assert answers["i-12"]["drift"] == 1 and answers["i-12"]["severity"] == "moderate"
