"""Fetch a suite's upstream files into the dartkit cache, pinned by sha256 (``dartkit suite run --download``).

Each suite declares its files (path under the release URL and sha256) and a release URL at a fixed
commit where one is known. Files land in ``<cache>/suites/<name>/`` under their upstream paths, so
that directory is a valid ``--source``. A file already there with the right hash is not fetched again;
a download whose hash differs is refused and deleted (the upstream file changed, or the URL is wrong).
``$DARTKIT_SUITE_URL`` (or ``base_url``) replaces the release URL, e.g. with a mirror.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from dartkit.data.download import download_file
from dartkit.errors import DataError
from dartkit.files import cache_root, file_sha256
from dartkit.suites.base import Suite

URL_ENV = "DARTKIT_SUITE_URL"
_HINT = "download the files yourself and pass --source (see `dartkit suite list` for where they live)"


def suite_cache_dir(suite: Suite) -> Path:
    return cache_root() / "suites" / suite.name


def fetch_suite(suite: Suite, base_url: str | None = None, timeout_s: float = 60.0) -> Path:
    """Download (or find cached) every file of ``suite``; returns the directory to pass as ``--source``.

    Raises:
        DataError: the suite has no files to download, the network fails, the server answers with an
            error, or a file's sha256 is not the pinned one.
    """
    if not suite.files:
        raise DataError(f"suite {suite.name} has no upstream files to download (it ships its own data)")
    url = (base_url or os.environ.get(URL_ENV) or suite.release_url).rstrip("/")
    target_dir = suite_cache_dir(suite)
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for pinned in suite.files:
            target = target_dir / pinned.path
            if target.is_file() and file_sha256(target) == pinned.sha256:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = f"{url}/{pinned.path}"
            why_absent = download_file(client, source, target, _HINT, pinned.sha256)
            if why_absent:
                raise DataError(f"download of {source}: {why_absent}; {_HINT}")
    return target_dir
