"""Tokenize-and-pack: `cptkit prepare` (pipeline none) against `datasets.map` + run_clm's
`group_texts`, both with one process per core, side by side on the same corpus and tokenizer.

Baseline ("hf"), the way run_clm.py prepares text: load_dataset("json") (conversion to Arrow),
`map(tokenize, batched=True, num_proc=cores)`, then `map(group_texts, batched=True,
num_proc=cores)` into blocks of 1,024 tokens, each in a fresh cache folder. cptkit: `cptkit
prepare --force` with data.num_workers = cores: read, tokenize in workers, write uint16 shards
and the manifest. Both are fresh processes timed end to end; peak memory counts every process.
Runs alternate (hf, cptkit, hf, ...) so machine noise hits both; tokens/s uses each side's own
token count. The same ~60 MB of abstracts comes in one of three layouts:

    single   one JSONL file (smaller than data.part_bytes: prepare must cut it for the workers)
    many     200 JSONL files of ~300 KB (prepare must group them)
    gz       one gzip-compressed JSONL file (cannot be seeked: cut by decompressed bytes)

    python benchmarks/tokenize_pack.py                          # single file, 2 pairs
    python benchmarks/tokenize_pack.py --layout many --repeats 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.curation_corpus import write_corpus  # noqa: E402
from benchmarks.curation_measure import run_measured, tokenizer_model  # noqa: E402
from benchmarks.curation_medical import BYTES_PER_DOC  # noqa: E402

BLOCK = 1024
CORES = os.cpu_count() or 1
LAYOUTS = {"single": 1, "many": 200, "gz": 1}  # files the corpus is written as
HF_SCRIPT = r'''
import json, sys
from itertools import chain
from datasets import load_dataset
from transformers import AutoTokenizer

model, cache, block, cores, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
tok = AutoTokenizer.from_pretrained(model)
raw = load_dataset("json", data_files=files, split="train", cache_dir=cache)

def tokenize(batch):
    return tok(batch["abstract"])

tokenized = raw.map(tokenize, batched=True, num_proc=cores, remove_columns=raw.column_names)

def group_texts(examples):  # as in transformers' run_clm.py
    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total = len(concatenated[list(examples.keys())[0]]) // block * block
    return {k: [t[i : i + block] for i in range(0, total, block)] for k, t in concatenated.items()}

grouped = tokenized.map(group_texts, batched=True, num_proc=cores)
print(json.dumps({"tokens": len(grouped) * block}))
'''


def build(folder: Path, layout: str, mb: float) -> tuple[Path, Path, int]:
    """The corpus in `layout` (written once per work folder) and a tokenizer trained on it."""
    corpus = folder / f"corpus-{layout}"
    if not corpus.is_dir():
        write_corpus(corpus, int(mb * 2**20 / BYTES_PER_DOC), seed=0, files=LAYOUTS[layout])
        if layout == "gz":
            plain = corpus / "pubmed-00.jsonl"
            with open(plain, "rb") as src, gzip.open(corpus / "pubmed-00.jsonl.gz", "wb") as out:
                shutil.copyfileobj(src, out)
            plain.unlink()
    size = sum(f.stat().st_size for f in corpus.iterdir())
    sample = folder / "sample.jsonl"
    if not sample.is_file():
        first = sorted(corpus.iterdir())[0]
        opener = gzip.open if first.suffix == ".gz" else open
        with opener(first, "rt", encoding="utf-8") as src, open(sample, "w", encoding="utf-8") as out:
            for _, line in zip(range(3000), src):
                out.write(json.dumps({"text": json.loads(line)["abstract"]}) + "\n")
    return corpus, tokenizer_model(folder / "model", sample), size


def run_hf(folder: Path, model: Path, corpus: Path, i: int) -> dict:
    script = folder / "hf_tokenize_pack.py"
    script.write_text(HF_SCRIPT)
    files = [str(f) for f in sorted(corpus.iterdir())]
    shutil.rmtree(folder / f"hf-cache-{i}", ignore_errors=True)  # a cache left by an earlier run would be reused
    r = run_measured([sys.executable, str(script), str(model), str(folder / f"hf-cache-{i}"), str(BLOCK), str(CORES), *files],
                     env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(folder / f"hf-cache-{i}")})
    r["tokens"] = json.loads(r["output"].strip().splitlines()[-1])["tokens"]
    return r


def run_cptkit(folder: Path, model: Path, corpus: Path) -> dict:
    cfg = {
        "model": {"name_or_path": str(model)},
        "data": {"seq_len": BLOCK, "domain": {"paths": [str(corpus)], "text_field": "abstract", "id_field": "pmid"},
                 "num_workers": CORES, "heldout_fraction": 0.0},
        "output_dir": str(folder / "run"),
    }
    path = folder / "pack.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = run_measured([sys.executable, "-m", "cptkit", "prepare", str(path), "--force"], env={"HF_HUB_OFFLINE": "1"})
    r["tokens"] = json.loads((folder / "run" / "data" / "domain" / "manifest.json").read_text())["tokens"]["total"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", choices=list(LAYOUTS), default="single")
    ap.add_argument("--mb", type=float, default=60.0, help="corpus size in MB (default 60)")
    ap.add_argument("--repeats", type=int, default=2, help="(hf, cptkit) pairs; medians are reported")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="cptkit-pack-bench-"))
    corpus, model, size = build(folder, args.layout, args.mb)
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
    print(f"\nlayout {args.layout} ({LAYOUTS[args.layout]} file(s)), {CORES} processes a side; "
          f"corpus {size / 2**20:.1f} MiB on disk; tokens: hf {pairs[0][0]['tokens']:,} (packed blocks), "
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
