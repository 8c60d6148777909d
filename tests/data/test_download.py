"""Downloading the upstream files, against a local HTTP server started in the test."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dartkit.data.download import URL_ENV, fetch_wang2025
from dartkit.data.prepare import prepare_data
from dartkit.errors import DataError


class _Handler(SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.endswith("/D2_1k.pkl") and (Path(self.directory) / "FAIL_D2").exists():
            self.send_error(500, "boom")
            return
        super().do_GET()

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A local HTTP server: ``(base_url, served_dir, request_log)``; the files live under /suite/."""
    served = tmp_path / "served"
    (served / "suite").mkdir(parents=True)
    log: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": log})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/suite", served / "suite", log
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/suite"


def test_downloads_what_exists_and_reports_the_rest_absent(server, raw_pkl_dir: Path, tmp_path: Path) -> None:
    url, served, log = server
    for name in ("D1_1k.pkl", "N4_1k.pkl"):
        shutil.copy(raw_pkl_dir / name, served / name)
    cache = tmp_path / "cache"
    result = fetch_wang2025(cache, base_url=url)
    assert sorted(result.present) == ["D1", "N4"] and result.downloaded == ["D1", "N4"]
    assert sorted(result.absent) == ["D2", "D3", "D4", "N1", "N2", "N3"]
    assert all("404" in why for why in result.absent.values())
    assert (cache / "N4_1k.pkl").read_bytes() == (raw_pkl_dir / "N4_1k.pkl").read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == ["D1_1k.pkl", "N4_1k.pkl"]  # no partial files

    # Cached files are not fetched again.
    log.clear()
    again = fetch_wang2025(cache, base_url=url)
    assert again.downloaded == [] and sorted(again.present) == ["D1", "N4"]
    assert not any(path.endswith(("D1_1k.pkl", "N4_1k.pkl")) for path in log)


def test_url_from_environment(
    server, raw_pkl_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served, _ = server
    shutil.copy(raw_pkl_dir / "D3_1k.pkl", served / "D3_1k.pkl")
    monkeypatch.setenv(URL_ENV, url)
    result = fetch_wang2025(tmp_path / "cache", benchmarks=["D3", "N1"])
    assert result.base_url == url and list(result.present) == ["D3"] and list(result.absent) == ["N1"]


def test_all_missing_is_an_error(server, tmp_path: Path) -> None:
    url, _, _ = server
    with pytest.raises(DataError, match=r"none of the benchmark files were found at .*--source DIR"):
        fetch_wang2025(tmp_path / "cache", base_url=url)


def test_lfs_pointer_counts_as_absent(server, raw_pkl_dir: Path, tmp_path: Path) -> None:
    url, served, _ = server
    shutil.copy(raw_pkl_dir / "D1_1k.pkl", served / "D1_1k.pkl")
    (served / "N1_1k.pkl").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 4000000\n"
    )
    result = fetch_wang2025(tmp_path / "cache", base_url=url)
    assert "LFS" in result.absent["N1"]
    assert not (tmp_path / "cache" / "N1_1k.pkl").exists()


def test_server_error_is_a_data_error(server, raw_pkl_dir: Path, tmp_path: Path) -> None:
    url, served, _ = server
    shutil.copy(raw_pkl_dir / "D1_1k.pkl", served / "D1_1k.pkl")
    (served.parent / "FAIL_D2").touch()
    with pytest.raises(DataError, match=r"D2_1k\.pkl failed \(HTTP 500"):
        fetch_wang2025(tmp_path / "cache", base_url=url)


def test_offline_tells_the_user_about_source(closed_port_url: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        fetch_wang2025(tmp_path / "cache", base_url=closed_port_url, timeout=5)
    message = str(info.value)
    assert "download of" in message and "failed" in message and "--source DIR" in message
    assert "\n" not in message


def test_prepare_downloads_into_the_cache(server, raw_pkl_dir: Path, tmp_path: Path) -> None:
    url, served, _ = server
    for name in ("D3_1k.pkl", "N4_1k.pkl"):
        shutil.copy(raw_pkl_dir / name, served / name)
    summary = prepare_data(tmp_path / "out", cache_dir=tmp_path / "cache", base_url=url)
    assert summary["present"] == ["D3", "N4"]
    assert summary["absent"] == ["D1", "D2", "D4", "N1", "N2", "N3"]
    assert summary["base_url"] == url and summary["source"] == str(tmp_path / "cache")
    assert summary["total"] == 4000
    assert "404" in summary["absent_reasons"]["N1"]
