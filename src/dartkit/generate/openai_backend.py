"""Backend for any OpenAI-compatible chat-completions endpoint.

One backend serves DeepSeek, OpenAI, a vLLM server or a llama.cpp server: the
model spec ``openai:MODEL@BASE_URL`` names the model and the endpoint, and the
API key comes from the environment variable named by
``BackendConfig.api_key_env`` (never from a file, never written anywhere)::

    export DEEPSEEK_API_KEY=...
    dartkit eval --model openai:deepseek-chat@https://api.deepseek.com/v1 --api-key-env DEEPSEEK_API_KEY ...

Requests run concurrently on an event loop in a background thread, at most
``BackendConfig.concurrency`` at once, and each result is handed back the
moment it arrives so the caller can cache it. Rate limits (429), server errors
(5xx), timeouts and dropped connections are retried with exponential backoff
and jitter, honouring ``Retry-After``; anything else (bad key, unknown model,
bad request) fails at once with a :class:`~dartkit.generate.base.BackendError`.

Each answer is a :class:`~dartkit.generate.base.Completion` that records the
model name and ``system_fingerprint`` the server reported. A reply with
``content: null`` (a content filter, an empty completion) is asked again up to
``null_retries`` times and then marked ``filtered``; a reply whose content is null but
whose ``refusal`` field holds text (OpenAI's way of returning a model's refusal, mostly under a
JSON schema) is kept as that text, marked ``refused``, and not asked again; a reply cut at
``max_tokens`` (``finish_reason: "length"``) is marked ``truncated`` and not
retried, since the same request would be cut again.

A request for a reply held to a JSON schema (the judge's verdict) carries ``response_format``
``{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``. Under
``backend.structured_output: auto`` a server that rejects it (HTTP 400/422 naming the
response format or schema) is remembered, and that request and every later one go without it:
their replies are validated and asked again as for any server, and are marked unconstrained.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import os
import queue
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import openai

from dartkit.config import BackendConfig, DecodingConfig
from dartkit.errors import DartkitError
from dartkit.generate.base import BackendError, Completion, Messages
from dartkit.generate.spec import ModelSpec, parse_spec
from dartkit.generate.structured import ResponseSchema, StructuredMode

log = logging.getLogger(__name__)

#: Alternatives asked for per scored position: the most the OpenAI API and vLLM's default allow.
TOP_LOGPROBS = 20
#: The most tokens one answer option may take (" YES" is two, " Y" + "ES", for SmolLM2).
MAX_OPTION_TOKENS = 8

#: Sent when no key is set; local servers (vLLM, llama.cpp) accept any key.
PLACEHOLDER_API_KEY = "EMPTY"

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
# 408/409 are the transient 4xx codes the OpenAI API itself documents as worth retrying.
_RETRYABLE_4XX = {408, 409, 429}
_STATUS_HINTS = {
    400: "bad request (check the model name and the decoding parameters)",
    401: "authentication failed (check the key in ${env})",
    403: "permission denied (the key in ${env} may not have access to this model)",
    404: "not found (check the model name, and that the base URL ends in /v1)",
    422: "request rejected as unprocessable (check the decoding parameters)",
}
# Tokens shaped like API keys (sk-..., even partly masked) that a server may echo in an error message.
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_*\-.]{6,}")


class _Secret:
    """Holds the API key so that no repr, vars() dump or log of the backend can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


