"""In-process vLLM backend: ``vllm:ID_OR_PATH[@REV][+adapter=DIR]`` (``pip install 'dartkit[vllm]'``).

One ``vllm.LLM`` engine is built per base model and engine options in a process (a module-level
registry), so M0, M_int and M_DART share one engine and one copy of the base weights: each
backend with an adapter passes it per request as a ``LoRARequest`` whose integer id is fixed per
adapter sha256 for the life of the process. Engines outlive the backends that use them;
:func:`release_engines` frees them (``dartkit run`` does before it trains on the same GPU).

Prompts are rendered exactly as the hf backend renders them: the model's chat template through
transformers' tokenizer (with the same fitting of a system turn, ``generate/chat.py``), and the
resulting token ids are handed to vLLM, so vLLM adds no second BOS and the audit's prompt check
sees one prompt across backends. Sampling follows dartkit's ``DecodingConfig``: temperature 0 is
greedy; otherwise each prompt gets its own vLLM ``seed`` derived from (seed, prompt tokens), the
hf backend's derivation, so a prompt's sample does not depend on which prompts share its batch
through the random numbers (vLLM's batched kernels are not bit-for-bit batch-invariant, so at
low precision a text can still move with the batch, as in any batched engine).

``stop_after_conclusion`` is applied by post-truncation: vLLM generates until end of turn or
``max_tokens``, and the text is cut after the first complete line (ended by a newline) that
``parse_conclusion`` reads as a conclusion, the rule the hf backend stops on. The answer then
equals the hf backend's (same prompt, same tokens up to that line); the tokens written after it
are wasted work, which vLLM's throughput makes cheap.

A reply held to a JSON schema (the judge's verdict, ``generate(..., schema=...)``) is decoded
under vLLM's own structured-output (guided decoding) parameters: ``StructuredOutputsParams(json=...)``
where this vLLM has it (current releases), ``GuidedDecodingParams(json=...)`` in older ones. The schema is
the one dartkit's local grammar uses (:func:`~dartkit.generate.structured.local_grammar_schema`:
the cross-field rules as alternatives, free text capped so the object closes within
``max_new_tokens``). Under ``backend.structured_output: auto`` a vLLM that cannot take it (too
old, or its guided-decoding backend refuses the schema) is logged once and the replies go
unconstrained, validated and asked again as elsewhere; under ``on`` that is an error.

This module has been tested against a stand-in ``vllm`` module only, never against real vLLM:
see docs/vllm.md.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dartkit.config import BackendConfig, DecodingConfig
from dartkit.errors import DartkitError
from dartkit.generate.base import Completion, Messages
from dartkit.generate.loading import hub_local_files_only, model_location, resolve_hub_identity
from dartkit.generate.spec import ModelSpec
from dartkit.generate.structured import ResponseSchema, StructuredMode, local_grammar_schema, skeleton_text
from dartkit.generate.tokens import chat_token_ids, end_of_turn_ids, row_seed
from dartkit.parse import parse_conclusion

log = logging.getLogger(__name__)

INSTALL_HINT = "vllm: specs need vLLM, an optional extra: pip install 'dartkit[vllm]' (Linux with a CUDA GPU)"
#: Prompts per ``LLM.generate`` call: vLLM batches within a call; between calls, answers are cached,
#: so a killed run keeps all but the last chunk.
CHUNK = 512

_LOCK = threading.Lock()
_ENGINES: dict[str, Any] = {}
_LORA_IDS: dict[str, int] = {}


def import_vllm():
    """The ``vllm`` module, or a one-line DartkitError saying to install the extra."""
    try:
        import vllm
    except ImportError as e:
        raise DartkitError(f"{INSTALL_HINT} (import failed: {e})") from None
    return vllm


def lora_int_id(adapter_sha256: str) -> int:
    """The LoRARequest id of an adapter: the same for the same sha256 for the life of the process.

    vLLM keys its loaded adapters by this id; two directories with the same weights share one slot,
    and a retrained adapter (new sha256) never reuses the old one's weights.
    """
    with _LOCK:
        return _LORA_IDS.setdefault(adapter_sha256, len(_LORA_IDS) + 1)


def engine_kwargs(path: str, revision: str | None, cfg: BackendConfig) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for a base model under ``backend.vllm``'s options."""
    o = cfg.vllm
    kwargs: dict[str, Any] = {
        "model": path,
        "tokenizer": path,
        "revision": revision,
        "tokenizer_revision": revision,
        "dtype": o.dtype,
        "tensor_parallel_size": o.tensor_parallel_size,
        "gpu_memory_utilization": o.gpu_memory_utilization,
        "max_model_len": o.max_model_len,
        "quantization": o.quantization,
        "enforce_eager": o.enforce_eager,
        "enable_lora": o.enable_lora,
    }
    if o.enable_lora:
        kwargs.update(max_lora_rank=o.max_lora_rank, max_loras=o.max_loras)
    kwargs.update(o.engine_args)
    return kwargs


