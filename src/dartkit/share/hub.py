"""One commit of files to a Hugging Face Hub repository: token, repository, branch, errors.

``push`` (adapters) and ``export-data --push`` (datasets) both end here. The token comes from
huggingface_hub's own lookup (``HF_TOKEN``, else the file ``hf auth login`` writes); it is handed
to ``HfApi`` and goes nowhere else: not into a file, a message or a record. ``HF_ENDPOINT`` is read
when a push starts (huggingface_hub reads it once, at import), so a test or a private Hub can
point dartkit elsewhere.

Only API present in huggingface_hub 0.3x and 1.x is used: ``HfApi.create_repo``,
``create_branch`` and ``create_commit`` with ``CommitOperationAdd``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dartkit import __version__
from dartkit.errors import DartkitError

RepoType = Literal["model", "dataset"]
DEFAULT_REVISION = "main"
# Every push from a run (adapter or dataset) appends one line here, relative to the run.
PUSH_LOG = Path("hub") / "pushes.jsonl"
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class PushResult:
    """Where a push landed.

    Attributes:
        repo_id: ``ORG/NAME``.
        repo_type: ``model`` or ``dataset``.
        revision: The branch committed to.
        repo_url: The repository's page.
        commit_url: The commit's page.
        commit_oid: The commit's id.
        files: Paths in the repository that the commit wrote.
    """

    repo_id: str
    repo_type: str
    revision: str
    repo_url: str
    commit_url: str
    commit_oid: str
    files: list[str] = field(default_factory=list)


def check_repo_id(repo_id: str, flag: str = "--to") -> str:
    """``repo_id`` if it names a Hub repository as ``ORG/NAME``.

    Raises:
        DartkitError: another shape, or characters the Hub does not allow.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise DartkitError(
            f"{flag} {repo_id!r}: expected ORG/NAME (a Hub user or organisation, a slash, a repository name)"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise DartkitError(f"{flag} {repo_id!r}: {str(e).splitlines()[0]}") from None
    return repo_id


def hub_token() -> str:
    """The Hub token from huggingface_hub's lookup (``HF_TOKEN``, then the saved login).

    Raises:
        DartkitError: no token is set; says how to set one.
    """
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise DartkitError(
            "no Hugging Face token: set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens) or run `hf auth login`; nothing was uploaded"
        )
    return token


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub to talk to: ``endpoint``, else ``HF_ENDPOINT`` now, else huggingface_hub's default."""
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline_variable() -> str | None:
    for var in ("HF_HUB_OFFLINE",):
        if os.environ.get(var, "").strip().upper() in _TRUE_VALUES:
            return var
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "no answer from the Hub": requests' are OSErrors, httpx's (hub 1.x) are not."""
    errors: list[type[BaseException]] = [OSError]
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:  # pragma: no cover - httpx is a dartkit dependency
        pass
    return tuple(errors)


def _http_message(error, endpoint: str, repo_id: str, repo_type: str) -> str:
    """One line for a Hub HTTP error: status, the server's words, and what to do about it."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    said = getattr(error, "server_message", None) or str(error).splitlines()[0]
    said = " ".join(str(said).split())
    hint = ""
    if status in (401, 403):
        hint = f": check that the token has write access to {repo_id.split('/')[0]}"
    elif status == 404:
        hint = f": no {repo_type} repository {repo_id} (or no access to it) at {endpoint}"
    return f"the Hub refused the push to {repo_id} (HTTP {status}: {said}){hint}"


def check_push_ready() -> str:
    """The token, once nothing stands in the way of a push (call it before any work is done).

    Raises:
        DartkitError: ``HF_HUB_OFFLINE`` is set, or no token is found.
    """
    offline = _offline_variable()
    if offline:
        raise DartkitError(f"{offline} is set, so nothing can reach the Hub; unset it to push")
    return hub_token()


def record_push(run: Path, result: PushResult, **fields) -> Path:
    """Append one line for ``result`` to ``<run>/hub/pushes.jsonl`` (never the token); returns the log.

    Args:
        run: The run directory the pushed files came from.
        result: Where the push landed.
        **fields: What was pushed (``kind``, the adapter's hash, the row counts, ...).
    """
    row = {
        "pushed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
        "repo_id": result.repo_id,
        "repo_type": result.repo_type,
        "revision": result.revision,
        "commit_url": result.commit_url,
        "commit_oid": result.commit_oid,
        "files": result.files,
    }
    log = Path(run) / PUSH_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return log


def push_files(
    repo_id: str,
    files: Mapping[str, bytes | Path],
    *,
    repo_type: RepoType = "model",
    revision: str | None = None,
    private: bool = False,
    commit_message: str,
    endpoint: str | None = None,
) -> PushResult:
    """Create the repository if needed (and the branch) and commit ``files`` in one commit.

    Args:
        repo_id: ``ORG/NAME``.
        files: Path in the repository -> content (bytes built in memory, or a local file sent
            as it is); nothing is written locally.
        repo_type: ``model`` or ``dataset``.
        revision: Branch to commit to (created from the default branch when missing); default main.
        private: Create the repository private (an existing repository keeps its visibility).
        commit_message: The commit's title.
        endpoint: Hub URL (default: ``HF_ENDPOINT``, else huggingface.co).

    Returns:
        Where the commit landed.

    Raises:
        DartkitError: no token, offline mode, the Hub unreachable or refusing (one line each).
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    check_repo_id(repo_id)
    token = check_push_ready()
    url = hub_endpoint(endpoint)
    branch = revision or DEFAULT_REVISION
    api = HfApi(endpoint=url, token=token, library_name="dartkit", library_version=__version__)
    try:
        repo_url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        if branch != DEFAULT_REVISION:
            api.create_branch(repo_id, branch=branch, repo_type=repo_type, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations=[
                CommitOperationAdd(
                    path_in_repo=p, path_or_fileobj=data if isinstance(data, bytes) else str(data)
                )
                for p, data in files.items()
            ],
            commit_message=commit_message,
            repo_type=repo_type,
            revision=branch,
        )
    except HfHubHTTPError as e:
        raise DartkitError(_http_message(e, url, repo_id, repo_type)) from None
    except _network_errors() as e:
        raise DartkitError(f"cannot reach the Hugging Face Hub at {url} ({type(e).__name__})") from None
    return PushResult(
        repo_id=repo_id,
        repo_type=repo_type,
        revision=branch,
        repo_url=str(repo_url),
        commit_url=str(info.commit_url),
        commit_oid=str(info.oid),
        files=sorted(files),
    )
