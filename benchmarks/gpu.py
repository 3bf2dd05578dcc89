"""Training throughput and MFU on one GPU: cptkit against the Hugging Face Trainer, same model.

The model is a randomly initialised Llama-architecture model of about 0.25B parameters
(hidden 1024, 16 layers, 16 heads with 8 key/value heads, MLP 2816, vocabulary 32,000 of which
the benchmark's tokenizer uses the first 8,192); nothing is downloaded. Both sides train it in
bfloat16 autocast with float32 master weights and AdamW, on the same documents (the Python
standard library's source, as in the demo), sequence 2048, micro batch 8, 2 accumulation steps.

- hf:      transformers.Trainer fed run_clm-style blocks (documents concatenated and cut into
           2048-token blocks; attention crosses documents), DataCollatorForLanguageModeling.
- cptkit:  `cptkit train` (packed, attention kept within documents, fused chunked loss).

Tokens per second count input tokens of timed optimizer steps (the first --warmup steps are
not timed). MFU = tokens/s x FLOPs per token / the GPU's peak dense bfloat16 FLOP/s, with FLOPs
per token = 6 x (parameters outside the input embedding) + 12 x layers x hidden x sequence
(attention scores and values over the full causal window, the PaLM convention). Sides run in
fresh processes, alternating. Finishes in under 5 minutes on an H100-class GPU.

    python benchmarks/gpu.py                    # one GPU
    python benchmarks/gpu.py --tiny             # a tiny model on CPU: checks the code path only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

# Peak dense bfloat16 tensor FLOP/s by device name (vendor datasheets, without sparsity).
PEAK_TFLOPS = {"H200": 989, "H100": 989, "H800": 989, "GH200": 989, "B200": 2250, "A100": 312, "A800": 312,
               "L40S": 362, "L40": 181, "A10G": 70, "A10": 125, "L4": 121, "RTX 4090": 165}


@dataclass
class Size:
    vocab: int
    tokenizer_vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    seq: int
    micro: int
    accum: int
    steps: int
    warmup: int


GPU = Size(vocab=32_000, tokenizer_vocab=8192, hidden=1024, layers=16, heads=16, kv_heads=8, mlp=2816, seq=2048,
           micro=8, accum=2, steps=50, warmup=10)
TINY = Size(vocab=1024, tokenizer_vocab=512, hidden=64, layers=2, heads=2, kv_heads=1, mlp=176, seq=128,
            micro=4, accum=2, steps=6, warmup=2)


def build(folder: Path, size: Size, tiny: bool) -> dict:
    """The code corpus, a tokenizer trained on it, and the randomly initialised model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from cptkit.demo import DemoSize, build_base_init, build_corpora

    hf_logging.disable_progress_bar()
    # 600 standard-library modules: a few million tokens, more than the timed steps read.
    demo = DemoSize(vocab=size.tokenizer_vocab, hidden=8, layers=1, heads=1, seq_len=size.seq, batch_rows=1, micro=1,
                    pretrain_tokens=0, cpt_tokens=0, code_files=120 if tiny else 600, eval_tokens=0)
    _, code = build_corpora(folder / "corpus", demo)
    # The demo's tokenizer trainer; its throwaway model is replaced below.
    init = build_base_init(folder / "model", [code], demo)
    (init / "model.safetensors").unlink()
    config = LlamaConfig(
        vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.mlp, num_hidden_layers=size.layers,
        num_attention_heads=size.heads, num_key_value_heads=size.kv_heads, max_position_embeddings=size.seq,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(init)
    return {"code": str(code), "model": str(init)}


def run_cptkit(paths: dict, size: Size, dtype: str, out: Path) -> dict:
    from cptkit.config import load_config
    from cptkit.train.loop import train

    tokens_per_step = size.seq * size.micro * size.accum
    cfg = load_config(None, raw={
        "model": {"name_or_path": paths["model"], "dtype": dtype},
        "data": {"seq_len": size.seq, "domain": {"paths": [paths["code"]]}, "heldout_fraction": 0.01,
                 "prepared_dir": str(out.parent / "shards")},
        "train": {"lr": 3e-4, "warmup_steps": 2, "global_batch_tokens": tokens_per_step, "micro_batch_size": size.micro,
                  "max_steps": size.steps, "weight_decay": 0.0},
        "checkpoint": {"every_steps": 10**6, "keep_last": 1, "keep_best": 0},
        "eval": {"every_steps": 10**6, "max_tokens": 4 * size.seq},
        "output_dir": str(out),
    })
    train(cfg)
    timed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][size.warmup:]
    seconds = sum(tokens_per_step / m["tokens_per_s"] for m in timed)  # the steps' own wall times
    return {"seconds": seconds, "tokens": len(timed) * tokens_per_step, "loss": timed[-1]["loss"]}


