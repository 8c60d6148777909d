"""A small OpenAI-compatible chat-completions server for tests.

It runs in-process on 127.0.0.1 with an ephemeral port, answers
``POST /v1/chat/completions`` through a handler you give it, and records every
request it saw (JSON body and headers) together with the most requests it ever
had in flight at once. Use it wherever a test needs a real HTTP endpoint: the
``openai`` backend, a fake teacher or judge behind an ``openai:`` spec, ...

Example::

    from servers import FakeOpenAIServer, keyword_teacher, scripted

    with FakeOpenAIServer(keyword_teacher("bomb")) as server:
        spec = f"openai:fake-teacher@{server.base_url}"
        ...
        assert server.max_in_flight <= 3

    # Fail twice, then answer:
    handler = scripted([(429, {"error": {"message": "slow down"}}), (500, "oops"), "Conclusion: NO"])

A handler is called with each request's JSON body and returns one of:

* ``str`` -- a 200 chat completion whose assistant message is that text;
* ``None`` -- a 200 chat completion whose message content is ``null``;
* ``(status, body)`` or ``(status, headers, body)`` -- ``body`` a dict/list (sent
  as JSON) or a str (sent as plain text);
* a :class:`Reply`, which can also delay its answer.

:class:`FakeHubServer` (at the end) stands in for the Hugging Face Hub in the same way: the
endpoints huggingface_hub calls to create a repository and commit small files.

:class:`FakeVLLMServer` (at the end) is a FakeOpenAIServer that behaves like ``vllm serve BASE
--enable-lora``: it serves named models only, lists them at ``GET /v1/models``, and loads and unloads
LoRA adapters at runtime (``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``) when allowed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"


@dataclass
class Reply:
    """One scripted HTTP answer.

    Attributes:
        status: HTTP status code.
        body: A dict or list (sent as JSON), a str (sent as plain text) or None (empty body).
        headers: Extra response headers, e.g. ``{"Retry-After": "1"}``.
        delay_s: Seconds to wait before answering (counts as in flight).
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class RecordedRequest:
    """What the server received: the path, the headers (lower-cased names) and the JSON body."""

    path: str
    headers: dict[str, str]
    json: Any
    received_at: float


Handler = Callable[[Any], Any]


def completion(content: str | None, model: str = "fake-model", prompt_tokens: int = 10) -> dict[str, Any]:
    """An OpenAI-shaped ``chat.completion`` response body."""
    completion_tokens = len((content or "").split())
    return {
        "id": f"chatcmpl-fake-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def reply(
    content, finish_reason="stop", model="fake-model-2024", fingerprint="fp_a", refusal: str | None = None
) -> Reply:
    """A 200 chat completion with the given content, finish_reason, model and system_fingerprint
    (and, with ``refusal``, the message's ``refusal`` field: OpenAI's shape for a declined reply)."""
    body = completion(content, model=model)
    body["choices"][0]["finish_reason"] = finish_reason
    if refusal is not None:
        body["choices"][0]["message"]["refusal"] = refusal
    if fingerprint is not None:
        body["system_fingerprint"] = fingerprint
    return Reply(200, body)


