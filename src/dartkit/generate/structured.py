"""Structured output: JSON schemas for the replies dartkit parses, and constrained local decoding.

A reply type that dartkit parses as JSON (the drift judge's verdict) has one pydantic model that
validates it; :func:`response_schema` derives the JSON schema a backend is asked to follow from
that same model, so the schema and the validation cannot drift apart. The derived schema is in
the "strict" shape OpenAI-compatible servers accept (``$ref`` inlined, every property required,
no extra keys, no defaults), which only narrows what the model accepts: a reply that follows the
schema has every field validation needs, and the reply is validated afterwards all the same
(cross-field rules such as "a verdict naming A or B needs a true criterion" are not schema rules).

Backends follow a schema in one of two ways:

* ``json_schema``: an OpenAI-compatible server is sent ``response_format`` with the schema
  (vLLM's server enforces it with guided decoding, OpenAI with its own);
* ``grammar``: a local ``hf``/``embedded`` model is decoded under a token mask from
  lm-format-enforcer, built per row from the tokens that row has generated (see
  :class:`GrammarMasker`).

Why lm-format-enforcer: it is pure Python on top of pydantic and interegular (a small install),
and its token filter depends only on the token prefix a row has generated, so dartkit's own
decode loop can drop finished rows from the batch without carrying any matcher state along.
outlines pulls in a much heavier stack, and xgrammar needs triton on Linux (a large download)
and keeps a stateful matcher per sequence that would have to follow every row the loop drops.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from dartkit.errors import DartkitError

if TYPE_CHECKING:
    import torch

#: How a backend follows a schema: a server's ``response_format`` (``json_schema``), a local token
#: mask (``grammar``), not at all (``none``: the reply is validated and retried as before), or
#: ``unknown`` (an OpenAI-compatible server, or an in-process vLLM under ``auto``, not asked yet;
#: the first request tells).
StructuredMode = Literal["json_schema", "grammar", "none", "unknown"]

# OpenAI's rule for response_format.json_schema.name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

#: Consecutive whitespace characters the local grammar allows between JSON tokens. A small cap keeps
#: the object compact, so it fits in ``max_new_tokens``; the model may still write one newline plus
#: an indent step.
MAX_CONSECUTIVE_WHITESPACE = 3


@dataclass(frozen=True)
class ResponseSchema:
    """A JSON schema a reply must follow, with the name servers are shown.

    Attributes:
        name: ``[A-Za-z0-9_-]{1,64}`` (OpenAI's rule for ``json_schema.name``).
        schema: The strict-shaped JSON schema (see :func:`response_schema`), sent to servers.
        grammar: A narrower schema for local grammar-constrained decoding, or None to use
            ``schema``: the same fields with the model's cross-field rules spelled out as
            alternatives (``anyOf`` at the root, which strict server mode does not take).
    """

    name: str
    schema: dict[str, Any] = field(hash=False)
    grammar: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"schema name {self.name!r} must match [A-Za-z0-9_-]{{1,64}}")

    @property
    def sha256(self) -> str:
        """Digest of the schemas' canonical JSON; part of the cache key of a constrained generation."""
        content = self.schema if self.grammar is None else {"schema": self.schema, "grammar": self.grammar}
        blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def cache_field(self, mode: StructuredMode) -> dict[str, str]:
        """What a cache key records of a constrained request: schema name, digest and how it is followed."""
        return {"name": self.name, "sha256": self.sha256, "via": "json_schema" if mode == "unknown" else mode}

    def response_format(self) -> dict[str, Any]:
        """The ``response_format`` request field of an OpenAI-compatible chat completion."""
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.schema, "strict": True},
        }


