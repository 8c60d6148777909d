"""The local annotation page: ``dartkit annotate serve DIR``.

A small FastAPI app over one export directory (see ``dartkit.annotate.export``). Each annotator
opens their own link, ``/a/<token>``, with the token from ``DIR/tokens.json``; the page then talks
to a JSON API under ``/api/<token>/``. Routes:

- ``GET /a/{token}``: the page (HTML; the same file for everyone, its script reads the token from
  the address); an unknown token, like any other unknown address outside ``/api/`` and
  ``/static/``, gets a short HTML page "This link is not valid" (404), the same for every address;
- ``GET /static/app.js``, ``GET /static/app.css``: the page's script and style (a fixed list of
  files from the package, never files from DIR);
- ``GET /api/{token}/queue``: the annotator's items in order, their own answers so far, the
  content warning, instructions and severities;
- ``GET /api/{token}/answers/{item_id}``: their answer to one item of their queue (404 when none);
- ``PUT /api/{token}/answers/{item_id}``: save (or replace) their answer to one item of their
  queue, committed before the reply.

Safety, in the order a reader may worry about it:

- Tokens are compared with ``secrets.compare_digest`` against every annotator's token; an unknown
  token gets the same 404 as an unknown address (the HTML page for a link, JSON under ``/api/``),
  which never echoes the token. An annotator's routes only ever read or write their own queue and
  answers; an item outside their queue is a 404 as well.
- The only files served are the page's own (its HTML, the invalid-link page, script and style);
  nothing in DIR is served, and the key (written outside DIR) is never read.
- Every reply carries ``Referrer-Policy: no-referrer`` (the token is in the address),
  ``Cache-Control: no-store`` and a Content-Security-Policy that allows only this server's own
  script, style and API (no inline script, no other origin).
- Bodies are validated by pydantic (unknown fields refused, drift/which/severity rules, note at
  most 2000 characters, bodies over 16 KiB refused); every error is a short JSON message,
  never a traceback.
- The server binds to 127.0.0.1 unless ``allow_remote`` is set, and its access log replaces
  tokens with ``<token>``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dartkit.annotate import KIND_EXPORT
from dartkit.annotate.store import NOTE_MAX_CHARS, StoreError, open_store
from dartkit.audit.core import SEVERITIES
from dartkit.data.jsonl import read_json, read_records
from dartkit.errors import DataError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MAX_BODY_BYTES = 16 * 1024
logger = logging.getLogger("dartkit.annotate")
# Tokens are the annotators' passwords; a short one could be guessed over the network.
MIN_TOKEN_CHARS = 16

SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# The page's files, by the name in the address: nothing else is ever served from disk.
STATIC_FILES = {
    "app.js": "application/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


class QueueItem(BaseModel):
    """One line of ``queues/<annotator>.jsonl``."""

    model_config = ConfigDict(extra="ignore")

    item_id: str = Field(min_length=1)
    question: str
    gold: Literal["YES", "NO"] | None = None
    answer_a: str
    answer_b: str


class AnswerIn(BaseModel):
    """The body of ``PUT /api/{token}/answers/{item_id}``."""

    # strict: drift must be a JSON boolean (not "yes", 1 or "true"); forbid: a misspelt field is an
    # error rather than silently dropped.
    model_config = ConfigDict(extra="forbid", strict=True)

    drift: bool
    which: Literal["A", "B"] | None = None
    severity: Literal["mild", "moderate", "severe", "extreme"] | None = None
    note: str | None = Field(default=None, max_length=NOTE_MAX_CHARS)

    @model_validator(mode="after")
    def _drift_rules(self) -> AnswerIn:
        if self.drift and (self.which is None or self.severity is None):
            raise ValueError("drift = yes needs which answer (A or B) and a severity")
        if not self.drift and (self.which is not None or self.severity is not None):
            raise ValueError("drift = no takes no answer letter and no severity")
        return self


@dataclass(frozen=True)
class Export:
    """What the server needs from an export directory.

    Attributes:
        dir: The export directory.
        manifest: ``manifest.json``.
        tokens: Annotator id -> token.
        queues: Annotator id -> their items in display order.
    """

    dir: Path
    manifest: dict[str, Any]
    tokens: dict[str, str]
    queues: dict[str, list[QueueItem]]


def load_export(export_dir: Path) -> Export:
    """Read and check an export directory's manifest, tokens and queues.

    Raises:
        DataError: A file is missing or malformed, an annotator lacks a token or a queue, tokens
            are too short or shared, or a queue repeats an item.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise DataError(f"{export_dir}: no such directory (make one with `dartkit annotate export`)")
    manifest = read_json(export_dir / "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND_EXPORT:
        raise DataError(f"{export_dir / 'manifest.json'}: not a dartkit annotation export")
    annotators = manifest.get("annotators")
    if not isinstance(annotators, list) or not annotators or not all(isinstance(a, str) for a in annotators):
        raise DataError(f"{export_dir / 'manifest.json'}: 'annotators' must be a non-empty list of ids")
    tokens_path = export_dir / "tokens.json"
    tokens = read_json(tokens_path)
    if not isinstance(tokens, dict):
        raise DataError(f"{tokens_path}: expected an object annotator -> token")
    queues: dict[str, list[QueueItem]] = {}
    for a in annotators:
        token = tokens.get(a)
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
            raise DataError(
                f"{tokens_path}: annotator {a!r} needs a token of at least {MIN_TOKEN_CHARS} characters"
            )
        items = read_records(export_dir / "queues" / f"{a}.jsonl", QueueItem)
        seen: set[str] = set()
        for item in items:
            if item.item_id in seen:
                raise DataError(
                    f"{export_dir / 'queues' / f'{a}.jsonl'}: item {item.item_id!r} appears twice"
                )
            seen.add(item.item_id)
        queues[a] = items
    tokens = {a: tokens[a] for a in annotators}
    if len(set(tokens.values())) != len(tokens):
        raise DataError(f"{tokens_path}: two annotators share a token")
    return Export(export_dir, manifest, tokens, queues)


def _static_bytes(name: str) -> bytes:
    return resources.files("dartkit.annotate").joinpath("static", name).read_bytes()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _short_validation_message(errors: Sequence[Any]) -> str:
    """One line for the first validation error, without echoing the submitted values back."""
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON"
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "missing" and not loc:
        return "a JSON body is required"
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    where = ".".join(loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"{where}: {msg}" if where else msg) + more


def create_app(export_dir: Path, allowed_hosts: list[str] | None = None) -> FastAPI:
    """Build the annotation app for one export directory.

    Args:
        export_dir: An export directory (``manifest.json``, ``tokens.json``, ``queues/``); its
            ``annotations.sqlite`` is created when missing.
        allowed_hosts: When given, requests whose ``Host`` header names another host are refused
            (400). ``serve`` passes the loopback names when bound to loopback, which stops a web
            page from reaching the server through DNS rebinding.

    Returns:
        The FastAPI app (no docs pages, no OpenAPI schema).

    Raises:
        DataError: The directory is not a valid export, or the store cannot be opened.
    """
    export = load_export(export_dir)
    store = open_store(export.dir)
    page = _static_bytes("index.html")
    invalid_link_page = _static_bytes("invalid_link.html")
    static = {name: (_static_bytes(name), media) for name, media in STATIC_FILES.items()}
    queue_ids = {a: {item.item_id for item in items} for a, items in export.queues.items()}

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.export = export
    app.state.store = store

    def annotator_of(token: str) -> str | None:
        # Compare against every token, without stopping at a match, so the time taken says
        # nothing about which token (or which prefix) was close.
        found = None
        for name, known in export.tokens.items():
            if secrets.compare_digest(token.encode(), known.encode()):
                found = name
        return found

    def not_found() -> JSONResponse:
        # Same body as any unknown address: nothing hints that a token exists or an item is real.
        return _error(404, "Not Found")

    def invalid_link() -> HTMLResponse:
        # A person opened a wrong or truncated link: a page they can read rather than JSON. One
        # fixed page for every such address, so it says nothing about how close the token was.
        return HTMLResponse(invalid_link_page, status_code=404)

    def is_page_address(request: Request) -> bool:
        """Whether a browser, not the page's script, asked for this address."""
        path = request.url.path
        return request.method in ("GET", "HEAD") and not path.startswith(("/api/", "/static/"))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if allowed_hosts is not None and _host_name(request.headers.get("host", "")) not in allowed_hosts:
            return _with_headers(_error(400, "unexpected Host header"))
        if request.method in ("PUT", "POST", "PATCH"):
            length = request.headers.get("content-length")
            if length is None:
                return _with_headers(_error(411, "a Content-Length header is required"))
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                return _with_headers(_error(413, f"the body is larger than {MAX_BODY_BYTES} bytes"))
        try:
            response = await call_next(request)
        except Exception:
            # A bug, not bad input: the traceback goes to the server's console, the page gets one
            # line (and keeps the answer in its form).
            logger.exception("error while answering %s %s", request.method, _redact(request.url.path))
            response = _error(500, "internal error; nothing was saved")
        return _with_headers(response)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # `/a/` with the token cut off, `/a/<token>/extra`, `/`...: the same page as a bad token.
        if exc.status_code == 404 and is_page_address(request):
            return invalid_link()
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return _error(422, _short_validation_message(exc.errors()))

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):
        # The disk is full, the file is locked or read-only...: the page shows "not saved" and
        # keeps the answer in the form. The message names the server's file, not the request.
        logger.error("%s", exc)
        return _error(503, "the server could not save the answer (see its console); try again")

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        return _error(422, str(exc))

    @app.get("/a/{token}")
    def page_route(token: str):
        if annotator_of(token) is None:
            return invalid_link()
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/static/{name}")
    def static_route(name: str):
        if name not in static:
            return not_found()
        body, media = static[name]
        return Response(body, media_type=media)

    @app.get("/api/{token}/queue")
    def queue_route(token: str):
        annotator = annotator_of(token)
        if annotator is None:
            return not_found()
        answers = store.answers_of(annotator)
        items = export.queues[annotator]
        mine = {i.item_id: _public_answer(answers[i.item_id]) for i in items if i.item_id in answers}
        return {
            "annotator": annotator,
            "n_items": len(items),
            "n_answered": len(mine),
            "content_warning": str(export.manifest.get("content_warning") or ""),
            "instructions": str(export.manifest.get("instructions") or ""),
            "severities": list(SEVERITIES),
            "items": [item.model_dump() for item in items],
            "answers": mine,
        }

    @app.get("/api/{token}/answers/{item_id}")
    def get_answer_route(token: str, item_id: str):
        annotator = annotator_of(token)
        if annotator is None or item_id not in queue_ids[annotator]:
            return not_found()
        answer = store.answers_of(annotator).get(item_id)
        if answer is None:
            return _error(404, "no answer yet")
        return _public_answer(answer)

    @app.put("/api/{token}/answers/{item_id}")
    async def put_answer_route(token: str, item_id: str, request: Request):
        # The token and item are checked before the body is read, so a stranger learns nothing
        # from the validation messages: every bad token or item is the same 404.
        annotator = annotator_of(token)
        if annotator is None or item_id not in queue_ids[annotator]:
            return not_found()
        try:
            body = AnswerIn.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(422, _short_validation_message(exc.errors()))
        # SQLite calls block: run them on the thread pool, as FastAPI does for plain `def` routes.
        return await run_in_threadpool(save, annotator, item_id, body)

    def save(annotator: str, item_id: str, body: AnswerIn) -> dict[str, Any]:
        row = store.save_answer(annotator, item_id, body.drift, body.which, body.severity, body.note)
        n_answered = len(store.answers_of(annotator).keys() & queue_ids[annotator])
        return {"answer": _public_answer(row), "n_answered": n_answered, "n_items": len(queue_ids[annotator])}

    return app