def shared_engine(kwargs: dict[str, Any]):
    """The process's ``vllm.LLM`` for these engine arguments, built on first use."""
    key = json.dumps(kwargs, sort_keys=True, default=str)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            vllm = import_vllm()
            log.info("starting a vLLM engine for %s", kwargs["model"])
            try:
                engine = vllm.LLM(**kwargs)
            except (OSError, ValueError, RuntimeError) as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise DartkitError(
                    f"vLLM could not start an engine for '{kwargs['model']}': {first}"
                ) from None
            _ENGINES[key] = engine
        return engine


def release_engines() -> int:
    """Shut down every engine this process built and free their GPU memory; returns how many."""
    with _LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    engine = None
    for engine in engines:
        # vLLM's V1 engine runs its core in a child process; shut it down explicitly where it offers to.
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as e:  # freeing memory is best effort; the process may go on regardless
                log.warning("vLLM engine shutdown failed: %s", e)
    n = len(engines)
    del engines, engine  # the last references: the engines' memory can go now
    if n:
        try:  # vLLM's own teardown of its parallel state and memory, where this version has it
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception as e:  # best effort, as above: an older vLLM, or nothing to clean
            log.debug("vLLM cleanup_dist_env_and_memory: %s", e)
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    return n


def cut_after_conclusion(text: str) -> str | None:
    """``text`` up to and including the first complete conclusion line, or None when it has none.

    A line is complete once a newline ends it: the point where the hf backend stops generating
    under ``stop_after_conclusion``.
    """
    start = 0
    while (end := text.find("\n", start)) != -1:
        line = text[start:end]
        if line.strip() and parse_conclusion(line) is not None:
            return text[: end + 1]
        start = end + 1
    return None


