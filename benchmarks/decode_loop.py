"""dartkit's own decode loop against transformers' batched ``generate`` on the same prompts.

    .venv/bin/python benchmarks/decode_loop.py [--workload classify|teacher] [--n 32] [--repeats 2]

Both run through dartkit's hf backend on the embedded model, with the same length-sorted,
token-bounded batches: ``decode_loop: dartkit`` (shared-prefix KV cache, finished rows dropped,
per-prompt seeded sampling) and ``decode_loop: generate`` (left-padded batches through
``model.generate`` with a stopping criterion for the conclusion line). Workloads: ``classify`` is
the student's test-time prompt (a short system prompt, answers stop after the conclusion line);
``teacher`` is Stage I's distillation prompt (a long few-shot prefix shared by every prompt).
The two modes alternate ``--repeats`` times and the best time of each counts (warm caches, least
noise). Prints one JSON line: tokens/s of each, the ratio, how many texts agree, the versions.
Run it alone: another torch job on the same cores makes every number meaningless.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=("classify", "teacher"), default="classify")
    ap.add_argument("--n", type=int, default=32, help="number of prompts")
    ap.add_argument("--max-new-tokens", type=int, default=96, help="the embedded config's setting")
    ap.add_argument("--batch-size", type=int, default=16, help="the embedded config's setting")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import transformers

    from dartkit.config import BackendConfig, DecodingConfig
    from dartkit.data.demo import load_demo_suite
    from dartkit.data.splits import stratified_order
    from dartkit.generate import load_backend
    from dartkit.prompts import classification_messages, teacher_messages

    examples = stratified_order(load_demo_suite())[: args.n]
    build = classification_messages if args.workload == "classify" else teacher_messages
    convs = [build(e) for e in examples]
    decoding = DecodingConfig(max_new_tokens=args.max_new_tokens)
    backends = {
        mode: load_backend("embedded", BackendConfig(batch_size=args.batch_size, decode_loop=mode))
        for mode in ("dartkit", "generate")
    }
    for b in backends.values():
        b._ensure_loaded()
    tok = backends["dartkit"].tokenizer

    def run(mode: str) -> tuple[float, list[str], int]:
        texts: list[str] = [""] * len(convs)
        t = time.perf_counter()
        for i, completion in backends[mode].generate(convs, decoding):
            texts[i] = str(completion)
        seconds = time.perf_counter() - t
        tokens = sum(len(tok(x, add_special_tokens=False)["input_ids"]) for x in texts)
        return seconds, texts, tokens

    best: dict[str, tuple[float, list[str], int]] = {}
    for _ in range(args.repeats):
        for mode in backends:
            result = run(mode)
            if mode not in best or result[0] < best[mode][0]:
                best[mode] = result
    own_s, own_texts, own_tokens = best["dartkit"]
    gen_s, gen_texts, gen_tokens = best["generate"]
    prompt_tokens = [len(backends["dartkit"].encode(c)) for c in convs]
    print(
        json.dumps(
            {
                "benchmark": "decode_loop",
                "workload": args.workload,
                "model": "embedded",
                "n_prompts": len(convs),
                "mean_prompt_tokens": round(sum(prompt_tokens) / len(prompt_tokens), 1),
                "max_new_tokens": args.max_new_tokens,
                "batch_size": args.batch_size,
                "repeats": args.repeats,
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "dartkit_loop_s": round(own_s, 2),
                "generate_s": round(gen_s, 2),
                "dartkit_loop_tokens_per_s": round(own_tokens / own_s, 1),
                "generate_tokens_per_s": round(gen_tokens / gen_s, 1),
                "loop_over_generate": round((own_tokens / own_s) / (gen_tokens / gen_s), 2),
                "wall_ratio_generate_over_loop": round(gen_s / own_s, 2),
                "same_texts": sum(a == b for a, b in zip(own_texts, gen_texts, strict=True)),
            }
        )
    )


if __name__ == "__main__":
    main()