def response_schema(
    name: str,
    model: type[BaseModel],
    grammar: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> ResponseSchema:
    """The strict JSON schema of the replies ``model`` validates.

    ``$ref``s are inlined (not every server and grammar engine resolves them), every object lists
    all its properties as required in declaration order and forbids others, and defaults and
    titles are dropped (OpenAI's strict mode rejects defaults). An optional field stays nullable
    (``anyOf`` with ``null``) but must be written out.

    Args:
        name: The schema's name, shown to servers.
        model: The pydantic model that validates the replies.
        grammar: Optional: builds :attr:`ResponseSchema.grammar` from the strict schema, for rules
            of ``model``'s validators that a schema can state only as alternatives.

    Raises:
        ValueError: the model refers to itself (a recursive schema cannot be inlined).
    """
    raw = model.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    strict = _strict(_inline(raw, defs, ()))
    return ResponseSchema(name, strict, grammar(copy.deepcopy(strict)) if grammar else None)


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen:
                raise ValueError(f"recursive schema ({' -> '.join((*seen, name))}) cannot be inlined")
            return _inline(copy.deepcopy(defs[name]), defs, (*seen, name))
        return {k: _inline(v, defs, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs, seen) for v in node]
    return node


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default"):
            continue
        if key == "properties" and isinstance(value, dict):
            # Property names are names, not schema keywords: a field called "title" stays.
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        else:
            out[key] = _strict(value)
    if out.get("type") == "object" and "properties" in out:
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
        # An object's description is its class docstring, written for developers, not the model.
        out.pop("description", None)
    return out


def local_grammar_schema(schema: ResponseSchema, max_new_tokens: int, skeleton_tokens: int) -> dict[str, Any]:
    """The schema a local model is decoded under: its grammar with a length cap on free-text strings.

    A grammar guarantees the syntax but not that the object closes before ``max_new_tokens``; a
    reply cut mid-string does not parse. Every token adds at least one character, so capping the
    free strings' total length at ``max_new_tokens - 2 x skeleton_tokens`` characters (the
    skeleton: keys, punctuation and the longest enum values, counted twice for whitespace and
    unusual tokenisations) leaves room to close the object. The cap only narrows the schema.
    """
    out = copy.deepcopy(schema.grammar or schema.schema)
    free: list[dict[str, Any]] = []
    _collect_free_strings(out, free)
    per_reply = _free_count(out)  # free strings in one reply (alternatives are not added up)
    if free:
        budget = max(16 * per_reply, max_new_tokens - 2 * skeleton_tokens)
        for node in free:
            node["maxLength"] = budget // per_reply
    return out


def _is_free_string(node: dict[str, Any]) -> bool:
    return node.get("type") == "string" and not {"enum", "const", "pattern", "maxLength"} & node.keys()


def _free_count(node: Any) -> int:
    """The most free-text strings one instance of ``node`` holds."""
    if not isinstance(node, dict):
        return 0
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        return max(_free_count(o) for o in options)
    if _is_free_string(node):
        return 1
    return sum(_free_count(v) for v in node.get("properties", {}).values())


def _collect_free_strings(node: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(node, list):
        for v in node:
            _collect_free_strings(v, out)
        return
    if not isinstance(node, dict):
        return
    if _is_free_string(node):
        out.append(node)
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            for sub in value.values():
                _collect_free_strings(sub, out)
        elif key not in ("enum", "const", "required"):
            _collect_free_strings(value, out)


def skeleton_text(schema: dict[str, Any]) -> str:
    """Compact JSON of the longest instance with empty free strings and no array items.

    Used to size the free strings' length cap (see :func:`local_grammar_schema`).
    """
    return json.dumps(_longest(schema), separators=(",", ":"), ensure_ascii=False)


def _longest(node: dict[str, Any]) -> Any:
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        return max((_longest(o) for o in options), key=lambda v: len(json.dumps(v)))
    if "enum" in node:
        return max(node["enum"], key=lambda v: len(json.dumps(v)))
    if "const" in node:
        return node["const"]
    kind = node.get("type")
    if kind == "object":
        return {k: _longest(v) for k, v in node.get("properties", {}).items()}
    return {"array": [], "boolean": False, "null": None, "integer": 0, "number": 0, "string": ""}.get(
        str(kind)
    )


# -- local grammar (lm-format-enforcer) -----------------------------------------------------------


def _require_enforcer() -> None:
    try:
        import lmformatenforcer  # noqa: F401
    except ImportError:
        raise DartkitError(
            "constrained decoding of a local model needs lm-format-enforcer: pip install "
            "'lm-format-enforcer>=0.10,<1' (or set backend.structured_output: off)"
        ) from None


@dataclass
class TokenizerGrammarData:
    """lm-format-enforcer's per-tokenizer tables (a prefix tree over the vocabulary), built once.

    Attributes:
        data: The ``TokenEnforcerTokenizerData``.
        build_seconds: Time the build took.
        eos_ids: End-of-turn token ids the grammar allows once the object is complete.
    """

    data: Any
    build_seconds: float
    eos_ids: list[int]


# Process-wide: M0, M_int and M_DART share one tokenizer, and each build takes about a second.
_DATA_CACHE: dict[str, TokenizerGrammarData] = {}
_DATA_LOCK = threading.Lock()


def tokenizer_grammar_data(tokenizer: Any, eos_ids: Sequence[int]) -> TokenizerGrammarData:
    """Build (or reuse) the enforcer's tables for ``tokenizer``.

    Built here rather than with lm-format-enforcer's transformers integration, which does not
    import under transformers 5.x. Each regular token is decoded after a ``"0"`` token, so a
    token that starts a word keeps its leading space, as the library expects. Tokens that are
    pieces of a multi-byte character are left out (see the loop below).
    """
    _require_enforcer()
    from lmformatenforcer.tokenenforcer import TokenEnforcerTokenizerData

    vocab = tokenizer.get_vocab()
    blob = json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False)
    key = hashlib.sha256(f"{blob}\x00{sorted(eos_ids)}".encode()).hexdigest()
    with _DATA_LOCK:
        if key in _DATA_CACHE:
            return _DATA_CACHE[key]
        t = time.perf_counter()
        size = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        regular = []
        for i in range(size):
            if i in special:
                continue
            after_zero = tokenizer.decode([zero, i], clean_up_tokenization_spaces=False)[1:]
            alone = tokenizer.decode([i], clean_up_tokenization_spaces=False)
            if "\ufffd" in after_zero:
                # A piece of a multi-byte character: it adds no character the parser can see
                # until the rest arrives, so a row could repeat such tokens forever without its
                # string growing. Left out: the model spells such characters with whole tokens.
                continue
            regular.append((i, after_zero, len(after_zero) > len(alone)))

        def decode(tokens: list[int]) -> str:
            # A token ending inside a multi-byte character decodes to U+FFFD until its rest arrives.
            return tokenizer.decode(tokens, clean_up_tokenization_spaces=False).rstrip("\ufffd")

        data = TokenEnforcerTokenizerData(regular, decode, list(eos_ids), False, size)
        built = TokenizerGrammarData(data, time.perf_counter() - t, list(eos_ids))
        _DATA_CACHE[key] = built
        return built


class _Bare(str):
    """A JSON literal (``true``, ``false``, ``null``) as lm-format-enforcer's ``const`` takes it.

    The library quotes a ``const`` whose type is exactly ``str`` and cannot match a boolean one;
    a ``str`` subclass is matched unquoted, as the literal.
    """


def lmfe_schema(node: Any) -> Any:
    """``node`` with ``const`` booleans and nulls in the form lm-format-enforcer matches."""
    if isinstance(node, list):
        return [lmfe_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: lmfe_schema(v) for k, v in node.items()}
    if "const" in out and (out["const"] is None or isinstance(out["const"], bool)):
        out["const"] = _Bare(json.dumps(out["const"]))
        out.pop("type", None)
    return out


class GrammarMasker:
    """Token masks that keep each row of a batch inside a JSON schema.

    The enforcer's state is a function of the tokens a row has generated so far (it memoises
    states by that prefix), so a row can be dropped from the batch, or rows re-ordered, without
    any bookkeeping: :meth:`mask` takes each live row's generated tokens. One masker serves one
    ``generate`` call (its memo grows with the tokens generated).
    """

    def __init__(self, grammar: TokenizerGrammarData, schema: dict[str, Any]):
        from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser
        from lmformatenforcer.tokenenforcer import TokenEnforcer

        parser = JsonSchemaParser(lmfe_schema(schema))
        self._enforcer = TokenEnforcer(grammar.data, parser)
        # TokenEnforcer replaces the parser's config with its defaults; set ours afterwards: fields
        # in the schema's order (the order the judge prompt shows) and little whitespace.
        parser.config = CharacterLevelParserConfig(
            alphabet=grammar.data.tokenizer_alphabet,
            max_consecutive_whitespaces=MAX_CONSECUTIVE_WHITESPACE,
            force_json_field_order=True,
        )
        self._index: dict[int, tuple[Any, torch.Tensor]] = {}

    def allowed(self, generated: Sequence[int]) -> list[int]:
        """Token ids allowed after ``generated`` (the row's new tokens, not its prompt)."""
        return self._enforcer.get_allowed_tokens(list(generated)).allowed_tokens

    def _ids(self, generated: Sequence[int], device: Any) -> torch.Tensor:
        import torch

        tokens = self._enforcer.get_allowed_tokens(list(generated)).allowed_tokens
        # The enforcer hands back the same list object for the same parser state (free text inside a
        # string is one state per length); convert each list to a tensor once. The list is kept in
        # the entry so its id cannot be reused by another object.
        hit = self._index.get(id(tokens))
        if hit is None or hit[0] is not tokens:
            hit = (tokens, torch.tensor(tokens, dtype=torch.long, device=device))
            self._index[id(tokens)] = hit
        return hit[1]

    def mask(self, scores: torch.Tensor, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """``scores`` (rows x vocabulary) with every token the schema forbids at ``-inf``."""
        import torch

        out = torch.full_like(scores, float("-inf"))
        width = scores.shape[-1]
        for j, generated in enumerate(rows):
            ids = self._ids(generated, scores.device)
            ids = ids[ids < width]  # the model's logits may be narrower or wider than the tokenizer
            out[j, ids] = scores[j, ids]
        return out

    def prefix_allowed_tokens_fn(self, prompt_width: int) -> Callable[[int, torch.Tensor], list[int]]:
        """A ``prefix_allowed_tokens_fn`` for ``model.generate`` on left-padded rows of ``prompt_width``."""

        def fn(batch_id: int, sent: torch.Tensor) -> list[int]:
            return self.allowed(sent[prompt_width:].tolist())

        return fn
