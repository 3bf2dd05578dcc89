"""Forgetting frontier: how much domain gain each mitigation keeps, and how much general loss it saves.

On the demo's data (general English from the standard library's docs, Python code as the
domain; `cptkit.demo` builds both and the base model), a small Llama is pre-trained on the
general text, then continued on code at an equal token budget with each mitigation:

    none       no replay, no penalty
    replay5    5% of the sequences replayed from the general text (compute-equivalent)
    replay25   25% replay
    kl-W       KL(reference || current) to the frozen base with weight W (--kl-weights), no replay
    ewc-W      EWC with a true Fisher from --fisher-tokens general tokens, weight W (--ewc-weights), no replay
    lora-R     LoRA of rank R (--lora-ranks) on every linear layer of the decoder, rsLoRA, alpha 32, the
               (tied) embeddings trained in full at 0.2 x lr (cptkit's LoRA defaults), no replay
    lora-R-adapters  the same with the embeddings frozen: the adapters alone (--adapter-ranks)

Each run is evaluated on held-out domain and general text before (the base) and after. The
table and the plot show domain-perplexity gain against general-perplexity loss (the forgetting
frontier: up and to the left is better).

    python benchmarks/forgetting_frontier.py --out runs/frontier          # about 15-25 minutes on 2 CPU cores
    python benchmarks/forgetting_frontier.py --out runs/frontier --quick  # a few minutes, smaller model

Writes OUT/frontier.md (the table), OUT/frontier.png and OUT/frontier.json (with wall times; on a
shared machine those are not a cost comparison: benchmarks/kl_overhead.py measures the KL cost).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cptkit.demo import DemoSize, build_base_init, build_corpora  # noqa: E402

# Small enough for CPUs, large enough that the base learns English and the code shift shows.
SIZES = {
    "full": DemoSize(vocab=2048, hidden=96, layers=2, heads=2, seq_len=128, batch_rows=32, micro=16,
                     pretrain_tokens=400_000, cpt_tokens=160_000, code_files=10_000, eval_tokens=12_000),
    "quick": DemoSize(vocab=1024, hidden=64, layers=2, heads=2, seq_len=128, batch_rows=16, micro=8,
                      pretrain_tokens=120_000, cpt_tokens=60_000, code_files=150, eval_tokens=6_000),
}
PRETRAIN_LR, CPT_LR = 3e-3, 1e-3


def run_config(model: Path, out: Path, shards: Path, domain: Path, general: Path, size: DemoSize,
               tokens: int, lr: float, **sections) -> dict:
    cfg = {
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"seq_len": size.seq_len, "domain": {"paths": [str(domain)], "id_field": "id"},
                 "general": {"paths": [str(general)], "id_field": "id"},
                 "heldout_fraction": 0.03, "heldout_max_docs": 200, "prepared_dir": str(shards)},
        "mix": {"replay_ratio": 0.0},
        "train": {"lr": lr, "schedule": "cosine", "warmup_ratio": 0.05, "min_lr_ratio": 0.1, "weight_decay": 0.1,
                  "global_batch_tokens": size.batch_rows * size.seq_len, "micro_batch_size": size.micro,
                  "max_tokens": tokens, "log_every": 1},
        "checkpoint": {"every_steps": 10**6, "keep_last": 1, "keep_best": 0, "metric": "domain_ppl"},
        "eval": {"every_steps": 10**6, "max_tokens": size.eval_tokens},  # before and after only
        "output_dir": str(out),
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def variants(args) -> dict[str, dict]:
    out = {
        "none": {},
        "replay5": {"mix": {"replay_ratio": 0.05}},
        "replay25": {"mix": {"replay_ratio": 0.25}},
    }
    for w in args.kl_weights:
        out[f"kl-{w:g}"] = {"regularizer": {"kind": "kl", "weight": w}}
    for w in args.ewc_weights:
        out[f"ewc-{w:g}"] = {"regularizer": {"kind": "ewc", "weight": w, "fisher_tokens": args.fisher_tokens}}
    # The same lr as full training: the comparison is at equal data, steps and learning rate.
    for r in args.lora_ranks:
        out[f"lora-{r}"] = {"train": {"peft": {"method": "lora", "r": r, "rslora": True}}}
    for r in args.adapter_ranks:
        out[f"lora-{r}-adapters"] = {"train": {"peft": {"method": "lora", "r": r, "rslora": True,
                                                        "train_embeddings": False, "train_lm_head": False}}}
    return out


def run(cfg: dict) -> dict:
    from cptkit.config import load_config
    from cptkit.train.loop import train

    started = time.time()
    summary = train(load_config(None, raw=cfg))
    return {**summary, "bench_wall_s": round(time.time() - started, 1)}


def row(name: str, summary: dict) -> dict:
    base, final = summary["base"], summary["final"]
    return {
        "run": name,
        "domain_ppl_base": base["domain_ppl"], "domain_ppl_final": final["domain_ppl"],
        "general_ppl_base": base["general_ppl"], "general_ppl_final": final["general_ppl"],
        "domain_gain_pct": 100 * (1 - final["domain_ppl"] / base["domain_ppl"]),
        "general_loss_pct": 100 * (final["general_ppl"] / base["general_ppl"] - 1),
        "wall_s": summary["bench_wall_s"], "train_wall_s": summary["train_wall_s"],
        "tokens": summary["tokens_trained"], "trainable": summary.get("trainable_parameters"),
        "total": summary.get("total_parameters"),
    }


def table(rows: list[dict], args, size: DemoSize) -> str:
    lines = [
        f"CPT on Python code after pre-training on general English: {rows[0]['tokens']:,} tokens per run, "
        f"lr {CPT_LR:g} cosine, model hidden {size.hidden} x {size.layers} layers, vocab {size.vocab}; "
        f"kl-W / ewc-W: regularizer weight W, no replay; EWC Fisher from {args.fisher_tokens:,} general tokens; "
        "lora-R: rank R, rsLoRA, alpha 32, embeddings in full at 0.2 x lr (-adapters: embeddings frozen), no replay.",
        "",
        "| run | trained parameters | domain ppl base -> final | domain gain | general ppl base -> final | general loss |",
        "| --- | ---: | --- | --- | --- | --- |",
    ]
    for r in rows:
        share = f"{r['trainable']:,} ({r['trainable'] / r['total']:.0%})" if r.get("trainable") else "-"
        lines.append(
            f"| {r['run']} | {share} | {r['domain_ppl_base']:.2f} -> {r['domain_ppl_final']:.2f} "
            f"| {r['domain_gain_pct']:.1f}% | {r['general_ppl_base']:.2f} -> {r['general_ppl_final']:.2f} "
            f"| {r['general_loss_pct']:+.1f}% |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        ax.scatter(r["general_loss_pct"], r["domain_gain_pct"], s=36)
        ax.annotate(r["run"], (r["general_loss_pct"], r["domain_gain_pct"]), textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("general perplexity increase (%)  (forgetting)")
    ax.set_ylabel("domain perplexity reduction (%)  (gain)")
    ax.set_title("Forgetting frontier at an equal token budget (up and left is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/frontier", help="output folder (cleared runs are not reused)")
    p.add_argument("--quick", action="store_true", help="a smaller model and budget (a few minutes)")
    p.add_argument("--kl-weights", type=float, nargs="+", default=[0.3, 1.0], help="one KL run per weight")
    p.add_argument("--ewc-weights", type=float, nargs="+", default=[100.0, 1000.0], help="one EWC run per weight")
    p.add_argument("--fisher-tokens", type=int, default=40_000)
    p.add_argument("--lora-ranks", type=int, nargs="*", default=[8, 64, 256], help="one LoRA run per rank")
    p.add_argument("--adapter-ranks", type=int, nargs="*", default=[64],
                   help="one LoRA run per rank with the embeddings frozen (adapters alone)")
    p.add_argument("--only", nargs="*", help="run only these variants (the base is reused if present)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    size = SIZES["quick" if args.quick else "full"]
    out = Path(args.out)
    started = time.time()
    general, code = out / "corpus" / "general.jsonl", out / "corpus" / "code.jsonl"
    base = out / "pretrain" / "final"
    if not base.is_dir():
        general, code = build_corpora(out / "corpus", size)
        init = build_base_init(out / "base-init", [general, code], size)
        logging.info("frontier: pre-training the base on general English (%s tokens)", f"{size.pretrain_tokens:,}")
        # The base sees only general text (as its "domain"); its shards live apart from the CPT runs'.
        pre = run_config(init, out / "pretrain", out / "shards-pretrain", general, general, size,
                         size.pretrain_tokens, PRETRAIN_LR)
        del pre["data"]["general"]
        run(pre)
    results = {}
    results_file = out / "frontier.json"
    if results_file.is_file():
        results = {r["run"]: r for r in json.loads(results_file.read_text())["rows"]}
    fisher = None  # estimated by the first EWC run, reused by the others (same base, same data)
    for name, sections in variants(args).items():
        if args.only and name not in args.only:
            continue
        logging.info("frontier: continued pre-training with %s", name)
        if fisher is not None and sections.get("regularizer", {}).get("kind") == "ewc":
            sections = {"regularizer": {**sections["regularizer"], "fisher_path": str(fisher)}}
        cfg = run_config(base, out / name, out / "shards", code, general, size, size.cpt_tokens, CPT_LR, **sections)
        if (out / name).exists():
            shutil.rmtree(out / name)  # a fresh run each time (a run folder refuses to be overwritten)
        results[name] = row(name, run(cfg))
        if (out / name / "fisher.safetensors").is_file():
            fisher = out / "fisher.safetensors"
            shutil.copy(out / name / "fisher.safetensors", fisher)
        results_file.write_text(json.dumps({"rows": list(results.values())}, indent=1))
    rows = [results[n] for n in variants(args) if n in results]
    text = table(rows, args, size)
    (out / "frontier.md").write_text(text + "\n")
    plot(rows, out / "frontier.png")
    print(text)
    print(f"\nwall {time.time() - started:.0f} s; wrote {out / 'frontier.md'}, {out / 'frontier.png'}")


if __name__ == "__main__":
    main()
