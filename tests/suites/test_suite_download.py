"""Pinned downloads of a suite's upstream files, against a local HTTP server started in the test."""

from __future__ import annotations

import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dartkit.errors import DataError
from dartkit.suites.download import URL_ENV, fetch_suite
from dartkit.suites.registry import get_suite
from dartkit.suites.run import SuiteRunConfig, select_items

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (SHARED / "xstest").is_dir(), reason="../shared/data not present")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A local server holding a copy of the upstream XSTest file; the cache in tmp_path."""
    root = tmp_path / "served"
    root.mkdir()
    shutil.copy(SHARED / "xstest" / "xstest_prompts.csv", root / "xstest_prompts.csv")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("DARTKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
    try:
        yield root
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_lands_in_the_cache_verified_and_is_a_valid_source(served, tmp_path):
    cfg = SuiteRunConfig(suite="xstest", model="dummy", out=tmp_path / "o", download=True)
    _, items, size = select_items(cfg)
    assert size == 450 and (tmp_path / "cache" / "suites" / "xstest" / "xstest_prompts.csv").is_file()
    # Cached with the right hash: a second call does not need the server.
    (served / "xstest_prompts.csv").unlink()
    assert fetch_suite(get_suite("xstest")) == tmp_path / "cache" / "suites" / "xstest"


def test_a_changed_upstream_file_is_refused_and_not_kept(served, tmp_path):
    with open(served / "xstest_prompts.csv", "a", encoding="utf-8") as f:
        f.write("451,An extra prompt,homonyms,safe,,\n")
    with pytest.raises(DataError, match="is not the pinned"):
        fetch_suite(get_suite("xstest"))
    assert not list((tmp_path / "cache" / "suites" / "xstest").glob("*.csv"))


def test_a_missing_file_on_the_server_is_an_error(served):
    (served / "xstest_prompts.csv").unlink()
    with pytest.raises(DataError, match="HTTP 404"):
        fetch_suite(get_suite("xstest"))


def test_a_suite_with_its_own_data_has_nothing_to_download():
    with pytest.raises(DataError, match="ships its own data"):
        fetch_suite(get_suite("transfer"))