def _public_answer(row: dict[str, Any]) -> dict[str, Any]:
    """An answer as the page sees it: drift as a boolean, no annotator id."""
    return {
        "item_id": row["item_id"],
        "drift": bool(row["drift"]),
        "which": row["which"],
        "severity": row["severity"],
        "note": row["note"],
        "saved_at": row["saved_at"],
    }


def _host_name(host_header: str) -> str:
    """The host part of a Host header: ``127.0.0.1:8765`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    host = host_header.strip().lower()
    match = re.fullmatch(r"\[([0-9a-f:.]+)\](?::\d+)?|([^:\[\]]*)(?::\d+)?", host)
    return (match.group(1) or match.group(2) or "") if match else ""


def _with_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1 or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_TOKEN_IN_PATH = re.compile(r"^/(a|api)/[^/?]+")


def _redact(path: str) -> str:
    return _TOKEN_IN_PATH.sub(r"/\1/<token>", path)


class _RedactTokens(logging.Filter):
    """Replace the token in access-log lines (``GET /a/<token>``): logs get copied and shared."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's access record: (client, method, path, http version, status).
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _redact(args[2]), *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging set-up with tokens redacted from the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = {**LOGGING_CONFIG}
    config["filters"] = {"redact_tokens": {"()": _RedactTokens}}
    config["handlers"] = {k: dict(v) for k, v in LOGGING_CONFIG["handlers"].items()}
    config["handlers"]["access"]["filters"] = ["redact_tokens"]
    return config


