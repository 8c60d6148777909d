"""Generation tokens/s on one GPU: vLLM (through dartkit's vllm: backend), transformers' batched
``generate`` and dartkit's own decode loop, on the same prompts with a randomly initialised llama
built from a config (nothing is downloaded).

    python benchmarks/vllm_throughput.py --tokenizer DIR [--hidden 2048 --layers 16] \\
        [--n 256 --max-new-tokens 128 --batch-size 32] [--out benchmarks/results-vllm-throughput.json]

Needs a CUDA GPU and vLLM (``pip install 'dartkit[vllm]'``); without either it stops at once with a
message. ``--tokenizer`` is a chat tokenizer directory (the embedded model's is fine:
``python -c "from dartkit.generate.embedded import embedded_model_dir; print(embedded_model_dir())"``).

Runs, in bfloat16, on the demo suite's classification prompts (repeated to ``--n``):
  1. dartkit's hf backend with its own loop (shared-prefix KV cache, finished rows dropped);
  2. transformers' ``model.generate``: prompts sorted by length, left-padded, in batches of
     ``--batch-size``;
  3. dartkit's ``vllm:`` backend (one engine, all prompts in one call), then the same with a random
     LoRA adapter passed per request (the path M_int and M_DART take).
The random model never writes a conclusion line, so answers run to ``--max-new-tokens`` (or a
random end-of-turn token). Tokens are counted by re-tokenising each text, the same way for all
three. Each timing is taken after a warm-up call. Prints one JSON line (and appends it to --out).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import sys
import tempfile
import time
from pathlib import Path


def _require_gpu_and_vllm() -> None:
    """Stop with one clear line when the script cannot measure what it is for."""
    try:
        import torch
    except ImportError:
        sys.exit("vllm_throughput: torch is not installed")
    if not torch.cuda.is_available():
        sys.exit(
            "vllm_throughput: needs a CUDA GPU (torch.cuda.is_available() is False); nothing was measured"
        )
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        sys.exit(f"vllm_throughput: needs vLLM: pip install 'dartkit[vllm]' ({e}); nothing was measured")


def _sync() -> None:
    import torch

    torch.cuda.synchronize()


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()


def _random_adapter(model_dir: Path, out: Path, rank: int) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so it changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    peft = get_peft_model(
        model,
        LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft.save_pretrained(out)
    del peft, model
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True, help="a chat tokenizer directory")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--n", type=int, default=256, help="number of prompts")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32, help="batch of dartkit's loop and of generate")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    _require_gpu_and_vllm()

    import torch
    import transformers
    import vllm

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu import build_model  # the same random llama as benchmarks/gpu.py

    from dartkit.config import BackendConfig, DecodingConfig, VLLMConfig
    from dartkit.data.demo import load_demo_suite
    from dartkit.data.splits import stratified_order
    from dartkit.generate import load_backend
    from dartkit.prompts import classification_messages

    examples = stratified_order(load_demo_suite())
    convs = [classification_messages(examples[i % len(examples)]) for i in range(args.n)]
    decoding = DecodingConfig(max_new_tokens=args.max_new_tokens)
    result: dict = {
        "benchmark": "vllm_throughput",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "vllm": vllm.__version__,
        "n_prompts": args.n,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "measured": datetime.date.today().isoformat(),
    }

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        model_dir, n_params = build_model(args.tokenizer, work / "model", args.hidden, args.layers, "cuda")
        result["params_m"] = round(n_params / 1e6)
        hf = load_backend(
            f"hf:{model_dir}",
            BackendConfig(device="cuda", dtype="bfloat16", batch_size=args.batch_size, decode_loop="dartkit"),
        )
        hf._ensure_loaded()
        tok = hf.tokenizer
        encoded = [hf.encode(m) for m in convs]
        result["mean_prompt_tokens"] = round(sum(map(len, encoded)) / len(encoded), 1)

        def count(texts: list[str]) -> int:
            return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)

        def timed(name: str, fn) -> None:
            try:
                fn(8)  # warm-up: kernels, allocator, CUDA graphs
                _sync()
                t = time.perf_counter()
                texts = fn(args.n)
                _sync()
                seconds = time.perf_counter() - t
                result[f"{name}_s"] = round(seconds, 2)
                result[f"{name}_tokens_per_s"] = round(count(texts) / seconds, 1)
            except Exception as e:  # one broken path must not hide the others
                result[f"{name}_error"] = f"{type(e).__name__}: {e}"[:500]

        def dartkit_loop(n: int) -> list[str]:
            got = dict(hf.generate(convs[:n], decoding))
            return [str(got[i]) for i in range(n)]

        def hf_generate(n: int) -> list[str]:
            model, pad = hf.model, tok.pad_token_id
            order = sorted(range(n), key=lambda i: -len(encoded[i]))
            texts = [""] * n
            with torch.inference_mode():
                for s in range(0, n, args.batch_size):
                    idx = order[s : s + args.batch_size]
                    width = max(len(encoded[i]) for i in idx)
                    ids = torch.tensor(
                        [[pad] * (width - len(encoded[i])) + encoded[i] for i in idx], device="cuda"
                    )
                    mask = (ids != pad).long()
                    for r, i in enumerate(idx):  # a pad id inside a prompt is a real token
                        mask[r, width - len(encoded[i]) :] = 1
                    out = model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        max_new_tokens=args.max_new_tokens,
                        do_sample=False,
                        temperature=None,
                        top_p=None,
                        top_k=None,
                        pad_token_id=pad,
                    )
                    for r, i in enumerate(idx):
                        texts[i] = tok.decode(out[r, width:], skip_special_tokens=True).strip()
            return texts

        timed("dartkit_loop", dartkit_loop)
        timed("hf_generate", hf_generate)
        hf.close()  # drops the transformers model: vLLM gets the memory
        _free()

        try:
            adapter = _random_adapter(model_dir, work / "adapter", args.lora_rank)
        except Exception as e:
            adapter = None
            result["adapter_error"] = f"{type(e).__name__}: {e}"[:500]
        _free()
        engine = BackendConfig(
            vllm=VLLMConfig(
                dtype="bfloat16",
                gpu_memory_utilization=args.gpu_memory_utilization,
                max_lora_rank=max(16, args.lora_rank),
            )
        )
        for name, spec in (
            ("vllm", f"vllm:{model_dir}"),
            ("vllm_lora", f"vllm:{model_dir}+adapter={adapter}" if adapter else None),
        ):
            if spec is None:
                continue
            try:
                backend = load_backend(spec, engine)
            except Exception as e:
                result[f"{name}_error"] = f"{type(e).__name__}: {e}"[:500]
                continue

            def run_vllm(n: int, backend=backend) -> list[str]:
                got = dict(backend.generate(convs[:n], decoding))
                return [str(got[i]) for i in range(n)]

            timed(name, run_vllm)
        from dartkit.generate.vllm_backend import release_engines

        result["vllm_engines_built"] = release_engines()  # 1: the adapter ran on the base's engine

    base = result.get("hf_generate_tokens_per_s")
    for name in ("dartkit_loop", "vllm", "vllm_lora"):
        tps = result.get(f"{name}_tokens_per_s")
        if base and tps:
            result[f"{name}_over_hf_generate"] = round(tps / base, 2)
    line = json.dumps(result)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:  # one line per run: earlier results are kept
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
