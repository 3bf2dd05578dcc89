"""Curation throughput per language: the `web` and `medical` pipelines on Korean, Chinese and English.

The corpora are generated (tests/corpora.py: Korean medical and legal prose, Chinese and English
clinical prose, composed from templates; never committed), one JSONL folder per language, and a
byte-level BPE tokenizer is trained on a sample of all three. Each run is the real command,
`cptkit prepare --force`, in a fresh process, with every language-dependent step told the
source's language (Korean: eojeol and Korean stop words and thresholds; Chinese: jieba words).
It prints MB/s and MB per CPU second (user + system of every process; the steadier figure on a
shared machine) per language and pipeline.

    python benchmarks/curation_languages.py                       # 20 MB per language, 2 workers
    python benchmarks/curation_languages.py --mb 2 --languages ko en --pipelines medical
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.curation_measure import run_measured, tokenizer_model  # noqa: E402
from cptkit.data.pipelines import RECIPES  # noqa: E402
from tests.corpora import chinese_documents, english_documents, korean_documents  # noqa: E402

GENERATORS = {"ko": korean_documents, "zh": chinese_documents, "en": english_documents}
TOLD = ("length", "gopher_quality", "gopher_repetition", "c4", "fineweb", "pii")  # take `language`


def told(recipe: str, language: str) -> list:
    """The named recipe's steps, each language-dependent one given `language` explicitly."""
    out = []
    for item in copy.deepcopy(RECIPES[recipe]):
        name, params = (item, {}) if isinstance(item, str) else next(iter(item.items()))
        if name == "language":
            params["languages"] = [language]
        elif name in TOLD:
            params["language"] = [language]
        out.append({name: params} if params else name)
    return out


def write_language(folder: Path, language: str, mb: float, files: int = 4) -> int:
    """About `mb` MB of generated documents in `files` JSONL files; returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    target, written, seed = mb * 2**20, 0, 0
    handles = [open(folder / f"{language}-{i:02d}.jsonl", "w", encoding="utf-8") for i in range(files)]
    try:
        while written < target:
            for j, doc in enumerate(GENERATORS[language](500, seed=seed)):
                line = json.dumps({"id": f"{seed}-{doc['id']}", "text": doc["text"]}, ensure_ascii=False) + "\n"
                handles[j % files].write(line)
                written += len(line.encode("utf-8"))
            seed += 1
    finally:
        for h in handles:
            h.close()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=20.0, help="corpus size per language in MB (default 20)")
    ap.add_argument("--workers", type=int, default=2, help="data.num_workers (default 2)")
    ap.add_argument("--languages", nargs="+", default=list(GENERATORS), choices=list(GENERATORS))
    ap.add_argument("--pipelines", nargs="+", default=["web", "medical"], choices=["web", "medical"])
    ap.add_argument("--repeats", type=int, default=1, help="runs per cell; the median is reported")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="cptkit-lang-bench-"))
    sizes = {lang: write_language(folder / "corpus" / lang, lang, args.mb) for lang in args.languages}
    sample = folder / "sample.jsonl"
    with open(sample, "w", encoding="utf-8") as out:
        for lang in args.languages:
            out.writelines(json.dumps({"text": d["text"]}, ensure_ascii=False) + "\n" for d in GENERATORS[lang](300))
    model = tokenizer_model(folder / "model", sample)
    rows = []
    for lang in args.languages:
        for recipe in args.pipelines:
            rows.append(_measure(folder, model, lang, recipe, sizes[lang], args))
    print(f"\n{'language':<9}{'pipeline':<9}{'MB':>7}{'MB/s':>8}{'MB per CPU s':>14}{'kept':>10}{'read':>10}")
    for r in rows:
        print(f"{r['language']:<9}{r['pipeline']:<9}{r['mb']:>7.1f}{r['mb_s']:>8.2f}{r['mb_cpu_s']:>14.2f}"
              f"{r['kept']:>10,}{r['read']:>10,}")


def _measure(folder: Path, model: Path, lang: str, recipe: str, size: int, args) -> dict:
    run = folder / f"run-{lang}-{recipe}"
    cfg = {
        "model": {"name_or_path": str(model)},
        "data": {"seq_len": 1024, "domain": {"paths": [str(folder / "corpus" / lang)], "id_field": "id",
                                             "pipeline": told(recipe, lang)},
                 "num_workers": args.workers, "part_bytes": 8 * 2**20},
        "output_dir": str(run),
    }
    path = folder / f"{lang}-{recipe}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    runs = [run_measured([sys.executable, "-m", "cptkit", "prepare", str(path), "--force"],
                         env={"HF_HUB_OFFLINE": "1"}) for _ in range(args.repeats)]
    manifest = json.loads((run / "data" / "domain" / "manifest.json").read_text())
    wall, cpu, mb = statistics.median(r["wall_s"] for r in runs), statistics.median(r["cpu_s"] for r in runs), size / 2**20
    print(f"{lang} {recipe}: {mb:.1f} MB in {wall:.1f} s ({mb / wall:.2f} MB/s), {cpu:.0f} CPU s "
          f"({mb / cpu:.2f} MB per CPU second); steps: "
          + ", ".join(f"{s['name']} {s['kept']:,}/{s['in']:,}" for s in manifest["steps"]), flush=True)
    return {"language": lang, "pipeline": recipe, "mb": mb, "mb_s": mb / wall, "mb_cpu_s": mb / cpu,
            "kept": manifest["documents"]["kept"], "read": manifest["documents"]["read"]}


if __name__ == "__main__":
    main()
