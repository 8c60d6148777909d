"""Generation throughput: naive one-at-a-time ``model.generate`` vs the dartkit hf backend.

    .venv/bin/python benchmarks/generation.py [--n 32] [--max-new-tokens 64] [--batch-size 32]

Both answer the same classification prompts from the built-in demo suite with
greedy decoding and the same ``max_new_tokens``. Prints one JSON line: tokens/s
of each, their ratio, and how long a second dartkit run takes when served from
the generation cache (as a fraction of the first).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="number of prompts (>= 32 for the issue's target)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    from dartkit.config import BackendConfig, DecodingConfig
    from dartkit.data.demo import load_demo_suite
    from dartkit.data.splits import stratified_order
    from dartkit.generate import load_backend
    from dartkit.generate.cache import GenerationCache, generate_cached
    from dartkit.prompts import classification_messages

    examples = stratified_order(load_demo_suite())[: args.n]
    convs = [classification_messages(e) for e in examples]
    # Same budget for both; the conclusion stop is dartkit's, so it stays on for (b) and the
    # token counts below are of what each side actually generated.
    decoding = DecodingConfig(max_new_tokens=args.max_new_tokens)
    backend = load_backend("embedded", BackendConfig(batch_size=args.batch_size))
    backend._ensure_loaded()
    model, tok = backend.model, backend.tokenizer

    def n_tokens(texts):
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

    # (a) naive: one prompt at a time, no padding, no batching
    t = time.perf_counter()
    naive_texts = []
    with torch.inference_mode():
        for m in convs:
            ids = torch.tensor([backend.encode(m)])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
            )
            naive_texts.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    naive_s = time.perf_counter() - t

    # (b) dartkit: batched, length-sorted, through the cache
    with tempfile.TemporaryDirectory() as d:
        cache_path = Path(d) / "cache.jsonl"
        t = time.perf_counter()
        texts, _ = generate_cached(backend, convs, decoding, GenerationCache(cache_path))
        batched_s = time.perf_counter() - t
        t = time.perf_counter()
        generate_cached(backend, convs, decoding, GenerationCache(cache_path))
        cached_s = time.perf_counter() - t

    naive_tps = n_tokens(naive_texts) / naive_s
    batched_tps = n_tokens(texts) / batched_s
    print(
        json.dumps(
            {
                "benchmark": "generation",
                "model": "embedded",
                "n_prompts": len(convs),
                "max_new_tokens": args.max_new_tokens,
                "batch_size": args.batch_size,
                "torch_threads": torch.get_num_threads(),
                "naive_tokens_per_s": round(naive_tps, 1),
                "dartkit_tokens_per_s": round(batched_tps, 1),
                "speedup": round(batched_tps / naive_tps, 2),
                "naive_s": round(naive_s, 2),
                "dartkit_s": round(batched_s, 2),
                "cached_rerun_s": round(cached_s, 3),
                "cached_rerun_fraction": round(cached_s / batched_s, 4),
                "same_texts": sum(a == b for a, b in zip(naive_texts, texts, strict=True)),
            }
        )
    )


if __name__ == "__main__":
    main()
