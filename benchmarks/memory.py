"""Peak memory of one training step with a large vocabulary: cptkit's loss against the plain HF loss.

The model is a randomly initialised Llama with a 128,256-token vocabulary (Llama 3's), so the
output layer dominates: one step's logits alone are tokens x 128,256 numbers. Sides, each in a
fresh process, on the same weights and tokens:

- hf:          `model(input_ids, labels=...)` and backward, the plain Hugging Face way (full
               logits, then cross-entropy on them in float32).
- cptkit:      `CausalLMLoss` with the fused chunked output layer + cross-entropy
               (train.loss_chunk_tokens, default 1024), as `cptkit train` runs it.
- cptkit+gc:   the same with train.gradient_checkpointing.

The figure is the step's peak memory above what was held before it (weights and inputs): on a
GPU from torch.cuda.max_memory_allocated, on CPU from the process's peak resident set size
(ru_maxrss) against its resident size just before the step. A small step runs first
(its gradients dropped), so that code loaded on first use is not counted. The losses are printed to show the
sides compute the same thing.

    python benchmarks/memory.py                              # CPU, float32, 1 x 2048 tokens
    python benchmarks/memory.py --device cuda --dtype bfloat16 --batch 4 --seq 4096 --hidden 1024

`--methods`: LoRA against full training on the same model instead: peak memory of whole training steps (weights as stored, gradients, AdamW states, activations) and
their time, for full training, LoRA with the embeddings and output layer trained in full, and LoRA
with the adapters alone.

    python benchmarks/memory.py --methods                    # CPU, float32, vocab 8192, hidden 1024, 8 layers
    python benchmarks/memory.py --methods --dtype bfloat16   # frozen weights then held in bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIDES = ("hf", "cptkit", "cptkit+gc")
METHODS = ("full", "lora", "lora-adapters")


def build_model(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4 // 64 * 64,
        num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 64,
        max_position_embeddings=args.seq, tie_word_embeddings=False, use_cache=False,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def resident_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(args) -> dict:
    """One side, in this process: the first training step's peak memory above the start."""
    import torch

    from cptkit.modeling import prepare_for_training
    from cptkit.train.losses import CausalLMLoss

    device = torch.device(args.device)
    model = build_model(args).to(device).train()
    if args.side == "cptkit+gc":
        prepare_for_training(model, gradient_checkpointing=True, compile=False)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(device)
    targets = torch.roll(ids, -1, 1)  # the last position predicts nothing (set per step), as in HF's shift
    positions = torch.arange(args.seq, device=device).repeat(args.batch, 1)
    loss_module = CausalLMLoss(model, args.chunk)

    def step(n: int) -> float:
        """Forward and backward on the first n positions of the batch."""
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            if args.side == "hf":
                loss = model(input_ids=ids[:, :n], labels=ids[:, :n], use_cache=False).loss
            else:
                t = targets[:, :n].clone()
                t[:, -1] = -100
                total, _, counts = loss_module(input_ids=ids[:, :n], position_ids=positions[:, :n], labels=t)
                loss = total / counts.sum()
        loss.backward()
        return float(loss)

    # A small step first, so that code and library workspaces loaded on first use are not
    # counted; its gradients are dropped, so that both sides' gradients are counted in the step.
    step(32)
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before, high_before = resident_bytes(), peak_resident_bytes()
    loss = step(args.seq)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        high = peak_resident_bytes()
        # The step must have set the process's high-water mark, or it measured set-up instead.
        peak = high - before if high > high_before else float("nan")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"peak": peak, "loss": loss, "weights": weights,
            "params": sum(p.numel() for p in model.parameters())}


def high_water_bytes() -> int:
    """The process's peak resident set size since the last `reset_high_water` (Linux VmHWM)."""
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def reset_high_water() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current resident size


def measure_method(args) -> dict:
    """One method, in this process: training steps as `cptkit train` runs them (adapters, frozen weights
    in the compute dtype, AdamW groups), their peak memory above the process before the model existed
    and their median time. On CPU the peak counts from after the model is built and adapted, so that a
    float32 copy converted to bfloat16 for the frozen weights is not counted."""
    import peft  # noqa: F401  (imported before the baseline on every side, so its code is not counted)
    import torch

    from cptkit.config import load_config
    from cptkit.peft import training
    from cptkit.train.losses import CausalLMLoss
    from cptkit.train.optim import build_optimizer
    from cptkit.train.precision import Precision

    methods = {"full": {}, "lora": {"method": "lora", "r": args.r},
            "lora-adapters": {"method": "lora", "r": args.r, "train_embeddings": False, "train_lm_head": False}}
    cfg = load_config(None, check_paths=False, raw={
        "model": {"name_or_path": "x/y", "dtype": args.dtype}, "data": {"domain": {"paths": ["a"]}},
        "train": {"lr": 1e-4, "peft": methods[args.side], "loss_chunk_tokens": args.chunk}, "output_dir": "o"})
    device = torch.device(args.device)
    start = torch.cuda.memory_allocated() if device.type == "cuda" else resident_bytes()
    model = build_model(args)
    peft_model = training.adapt(model, cfg)
    training.store_frozen_low(peft_model, cfg)
    model = model.to(device).train()
    loss_module = CausalLMLoss(model, args.chunk)
    optimizer = build_optimizer(loss_module, cfg.train)
    precision = Precision(args.dtype, device)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(device)
    targets = torch.roll(ids, -1, 1)
    targets[:, -1] = -100
    positions = torch.arange(args.seq, device=device).repeat(args.batch, 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_high_water()
    times, losses = [], []
    for _ in range(args.steps + 1):  # the first step allocates the optimizer states; it is not timed
        began = time.perf_counter()
        with precision.autocast():
            total, _, counts = loss_module(input_ids=ids, position_ids=positions, labels=targets)
        precision.backward(total / counts.sum())
        torch.nn.utils.clip_grad_norm_(loss_module.parameters(), 1.0)
        precision.step(optimizer, apply=True)
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
        losses.append(float(total / counts.sum()))
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else high_water_bytes()) - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"peak": peak, "step_s": statistics.median(times[1:]), "loss": losses[0], "trainable": trainable,
            "params": sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n)}