def run_hf(paths: dict, size: Size, dtype: str, out: Path) -> dict:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(paths["model"])
    docs = [json.loads(line)["text"] for line in open(paths["code"], encoding="utf-8")]
    stream: list[int] = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        stream += ids + [tok.eos_token_id]
    need = size.steps * size.micro * size.accum
    blocks = [stream[i : i + size.seq] for i in range(0, len(stream) - size.seq + 1, size.seq)]
    data = [{"input_ids": blocks[i % len(blocks)]} for i in range(need)]  # run_clm's group_texts
    marks: dict[int, float] = {}
    cuda = torch.cuda.is_available()

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()  # the step's kernels are done, not just queued
            marks[state.global_step] = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=size.micro, gradient_accumulation_steps=size.accum,
        max_steps=size.steps, learning_rate=3e-4, warmup_steps=2, lr_scheduler_type="cosine", weight_decay=0.0,
        logging_strategy="no", save_strategy="no", report_to=[], use_cpu=not cuda, dataloader_num_workers=2,
        bf16=dtype == "bfloat16", seed=42, disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=torch.float32, attn_implementation="sdpa")
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=[Clock()])
    result = trainer.train()
    timed = size.steps - size.warmup
    return {"seconds": marks[size.steps] - marks[size.warmup], "tokens": timed * size.seq * size.micro * size.accum,
            "loss": result.training_loss}


def flops_per_token(model_dir: str, size: Size) -> tuple[float, int]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    total = sum(p.numel() for p in model.parameters())
    dense = total - model.get_input_embeddings().weight.numel()
    return 6 * dense + 12 * size.layers * size.hidden * size.seq, total


def side(args) -> None:
    paths = json.loads(Path(args.paths).read_text())
    size = TINY if args.tiny else GPU
    fn = run_hf if args.side == "hf" else run_cptkit
    print("RESULT " + json.dumps(fn(paths, size, args.dtype, Path(args.out))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model, CPU allowed: checks that everything runs")
    p.add_argument("--repeats", type=int, default=1, help="alternating pairs of runs")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                   help="default: bfloat16 on a GPU, float32 on CPU")
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, if not in the table")
    p.add_argument("--side", choices=["hf", "cptkit"], help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    if args.side:
        return side(args)
    if not cuda and not args.tiny:
        sys.exit("no GPU here: run with --tiny to check the code path on CPU")
    size = TINY if args.tiny else GPU
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = build(tmp, size, args.tiny)
        (tmp / "paths.json").write_text(json.dumps(paths))
        results: dict[str, list[dict]] = {"hf": [], "cptkit": []}
        for r in range(args.repeats):
            for name in ("hf", "cptkit"):
                cmd = [sys.executable, __file__, "--side", name, "--paths", str(tmp / "paths.json"),
                       "--dtype", args.dtype, "--out", str(tmp / f"{name}-{r}")] + (["--tiny"] if args.tiny else [])
                done = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode or not line:
                    sys.exit(f"{name} run failed:\n{done.stderr[-3000:]}")
                results[name].append(json.loads(line[0][7:]))
        fpt, params = flops_per_token(paths["model"], size)
    report(results, args, size, fpt, params, cuda, time.time() - started)


def report(results, args, size: Size, fpt: float, params: int, cuda: bool, wall: float) -> None:
    import torch

    device = torch.cuda.get_device_name() if cuda else "CPU"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
    print(f"device {device}; Llama-architecture model, {params / 1e6:,.1f}M parameters")
    print(f"{args.dtype}, {size.steps - size.warmup} timed steps of {size.seq * size.micro * size.accum:,} tokens, "
          f"{fpt / 1e6:,.1f} MFLOP per token, {args.repeats} alternating pair(s); medians")
    print(f"{'side':8}{'tokens/s':>12}{'MFU':>8}{'last loss':>11}")
    rates = {}
    for name in ("hf", "cptkit"):
        rates[name] = statistics.median(x["tokens"] / x["seconds"] for x in results[name])
        mfu = f"{rates[name] * fpt / (peak * 1e12):.1%}" if peak and cuda else "n/a"
        print(f"{name:8}{rates[name]:12,.0f}{mfu:>8}{results[name][-1]['loss']:11.3f}")
    ratios = [c["tokens"] / c["seconds"] / (h["tokens"] / h["seconds"]) for h, c in zip(results["hf"], results["cptkit"])]
    print(f"ratio cptkit / hf tokens per second: median {statistics.median(ratios):.2f}x; whole benchmark {wall:.0f} s")
    print("config: " + json.dumps(asdict(size)))


if __name__ == "__main__":
    main()