_ids = itertools.count(1)
_USED_UP = object()


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error response body."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def last_user_message(request_json: Any) -> str:
    """The text of the last ``user`` message of a chat request ("" if there is none)."""
    for message in reversed(request_json.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # the multi-part form: [{"type": "text", "text": ...}, ...]
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


def echo(request_json: Any) -> str:
    """Handler: answer with the last user message."""
    return last_user_message(request_json)


def keyword_teacher(*words: str) -> Handler:
    """Handler that answers like a teacher: YES when the last user message contains one of ``words``.

    The answer is deterministic and ends in a ``Conclusion: YES|NO`` line, e.g.
    ``"Analysis: the message mentions 'bomb'.\\nConclusion: YES"``. Matching is
    case-insensitive.
    """
    keys = [w.lower() for w in (words or ("harmful",))]

    def handler(request_json: Any) -> str:
        text = last_user_message(request_json).lower()
        hit = next((w for w in keys if w in text), None)
        if hit is not None:
            return f"Analysis: the message mentions '{hit}'.\nConclusion: YES"
        return "Analysis: the message mentions none of the flagged terms.\nConclusion: NO"

    return handler


def scripted(replies: Sequence[Any], then: Handler | None = None) -> Handler:
    """Handler that gives ``replies`` one per request, in arrival order, then falls back to ``then``.

    Args:
        replies: Handler results (see the module docstring) or callables of the request JSON.
        then: Handler once the script is used up; default: answer ``"ok"``.
    """
    lock = threading.Lock()
    pending = list(replies)

    def handler(request_json: Any) -> Any:
        with lock:
            item = pending.pop(0) if pending else _USED_UP
        if item is _USED_UP:
            return then(request_json) if then is not None else "ok"
        return item(request_json) if callable(item) else item

    return handler


def _normalise(result: Any) -> Reply:
    if isinstance(result, Reply):
        return result
    if result is None or isinstance(result, str):
        return Reply(200, completion(result))
    if isinstance(result, tuple) and len(result) == 2:
        return Reply(result[0], result[1])
    if isinstance(result, tuple) and len(result) == 3:
        return Reply(result[0], result[2], dict(result[1]))
    raise TypeError(
        f"handler returned {result!r}; expected str, None, (status, body), (status, headers, body) or Reply"
    )


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions server in a background thread.

    Args:
        handler: Called with each request's JSON body; see the module docstring. Default: echo.
        delay_s: Seconds every request waits before it is answered (on top of a Reply's own delay).

    Attributes:
        requests: Every chat request received, in arrival order.
        max_in_flight: The most requests that were being handled at the same moment.
    """

    def __init__(self, handler: Handler | None = None, *, delay_s: float = 0.0):
        self.handler = handler or echo
        self.delay_s = delay_s
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        # Set on stop so that sleeping handlers wake up at once instead of outliving the test.
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None  # kept after stop, so a test can still name the dead endpoint

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, ready for ``openai:MODEL@BASE_URL``."""
        if self._port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def attempts(self) -> int:
        """How many chat requests arrived so far."""
        with self._lock:
            return len(self.requests)

    def start(self) -> FakeOpenAIServer:
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), _RequestHandler)
        self._httpd.fake = self
        self._port = self._httpd.server_address[1]
        # A short poll interval keeps stop() (which waits for the next poll) from adding 0.5 s per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-openai-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError:
            return Reply(400, error_body("request body is not JSON"))
        with self._lock:
            self.requests.append(RecordedRequest(path, headers, body, time.monotonic()))
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if path != CHAT_PATH:
                return Reply(404, error_body(f"unknown path {path}", code="not_found"))
            reply = _normalise(self.handler(body))
            if self.delay_s + reply.delay_s > 0:
                self._stopping.wait(self.delay_s + reply.delay_s)
            return reply
        except Exception as e:  # a broken handler should fail the test visibly, not hang the client
            return Reply(
                500, error_body(f"test handler raised {type(e).__name__}: {e}", type_="server_error")
            )
        finally:
            with self._lock:
                self._in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out hang up on purpose in tests; a broken pipe is not news.
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection must not pin a thread forever
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake._serve(self.path, headers, raw)
        self._send(reply)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/v1/models":
            # A server subclass may list its own models (FakeVLLMServer lists its loaded adapters).
            listed = getattr(self.server.fake, "model_list", None)
            data = listed() if listed else [{"id": "fake-model", "object": "model"}]
            self._send(Reply(200, {"object": "list", "data": data}))
        else:
            self._send(Reply(404, error_body(f"unknown path {self.path}", code="not_found")))

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, (dict, list)):
            payload, ctype = json.dumps(reply.body).encode(), "application/json"
        elif reply.body is None:
            payload, ctype = b"", "application/json"
        else:
            payload, ctype = str(reply.body).encode(), "text/plain; charset=utf-8"
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass


@contextlib.contextmanager
def openai_server(handler: Handler | None = None, *, delay_s: float = 0.0) -> Iterator[str]:
    """Run a :class:`FakeOpenAIServer` for the duration of a ``with`` block and yield its base URL.

    Use :class:`FakeOpenAIServer` directly when the test also needs the recorded requests.
    """
    with FakeOpenAIServer(handler, delay_s=delay_s) as server:
        yield server.base_url


def user(text: str) -> list[dict[str, str]]:
    """A one-message conversation."""
    return [{"role": "user", "content": text}]


def conversations(texts: Iterable[str]) -> list[list[dict[str, str]]]:
    """One one-message conversation per text."""
    return [user(t) for t in texts]


# ---- a fake Hugging Face Hub ------------------------------------------------------------------