class VLLMBackend:
    """Generation with an in-process vLLM engine shared by every backend on the same base model.

    Raises:
        DartkitError: vLLM is not installed; the adapter is not a PEFT adapter, was trained on
            another base, or has a rank above ``backend.vllm.max_lora_rank``; LoRA is off.
    """

    def __init__(self, spec: ModelSpec, cfg: BackendConfig):
        if spec.kind != "vllm":
            raise ValueError(f"VLLMBackend needs a vllm: spec, got '{spec}'")
        self._vllm = import_vllm()  # at once: a missing extra is one line, before any work
        self.spec = str(spec)
        self._parsed = spec
        self.cfg = cfg
        self._path, identity = model_location(spec)
        identity["backend"] = "vllm"
        identity["vllm_version"] = str(getattr(self._vllm, "__version__", "unknown"))
        identity["engine"] = cfg.vllm.text_fields()
        self._identity = identity
        self._hub_resolved = "weights_sha256" in identity  # a local directory; a hub id resolves below
        self._lora = None
        if spec.adapter:
            self._check_adapter(Path(spec.adapter).expanduser())
        self.tokenizer = None
        self._eos: list[int] = []
        # None: structured output not failed (yet); a str: why this vLLM could not do it.
        self._structured_failed: str | None = None
        self._structured_ok = False  # a guided request went through

    def _check_adapter(self, adapter: Path) -> None:
        from dartkit.generate.adapters import check_adapter_base

        check_adapter_base(adapter, self._identity)
        if not self.cfg.vllm.enable_lora:
            raise DartkitError(f"'{self.spec}': an adapter needs backend.vllm.enable_lora: true")
        rank = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("r")
        if isinstance(rank, int) and rank > self.cfg.vllm.max_lora_rank:
            raise DartkitError(
                f"{adapter}: LoRA rank {rank} is above backend.vllm.max_lora_rank "
                f"({self.cfg.vllm.max_lora_rank}); raise it"
            )

    # -- identity --------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Model, revision or weights fingerprint, chat template and adapter hashes, vLLM version, the
        engine options that change text (:meth:`VLLMConfig.text_fields`).

        Cheap, except for a hub model not in the local cache, which the engine downloads first so
        that the key names the commit used.
        """
        if not self._hub_resolved:
            resolve_hub_identity(self._identity, self._parsed, self._download)
            self._hub_resolved = True
        return dict(self._identity)

    # -- loading ---------------------------------------------------------------------------

    def _download(self) -> None:
        """Start the engine, which downloads the model (its commit is then in the local cache)."""
        self._engine()

    def _engine(self):
        return shared_engine(engine_kwargs(self._path, self._parsed.revision, self.cfg))

    def _ensure_tokenizer(self) -> None:
        if self.tokenizer is not None:
            return
        from transformers import AutoTokenizer, GenerationConfig

        local_only = False
        if not Path(self._path).exists():
            local_only = hub_local_files_only(
                self._parsed.model, self._parsed.revision, f"model '{self.spec}'"
            )
        revision = self._parsed.revision
        try:
            tok = AutoTokenizer.from_pretrained(self._path, revision=revision, local_files_only=local_only)
        except (OSError, ValueError) as e:
            raise DartkitError(
                f"cannot load the tokenizer of '{self.spec}': {str(e).splitlines()[0]}"
            ) from None
        try:
            gen_eos = GenerationConfig.from_pretrained(
                self._path, revision=revision, local_files_only=local_only
            ).eos_token_id
        except (OSError, ValueError):
            gen_eos = None
        # The end-of-turn tokens the hf backend stops at (vLLM stops at its own EOS as well).
        self._eos = end_of_turn_ids(tok.eos_token_id, gen_eos)
        self.tokenizer = tok

    def encode(self, messages: Messages) -> list[int]:
        """Prompt token ids, exactly as the hf backend encodes them."""
        self._ensure_tokenizer()
        return chat_token_ids(self.tokenizer, messages, self.spec)

    def _lora_request(self):
        if not self._parsed.adapter:
            return None
        if self._lora is None:
            from vllm.lora.request import LoRARequest

            from dartkit.generate.served_lora import served_adapter_name

            sha = self._identity["adapter_sha256"]
            path = str(Path(self._parsed.adapter).expanduser().resolve())
            self._lora = LoRARequest(
                lora_name=served_adapter_name(path, sha), lora_int_id=lora_int_id(sha), lora_path=path
            )
        return self._lora

    # -- generation ------------------------------------------------------------------------

    #: How this backend holds a reply to a schema once it can (see ``generate_cached``'s probe).
    structured_path: StructuredMode = "grammar"

    def structured_mode(self, schema: ResponseSchema) -> StructuredMode:
        """How ``generate(..., schema=...)`` follows a schema now.

        ``none`` under ``structured_output: off``, or under ``auto`` with a vLLM that has no
        structured-output parameters or once this vLLM refused a schema; ``grammar`` under ``on``
        (a vLLM that cannot then raises in ``generate``) or once a guided request went through;
        otherwise (``auto``, nothing asked yet) ``unknown``:
        the first request tells, so a rerun against a vLLM that refuses the schema asks one item,
        not all of them, before it finds its earlier answers in the cache.
        """
        if self.cfg.structured_output == "off" or self._structured_failed is not None:
            return "none"
        if self.cfg.structured_output == "auto" and self._structured_kwargs_type() is None:
            self._structured_unavailable("this vLLM has no structured-output parameters")
            return "none"
        if self.cfg.structured_output == "on" or self._structured_ok:
            return "grammar"
        return "unknown"

    def guided_schema(self, schema: ResponseSchema, max_new_tokens: int) -> dict[str, Any]:
        """The JSON schema vLLM decodes under: dartkit's local grammar schema for ``schema``."""
        self._ensure_tokenizer()
        skeleton = skeleton_text(schema.grammar or schema.schema)
        skeleton_tokens = len(self.tokenizer.encode(skeleton, add_special_tokens=False))
        return local_grammar_schema(schema, max_new_tokens, skeleton_tokens)

    def _structured_kwargs_type(self) -> tuple[str, Any] | None:
        """(SamplingParams field, parameter class) of this vLLM's structured output, or None."""
        try:
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError:
            try:
                from vllm.sampling_params import GuidedDecodingParams  # vLLM before StructuredOutputsParams
            except ImportError:
                return None
            return "guided_decoding", GuidedDecodingParams
        return "structured_outputs", StructuredOutputsParams

    def _structured_kwargs(self, guided: dict[str, Any]) -> dict[str, Any] | None:
        """``SamplingParams`` keyword arguments that hold a reply to the JSON schema ``guided``
        (None when this vLLM has no structured-output parameters)."""
        found = self._structured_kwargs_type()
        if found is None:
            return None
        name, cls = found
        return {name: cls(json=guided)}

    def sampling_params(
        self, decoding: DecodingConfig, prompt_ids: list[int], structured: dict[str, Any] | None = None
    ):
        """vLLM ``SamplingParams`` for one prompt (greedy, or sampled with the prompt's own seed).

        Args:
            structured: Extra keyword arguments that hold the reply to a schema
                (see :meth:`_structured_kwargs`), or None.
        """
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {
            "n": 1,
            "max_tokens": decoding.max_new_tokens,
            "stop_token_ids": list(self._eos),
            "skip_special_tokens": True,
            **(structured or {}),
        }
        if decoding.greedy:
            kwargs.update(temperature=0.0, top_p=1.0)
        else:
            kwargs.update(
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                seed=row_seed(decoding.seed, prompt_ids),
            )
        return SamplingParams(**kwargs)

    def generate(
        self,
        conversations: Sequence[Messages],
        decoding: DecodingConfig,
        schema: ResponseSchema | None = None,
    ) -> Iterator[tuple[int, Completion]]:
        """Yield ``(index, Completion)`` per conversation, chunk by chunk of :data:`CHUNK` prompts.

        A completion that ran into ``max_new_tokens`` without ending its turn (or, with
        ``stop_after_conclusion``, without a complete conclusion line) is marked ``truncated``.

        With ``schema`` (and ``backend.structured_output`` not ``off``) every reply is decoded under
        vLLM's guided decoding (see the module docstring), marked ``structured="grammar"``, and
        ``stop_after_conclusion`` is ignored: a JSON reply has no conclusion line to stop at. When
        vLLM rejects a chunk with the schema, the same rows are asked plainly for one token: when
        that goes through, the schema was the problem (``auto``: this chunk and the rest go plain;
        ``on``: an error); when it fails too, its own error is raised and the schema is not blamed.

        Raises:
            DartkitError: under ``structured_output: on``, this vLLM cannot follow the schema.
        """
        if not conversations:
            return
        encoded = [self.encode(m) for m in conversations]
        engine = self._engine()
        lora = self._lora_request()
        structured = None
        guided_decoding = decoding.model_copy(update={"stop_after_conclusion": False})
        if schema is not None and self.structured_mode(schema) != "none":
            structured = self._structured_kwargs(self.guided_schema(schema, decoding.max_new_tokens))
            if structured is None:  # under 'on' (auto said 'none' above)
                self._structured_unavailable("this vLLM has no structured-output parameters")
        for start in range(0, len(encoded), CHUNK):
            rows = encoded[start : start + CHUNK]
            how = None
            if structured is not None:
                try:
                    outputs = self._generate_chunk(engine, rows, guided_decoding, lora, structured)
                    how = "grammar"
                    self._structured_ok = True
                except (ValueError, TypeError, NotImplementedError) as e:
                    # vLLM checks a request's structured-output parameters before it runs it; so
                    # do the other checks (prompt length...): the same rows asked plainly for one
                    # token tell them apart (raising the other error as itself).
                    one_token = decoding.model_copy(update={"max_new_tokens": 1})
                    self._generate_chunk(engine, rows, one_token, lora, None)
                    first = str(e).splitlines()[0] if str(e) else type(e).__name__
                    self._structured_unavailable(f"vLLM refused the schema: {first}")  # raises under 'on'
                    structured = None
                    outputs = self._generate_chunk(engine, rows, decoding, lora, None)
            else:
                outputs = self._generate_chunk(engine, rows, decoding, lora, None)
            used = guided_decoding if how else decoding
            for j, out in enumerate(outputs):
                first_out = out.outputs[0]
                yield start + j, self._completion(first_out.text, first_out.finish_reason, used, how)

    def _generate_chunk(self, engine, rows, decoding, lora, structured):
        """One ``LLM.generate`` call over ``rows`` (prompt token ids)."""
        return engine.generate(
            [{"prompt_token_ids": ids} for ids in rows],
            sampling_params=[self.sampling_params(decoding, ids, structured) for ids in rows],
            lora_request=lora,
            use_tqdm=False,
        )

    def _structured_unavailable(self, why: str) -> None:
        if self.cfg.structured_output == "on":
            raise DartkitError(
                f"'{self.spec}': {why}; backend.structured_output is 'on' (set it to 'auto' to validate "
                "and retry instead, or 'off')"
            )
        if self._structured_failed is None:
            log.warning(
                "%s: %s; judge replies are validated and asked again instead (recorded per reply)",
                self.spec,
                why,
            )
        self._structured_failed = why

    def _completion(
        self, text: str, finish_reason: str | None, decoding: DecodingConfig, structured: str | None = None
    ) -> Completion:
        if decoding.stop_after_conclusion:
            cut = cut_after_conclusion(text)
            if cut is not None:
                return Completion(cut.strip(), "stop")
        finish = "truncated" if finish_reason == "length" else "stop"
        return Completion(text.strip(), finish, structured=structured)

    def close(self) -> None:
        """Drop this backend's tokenizer; the shared engine stays for the other backends (see
        :func:`release_engines`)."""
        self.tokenizer = None
