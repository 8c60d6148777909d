"""The one protocol every generation backend implements.

A backend turns chat conversations into assistant texts. It yields each result as
soon as it is ready (index into the batch, text) so the caller can append it to
the cache at once; the order of results is the backend's business. The text may
be a :class:`Completion`, a ``str`` that also says how the generation ended and,
for a remote model, which model and build the server reported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from dartkit.config import DecodingConfig

if TYPE_CHECKING:
    from dartkit.generate.structured import ResponseSchema, StructuredMode

Messages = list[dict[str, str]]

#: How a generation ended: ``stop`` (the model finished its turn, or its conclusion line),
#: ``truncated`` (it ran into ``max_new_tokens``), ``filtered`` (the server returned no content,
#: or cut the answer for its content policy), ``refused`` (the server returned the model's
#: refusal in place of content, OpenAI's ``message.refusal``: the text is that refusal).
Finish = Literal["stop", "truncated", "filtered", "refused"]


class Completion(str):
    """Generated text that also carries how it ended and who served it.

    A ``str`` subclass, so every caller that only wants the text keeps working.

    Attributes:
        finish: See :data:`Finish`.
        served_model: The model name the server reported in its reply (remote backends).
        system_fingerprint: The server's ``system_fingerprint`` (its build), when it sends one.
        structured: How the reply was held to a JSON schema: ``json_schema`` (the server's
            ``response_format``) or ``grammar`` (constrained local decoding); None when it was not.
    """

    finish: Finish
    served_model: str | None
    system_fingerprint: str | None
    structured: str | None

    def __new__(
        cls,
        text: str,
        finish: Finish = "stop",
        served_model: str | None = None,
        system_fingerprint: str | None = None,
        structured: str | None = None,
    ) -> Completion:
        self = super().__new__(cls, text)
        self.finish = finish
        self.served_model = served_model
        self.system_fingerprint = system_fingerprint
        self.structured = structured
        return self

    def info(self) -> dict[str, Any]:
        """The non-default fields, as stored next to the text in a cache record."""
        out: dict[str, Any] = {}
        if self.finish != "stop":
            out["finish"] = self.finish
        if self.served_model is not None:
            out["served_model"] = self.served_model
        if self.system_fingerprint is not None:
            out["system_fingerprint"] = self.system_fingerprint
        if self.structured is not None:
            out["structured"] = self.structured
        return out


#: BackendConfig fields that change generated text (not only speed); stage fingerprints include them.
TEXT_SETTINGS = ("dtype", "device", "decode_loop")


def text_settings(cfg: Any) -> dict[str, Any]:
    """The :data:`TEXT_SETTINGS` of a ``BackendConfig``, for a pipeline stage's fingerprint.

    ``batch_size`` and ``prefix_cache_min_tokens`` are left out: they change only how rows
    share a forward pass, which moves low-precision (bf16) texts through rounding the same way
    the mix of already-cached prompts does, and neither can be keyed.
    """
    return {name: getattr(cfg, name) for name in TEXT_SETTINGS}


class BackendError(RuntimeError):
    """A backend failed in a way retries cannot fix (bad credentials, unknown model, ...)."""


@runtime_checkable
class Backend(Protocol):
    """A text generator behind a model spec string.

    A backend may also implement the optional :class:`OptionScorer` capability
    (``score_options``), which the ``loglik`` answer mode of evaluation needs; use
    :func:`supports_scoring` to ask whether it does; and the optional
    :class:`StructuredGenerator` capability (a ``schema`` argument to ``generate``), which
    holds JSON replies to a schema; use :func:`structured_mode` to ask how it would.
    """

    spec: str

    def identity(self) -> dict[str, Any]:
        """What makes this model's outputs what they are: model id, revision, adapter hash.

        It goes into every cache key and into the run manifest.
        """
        ...

    def generate(
        self, conversations: Sequence[Messages], decoding: DecodingConfig
    ) -> Iterator[tuple[int, str]]:
        """Yield ``(index, text)`` for every conversation, as each one finishes (text may be a Completion)."""
        ...

    def close(self) -> None:
        """Release model memory, connections, threads."""
        ...


#: Log-probabilities of fixed continuations, keyed by the continuation. ``None`` marks an option a
#: remote server did not rank among its top next tokens (its log-probability is below all of them).
OptionLogprobs = dict[str, float | None]


@runtime_checkable
class OptionScorer(Protocol):
    """The optional capability of a backend to score fixed continuations of a conversation."""

    def score_options(
        self, conversations: Sequence[Messages], prefixes: Sequence[str], options: Sequence[str]
    ) -> Iterator[tuple[int, OptionLogprobs]]:
        """Yield ``(index, {option: log-probability})`` for every conversation, as each is scored.

        Each conversation is rendered as for generation (prompt plus the start of the assistant
        turn), followed by the assistant text ``prefixes[index]``; every option is then scored
        as the total log-probability of its tokens as the continuation of that assistant text.

        Raises:
            DartkitError: the model or server cannot score (a remote server that returns no
                log-probabilities, or ranks none of the options).
        """
        ...


def supports_scoring(backend: object) -> bool:
    """Whether ``backend`` implements :class:`OptionScorer` (``score_options``)."""
    return callable(getattr(backend, "score_options", None))


@runtime_checkable
class StructuredGenerator(Protocol):
    """The optional capability of a backend to hold replies to a JSON schema.

    Its ``generate`` takes ``schema`` (a :class:`~dartkit.generate.structured.ResponseSchema`
    or None) as a keyword argument; a reply that followed it is a :class:`Completion` whose
    ``structured`` names how (a reply that could not, e.g. after a server rejected the schema,
    has ``structured`` None).

    Two optional attributes refine the cache keys of constrained replies: ``structured_path``
    (``json_schema`` or ``grammar``: how the backend follows a schema once it can, used while
    ``structured_mode`` says ``unknown``; default ``json_schema``) and ``grammar_engine()``
    (the grammar library and its version, added to keys of ``grammar`` replies).
    """

    def structured_mode(self, schema: ResponseSchema) -> StructuredMode:
        """How ``generate(..., schema=schema)`` would hold replies to ``schema`` now.

        ``json_schema`` or ``grammar``: it will; ``none``: it will not (switched off, or the
        server rejected schemas before); ``unknown``: it will try, and the reply tells.
        """
        ...


def structured_mode(backend: object, schema: ResponseSchema | None) -> StructuredMode:
    """How ``backend`` would follow ``schema``: ``none`` without a schema or the capability."""
    if schema is None:
        return "none"
    ask = getattr(backend, "structured_mode", None)
    return ask(schema) if callable(ask) else "none"