class _Run:
    """One ``generate`` call: its worker thread and event loop, cancellable from any thread."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> bool:
        """Register the running loop and main task; False when the run was cancelled before it began."""
        with self._lock:
            if self._cancelled:
                return False
            self._loop, self._task = loop, task
            return True

    def cancel(self) -> None:
        with self._lock:
            # Cancel once only: a second cancel could interrupt the client's clean shutdown.
            if self._cancelled:
                return
            self._cancelled = True
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            # RuntimeError: the loop has already closed, so the run is over anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

    def join(self, timeout: float) -> None:
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
            if self.thread.is_alive():
                log.warning("openai backend worker thread did not stop within %.0f s", timeout)


class OpenAIBackend:
    """A chat model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        spec: ``openai:MODEL@BASE_URL``, parsed or as a string.
        cfg: Concurrency, per-request timeout, retries and the name of the API key variable.
        backoff_s: First retry delay in seconds; it doubles with every retry (with jitter).
        max_backoff_s: Longest computed retry delay.
        max_retry_after_s: Longest delay a server's ``Retry-After`` header may impose.
        null_retries: How many times a reply with ``content: null`` is asked again before it
            is kept, marked ``filtered``.

    Attributes:
        spec: The model spec string.
        model: The model name sent with every request.
        base_url: The endpoint, e.g. ``https://api.deepseek.com/v1``.

    Raises:
        ValueError: When ``spec`` is not an ``openai:`` spec.
    """

    def __init__(
        self,
        spec: ModelSpec | str,
        cfg: BackendConfig | None = None,
        *,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 60.0,
        null_retries: int = 2,
    ):
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        if parsed.kind != "openai" or not parsed.base_url:
            raise ValueError(f"OpenAIBackend needs an openai:MODEL@BASE_URL spec, got '{parsed}'")
        self.spec = str(parsed)
        self.model = parsed.model
        self.base_url = parsed.base_url
        self.cfg = cfg or BackendConfig()
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.null_retries = null_retries

        key = os.environ.get(self.cfg.api_key_env, "").strip()
        if not key and not _is_local(self.base_url):
            log.warning(
                "$%s is not set: calling %s without an API key (set it, or backend.api_key_env to the variable that holds it)",
                self.cfg.api_key_env,
                self.base_url,
            )
        self._key = _Secret(key or PLACEHOLDER_API_KEY)
        self._has_key = bool(key)
        self._lock = threading.Lock()
        self._runs: set[_Run] = set()
        self._closed = False
        # Whether the server takes response_format json_schema: None until a request tells.
        self._schema_ok: bool | None = None
        # openai:MODEL@URL+adapter=DIR: a LoRA adapter the server serves on MODEL, addressed by a
        # name that holds its sha256 (generate/served_lora.py); requests name it as their model.
        self.base_model = parsed.model
        self._adapter = None
        if parsed.adapter:
            from dartkit.generate.served_lora import ServedAdapter

            self._adapter = ServedAdapter(
                self.base_url, parsed.adapter, self.cfg.served_adapters, self.cfg.timeout_s
            )
            self.model = self._adapter.name

    def identity(self) -> dict[str, Any]:
        """The model name and endpoint; part of every cache key (the key is not)."""
        identity = {"backend": "openai", "model": self.base_model, "base_url": self.base_url}
        if self._adapter is not None:
            # A retrained adapter in the same directory gets new keys, never the old answers.
            identity["adapter_sha256"] = self._adapter.sha256
        return identity

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.spec!r}, concurrency={self.cfg.concurrency}, key_from=${self.cfg.api_key_env})"

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(
        self,
        conversations: Sequence[Messages],
        decoding: DecodingConfig,
        schema: ResponseSchema | None = None,
    ) -> Iterator[tuple[int, Completion]]:
        """Yield ``(index, Completion)`` for every conversation, in the order the answers arrive.

        With ``schema`` (and ``backend.structured_output`` not ``off``) each request carries
        ``response_format`` ``json_schema`` (strict); see :meth:`structured_mode` for a server
        that rejects it.

        Stopping the iteration early (``break``, ``close()`` on the generator, an
        exception in the caller) cancels the requests still in flight and stops the
        worker thread.

        Raises:
            BackendError: When a request fails for good (a non-retryable status, or
                retries exhausted). Results yielded before stay valid.
        """
        convs = list(conversations)

        async def answer(client: openai.AsyncOpenAI, i: int) -> Completion:
            return await self._complete(client, convs[i], decoding, schema)

        yield from self._stream(len(convs), answer)

    def score_options(
        self, conversations: Sequence[Messages], prefixes: Sequence[str], options: Sequence[str]
    ) -> Iterator[tuple[int, dict[str, float | None]]]:
        """Yield ``(index, {option: log-probability or None})`` from the server's next-token logprobs.

        The options' shared text (``"Conclusion:"`` for ``"Conclusion: YES"`` / ``"Conclusion: NO"``)
        is appended to ``prefixes[index]`` as an assistant message that the server is asked to
        continue (vLLM's ``continue_final_message``, no new generation prompt) for one token, with
        ``logprobs`` and the top :data:`TOP_LOGPROBS` alternatives. An option's score is the summed
        log-probability of the server's tokens that spell the rest of it: the ranked token equal to
        the rest (``" NO"``), or the longest one that starts it (``" Y"``), after which the text so
        far is continued again for the next token (``"ES"``). An option that leaves the ranked
        alternatives on the way gets ``None``. The shared text's own probability is the same for
        every option and is left out, so these scores compare options but are not the full sums
        the hf backend reports.

        Raises:
            DartkitError: the server returned no logprobs, or none of the options was among its
                top next tokens (a server that ignores ``continue_final_message`` starts a new
                turn instead).
            BackendError: a request failed (HTTP error, retries exhausted).
        """
        if len(prefixes) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(prefixes)} prefixes")
        if not options or len(set(options)) != len(options):
            raise ValueError(f"options must be distinct strings, got {list(options)!r}")
        stem = os.path.commonprefix(list(options)).rstrip()
        tails = {o: o[len(stem) :] for o in options}
        if not all(tails.values()):
            raise ValueError(f"no option may be the start of another, got {list(options)!r}")
        convs = list(conversations)

        async def score(client: openai.AsyncOpenAI, i: int) -> dict[str, float | None]:
            return await self._score_tails(client, convs[i], prefixes[i] + stem, tails)

        yield from self._stream(len(convs), score)

    async def _score_tails(
        self, client: openai.AsyncOpenAI, messages: Messages, text: str, tails: dict[str, str]
    ) -> dict[str, float | None]:
        """Summed log-probability of each tail as the continuation of the assistant ``text``."""
        ranked_after: dict[str, list[tuple[str, float]]] = {}

        async def ranked(assistant: str) -> list[tuple[str, float]]:
            # Options that share a first token ask about the same text once.
            if assistant not in ranked_after:
                conversation = [*messages, {"role": "assistant", "content": assistant}]
                response = await self._send(client, self._scoring_request(conversation))
                ranked_after[assistant] = self._ranked_tokens(response)
            return ranked_after[assistant]

        out: dict[str, float | None] = {}
        for option, tail in tails.items():
            total, done, rest = 0.0, text, tail
            for _ in range(MAX_OPTION_TOKENS):
                candidates = [(t, lp) for t, lp in await ranked(done) if t and rest.startswith(t)]
                if not candidates:
                    total = None  # the option's next token is not among the ranked alternatives
                    break
                token, logprob = max(candidates, key=lambda c: len(c[0]))
                total += logprob
                done, rest = done + token, rest[len(token) :]
                if not rest:
                    break
            else:
                total = None
            out[option] = total
        if all(v is None for v in out.values()):
            seen = ", ".join(repr(t) for t, _ in ranked_after[text][:5])
            raise DartkitError(
                f"{self._where()}: none of {[t.strip() for t in tails.values()]} starts with one of the server's "
                f"top {len(ranked_after[text])} next tokens after {text[-40:]!r} (it gave {seen}); the server may "
                "not continue the assistant message (vLLM's continue_final_message)"
            )
        return out

    def _stream(self, n: int, job: Any) -> Iterator[tuple[int, Any]]:
        """Run ``job(client, i)`` for ``i`` in ``range(n)`` on the worker thread; yield ``(i, result)`` as each ends.

        Stopping the iteration early cancels the requests still in flight and stops the thread.
        """
        if self._closed:
            raise BackendError(f"{self._where()}: the backend is closed")
        if not n:
            return
        if self._adapter is not None:
            self._adapter.ensure(self._key.reveal())  # once: load or check the adapter on the server
        results: queue.Queue[tuple[str, Any]] = queue.Queue()
        run = _Run()
        run.thread = threading.Thread(
            target=self._worker, args=(n, job, results, run), name="dartkit-openai", daemon=True
        )
        with self._lock:
            self._runs.add(run)
        run.thread.start()
        missing = n
        try:
            while missing:
                kind, payload = results.get()
                if kind == "result":
                    missing -= 1
                    yield payload
                elif kind == "error":
                    raise payload
                else:  # the worker ended early without an error: close() was called meanwhile
                    raise BackendError(f"{self._where()}: closed with {missing} request(s) unanswered")
        finally:
            run.cancel()
            run.join(timeout=max(10.0, self.cfg.timeout_s))
            with self._lock:
                self._runs.discard(run)

    def close(self) -> None:
        """Cancel any generation still running and stop its thread. Safe to call twice."""
        with self._lock:
            self._closed = True
            runs = list(self._runs)
        for run in runs:
            run.cancel()
        for run in runs:
            run.join(timeout=10.0)
        if self._adapter is not None:
            self._adapter.release(self._key.reveal())

    # -- worker thread ---------------------------------------------------------------

    def _worker(self, n: int, job: Any, results: queue.Queue, run: _Run) -> None:
        try:
            asyncio.run(self._run_all(n, job, results, run))
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # handed to the consumer thread, which re-raises it
            results.put(("error", e))
        finally:
            results.put(("done", None))

    async def _run_all(self, n: int, job: Any, results: queue.Queue, run: _Run) -> None:
        task = asyncio.current_task()
        assert task is not None
        if not run.attach(asyncio.get_running_loop(), task):
            return
        # The client lives and dies with this event loop: its connection pool is bound to it.
        client = openai.AsyncOpenAI(
            api_key=self._key.reveal(),
            base_url=self.base_url,
            timeout=self.cfg.timeout_s,
            max_retries=0,  # retries are ours: the SDK's backoff cannot be tuned and ignores long Retry-After
        )
        todo = iter(range(n))

        async def worker() -> None:
            # A fixed pool of `concurrency` workers bounds the requests in flight without
            # creating one task per item up front.
            for i in todo:
                results.put(("result", (i, await job(client, i))))

        workers = [asyncio.create_task(worker()) for _ in range(min(self.cfg.concurrency, n))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await client.close()

    async def _complete(
        self,
        client: openai.AsyncOpenAI,
        messages: Messages,
        decoding: DecodingConfig,
        schema: ResponseSchema | None = None,
    ) -> Completion:
        """One answer; a ``content: null`` reply is asked again up to ``null_retries`` times."""
        completion = await self._request_once(client, messages, decoding, schema)
        for attempt in range(self.null_retries):
            if completion.finish != "filtered" or completion:
                break
            log.info(
                "%s: reply with no content; asking again (%d/%d)",
                self._where(),
                attempt + 1,
                self.null_retries,
            )
            completion = await self._request_once(client, messages, decoding, schema)
        return completion

    async def _request_once(
        self,
        client: openai.AsyncOpenAI,
        messages: Messages,
        decoding: DecodingConfig,
        schema: ResponseSchema | None = None,
    ) -> Completion:
        request = self._request(messages, decoding)
        if schema is None or self.structured_mode(schema) == "none":
            return self._text(await self._send(client, request))
        try:
            response = await self._send(client, {**request, "response_format": schema.response_format()})
        except _SchemaRejected as e:
            if self.cfg.structured_output == "on":
                raise BackendError(
                    f"{e}; backend.structured_output is 'on' (set it to 'auto' to validate and retry "
                    "instead, or 'off')"
                ) from None
            with self._lock:
                first = self._schema_ok is not False
                self._schema_ok = False
            if first:
                log.warning(
                    "%s: the server rejected response_format json_schema (%s); judge replies are "
                    "validated and asked again instead (recorded per reply)",
                    self._where(),
                    e.reason,
                )
            return self._text(await self._send(client, request))
        with self._lock:
            self._schema_ok = True
        completion = self._text(response)
        # A refusal is plain text in place of the object: not held to the schema.
        completion.structured = None if completion.finish == "refused" else "json_schema"
        return completion

    def structured_mode(self, schema: ResponseSchema) -> StructuredMode:
        """``json_schema`` when requests carry the schema, ``none`` when not (``structured_output: off``,
        or the server rejected it before), ``unknown`` under ``auto`` until the first request tells."""
        if self.cfg.structured_output == "off" or self._schema_ok is False:
            return "none"
        if self.cfg.structured_output == "on" or self._schema_ok:
            return "json_schema"
        return "unknown"

    async def _send(
        self, client: openai.AsyncOpenAI, request: dict[str, Any], reloaded: bool | str = False
    ) -> Any:
        """One chat-completions request, with retries on rate limits, server errors and timeouts.

        Only for a served adapter (``openai:...+adapter=DIR``): an HTTP 404 (the server no longer
        serves its name: another client unloaded it, or the server restarted) loads the adapter
        again once and repeats the request (``reloaded``: True after a load, ``"listed"`` when the
        server still listed it).
        """
        attempts = self.cfg.max_retries + 1
        last_error = ""
        for attempt in range(attempts):
            fatal: str | None = None
            rejected: _SchemaRejected | None = None
            retry_after: float | None = None
            gone = False
            try:
                response = await client.chat.completions.create(**request)
            except openai.APITimeoutError:
                last_error = f"timed out after {self.cfg.timeout_s:g} s"
            except openai.APIConnectionError as e:
                last_error = (
                    f"connection failed ({type(e.__cause__).__name__ if e.__cause__ else 'no response'})"
                )
            except openai.APIStatusError as e:
                if _retryable(e.status_code):
                    last_error = f"HTTP {e.status_code}: {self._server_message(e.body)}"
                    retry_after = _retry_after_s(e.response.headers)
                elif "response_format" in request and _rejects_schema(e.status_code, e.body):
                    rejected = _SchemaRejected(
                        self._status_message(e.status_code, e.body), self._server_message(e.body)
                    )
                elif e.status_code == 404 and self._adapter is not None:
                    gone = True
                    if reloaded == "listed":
                        why = f"the server lists adapter '{self.model}' as served but answers 404 for it"
                    else:
                        why = (
                            f"the server no longer serves adapter '{self.model}' (unloaded by another "
                            "client, or the server restarted)"
                        )
                        if reloaded:
                            why += ": dartkit loaded it again and the server still does not serve it"
                    fatal = f"{self._status_message(e.status_code, e.body)}; {why}"
                else:
                    fatal = self._status_message(e.status_code, e.body)
            except openai.OpenAIError as e:
                fatal = f"{self._where()}: {type(e).__name__}: {self._redact(str(e))}"
            else:
                return response
            if gone and not reloaded:
                log.warning("%s: the server no longer serves the adapter; loading it again", self._where())
                listed = await asyncio.to_thread(self._adapter.reload, self._key.reveal())
                return await self._send(client, request, reloaded="listed" if listed else True)
            # Raised outside the except blocks so the SDK exception (whose request object
            # carries the Authorization header) is not chained onto ours as __context__.
            if fatal is not None:
                raise BackendError(fatal)
            if rejected is not None:
                raise rejected
            if attempt + 1 < attempts:
                delay = self._delay(attempt, retry_after)
                log.info(
                    "%s: %s; retry %d/%d in %.2f s",
                    self._where(),
                    last_error,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                await asyncio.sleep(delay)
        raise BackendError(f"{self._where()}: gave up after {attempts} attempt(s); last error: {last_error}")

    # -- helpers -----------------------------------------------------------------------

    def _request(self, messages: Messages, decoding: DecodingConfig) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": decoding.max_new_tokens,
        }
        if decoding.greedy:
            request["temperature"] = 0.0
        else:
            request.update(temperature=decoding.temperature, top_p=decoding.top_p, seed=decoding.seed)
        return request

    def _scoring_request(self, messages: Messages) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
            # vLLM: continue the last (assistant) message rather than open a new assistant turn.
            "extra_body": {"continue_final_message": True, "add_generation_prompt": False},
        }

    def _ranked_tokens(self, response: Any) -> list[tuple[str, float]]:
        """``(token, logprob)`` of the ranked alternatives for the one token of a scoring reply."""
        try:
            first = response.choices[0].logprobs.content[0]
            ranked = [(t.token, t.logprob) for t in (first.top_logprobs or [])]
            return ranked or [(first.token, first.logprob)]
        except (AttributeError, IndexError, TypeError):
            raise DartkitError(
                f"{self._where()}: the server returned no logprobs, so it cannot score answer options "
                "(answer_mode loglik needs a server that returns logprobs for a continued assistant "
                "message, e.g. vLLM; use answer_mode generate)"
            ) from None

    def _text(self, response: Any) -> Completion:
        try:
            choice = response.choices[0]
            content = choice.message.content
            refusal = getattr(choice.message, "refusal", None)
        except (AttributeError, IndexError, TypeError, KeyError):
            raise BackendError(
                f"{self._where()}: the response has no choices[0].message; is this a chat-completions endpoint?"
            ) from None
        reason = getattr(choice, "finish_reason", None)
        if not content and isinstance(refusal, str) and refusal.strip():
            # The model declined and the server says so in its own field: that is the answer.
            finish = "refused"
            content = refusal
        elif reason == "length":
            finish = "truncated"
        elif content is None or reason == "content_filter":
            # content: null is a content filter or an empty completion, not an answer.
            finish = "filtered"
        else:
            finish = "stop"
        return Completion(
            content or "",
            finish,
            served_model=getattr(response, "model", None) or None,
            system_fingerprint=getattr(response, "system_fingerprint", None) or None,
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        # Jitter spreads out the retries of requests that failed together.
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def _where(self) -> str:
        return f"{self.base_url} (model '{self.model}')"

    def _status_message(self, status: int, body: object) -> str:
        hint = _STATUS_HINTS.get(status, "request failed").replace("${env}", f"${self.cfg.api_key_env}")
        if status == 401 and not self._has_key:
            hint += f"; ${self.cfg.api_key_env} is not set"
        return f"{self._where()}: HTTP {status} {hint}; server said: {self._server_message(body)}"

    def _server_message(self, body: object) -> str:
        message = (body.get("message") or body.get("error") or body) if isinstance(body, Mapping) else body
        text = " ".join(str(message).split()) if message not in (None, "") else "(empty body)"
        if len(text) > 300:
            text = text[:300] + "..."
        return self._redact(text)

    def _redact(self, text: str) -> str:
        key = self._key.reveal()
        if self._has_key:
            text = text.replace(key, "<redacted>")
        return _KEYLIKE.sub("<redacted>", text)


class _SchemaRejected(BackendError):
    """The server refused a request's ``response_format`` json_schema (it may take the request without)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# What a server says when it does not take response_format json_schema (or this schema): OpenAI
# ("'response_format' of type 'json_schema' is not supported with this model"), DeepSeek ("This
# response_format type is unavailable now"), servers without guided decoding.
_SCHEMA_WORDS = re.compile(r"response_format|json_schema|structured|guided|grammar|schema", re.IGNORECASE)


def _error_text(body: object) -> str:
    """The error's own words: its message and the parameter it names, never an echo of the request
    (a validation error that quotes the request would always mention response_format)."""
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping):
            return " ".join(str(err.get(k) or "") for k in ("message", "param", "code", "type"))
        if isinstance(err, str):
            return err
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):  # FastAPI-style validation errors: their messages and locations
            return " ".join(
                f"{d.get('msg', '')} {d.get('loc', '')}" for d in detail if isinstance(d, Mapping)
            )
        return ""
    return str(body)


def _rejects_schema(status: int, body: object) -> bool:
    """Whether an error reply refuses the request's schema (and not, say, its model name)."""
    if status not in (400, 422, 501):
        return False
    return bool(_SCHEMA_WORDS.search(_error_text(body)))


def _is_local(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.endswith(".localhost")


def _retryable(status: int) -> bool:
    return status in _RETRYABLE_4XX or status >= 500


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked us to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            seconds = float(value) / 1000
            return seconds if not math.isnan(seconds) else None
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
        return seconds if not math.isnan(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.timestamp() - time.time()