@dataclass
class HubRequest:
    """A request the fake Hub received: method, path (query dropped), lower-cased headers, raw body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HubRepo:
    """One repository of the fake Hub: its branches (path -> bytes) and commit titles."""

    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[str] = field(default_factory=list)


class FakeHubServer:
    """The few Hub endpoints huggingface_hub calls to create a repository and commit small files.

    ``POST /api/repos/create``, ``POST /api/validate-yaml`` (parses the README front matter),
    ``POST /api/{type}s/{org}/{name}/branch/{branch}``, ``.../preupload/{rev}`` (every file
    "regular": no LFS), ``.../commit/{rev}`` (NDJSON with base64 file contents). Requests must
    carry ``Authorization: Bearer <token>``; every request is recorded. Use with
    ``endpoint=server.url`` or ``HF_ENDPOINT``::

        with FakeHubServer(token="hf_test") as hub:
            ...
            assert hub.repos[("model", "org/name")].branches["main"]["README.md"]
    """

    def __init__(self, token: str = "hf_fake_token"):
        self.token = token
        self.requests: list[HubRequest] = []
        self.repos: dict[tuple[str, str], HubRepo] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._port}"

    def files(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> dict[str, bytes]:
        """The files a branch of a repository holds now."""
        return self.repos[(repo_type, repo_id)].branches[branch]

    def start(self) -> FakeHubServer:
        self._httpd = _Server(("127.0.0.1", 0), _HubRequestHandler)
        self._httpd.fake = self  # type: ignore[assignment]
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> FakeHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Reply:
        from urllib.parse import unquote, urlsplit

        path = urlsplit(raw_path).path
        with self._lock:
            self.requests.append(HubRequest(method, path, headers, body))
        if headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"error": "Invalid credentials in Authorization header"})
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self._lock:
            if method == "POST" and parts == ["api", "repos", "create"]:
                return self._create(json.loads(body))
            if method == "POST" and parts == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body))
            if (
                method == "POST"
                and len(parts) == 6
                and parts[0] == "api"
                and parts[1] in ("models", "datasets")
            ):
                repo = self.repos.get((parts[1][:-1], f"{parts[2]}/{parts[3]}"))
                if repo is None:
                    return Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                action, rev = parts[4], parts[5]
                if action == "branch":
                    return self._branch(repo, rev)
                if rev not in repo.branches:
                    return Reply(
                        404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"}
                    )
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return Reply(
                        200,
                        {
                            "files": [
                                {
                                    "path": f["path"],
                                    "uploadMode": "regular",
                                    "shouldIgnore": False,
                                    "oid": None,
                                }
                                for f in files
                            ]
                        },
                    )
                if action == "commit":
                    return self._commit(repo, rev, body)
        return Reply(404, {"error": f"the fake hub has no {method} {path}"})

    def _create(self, req: dict[str, Any]) -> Reply:
        repo_type = req.get("type") or "model"
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return Reply(409, {"error": "You already created this repo", "url": url})
        # huggingface_hub < 2 sends "private": true; 2.x sends "visibility": "private".
        private = bool(req.get("private")) or req.get("visibility") == "private"
        self.repos[(repo_type, repo_id)] = HubRepo(repo_type, repo_id, private)
        return Reply(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, req: dict[str, Any]) -> Reply:
        import yaml

        content = req.get("content", "")
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as e:
                return Reply(400, {"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []})
        return Reply(200, {"errors": [], "warnings": []})

    def _branch(self, repo: HubRepo, branch: str) -> Reply:
        if branch in repo.branches:
            return Reply(409, {"error": "Reference already exists"})
        repo.branches[branch] = dict(repo.branches["main"])
        return Reply(200, {})

    def _commit(self, repo: HubRepo, rev: str, body: bytes) -> Reply:
        import base64
        import hashlib

        lines = [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                repo.branches[rev][value["path"]] = base64.b64decode(value["content"])
            elif line["key"] != "header":
                return Reply(400, {"error": f"the fake hub takes regular files only, not {line['key']}"})
        repo.commits.append(header["summary"])
        oid = hashlib.sha1(body).hexdigest()
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return Reply(
            200,
            {
                "commitUrl": f"{self.url}/{prefix}{repo.repo_id}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": None,
            },
        )


class _HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake._serve(method, self.path, headers, raw)  # type: ignore[attr-defined]
        _RequestHandler._send(self, reply)  # type: ignore[arg-type]

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        self._handle("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        pass


# ---- a vLLM-like server with runtime LoRA loading ---------------------------------------------------

LOAD_LORA_PATH = "/v1/load_lora_adapter"
UNLOAD_LORA_PATH = "/v1/unload_lora_adapter"


@dataclass
class LoraCall:
    """One call to the LoRA endpoints: ``load`` or ``unload``, the name, the path (load) and the HTTP status."""

    action: str
    name: str
    path: str | None
    status: int


class FakeVLLMServer(FakeOpenAIServer):
    """A FakeOpenAIServer that serves like ``vllm serve BASE --enable-lora``.

    Chat requests must name the base model or a loaded adapter (anything else: 404 "The model `x`
    does not exist.", as vLLM answers); the handler is called for the others, and sees the model
    name in the request. ``GET /v1/models`` lists the base and the loaded adapters (with their
    ``parent``). With ``runtime_lora`` (vLLM's ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``), ``POST
    /v1/load_lora_adapter`` loads an adapter from a directory that holds ``adapter_config.json``
    (else 400, as vLLM fails to find it), a second load of a loaded name is a 400 "has already been
    loaded", and ``/v1/unload_lora_adapter`` unloads; without it, both endpoints are 404.

    Args:
        handler: As for FakeOpenAIServer.
        base: The name the base model is served under.
        runtime_lora: Whether runtime adapter loading is allowed.
        preloaded: ``{name: path}`` of adapters given with ``--lora-modules``.

    Attributes:
        lora_calls: Every load / unload call, in order.
        adapters: The adapters loaded now, ``{name: path}``.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        base: str = "base-model",
        runtime_lora: bool = True,
        preloaded: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ):
        super().__init__(handler, delay_s=delay_s)
        self.base = base
        self.runtime_lora = runtime_lora
        self.adapters: dict[str, str] = dict(preloaded or {})
        self.lora_calls: list[LoraCall] = []

    def model_list(self) -> list[dict[str, Any]]:
        with self._lock:
            names = list(self.adapters)
        return [{"id": self.base, "object": "model", "root": self.base, "parent": None}] + [
            {"id": n, "object": "model", "root": self.adapters.get(n), "parent": self.base} for n in names
        ]

    def chat_models(self) -> list[str]:
        """The ``model`` of every chat request, in arrival order."""
        with self._lock:
            return [r.json.get("model") for r in self.requests if r.path == CHAT_PATH]

    def _serve(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        if path in (LOAD_LORA_PATH, UNLOAD_LORA_PATH):
            return self._lora(path, raw)
        if path == CHAT_PATH:
            try:
                model = json.loads(raw or b"null").get("model")
            except (json.JSONDecodeError, AttributeError):
                model = None
            with self._lock:
                known = model == self.base or model in self.adapters
            if not known:
                with self._lock:
                    self.requests.append(
                        RecordedRequest(path, headers, json.loads(raw or b"null"), time.monotonic())
                    )
                return Reply(
                    404, {"object": "error", "message": f"The model `{model}` does not exist.", "code": 404}
                )
        return super()._serve(path, headers, raw)

    def _lora(self, path: str, raw: bytes) -> Reply:
        import pathlib

        body = json.loads(raw or b"{}")
        name, lora_path = body.get("lora_name"), body.get("lora_path")
        action = "load" if path == LOAD_LORA_PATH else "unload"
        if not self.runtime_lora:
            reply = Reply(404, {"detail": "Not Found"})
        elif action == "load":
            with self._lock:
                loaded = name in self.adapters
            if loaded:
                reply = Reply(400, error_body(f"The lora adapter '{name}' has already been loaded."))
            elif not lora_path or not (pathlib.Path(lora_path) / "adapter_config.json").is_file():
                reply = Reply(
                    400, error_body(f"Loading lora {name} failed: No adapter found for {lora_path}")
                )
            else:
                with self._lock:
                    self.adapters[name] = lora_path
                reply = Reply(200, f"Success: LoRA adapter '{name}' added successfully.")
        else:
            with self._lock:
                gone = self.adapters.pop(name, None)
            reply = (
                Reply(200, f"Success: LoRA adapter '{name}' removed successfully.")
                if gone is not None
                else Reply(404, error_body(f"The lora adapter '{name}' cannot be found."))
            )
        with self._lock:
            self.lora_calls.append(LoraCall(action, name, lora_path, reply.status))
        return reply
