"""LoRA training throughput on the GPU: tokens/s and MFU for Qwen2.5-0.5B and a 7B-class model (Qwen2.5-7B's shape).

Both are built from their config with random weights in bf16 (nothing is downloaded); the tokens are the
examples of a dataset the pipeline built (`python pipeline.py run` on the sample), tokenized with the local
o200k_base encoding and folded into the model's vocabulary (content does not change the speed), packed into
full sequences. A fixed number of optimizer steps is timed after warm-up steps. MFU = 6 · N · tokens/s / peak
dense bf16 FLOPS of the detected GPU (N: the base model's parameters; the 6·N convention of the LLaMA-Factory
and Unsloth figures, which counts the frozen weights' gradient work LoRA skips). It prints the MFU against the
issue's anchors in the same run: HF + FlashAttention-2 ≈ 25 %, Unsloth ≈ 34 % (7B LoRA on an A100), the goal
≥ 30 % on an H200.

    python bench/gpu_train.py [--dataset data/output/datasets/<name>/latest/train.jsonl] [--models 0.5b,7b]
                              [--steps 20] [--warmup 3] [--seq 2048] [--batch N] [--peak-tflops N]
    python bench/gpu_train.py --tiny    # a 2-layer model on the CPU: checks the code path, measures nothing

Without CUDA (and without --tiny) it prints why it skipped and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ANCHORS = {"HF+FlashAttention-2 (A100, LLaMA-Factory)": 0.25, "Unsloth (A100, LLaMA-Factory)": 0.34,
           "goal on an H200": 0.30}
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                    "A800": 312.0, "L40S": 362.0, "L40": 181.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0,
                    "RTX 3090": 71.0}  # dense, no sparsity (vendors' datasheets)

QWEN_COMMON = {"model_type": "qwen2", "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
               "max_position_embeddings": 32768, "use_sliding_window": False, "attention_dropout": 0.0}
CONFIGS = {
    "0.5b": {**QWEN_COMMON, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
    "7b": {**QWEN_COMMON, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
           "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False},
    "tiny": {**QWEN_COMMON, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024, "tie_word_embeddings": True},
}


DEFAULT_BATCH = {"0.5b": 8, "7b": 4}  # the 7B's activations at 4 × 2048 tokens without checkpointing fit 141 GiB


def default_dataset() -> Path | None:
    found = sorted((REPO / "data" / "output" / "datasets").glob("*/latest/train.jsonl"))
    return found[0] if found else None


def token_stream(path: Path, vocab: int) -> list[int]:
    """Every message's text of every example, as o200k_base ids folded into [0, vocab)."""
    from transforms.tokens import TokenCounter

    encoding = TokenCounter("o200k_base").encoding
    ids: list[int] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            example = json.loads(line)
            messages = example.get("messages") or example.get("input", {}).get("messages", [])
            text = "\n".join(str(m.get("content") or "") for m in messages)
            ids.extend(t % vocab for t in encoding.encode(text, disallowed_special=()))
    return ids


def batches(ids: list[int], batch: int, seq: int, steps: int):
    """`steps` batches of packed sequences, cycling through the stream as often as needed."""
    import torch

    need = batch * seq
    stream = (ids * (need * steps // max(len(ids), 1) + 2))[: need * steps]
    data = torch.tensor(stream, dtype=torch.long).view(steps, batch, seq)
    return list(data)


def peak_flops(name: str, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, f"{override:g} TFLOPS (given)"
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12, f"{tflops:g} TFLOPS dense bf16 ({key})"
    return None, "unknown GPU: pass --peak-tflops for MFU"


def run_one(name: str, ids: list[int], args: argparse.Namespace, device: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(CONFIGS[name])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    attention = "sdpa"
    if device == "cuda":
        try:
            import flash_attn  # noqa: F401

            attention = "flash_attention_2"
        except ImportError:
            pass
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    n_params = sum(p.numel() for p in model.parameters())
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, fused=device == "cuda")
    seq, batch = (64, 2) if name == "tiny" else (args.seq, args.batch or DEFAULT_BATCH[name])
    data = batches(ids, batch, seq, args.warmup + args.steps)

    def step(x):
        x = x.to(device, non_blocking=True)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for x in data[: args.warmup]:
        step(x)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for x in data[args.warmup:]:
        loss = step(x)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = args.steps * batch * seq
    result = {"model": name, "params": n_params, "trainable": trainable, "attention": attention, "seq": seq,
              "batch": batch, "steps": args.steps, "seconds": seconds, "tokens_per_s": tokens / seconds,
              "loss": loss.item(), "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None, help="train.jsonl of a built dataset version")
    parser.add_argument("--models", default="0.5b,7b", help="comma-separated: 0.5b, 7b")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=None, help="sequences per step; default 8 (0.5b), 4 (7b)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, when unknown")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model on the CPU: the code path only")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("skipped: torch is not installed (pip install -e '.[local]')")
        return 0
    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("skipped: no CUDA GPU on this machine; this bench measures GPU training (run it where one is, or "
              "pass --tiny for a CPU check of the code path)")
        return 0
    dataset = args.dataset or default_dataset()
    if dataset is None or not dataset.is_file():
        print("no dataset: build one with `python pipeline.py run` (the sample) or pass --dataset PATH/train.jsonl")
        return 1
    device = "cuda" if cuda and not args.tiny else "cpu"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak, peak_note = peak_flops(gpu, args.peak_tflops) if device == "cuda" else (None, "cpu: no MFU")
    names = ["tiny"] if args.tiny else [m.strip() for m in args.models.split(",") if m.strip()]
    print(f"device: {gpu} · peak {peak_note} · dataset {dataset} · torch {torch.__version__}")
    for name in names:
        ids = token_stream(dataset, CONFIGS[name]["vocab_size"])
        r = run_one(name, ids, args, device)
        line = (f"{name}: {r['params'] / 1e6:,.1f}M params ({r['trainable'] / 1e6:.2f}M LoRA), {r['attention']}, "
                f"batch {r['batch']} × seq {r['seq']}, {r['steps']} steps in {r['seconds']:.1f}s: "
                f"{r['tokens_per_s']:,.0f} tokens/s, loss {r['loss']:.3f}")
        if r["peak_gib"] is not None:
            line += f", peak memory {r['peak_gib']:.1f} GiB"
        print(line)
        if peak:
            mfu = 6 * r["params"] * r["tokens_per_s"] / peak
            print(f"  MFU {mfu:.1%} · " + " · ".join(f"{mfu / share:.2f}× {label} ({share:.0%})"
                                                       for label, share in ANCHORS.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
