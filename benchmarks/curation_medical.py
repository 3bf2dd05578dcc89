"""Throughput and peak memory of the whole `medical` curation pipeline on a generated corpus.

The corpus (PubMed-like abstracts with markup, personal data, Korean abstracts, duplicates and
junk; see curation_corpus.py) is generated deterministically, never committed. The run is the
real command, `cptkit prepare --force`, in a fresh process: reading, cleaning (HTML parser,
ftfy), length, language id, Gopher quality and repetition, PII, tokenizing, MinHash signatures,
decontamination, dedup, shards, curated and dropped outputs. Peak memory counts the main
process and every worker together.

    python benchmarks/curation_medical.py              # ~100 MB, 2 workers
    python benchmarks/curation_medical.py --mb 20 --workers 1 --repeats 3
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

from benchmarks.curation_corpus import write_corpus  # noqa: E402
from benchmarks.curation_measure import run_measured, tokenizer_model  # noqa: E402

BYTES_PER_DOC = 900  # measured mean of the generator's JSONL lines; sizes the corpus


def build(folder: Path, mb: float) -> tuple[Path, Path, int]:
    corpus = folder / "corpus"
    if not corpus.is_dir():
        write_corpus(corpus, int(mb * 2**20 / BYTES_PER_DOC), seed=0, files=8)
    size = sum(f.stat().st_size for f in corpus.glob("*.jsonl"))
    sample = folder / "sample.jsonl"
    if not sample.is_file():
        with open(corpus / "pubmed-00.jsonl", encoding="utf-8") as src, open(sample, "w", encoding="utf-8") as out:
            for i, line in enumerate(src):
                if i >= 3000:
                    break
                out.write(json.dumps({"text": json.loads(line)["abstract"]}) + "\n")
    return corpus, tokenizer_model(folder / "model", sample), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=100.0, help="corpus size in MB (default 100)")
    ap.add_argument("--workers", type=int, default=2, help="data.num_workers (default 2)")
    ap.add_argument("--repeats", type=int, default=1, help="runs; the median is reported")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="cptkit-curation-bench-"))
    corpus, model, size = build(folder, args.mb)
    cfg = {
        "model": {"name_or_path": str(model)},
        "data": {"seq_len": 1024, "domain": {"paths": [str(corpus)], "text_field": "abstract", "id_field": "pmid",
                                             "pipeline": "medical"},
                 "num_workers": args.workers, "part_bytes": 8 * 2**20},
        "output_dir": str(folder / "run"),
    }
    path = folder / "medical.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runs = []
    for i in range(args.repeats):
        r = run_measured([sys.executable, "-m", "cptkit", "prepare", str(path), "--force"],
                         env={"HF_HUB_OFFLINE": "1"})
        runs.append(r)
        print(f"run {i + 1}: {r['wall_s']:.1f} s, {size / 2**20 / r['wall_s']:.2f} MB/s, {r['cpu_s']:.0f} CPU s "
              f"({size / 2**20 / r['cpu_s']:.2f} MB per CPU second), peak {r['peak_mib']:.0f} MiB "
              f"(largest process {r['peak_single_mib']:.0f} MiB)", flush=True)
    manifest = json.loads((folder / "run" / "data" / "domain" / "manifest.json").read_text())
    wall = statistics.median(r["wall_s"] for r in runs)
    docs = manifest["documents"]
    print(f"\ncorpus: {size / 2**20:.1f} MiB, {docs['read']:,} documents, {args.workers} worker(s)")
    print(f"median wall {wall:.1f} s: {size / 2**20 / wall:.2f} MB/s, {docs['read'] / wall:,.0f} documents/s; "
          f"peak memory {max(r['peak_mib'] for r in runs):.0f} MiB in all processes")
    print(f"kept {docs['kept']:,}, dropped {docs['dropped']:,}; tokens {manifest['tokens']['total']:,}")
    for step in manifest["steps"]:
        print(f"  {step['name']:<18} in {step['in']:>8,}  kept {step['kept']:>8,}  dropped {step['dropped']}")


if __name__ == "__main__":
    main()
