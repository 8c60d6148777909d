"""LoRA adapters served by an OpenAI-compatible server: their names, registration and unloading.

A spec ``openai:MODEL@URL+adapter=DIR`` asks a server that serves MODEL (for example
``vllm serve MODEL --enable-lora``) for answers from MODEL with the LoRA adapter in DIR. The
adapter is addressed by a name that holds its sha256 (``m_int-<first 12 hex digits>``), sent as
the ``model`` of every request, so a retrained adapter gets a new name and never reaches an
answer the server (or dartkit's cache) holds for the old one.

Before the first request the server is asked which models it serves (``GET /models``). A name
it does not serve yet is loaded with vLLM's runtime endpoint (``POST /load_lora_adapter`` with
``{"lora_name", "lora_path"}``; the server must run with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``)
or, with ``served_adapters.loading: preloaded``, reported with the ``--lora-modules NAME=PATH``
to start the server with. The server reads the adapter from its own filesystem: ``lora_path`` is
the absolute local path, rewritten by ``served_adapters.path_map`` for a server that mounts the
directory elsewhere. Adapters dartkit loaded are unloaded (``POST /unload_lora_adapter``) when
the backend closes.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import httpx

from dartkit.config import ServedAdaptersConfig
from dartkit.errors import DartkitError
from dartkit.generate.base import BackendError
from dartkit.generate.loading import hash_dir

log = logging.getLogger(__name__)

RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def adapter_label(adapter_dir: str | Path) -> str:
    """A short readable label for an adapter directory: ``runs/x/m_int/adapter`` -> ``m_int``."""
    p = Path(adapter_dir)
    name = p.parent.name if p.name == "adapter" and p.parent.name else p.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "adapter"


def served_adapter_name(adapter_dir: str | Path, sha256: str) -> str:
    """The name an adapter is served under: its label and the first 12 hex digits of its sha256."""
    return f"{adapter_label(adapter_dir)}-{sha256[:12]}"


def server_path(local: str | Path, path_map: dict[str, str]) -> str:
    """The absolute path of ``local`` as the server sees it (the longest ``path_map`` prefix replaced).

    Prefixes match whole path components: ``/data`` maps ``/data/run`` but not ``/database``.
    """
    absolute = Path(local).expanduser().resolve()
    best: tuple[int, str] | None = None
    for src, dst in path_map.items():
        prefix = Path(src).expanduser().resolve()
        if absolute == prefix or prefix in absolute.parents:
            depth = len(prefix.parts)
            if best is None or depth > best[0]:
                rest = absolute.relative_to(prefix)
                best = (depth, f"{dst.rstrip('/')}/{rest.as_posix()}" if rest.parts else dst)
    return best[1] if best else absolute.as_posix()


class ServedAdapter:
    """One LoRA adapter on an OpenAI-compatible server (see the module docstring).

    Args:
        base_url: The server's OpenAI base URL (``http://host:8000/v1``).
        adapter_dir: The local adapter directory (``adapter_config.json`` and weights).
        cfg: How the adapter reaches the server (runtime loading or preloaded, path map).
        timeout_s: Seconds one registration request may take.

    Attributes:
        sha256: The adapter directory's fingerprint (part of every cache key of its answers).
        name: The name the adapter is served under, sent as the ``model`` of each request.
        path: The adapter directory as the server sees it.

    Raises:
        DartkitError: ``adapter_dir`` is not a PEFT adapter directory.
    """

    def __init__(self, base_url: str, adapter_dir: str | Path, cfg: ServedAdaptersConfig, timeout_s: float):
        local = Path(adapter_dir).expanduser()
        if not (local / "adapter_config.json").is_file():
            raise DartkitError(f"{local}: not a PEFT adapter directory (no adapter_config.json)")
        self.base_url = base_url.rstrip("/")
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.sha256 = hash_dir(local)
        self.name = served_adapter_name(local, self.sha256)
        self.path = server_path(local, cfg.path_map)
        self._ready = False
        self._loaded_here = False
        self._lock = threading.Lock()

    def reload(self, api_key: str) -> bool:
        """Check the server again and load the adapter if it no longer serves it (see :meth:`ensure`).

        For a request that got HTTP 404 naming the adapter: another client unloaded it (a shared
        server), or the server restarted. Concurrent callers load it once.

        Returns:
            Whether the server listed the adapter as served already (so the 404 had another cause).
        """
        with self._lock:
            listed = self.name in self._served_models(api_key)
            self._ready = listed
            if not listed:
                self._load(api_key)
        return listed

    def ensure(self, api_key: str) -> None:
        """Make sure the server serves :attr:`name` (load it at runtime, or check it is preloaded).

        Raises:
            DartkitError: the server does not serve the adapter and cannot be made to: runtime
                loading is off on the server (names ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` and the
                ``--lora-modules`` alternative), the server cannot read the adapter, or it is
                preloaded-only and not started with it.
            BackendError: the server cannot be reached.
        """
        with self._lock:
            self._ensure(api_key)

    def _ensure(self, api_key: str) -> None:
        if self._ready:
            return
        if self.name in self._served_models(api_key):
            self._ready = True
            return
        self._load(api_key)

    def _load(self, api_key: str) -> None:
        """Load the adapter the server does not serve (runtime loading), or say how to start the server."""
        preload = f"--lora-modules {self.name}={self.path}"
        if self.cfg.loading == "preloaded":
            raise DartkitError(
                f"{self.base_url} does not serve adapter '{self.name}' (served_adapters.loading: preloaded): "
                f"restart the server with `{preload}` (vllm serve ... --enable-lora), or let dartkit load it "
                f"at runtime (served_adapters.loading: runtime, server started with {RUNTIME_LORA_ENV}=True)"
            )
        status, message = self._post(
            "load_lora_adapter", {"lora_name": self.name, "lora_path": self.path}, api_key
        )
        if status == 200:
            self._loaded_here = True
            self._ready = True
            log.info("%s: loaded LoRA adapter %s from %s", self.base_url, self.name, self.path)
            return
        if status == 400 and "already" in message.lower():
            self._ready = True  # loaded meanwhile under this name: same sha256, same weights
            return
        if status in (404, 405):
            raise DartkitError(
                f"{self.base_url} has no runtime LoRA loading (POST /load_lora_adapter: HTTP {status}): start "
                f"vLLM with {RUNTIME_LORA_ENV}=True and --enable-lora, or start it with `{preload}` and set "
                "backend.served_adapters.loading: preloaded"
            )
        hint = (
            "; the server reads the adapter from its own filesystem: check that it sees this path "
            "(backend.served_adapters.path_map maps local prefixes to the server's)"
        )
        raise DartkitError(
            f"{self.base_url} refused to load adapter '{self.name}' from {self.path}: HTTP {status}: "
            f"{message}{hint if status in (400, 422, 500) else ''}"
        )

    def release(self, api_key: str) -> None:
        """Unload the adapter if dartkit loaded it (and ``unload_on_close``); failures only warn."""
        if not (self._loaded_here and self.cfg.unload_on_close):
            return
        self._loaded_here = False
        self._ready = False
        try:
            status, message = self._post("unload_lora_adapter", {"lora_name": self.name}, api_key)
        except BackendError as e:
            status, message = 0, str(e)
        if status != 200:
            log.warning("%s: could not unload LoRA adapter %s: %s", self.base_url, self.name, message)

    # -- HTTP ----------------------------------------------------------------------------------

    def _headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def _served_models(self, api_key: str) -> set[str]:
        """Model ids ``GET /models`` lists (vLLM lists loaded adapters there too); empty when it has none."""
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                r = client.get(f"{self.base_url}/models", headers=self._headers(api_key))
        except httpx.HTTPError as e:
            raise BackendError(
                f"{self.base_url}: cannot list the served models ({type(e).__name__})"
            ) from None
        if r.status_code != 200:
            return set()  # some servers have no /models; loading will say more
        try:
            return {str(m.get("id")) for m in r.json().get("data", []) if isinstance(m, dict)}
        except (ValueError, AttributeError):
            return set()

    def _post(self, endpoint: str, body: dict[str, Any], api_key: str) -> tuple[int, str]:
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                r = client.post(f"{self.base_url}/{endpoint}", json=body, headers=self._headers(api_key))
        except httpx.HTTPError as e:
            raise BackendError(f"{self.base_url}: POST /{endpoint} failed ({type(e).__name__})") from None
        return r.status_code, _message(r)


def _message(r: httpx.Response) -> str:
    """The server's message from an error body (vLLM: ``{"error": {"message"}}`` or ``{"detail"}``)."""
    try:
        body = r.json()
    except ValueError:
        text = r.text
    else:
        if isinstance(body, dict):
            err = body.get("error")
            text = (
                err.get("message")
                if isinstance(err, dict)
                else err or body.get("message") or body.get("detail")
            )
            text = str(text if text is not None else body)
        else:
            text = str(body)
    text = " ".join(text.split()) or "(empty body)"
    return text[:300] + ("..." if len(text) > 300 else "")
