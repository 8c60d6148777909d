"""Local transformers backend: batched, left-padded, length-sorted generation.

Prompts are rendered with the model's own chat template, sorted by token length
(longest first, so the batch shapes shrink and padding stays small), padded on
the left, and generated in batches. Each row stops once its ``Conclusion:`` line
is complete, so a batch does not wait for one model that keeps talking after
its answer.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dartkit.config import BackendConfig, DecodingConfig
from dartkit.errors import DartkitError
from dartkit.generate.base import Completion, Messages
from dartkit.generate.loading import (
    hub_download_hint,
    hub_local_files_only,
    model_location,
    resolve_device,
    resolve_dtype,
    resolve_hub_identity,
)
from dartkit.generate.spec import ModelSpec
from dartkit.generate.structured import (
    GrammarMasker,
    ResponseSchema,
    StructuredMode,
    TokenizerGrammarData,
    local_grammar_schema,
    skeleton_text,
    tokenizer_grammar_data,
)
from dartkit.generate.tokens import chat_token_ids, end_of_turn_ids, row_seed
from dartkit.parse import parse_conclusion

# Trailing tokens decoded to find the last complete line; a conclusion line is a few tokens long.
_TAIL_TOKENS = 24


def load_model_and_tokenizer(spec: ModelSpec, cfg: BackendConfig, for_training: bool = False):
    """Load a causal LM and its tokenizer for a spec of kind ``embedded`` or ``hf``.

    Returns:
        (model, tokenizer, identity) where identity names model, revision and adapter hash.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, identity = model_location(spec)
    revision = spec.revision if spec.kind == "hf" else None
    local_only = _hub_local_only(spec, path)  # fails at once, offline, for a model not downloaded yet
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            path, revision=revision, dtype=dtype, local_files_only=local_only
        )
    except (OSError, ValueError) as e:
        # A typo in a repo id, a directory without weights, a cached model missing some files offline.
        hint = f"; offline, {hub_download_hint(spec.model, spec.revision)}" if local_only else ""
        raise DartkitError(f"cannot load model '{spec}': {str(e).splitlines()[0]}{hint}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if spec.adapter:
        from dartkit.generate.adapters import attach_adapter

        model, _ = attach_adapter(model, Path(spec.adapter), identity, trainable=for_training)
        if not for_training:
            # Fold the LoRA update into the base weights: generation then runs the plain model
            # (no per-layer adapter matmuls, and dartkit's own decode loop applies).
            model = model.merge_and_unload()
    model.to(device)
    if not for_training:
        model.eval()
    return model, tok, identity


def _hub_local_only(spec: ModelSpec, path: str) -> bool:
    """``local_files_only`` for a spec's weights: True only for a cached hub model while the hub is offline."""
    if spec.kind != "hf" or Path(path).exists():
        return False
    return hub_local_files_only(spec.model, spec.revision, f"model '{spec}'")


def plain_attention_cache(model_or_config) -> bool:
    """True when every layer of the model's cache is a plain full-attention KV cache.

    Only then can dartkit's own decode loop share a prefix cache and drop finished rows.
    Takes a model or its config (the config alone is enough, so no weights need loading).
    """
    from transformers import DynamicCache, PretrainedConfig
    from transformers.cache_utils import DynamicLayer

    config = model_or_config if isinstance(model_or_config, PretrainedConfig) else model_or_config.config
    try:
        layers = DynamicCache(config=config).layers
    except Exception:
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def cache_kwarg(model) -> str:
    """The name a model's ``forward`` takes its KV cache under: ``cache`` from transformers 5.x
    (where ``past_key_values`` is deprecated, to be removed in 5.40), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache of a forward pass's output, under either version's name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def token_bounded_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int, max_new_tokens: int
) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive batches over prompts sorted longest first.

    Each batch holds at most ``batch_size`` prompts and, when ``max_tokens`` > 0, at most
    ``max_tokens`` tokens counted as rows x (its longest prompt + ``max_new_tokens``), the size
    of its KV cache at the last step. A prompt longer than the cap on its own gets a batch of one.
    """
    out = []
    start = 0
    while start < len(lengths):
        width = lengths[start] + max_new_tokens  # the batch's longest prompt: sorted, so its first
        rows = batch_size if max_tokens <= 0 else max(1, min(batch_size, max_tokens // width))
        stop = min(start + rows, len(lengths))
        out.append((start, stop))
        start = stop
    return out


class HFBackend:
    """Generation with a local transformers model (optionally with a LoRA adapter)."""

    def __init__(self, spec: ModelSpec, cfg: BackendConfig):
        self.spec = str(spec)
        self._parsed = spec
        self.cfg = cfg
        self._path, self._identity = model_location(spec)
        device = resolve_device(cfg.device)
        # Settings that change the text, not just the speed, belong to the identity (and so to every
        # cache key): fp32 on a CPU and bf16 on a GPU give different texts, and so do the two decode
        # loops (on a GPU they agreed on 0 of 128 answers).
        self._identity["dtype"] = str(resolve_dtype(cfg.dtype, device)).removeprefix("torch.")
        self._identity["device"] = device.split(":")[0]
        self._hub_resolved = spec.kind != "hf" or "weights_sha256" in self._identity
        self.model = None
        self.tokenizer = None
        self._grammar_data: TokenizerGrammarData | None = None

    def _ensure_loaded(self) -> None:
        # Weights load on first use: a run whose answers are all cached never pays for them.
        if self.model is None:
            self.model, self.tokenizer, _ = load_model_and_tokenizer(self._parsed, self.cfg)
            self.tokenizer.padding_side = "left"
            self._own_loop_ok = plain_attention_cache(self.model)

    def identity(self) -> dict[str, Any]:
        """Model, revision, weights / adapter / chat-template hashes, dtype, device kind and decode loop.

        Cheap: no weights are loaded, except for a hub model that is not in the local cache yet,
        which is downloaded first so that the key names the commit actually used.
        """
        if not self._hub_resolved:
            resolve_hub_identity(self._identity, self._parsed, self._download)
            self._hub_resolved = True
        if "decode_loop" not in self._identity:
            self._identity["decode_loop"] = "dartkit" if self._resolved_own_loop() else "generate"
        return dict(self._identity)

    def _download(self) -> str | None:
        """Load (downloading) the model; the commit its config names."""
        self._ensure_loaded()
        return getattr(self.model.config, "_commit_hash", None)

    def _resolved_own_loop(self) -> bool:
        """Whether dartkit's own decode loop runs (``decode_loop`` setting and the model's cache type)."""
        if self.cfg.decode_loop == "generate":
            return False
        if self.model is not None:
            return self._own_loop_ok
        from transformers import AutoConfig

        revision = self._parsed.revision if self._parsed.kind == "hf" else None
        local_only = _hub_local_only(self._parsed, self._path)
        try:
            config = AutoConfig.from_pretrained(self._path, revision=revision, local_files_only=local_only)
        except (OSError, ValueError) as e:
            raise DartkitError(f"cannot load model '{self.spec}': {str(e).splitlines()[0]}") from None
        return plain_attention_cache(config)

    def encode(self, messages: Messages) -> list[int]:
        """Prompt token ids (chat template, generation prompt): see :func:`~dartkit.generate.tokens.chat_token_ids`."""
        return chat_token_ids(self.tokenizer, messages, self.spec)

    def generate(
        self,
        conversations: Sequence[Messages],
        decoding: DecodingConfig,
        schema: ResponseSchema | None = None,
    ) -> Iterator[tuple[int, Completion]]:
        """Yield ``(index, Completion)`` per conversation, batch by batch (longest prompts first).

        A completion that used all ``max_new_tokens`` without ending its turn (or, with
        ``stop_after_conclusion``, without a complete conclusion line) is marked ``truncated``.

        With ``schema`` (and ``backend.structured_output`` not ``off``) every row is decoded under
        the schema's grammar (see :mod:`dartkit.generate.structured`), greedy or sampled alike, and
        ``stop_after_conclusion`` is ignored: a JSON reply has no conclusion line to stop at.
        """
        if not conversations:
            return
        self._ensure_loaded()
        masker = None
        if schema is not None and self.structured_mode(schema) == "grammar":
            decoding = decoding.model_copy(update={"stop_after_conclusion": False})
            masker = self._grammar_masker(schema, decoding.max_new_tokens)
        encoded = [self.encode(m) for m in conversations]
        own_loop = self._own_loop_ok and self._use_own_loop(decoding)
        prefix_len, prefix_cache = self._shared_prefix(encoded) if own_loop else (0, None)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        batches = token_bounded_batches(
            [len(encoded[i]) for i in order],
            self.cfg.batch_size,
            self.cfg.batch_token_cap(str(self.model.device)),
            decoding.max_new_tokens,
        )
        for b, (start, stop) in enumerate(batches):
            idx = order[start:stop]
            if not own_loop:
                # generate() samples with one generator per batch: reproducible for the same batches.
                new_tokens = self._generate_fallback(
                    [encoded[i] for i in idx], decoding, decoding.seed * 1_000_003 + b, masker
                )
            else:
                input_ids, attention = self._pack([encoded[i] for i in idx], prefix_len)
                cache = None
                if prefix_cache is not None:
                    cache = copy.deepcopy(prefix_cache)
                    cache.batch_repeat_interleave(len(idx))
                seeds = [row_seed(decoding.seed, encoded[i]) for i in idx]
                new_tokens = self._decode(input_ids, attention, cache, prefix_len, decoding, seeds, masker)
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for r, i in enumerate(idx):
                how = "grammar" if masker is not None else None
                yield i, Completion(texts[r].strip(), self._finish(new_tokens[r], decoding), structured=how)

    def structured_mode(self, schema: ResponseSchema) -> StructuredMode:
        """``grammar`` (constrained decoding) unless ``backend.structured_output`` is ``off``."""
        return "none" if self.cfg.structured_output == "off" else "grammar"

    def grammar_engine(self) -> str:
        """The grammar library and its version, part of the cache key of grammar-decoded replies."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"lm-format-enforcer {version('lm-format-enforcer')}"
        except PackageNotFoundError:
            return "lm-format-enforcer (not installed)"

    def _grammar_masker(self, schema: ResponseSchema, max_new_tokens: int) -> GrammarMasker:
        """A per-call token masker for ``schema``; the tokenizer's tables are built once per backend."""
        if self._grammar_data is None:
            self._grammar_data = tokenizer_grammar_data(self.tokenizer, self._eos_ids())
        skeleton = skeleton_text(schema.grammar or schema.schema)
        skeleton_tokens = len(self._text_tokens(skeleton))
        return GrammarMasker(
            self._grammar_data, local_grammar_schema(schema, max_new_tokens, skeleton_tokens)
        )

    def continuation_tokens(self, prefix: str, option: str) -> tuple[list[int], list[int], bool]:
        """The tokens of the assistant text ``prefix`` and of ``option`` continuing it.

        ``prefix + option`` is tokenised as one text, as the model would have written it. When the
        tokens of ``prefix`` alone start that sequence the boundary is clean and the rest are the
        option's tokens. When a token merges text from both sides (``"answer: " + "NO"``: the
        space joins ``" NO"``), that split would charge part of the prefix to the option, so the
        option is tokenised on its own after the prefix's own tokens instead.

        Returns:
            (prefix tokens, option tokens, whether the boundary merged).
        """
        prefix_ids = self._text_tokens(prefix) if prefix else []
        joint = self._text_tokens(prefix + option)
        if joint[: len(prefix_ids)] == prefix_ids and len(joint) > len(prefix_ids):
            return prefix_ids, joint[len(prefix_ids) :], False
        return prefix_ids, self._text_tokens(option), True

    def _text_tokens(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def score_options(
        self, conversations: Sequence[Messages], prefixes: Sequence[str], options: Sequence[str]
    ) -> Iterator[tuple[int, dict[str, float | None]]]:
        """Yield ``(index, {option: summed token log-probability})`` per conversation.

        Each row is the prompt exactly as :meth:`generate` encodes it (chat template and the start
        of the assistant turn), the assistant text ``prefixes[index]``, then one option; an
        option's score is the sum of its tokens' log-probabilities (see
        :meth:`continuation_tokens` for the boundary). Rows share the prompts' common prefix KV
        cache like generation does, are batched longest first under the same token cap, and one
        forward pass per batch keeps only the logits of the last positions, so memory stays small.
        """
        if len(prefixes) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(prefixes)} prefixes")
        if not options or len(set(options)) != len(options) or not all(options):
            raise ValueError(f"options must be distinct non-empty strings, got {list(options)!r}")
        if not conversations:
            return
        self._ensure_loaded()
        rows: list[list[int]] = []
        spans: list[int] = []  # how many tokens at the end of each row belong to its option
        owners: list[tuple[int, str]] = []
        for i, (messages, prefix) in enumerate(zip(conversations, prefixes, strict=True)):
            prompt = self.encode(messages)
            for option in options:
                prefix_ids, option_ids, _ = self.continuation_tokens(prefix, option)
                rows.append(prompt + prefix_ids + option_ids)
                spans.append(len(option_ids))
                owners.append((i, option))
        # The shared prefix is taken over the rows without their options, so that it always stops
        # before the token preceding each option (whose logits predict the option's first token).
        contexts = [row[: len(row) - span] for row, span in zip(rows, spans, strict=True)]
        prefix_len, prefix_cache = self._shared_prefix(contexts) if self._own_loop_ok else (0, None)
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r]))
        batches = token_bounded_batches(
            [len(rows[r]) for r in order],
            self.cfg.batch_size,
            self.cfg.batch_token_cap(str(self.model.device)),
            0,
        )
        scores: dict[int, dict[str, float | None]] = {}
        for start, stop in batches:
            idx = order[start:stop]
            sums = self._option_logprobs(
                [rows[r] for r in idx], [spans[r] for r in idx], prefix_len, prefix_cache
            )
            for r, value in zip(idx, sums, strict=True):
                i, option = owners[r]
                scores.setdefault(i, {})[option] = value
                if len(scores[i]) == len(options):
                    yield i, {o: scores[i][o] for o in options}
                    del scores[i]

    def _option_logprobs(
        self, rows: list[list[int]], spans: list[int], prefix_len: int, prefix_cache
    ) -> list[float]:
        """Summed log-probability of the last ``spans[r]`` tokens of each row, in one forward pass."""
        import torch

        input_ids, attention = self._pack(rows, prefix_len)
        device = self.model.device
        input_ids, attention = input_ids.to(device), attention.to(device)
        position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = None
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(rows))
        # Rows are left-padded, so every option ends at the last position; the logits of the
        # last (longest option + 1) positions predict every option token of every row.
        keep = max(spans) + 1
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids[:, prefix_len:],
                attention_mask=attention,
                position_ids=position_ids[:, prefix_len:],
                **{cache_kwarg(self.model): cache},
                use_cache=cache is not None,
                logits_to_keep=keep,
            )
            logprobs = torch.log_softmax(out.logits[:, -keep:, :].float(), dim=-1)
        sums = []
        for r, (row, span) in enumerate(zip(rows, spans, strict=True)):
            # Token j of the option (at row position len - span + j) is predicted one position earlier.
            positions = torch.arange(keep - span - 1, keep - 1, device=logprobs.device)
            targets = torch.tensor(row[len(row) - span :], device=logprobs.device)
            sums.append(float(logprobs[r, positions, targets].sum()))
        return sums

    def _finish(self, tokens: list[int], decoding: DecodingConfig) -> str:
        """``truncated`` when a row ran into ``max_new_tokens`` before it ended, else ``stop``."""
        if len(tokens) < decoding.max_new_tokens:
            return "stop"  # it ended at an end-of-turn token or a complete conclusion line
        if decoding.stop_after_conclusion and self._conclusion_done(tokens):
            return "stop"
        return "truncated"

    def _decode(
        self,
        input_ids,
        attention,
        cache,
        cached_len: int,
        decoding: DecodingConfig,
        seeds: list[int],
        masker: GrammarMasker | None = None,
    ) -> list[list[int]]:
        """Greedy or sampled decoding that drops each row from the batch as soon as it is finished.

        A row is finished at an end-of-turn token, after a complete conclusion line (when
        ``stop_after_conclusion``) or at ``max_new_tokens``. ``model.generate`` keeps finished
        rows in the batch until the longest one ends; with short, uneven answers most of its
        decode steps would be spent on rows that are already done.

        When sampling, every row draws from its own generator seeded from (seed, prompt), so a
        prompt's sample does not depend on which other prompts share its batch (a resumed run
        gives the texts an uninterrupted one would).

        With ``masker`` each live row's logits are masked to the tokens its grammar allows after
        the tokens that row has generated; the mask depends on nothing else, so dropping rows
        and per-row sampling work as without it.
        """
        import torch
        from transformers import DynamicCache, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        device = self.model.device
        input_ids, attention = input_ids.to(device), attention.to(device)
        position_ids = (attention.cumsum(-1) - 1).clamp(min=0)
        past = cache if cache is not None else DynamicCache(config=self.model.config)
        warpers = LogitsProcessorList()
        generators = None
        if not decoding.greedy:
            warpers.append(TemperatureLogitsWarper(decoding.temperature))
            if decoding.top_p < 1.0:
                warpers.append(TopPLogitsWarper(decoding.top_p))
            generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        eos = set(self._eos_ids())
        alive = list(range(input_ids.shape[0]))
        generated: list[list[int]] = [[] for _ in alive]
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids[:, cached_len:],
                attention_mask=attention,
                position_ids=position_ids[:, cached_len:],
                **{cache_kwarg(self.model): past},
                use_cache=True,
                logits_to_keep=1,
            )
            positions = position_ids[:, -1]
            for _ in range(decoding.max_new_tokens):
                scores = out.logits[:, -1, :].float()
                if masker is not None:
                    scores = masker.mask(scores, [generated[row] for row in alive])
                if generators is None:
                    next_tokens = scores.argmax(dim=-1)
                else:
                    probs = torch.softmax(warpers(None, scores), dim=-1)
                    next_tokens = torch.cat(
                        [
                            torch.multinomial(probs[j], 1, generator=generators[row])
                            for j, row in enumerate(alive)
                        ]
                    )
                keep = []
                for j, (row, token) in enumerate(zip(alive, next_tokens.tolist(), strict=True)):
                    if token in eos:
                        continue
                    generated[row].append(token)
                    if len(generated[row]) >= decoding.max_new_tokens:
                        continue
                    if decoding.stop_after_conclusion and self._conclusion_done(generated[row]):
                        continue
                    keep.append(j)
                if not keep:
                    break
                if len(keep) < len(alive):
                    index = torch.tensor(keep, device=device)
                    past.batch_select_indices(index)
                    next_tokens, attention, positions = next_tokens[index], attention[index], positions[index]
                    alive = [alive[j] for j in keep]
                attention = torch.cat([attention, attention.new_ones((len(alive), 1))], dim=1)
                positions = positions + 1
                out = self.model(
                    input_ids=next_tokens[:, None],
                    attention_mask=attention,
                    position_ids=positions[:, None],
                    **{cache_kwarg(self.model): past},
                    use_cache=True,
                )
        return generated

    def _use_own_loop(self, decoding: DecodingConfig) -> bool:
        """Whether dartkit's decode loop runs this call (see ``BackendConfig.decode_loop``).

        Measured: on 2 CPU cores the own loop is 3.7-4.3x faster than one-at-a-time generation
        (benchmarks/generation.py); on an H100 with a 3.9B llama, warm, it ran 1.02x transformers'
        batched generate and 1.14x the ``generate`` mode below (benchmarks/gpu.py), so 'auto' uses it
        wherever the model's cache allows.
        """
        return self.cfg.decode_loop != "generate"

    def _generate_fallback(
        self,
        rows: list[list[int]],
        decoding: DecodingConfig,
        seed: int,
        masker: GrammarMasker | None = None,
    ) -> list[list[int]]:
        """``model.generate`` with left padding, for models whose cache the own loop cannot handle.

        Sliding-window, hybrid and recurrent caches cannot take padding between a shared
        prefix and the rest, nor drop rows mid-batch; these models get plain batched generation.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        backend = self
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for r, row in enumerate(rows):
            input_ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention[r, width - len(row) :] = 1

        class _StopAfterConclusion(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):
                done = [
                    backend._conclusion_done(row[width:].tolist()) if row.shape[0] > width else False
                    for row in ids
                ]
                return torch.tensor(done, dtype=torch.bool, device=ids.device)

        kwargs: dict[str, Any] = {
            "max_new_tokens": decoding.max_new_tokens,
            "pad_token_id": pad_id,
            "eos_token_id": self._eos_ids(),
        }
        if decoding.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=None)
        if decoding.stop_after_conclusion:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_StopAfterConclusion()])
        if masker is not None:
            # Each row's mask from its generated tokens (after the left-padded prompt width).
            kwargs["prefix_allowed_tokens_fn"] = masker.prefix_allowed_tokens_fn(width)
        device = self.model.device
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs
            )
        eos = set(self._eos_ids()) | {pad_id}
        result = []
        for row in out[:, width:].tolist():
            tokens = []
            for t in row:
                if t in eos:
                    break
                tokens.append(t)
            result.append(tokens)
        return result

    def _conclusion_done(self, tokens: list[int]) -> bool:
        """True once the newest token ends a line that is a complete conclusion line."""
        if "\n" not in self.tokenizer.decode(tokens[-1:], skip_special_tokens=True):
            return False
        tail = self.tokenizer.decode(tokens[-_TAIL_TOKENS:], skip_special_tokens=True)
        lines = [line for line in tail[: tail.rfind("\n")].split("\n") if line.strip()]
        return bool(lines) and parse_conclusion(lines[-1]) is not None

    def _shared_prefix(self, encoded: list[list[int]]):
        """KV cache of the token prefix every prompt shares (system prompt, instructions, few-shot turns).

        Computed once per call instead of once per prompt: with dartkit's prompts the shared part is
        most of each prompt, so this removes most of the prefill work.
        """
        import torch

        if len(encoded) < 2 or self.cfg.prefix_cache_min_tokens <= 0:
            return 0, None
        first = encoded[0]
        n = min(len(e) for e in encoded) - 1  # every row keeps at least one token of its own
        for e in encoded[1:]:
            k = 0
            while k < n and e[k] == first[k]:
                k += 1
            n = k
        if n < self.cfg.prefix_cache_min_tokens:
            return 0, None
        with torch.inference_mode():
            # Only the cache is used: one position's logits instead of n x vocabulary floats.
            out = self.model(
                input_ids=torch.tensor([first[:n]], device=self.model.device),
                use_cache=True,
                logits_to_keep=1,
            )
        return n, output_cache(out)

    def _pack(self, rows: list[list[int]], prefix_len: int):
        """Batch tensors: shared prefix, then left padding, then each row's own tokens.

        Padding sits between the prefix and the rest; the attention mask hides it and position ids
        follow the mask, so every row sees exactly its own prompt.
        """
        import torch

        pad_id = self.tokenizer.pad_token_id
        tails = [r[prefix_len:] for r in rows]
        width = max(len(t) for t in tails)
        input_ids = torch.full((len(rows), prefix_len + width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for r, (row, tail) in enumerate(zip(rows, tails, strict=True)):
            input_ids[r, :prefix_len] = torch.tensor(row[:prefix_len], dtype=torch.long)
            attention[r, :prefix_len] = 1
            input_ids[r, prefix_len + width - len(tail) :] = torch.tensor(tail, dtype=torch.long)
            attention[r, prefix_len + width - len(tail) :] = 1
        return input_ids, attention

    def _eos_ids(self) -> list[int]:
        return end_of_turn_ids(self.tokenizer.eos_token_id, self.model.generation_config.eos_token_id)

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
