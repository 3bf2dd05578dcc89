"""Training throughput: cptkit against the standard Hugging Face way, side by side.

Two baselines, both transformers.Trainer:
    hf          DataCollatorForLanguageModeling(mlm=False) over documents truncated to the
                sequence length and padded per batch, the way instruction-style scripts feed them;
    hf-packed   run_clm.py's `group_texts`: every document (BOS + text + EOS) concatenated and
                cut into full blocks, attention across document boundaries (no masking).
cptkit ("cptkit"): `cptkit train` on the same documents, packed with per-document attention.
Same model config and initial weights, tokenizer, sequence length, micro batch, global batch,
optimizer settings and thread count.

The figure that matters is *target tokens per second*: tokens the model is actually trained
to predict (padding and cut-off text are not). Input tokens per second are printed too.
The first `--warmup` optimizer steps of each run are not timed. Runs alternate (hf, cptkit,
hf, hf-packed, cptkit, ...) in fresh processes so machine noise hits all; ratios are per round.

    python benchmarks/throughput.py                  # general English corpus (mixed lengths)
    python benchmarks/throughput.py --corpus code    # long documents (Python source files)
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SEQ_LEN, MICRO, ACCUM, LR = 512, 4, 2, 1e-3  # the geometry: sequence 512, micro batch 4


SIDES = ("hf", "hf-packed", "cptkit")


def build(folder: Path) -> dict:
    """Corpora, tokenizer and initial model of the demo, built once and shared by every run."""
    from cptkit.demo import FULL, build_base_init, build_corpora

    general, code = build_corpora(folder / "corpus", FULL)
    model = build_base_init(folder / "model", [general, code], FULL)
    return {"general": str(general), "code": str(code), "model": str(model)}


def run_cptkit(paths: dict, corpus: str, steps: int, warmup: int, out: Path) -> dict:
    from cptkit.config import load_config
    from cptkit.train.loop import train

    cfg = load_config(None, raw={
        "model": {"name_or_path": paths["model"], "dtype": "float32"},
        "data": {"seq_len": SEQ_LEN, "domain": {"paths": [paths[corpus]]}, "heldout_fraction": 0.02,
                 "prepared_dir": str(out.parent / f"shards-{corpus}")},
        "train": {"lr": LR, "warmup_steps": 2, "global_batch_tokens": SEQ_LEN * MICRO * ACCUM,
                  "micro_batch_size": MICRO, "max_steps": steps, "weight_decay": 0.0},
        "checkpoint": {"every_steps": 10**6, "keep_best": 0},
        "eval": {"every_steps": 10**6, "max_tokens": 2048},
        "output_dir": str(out),
    })
    train(cfg)
    timed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][warmup:]
    seconds = sum(SEQ_LEN * MICRO * ACCUM / m["tokens_per_s"] for m in timed)  # per-step wall times
    return {"seconds": seconds, "targets": sum(m["target_tokens"] for m in timed),
            "inputs": len(timed) * SEQ_LEN * MICRO * ACCUM}


def group_texts(docs: list[list[int]]) -> list[dict]:
    """run_clm.py's packing: concatenate, drop the remainder, cut into SEQ_LEN blocks."""
    flat = [t for ids in docs for t in ids]
    return [{"input_ids": flat[i : i + SEQ_LEN]} for i in range(0, len(flat) // SEQ_LEN * SEQ_LEN, SEQ_LEN)]


def packed_collator(features: list[dict]) -> dict:
    import torch

    ids = torch.tensor([f["input_ids"] for f in features])
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def run_hf(paths: dict, corpus: str, steps: int, warmup: int, out: Path, packed: bool = False) -> dict:
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
    docs = [json.loads(line)["text"] for line in open(paths[corpus], encoding="utf-8")]
    docs = [[tok.bos_token_id] + ids + [tok.eos_token_id] for ids in tok(docs, add_special_tokens=False)["input_ids"]]
    data = group_texts(docs) if packed else [{"input_ids": ids[:SEQ_LEN]} for ids in docs]
    collator = packed_collator if packed else DataCollatorForLanguageModeling(tok, mlm=False)
    counts = {"targets": 0, "inputs": 0, "step": 0}
    marks: dict[int, float] = {}

    def collate(features):
        batch = collator(features)
        if counts["step"] >= warmup:
            counts["inputs"] += int(batch["attention_mask"].sum())
            counts["targets"] += int((batch["labels"][:, 1:] != -100).sum())
        return batch

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            counts["step"] = state.global_step
            marks[state.global_step] = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=MICRO, gradient_accumulation_steps=ACCUM,
        max_steps=steps, learning_rate=LR, warmup_steps=2, lr_scheduler_type="cosine", weight_decay=0.0,
        logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0,
        seed=42, disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=torch.float32)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Clock()])
    trainer.train()
    # Collation runs ahead of the step it feeds by at most one batch; over 20+ steps that is noise.
    return {"seconds": marks[steps] - marks[warmup], "targets": counts["targets"], "inputs": counts["inputs"]}


def side(args) -> None:
    paths = json.loads(Path(args.paths).read_text())
    fn = run_cptkit if args.side == "cptkit" else run_hf
    extra = {"packed": True} if args.side == "hf-packed" else {}
    result = fn(paths, args.corpus, args.steps, args.warmup, Path(args.out), **extra)
    print("RESULT " + json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=["general", "code"], default="general")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return side(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths_file = tmp / "paths.json"
        paths_file.write_text(json.dumps(build(tmp)))
        results: dict[str, list[dict]] = {name: [] for name in SIDES}
        for r in range(args.repeats):
            for name in SIDES:
                cmd = [sys.executable, __file__, "--side", name, "--paths", str(paths_file), "--corpus", args.corpus,
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--out", str(tmp / f"{name}-{r}")]
                done = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode or not line:
                    sys.exit(f"{name} run failed:\n{done.stderr[-3000:]}")
                results[name].append(json.loads(line[0][7:]))
        report(results, args)


def report(results: dict[str, list[dict]], args) -> None:
    def rate(x, key):
        return x[key] / x["seconds"]

    print(f"corpus {args.corpus}, seq_len {SEQ_LEN}, micro batch {MICRO}, {args.steps - args.warmup} timed steps, "
          f"{args.repeats} alternating rounds, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'':10}{'target tok/s':>14}{'input tok/s':>14}{'targets/step':>14}")
    for name in SIDES:
        rs = results[name]
        steps = args.steps - args.warmup
        print(f"{name:10}{statistics.median(rate(x, 'targets') for x in rs):14,.0f}"
              f"{statistics.median(rate(x, 'inputs') for x in rs):14,.0f}"
              f"{statistics.median(x['targets'] / steps for x in rs):14,.0f}")
    for base in ("hf", "hf-packed"):
        ratios = [rate(c, "targets") / rate(h, "targets") for h, c in zip(results[base], results["cptkit"])]
        print(f"ratio cptkit / {base}, target tokens per second: median {statistics.median(ratios):.2f}x "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    main()
