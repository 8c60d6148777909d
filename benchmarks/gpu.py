"""CUDA paths and GPU throughput on a randomly initialised llama built from a config (no download needed).

    python benchmarks/gpu.py --tokenizer DIR [--hidden 2048 --layers 16] [--n 64 --max-new-tokens 64]

Runs, on one GPU in bfloat16:
  1. generation: dartkit's hf backend (shared-prefix KV cache, length-sorted batches, finished rows
     dropped) vs transformers' batched ``model.generate`` with left padding, same prompts and budget;
  2. LoRA training with dartkit's trainer (bf16 base, gradient checkpointing on and off);
  3. an ``hf:`` harm scorer (a tiny random RoBERTa classifier) on the GPU.
The random model never writes a conclusion line, so every answer runs to ``max_new_tokens``.
Prints one JSON line (and writes it to --out when given).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def build_model(tok_dir: Path, out: Path, hidden: int, layers: int, device: str) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=int(hidden * 3.5) // 256 * 256,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=min(8, hidden // 128),
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    return out, n


def generation(model_dir: Path, n: int, max_new: int, batch: int, device: str) -> dict:
    from dartkit.config import BackendConfig, DecodingConfig
    from dartkit.data.demo import load_demo_suite
    from dartkit.data.splits import stratified_order
    from dartkit.generate import load_backend
    from dartkit.prompts import classification_messages

    examples = stratified_order(load_demo_suite())
    convs = [classification_messages(examples[i % len(examples)]) for i in range(n)]
    decoding = DecodingConfig(max_new_tokens=max_new)
    backend = load_backend(
        f"hf:{model_dir}",
        BackendConfig(device=device, dtype="bfloat16", batch_size=batch, decode_loop="dartkit"),
    )
    backend._ensure_loaded()
    model, tok = backend.model, backend.tokenizer
    dict(backend.generate(convs[:4], decoding))  # warm-up (kernels, allocator)
    timings = {}
    # GPU timings depend on order (allocator growth, kernel selection): alternate and keep the last of each.
    for mode in ("dartkit", "generate", "dartkit", "generate"):
        backend.cfg = backend.cfg.model_copy(update={"decode_loop": mode})
        _sync()
        t = time.perf_counter()
        got = dict(backend.generate(convs, decoding))
        _sync()
        timings[mode] = (time.perf_counter() - t, [got[i] for i in range(n)])
    ours_s, texts = timings["dartkit"]
    gen_s, gen_texts = timings["generate"]

    tok.padding_side = "left"
    enc = [backend.encode(m) for m in convs]
    t = time.perf_counter()
    hf_texts = []
    with torch.inference_mode():
        for s in range(0, n, batch):
            rows = enc[s : s + batch]
            width = max(map(len, rows))
            ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows], device=device)
            mask = (
                torch.arange(width, device=device)[None, :]
                >= torch.tensor([width - len(r) for r in rows], device=device)[:, None]
            ).long()
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
            )
            hf_texts += [tok.decode(o[width:], skip_special_tokens=True).strip() for o in out]
    _sync()
    hf_s = time.perf_counter() - t

    def count(ts):
        return sum(len(tok(x, add_special_tokens=False)["input_ids"]) for x in ts)

    ours_tps, hf_tps = count(texts) / ours_s, count(hf_texts) / hf_s
    backend.close()
    return {
        "dartkit_generate_mode_tokens_per_s": round(count(gen_texts) / gen_s, 1),
        "generate_mode_vs_own_loop": round((count(gen_texts) / gen_s) / ours_tps, 2),
        "n_prompts": n,
        "max_new_tokens": max_new,
        "batch_size": batch,
        "dartkit_tokens_per_s": round(ours_tps, 1),
        "hf_batched_generate_tokens_per_s": round(hf_tps, 1),
        "speedup_vs_hf_batched": round(ours_tps / hf_tps, 2),
        "same_texts": sum(a == b for a, b in zip(texts, hf_texts, strict=True)),
        "peak_gib": _peak(),
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def training(model_dir: Path, steps: int, batch: int, checkpointing: bool, work: Path) -> dict:
    from dartkit.data.demo import load_demo_suite
    from dartkit.data.jsonl import write_jsonl
    from dartkit.prompts import classification_messages
    from dartkit.train import TrainConfig, run

    rows = [
        {
            "id": e.id,
            "messages": classification_messages(e),
            "target": f"Group membership matters here or it does not; this is a rationale of middling length.\nConclusion: {e.label}",
        }
        for e in load_demo_suite()
    ]
    work.mkdir(parents=True, exist_ok=True)
    data = work / "records.jsonl"
    write_jsonl(data, rows)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cfg = TrainConfig(
        base=f"hf:{model_dir}",
        data=[data],
        out=work / f"train-{checkpointing}",
        max_steps=steps,
        per_device_batch_size=batch,
        grad_accum=1,
        dtype="bfloat16",
        gradient_checkpointing=checkpointing,
        save_every=10_000,
    )
    m = run(cfg)
    return {
        "gradient_checkpointing": checkpointing,
        "steps": m.get("steps"),
        "tokens_per_s": round(m.get("tokens_per_s") or 0, 1),
        "seconds": round(m.get("seconds") or 0, 1),
        "first_loss": m.get("first_loss"),
        "final_loss": m.get("final_loss"),
        "peak_gib": _peak(),
    }


def scorer(work: Path, tok_dir: Path, device: str) -> dict:
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    from dartkit.harm import load_scorer

    d = work / "clf"
    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=514,
        num_labels=2,
        id2label={0: "neutral", 1: "toxic"},
        label2id={"neutral": 0, "toxic": 1},
        pad_token_id=tok.pad_token_id,
    )
    RobertaForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    s = load_scorer(f"hf:{d}#toxic", device=device)
    scores = s.score(["a harmless sentence", "another one, somewhat longer than the first"] * 50)
    return {
        "n": len(scores),
        "device": str(next(s._model.parameters()).device),
        "in_range": all(0 <= x <= 1 for x in scores),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tokenizer", type=Path, required=True, help="a chat tokenizer directory (e.g. the embedded model's)"
    )
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=12)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--device", default="cuda", help="cuda (the point of this script) or cpu for a smoke test"
    )
    args = ap.parse_args()
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    result: dict = {"benchmark": "gpu", "device": device_name, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        t = time.perf_counter()
        model_dir, n_params = build_model(
            args.tokenizer, work / "model", args.hidden, args.layers, args.device
        )
        result.update(params_m=round(n_params / 1e6), build_s=round(time.perf_counter() - t, 1))
        for name, fn in (
            (
                "generation",
                lambda: generation(model_dir, args.n, args.max_new_tokens, args.batch_size, args.device),
            ),
            ("training_warmup", lambda: training(model_dir, 3, args.train_batch, False, work / "w")),
            (
                "training_no_ckpt_1",
                lambda: training(model_dir, args.train_steps, args.train_batch, False, work / "a"),
            ),
            (
                "training_ckpt_1",
                lambda: training(model_dir, args.train_steps, args.train_batch, True, work / "b"),
            ),
            (
                "training_no_ckpt",
                lambda: training(model_dir, args.train_steps, args.train_batch, False, work / "c"),
            ),
            (
                "training_ckpt",
                lambda: training(model_dir, args.train_steps, args.train_batch, True, work / "d"),
            ),
            ("hf_scorer", lambda: scorer(work, args.tokenizer, args.device)),
        ):
            try:
                result[name] = fn()
            except Exception as e:  # keep going: one broken path must not hide the others
                result[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            if args.out:
                args.out.write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