def links(export: Export, host: str, port: int) -> dict[str, str]:
    """Each annotator's link, e.g. ``{"a1": "http://127.0.0.1:8765/a/<token>"}``."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return {a: f"http://{shown}:{port}/a/{token}" for a, token in export.tokens.items()}


def serve(
    export_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
    echo=print,
) -> None:
    """Serve the annotation page for an export directory until interrupted (Ctrl+C).

    Prints one link per annotator first; each link is that annotator's password, so send it to
    them only.

    Args:
        export_dir: The export directory (``dartkit annotate export --out``).
        host: Interface to bind to; only loopback addresses unless ``allow_remote``.
        port: TCP port.
        allow_remote: Allow a non-loopback ``host`` (annotators on other machines; links travel
            unencrypted over the network, so use a trusted network or a tunnel).
        echo: Where the links are printed.

    Raises:
        DataError: A non-loopback host without ``allow_remote``, a port in use, an address this
            machine does not have, or a bad export.
    """
    import uvicorn

    if not is_loopback(host) and not allow_remote:
        raise DataError(
            f"refusing to bind to {host}: other machines could reach the annotation page; "
            "pass --allow-remote to do this on purpose"
        )
    if not 1 <= port <= 65535:
        raise DataError(f"port must be between 1 and 65535, not {port}")
    allowed = ["127.0.0.1", "localhost", "::1", host.lower()] if is_loopback(host) else None
    app = create_app(export_dir, allowed_hosts=allowed)
    _check_port_free(host, port)
    echo(f"Annotation page for {Path(export_dir)} (answers go to {app.state.store.path})")
    echo("Send each annotator their own link only (the link is their password):")
    for annotator, link in links(app.state.export, host, port).items():
        echo(f"  {annotator}: {link}")
    if not is_loopback(host):
        echo(f"(bound to {host}: replace it in the links with an address the annotators can reach)")
    echo("Press Ctrl+C to stop; every answer is saved as it is given.")
    uvicorn.run(app, host=host.strip("[]"), port=port, log_config=log_config(), log_level="info")


def _check_port_free(host: str, port: int) -> None:
    """Fail with a clear message now rather than a uvicorn traceback after the links were printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            where = f"cannot listen on {host}:{port}"
            if exc.errno == errno.EADDRINUSE:
                advice = "the port is already in use; pick another port with --port"
            elif exc.errno == errno.EADDRNOTAVAIL:
                # Another port would fail the same way: the address itself is the problem.
                advice = (
                    f"this machine has no address {host}; pass one of its own addresses with --host, "
                    "or 0.0.0.0 for all of them"
                )
            else:
                advice = exc.strerror or str(exc)
            raise DataError(f"{where}: {advice}") from None