def report_methods(results: dict[str, list[dict]], args) -> None:
    first = results["full"][0]
    how = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak resident set size (VmHWM)"
    print(f"Llama, vocabulary {args.vocab:,}, hidden {args.hidden}, {args.layers} layers: "
          f"{first['params'] / 1e6:.1f}M parameters; {args.batch} x {args.seq} tokens per step, {args.dtype} "
          f"compute, {args.device} ({how}); LoRA r {args.r} on every decoder linear layer; "
          f"{args.repeats} fresh process(es) per method, medians of {args.steps} steps after the first")
    print(f"{'method':15}{'trainable':>14}{'peak MiB':>10}{'s/step':>9}{'first loss':>12}{'peak x':>8}{'time x':>8}")
    peak = {m: statistics.median(r["peak"] for r in results[m]) for m in METHODS}
    step = {m: statistics.median(r["step_s"] for r in results[m]) for m in METHODS}
    for m in METHODS:
        print(f"{m:15}{results[m][0]['trainable']:>14,}{peak[m] / 2**20:>10,.0f}{step[m]:>9.3f}"
              f"{results[m][0]['loss']:>12.4f}{peak[m] / peak['full']:>8.2f}{step[m] / step['full']:>8.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="compute precision (bfloat16: autocast; weights stay float32)")
    p.add_argument("--vocab", type=int, default=128_256)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=1024, help="train.loss_chunk_tokens")
    p.add_argument("--repeats", type=int, default=2, help="fresh processes per side (alternating)")
    p.add_argument("--side", choices=SIDES + METHODS, help=argparse.SUPPRESS)
    p.add_argument("--methods", action="store_true", help="LoRA against full training (see the docstring)")
    p.add_argument("--r", type=int, default=16, help="--methods: the LoRA rank")
    p.add_argument("--steps", type=int, default=3, help="--methods: timed training steps after a first one")
    if "--methods" in sys.argv:  # a model whose decoder layers dominate its parameters, as in a 7B
        p.set_defaults(vocab=8192, hidden=1024, layers=8, seq=512)
    args = p.parse_args()
    if args.side:
        print("RESULT " + json.dumps(measure_method(args) if args.side in METHODS else measure(args)))
        return
    sides = METHODS if args.methods else SIDES
    results: dict[str, list[dict]] = {s: [] for s in sides}
    passthrough = list(sys.argv[1:])
    for _ in range(args.repeats):
        for side in sides:
            done = subprocess.run([sys.executable, __file__, *passthrough, "--side", side],
                                  capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not line:
                sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
            results[side].append(json.loads(line[0][7:]))
    (report_methods if args.methods else report)(results, args)


def report(results: dict[str, list[dict]], args) -> None:
    first = results["hf"][0]
    tokens = args.batch * args.seq
    how = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak resident set size"
    print(f"Llama, vocabulary {args.vocab:,}, hidden {args.hidden}, {args.layers} layers: "
          f"{first['params'] / 1e6:.1f}M parameters, {first['weights'] / 2**20:,.0f} MiB of weights")
    print(f"{args.batch} x {args.seq} = {tokens:,} tokens per step, {args.dtype} compute, {args.device} "
          f"({how}); {args.repeats} fresh process(es) per side, medians")
    print(f"one step's logits in float32 would take {tokens * args.vocab * 4 / 2**20:,.0f} MiB")
    print(f"{'side':12}{'step peak above weights (MiB)':>32}{'loss':>10}")
    peaks = {}
    for side in SIDES:
        peaks[side] = statistics.median(r["peak"] for r in results[side])
        print(f"{side:12}{peaks[side] / 2**20:32,.0f}{results[side][0]['loss']:10.4f}")
    for side in SIDES[1:]:
        print(f"ratio hf / {side}: {peaks['hf'] / peaks[side]:.2f}x less peak memory")


if __name__ == "__main__":
    main()
