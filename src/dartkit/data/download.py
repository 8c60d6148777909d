"""Download the upstream ``<B>_1k.pkl`` files of Wang et al. 2025 into a cache.

Files land under their upstream names, so the cache directory is itself a valid
``--source DIR``. Files already there are not fetched again. A benchmark the
server does not have (404) is reported absent; only when all are missing, or the
network fails, is it an error.

Example::

    from dartkit.data.download import fetch_wang2025
    result = fetch_wang2025(Path("~/.cache/dartkit/wang2025").expanduser())
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dartkit.data.jsonl import chmod_like_new_file
from dartkit.data.wang2025 import benchmark_file_name
from dartkit.errors import DataError
from dartkit.records import BENCHMARKS

DEFAULT_URL = "https://raw.githubusercontent.com/Angelina-Wang/difference_awareness/main/benchmark_suite"
"""Folder of the upstream repository (github.com/Angelina-Wang/difference_awareness) holding the files."""

URL_ENV = "DARTKIT_WANG2025_URL"

_OFFLINE_HINT = "download the <B>_1k.pkl files yourself and pass `--source DIR` with a directory holding them"
# GitHub serves a small text stub instead of the data for files kept in Git LFS.
_LFS_POINTER_PREFIX = b"version https://git-lfs"


@dataclass
class FetchResult:
    """Outcome of :func:`fetch_wang2025`.

    Attributes:
        base_url: Where the files were fetched from.
        present: Benchmark name to local file, for files now in the cache.
        absent: Benchmark name to the reason it is missing.
        downloaded: Benchmarks fetched by this call (the others were cached).
    """

    base_url: str
    present: dict[str, Path] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    downloaded: list[str] = field(default_factory=list)


def resolve_base_url(base_url: str | None = None) -> str:
    """The download location: the argument, else ``$DARTKIT_WANG2025_URL``, else :data:`DEFAULT_URL`."""
    return (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def download_file(
    client: httpx.Client, url: str, target: Path, hint: str, sha256: str | None = None
) -> str | None:
    """Fetch ``url`` into ``target`` (atomically, with the user's umask); None on success, else why it is absent.

    Absent means the server has no such file (HTTP 404) or sent a Git LFS pointer instead of it.

    Raises:
        DataError: another HTTP error, a network failure, a file that cannot be written, or (with
            ``sha256``) bytes whose hash is not the expected one; ``hint`` says what to do instead.
            Nothing partial is left behind.
    """
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        chmod_like_new_file(fd)  # mkstemp makes it 0600; a downloaded file follows the umask
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as handle, client.stream("GET", url) as response:
            if response.status_code == 404:
                return "not found (HTTP 404)"
            if response.status_code != 200:
                raise DataError(
                    f"download of {url} failed (HTTP {response.status_code} {response.reason_phrase}); {hint}"
                )
            first = True
            for chunk in response.iter_bytes():
                if first and chunk.startswith(_LFS_POINTER_PREFIX):
                    return "the server returned a Git LFS pointer instead of the file"
                first = False
                digest.update(chunk)
                handle.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise DataError(
                f"download of {url}: sha256 {digest.hexdigest()[:16]}… is not the pinned {sha256[:16]}… "
                "(the upstream file changed or the URL is wrong); nothing was kept"
            )
        os.replace(tmp_name, target)
        return None
    except httpx.HTTPError as exc:
        raise DataError(f"download of {url} failed ({type(exc).__name__}: {exc}); {hint}") from None
    except OSError as exc:
        raise DataError(f"{target}: cannot write the download ({exc.strerror or exc})") from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def fetch_wang2025(
    cache_dir: Path,
    base_url: str | None = None,
    benchmarks: Sequence[str] = BENCHMARKS,
    timeout: float = 60.0,
) -> FetchResult:
    """Make sure the upstream benchmark files are in ``cache_dir``, downloading the missing ones.

    Args:
        cache_dir: Directory for the files (created if needed).
        base_url: Folder URL holding ``<B>_1k.pkl``; defaults to ``$DARTKIT_WANG2025_URL``
            or :data:`DEFAULT_URL`.
        benchmarks: Which benchmarks to fetch.
        timeout: Seconds to wait on the network per request.

    Returns:
        Which benchmarks are present (cached or downloaded) and which are absent.

    Raises:
        DataError: The network failed or the server answered with an error, or
            none of the benchmarks exists at ``base_url``; the message tells the
            user to pass ``--source DIR`` instead.
    """
    cache_dir = Path(cache_dir).expanduser()
    url = resolve_base_url(base_url)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{cache_dir}: cannot create the cache directory ({exc.strerror or exc})") from None
    result = FetchResult(base_url=url)
    with httpx.Client(follow_redirects=True, timeout=timeout) as client:
        for benchmark in benchmarks:
            target = cache_dir / benchmark_file_name(benchmark)
            if target.is_file():
                result.present[benchmark] = target
                continue
            why_absent = download_file(
                client, f"{url}/{benchmark_file_name(benchmark)}", target, _OFFLINE_HINT
            )
            if why_absent is None:
                result.present[benchmark] = target
                result.downloaded.append(benchmark)
            else:
                result.absent[benchmark] = why_absent
    if not result.present:
        raise DataError(f"none of the benchmark files were found at {url}; {_OFFLINE_HINT}")
    return result
