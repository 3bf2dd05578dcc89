"""Tokenize-and-pack: `cptkit prepare` (pipeline none) against `datasets.map` + run_clm's
`group_texts`, both with two processes, side by side on the same corpus and tokenizer.

Baseline ("hf"), the way run_clm.py prepares text: load_dataset("json") (conversion to Arrow),
`map(tokenize, batched=True, num_proc=2)`, then `map(group_texts, batched=True, num_proc=2)`
into blocks of 1,024 tokens, each in a fresh cache folder. cptkit: `cptkit prepare --force`
with data.num_workers 2: read, tokenize in workers, write uint16 shards and the manifest.
Both are fresh processes timed end to end; peak memory counts every process. Runs alternate
(hf, cptkit, hf, ...) so machine noise hits both; tokens/s uses each side's own token count.

    python benchmarks/tokenize_pack.py                 # ~100 MB, 2 pairs
    python benchmarks/tokenize_pack.py --mb 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.curation_measure import run_measured  # noqa: E402
from benchmarks.curation_medical import build  # noqa: E402

BLOCK = 1024
HF_SCRIPT = r'''
import json, sys
from itertools import chain
from datasets import load_dataset
from transformers import AutoTokenizer

model, cache, block, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
tok = AutoTokenizer.from_pretrained(model)
raw = load_dataset("json", data_files=files, split="train", cache_dir=cache)

def tokenize(batch):
    return tok(batch["abstract"])

tokenized = raw.map(tokenize, batched=True, num_proc=2, remove_columns=raw.column_names)

def group_texts(examples):  # as in transformers' run_clm.py
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total = len(concatenated[list(examples.keys())[0]]) // block * block
    return {k: [t[i : i + block] for i in range(0, total, block)] for k, t in concatenated.items()}

grouped = tokenized.map(group_texts, batched=True, num_proc=2)
print(json.dumps({"tokens": len(grouped) * block}))
'''


def run_hf(folder: Path, model: Path, corpus: Path, i: int) -> dict:
    script = folder / "hf_tokenize_pack.py"
    script.write_text(HF_SCRIPT)
    files = [str(f) for f in sorted(corpus.glob("*.jsonl"))]
    r = run_measured([sys.executable, str(script), str(model), str(folder / f"hf-cache-{i}"), str(BLOCK), *files],
                     env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(folder / f"hf-cache-{i}")})
    r["tokens"] = json.loads(r["output"].strip().splitlines()[-1])["tokens"]
    return r


def run_cptkit(folder: Path, model: Path, corpus: Path) -> dict:
    cfg = {
        "model": {"name_or_path": str(model)},
        "data": {"seq_len": BLOCK, "domain": {"paths": [str(corpus)], "text_field": "abstract", "id_field": "pmid"},
                 "num_workers": 2, "heldout_fraction": 0.0},
        "output_dir": str(folder / "run"),
    }
    path = folder / "pack.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = run_measured([sys.executable, "-m", "cptkit", "prepare", str(path), "--force"], env={"HF_HUB_OFFLINE": "1"})
    r["tokens"] = json.loads((folder / "run" / "data" / "domain" / "manifest.json").read_text())["tokens"]["total"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=100.0, help="corpus size in MB (default 100)")
    ap.add_argument("--repeats", type=int, default=2, help="(hf, cptkit) pairs; medians are reported")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="cptkit-pack-bench-"))
    corpus, model, size = build(folder, args.mb)
    pairs = []
    for i in range(args.repeats):
        hf = run_hf(folder, model, corpus, i)
        ck = run_cptkit(folder, model, corpus)
        pairs.append((hf, ck))
        for name, r in (("hf", hf), ("cptkit", ck)):
            print(f"pair {i + 1} {name:>6}: {r['wall_s']:6.1f} s, {r['tokens'] / r['wall_s']:>10,.0f} tokens/s, "
                  f"{r['cpu_s']:6.1f} CPU s, peak {r['peak_mib']:5.0f} MiB", flush=True)
    hf_tps = [h["tokens"] / h["wall_s"] for h, _ in pairs]
    ck_tps = [c["tokens"] / c["wall_s"] for _, c in pairs]
    ratios = [c / h for h, c in zip(hf_tps, ck_tps)]
    hf_cpu = [h["tokens"] / h["cpu_s"] for h, _ in pairs]
    ck_cpu = [c["tokens"] / c["cpu_s"] for _, c in pairs]
    cpu_ratios = [c / h for h, c in zip(hf_cpu, ck_cpu)]
    print(f"\ncorpus {size / 2**20:.1f} MiB; tokens: hf {pairs[0][0]['tokens']:,} (packed blocks), "
          f"cptkit {pairs[0][1]['tokens']:,} (every token, with BOS/EOS)")
    print(f"{'':>8} {'tokens/s (median)':>18} {'tokens/CPU-s (median)':>22} {'peak MiB (max)':>15}")
    for name, tps, cpu, runs in (("hf", hf_tps, hf_cpu, [h for h, _ in pairs]), ("cptkit", ck_tps, ck_cpu, [c for _, c in pairs])):
        print(f"{name:>8} {statistics.median(tps):>18,.0f} {statistics.median(cpu):>22,.0f} "
              f"{max(r['peak_mib'] for r in runs):>15.0f}")
    print(f"cptkit / hf tokens/s: median {statistics.median(ratios):.2f}x (pairs: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"cptkit / hf tokens per CPU second: median {statistics.median(cpu_ratios):.2f}x "
          f"(pairs: {', '.join(f'{r:.2f}' for r in cpu_ratios)})")

if __name__ == "__main__":
    main()
