"""Data selection: 10% of the domain corpus chosen by `cptkit select` vs 10% at random vs all of it.

On the demo's data (general English from the standard library's docs; the domain is the
standard library's Python code, one module per document; `cptkit.demo` builds both and the base
model), a small Llama is pre-trained on the general text. The code corpus is then split, by a
fixed hash of each module's path:

    target area   the internet-data packages (email, http, urllib, xml, html, json, xmlrpc,
                  wsgiref): 20% of their modules are the target sample given to `select
                  --target`, 30% are the held-out `area` eval set, 50% stay in the pool
    rest          5% of the other modules are the held-out `code` eval set, 95% go to the pool

From the pool, `cptkit select` keeps 10% of the bytes by similarity (TF-IDF cosine to the target
centroid), by mix (equal-weight ranks of similarity, novelty under the base model, diversity),
and at random. Each selection, and the whole pool, is continued-pre-trained from the base at
the same number of steps (5% general replay), and evaluated before and after on `area`,
`code` and `general` held-out text.

    python benchmarks/selection.py --out runs/selection            # about 10-15 minutes on 2 busy CPU cores
    python benchmarks/selection.py --out runs/selection --quick    # about 6 minutes: a smaller vocabulary, half the tokens

Writes OUT/selection.md (the table) and OUT/selection.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cptkit.demo import DemoSize, build_base_init, build_corpora  # noqa: E402

SIZES = {
    "full": DemoSize(vocab=2048, hidden=64, layers=2, heads=2, seq_len=128, batch_rows=16, micro=8,
                     pretrain_tokens=200_000, cpt_tokens=120_000, code_files=10_000, eval_tokens=8_000),
    "quick": DemoSize(vocab=1024, hidden=64, layers=2, heads=2, seq_len=128, batch_rows=16, micro=8,
                      pretrain_tokens=100_000, cpt_tokens=60_000, code_files=10_000, eval_tokens=6_000),
}
AREA = ("email", "http", "urllib", "xml", "html", "json", "xmlrpc", "wsgiref")
PRETRAIN_LR, CPT_LR, REPLAY, FRACTION = 3e-3, 1e-3, 0.05, 0.10


def bucket(doc_id: str) -> float:
    """A fixed number in [0, 1) per module path: the split does not depend on file order."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") / 2.0**64


def split_corpora(folder: Path, general: Path, code: Path) -> dict[str, Path]:
    """Write target / area-eval / code-eval / pool / general-train / general-eval JSONL files."""
    names = ("target", "area", "code_eval", "pool", "general_train", "general_eval")
    files = {n: open(folder / f"{n}.jsonl", "w", encoding="utf-8") for n in names}
    with open(code, encoding="utf-8") as fh:
        for line in fh:
            doc_id = json.loads(line)["id"]
            u = bucket(doc_id)
            if doc_id.split("/")[0] in AREA:
                name = "target" if u < 0.2 else "area" if u < 0.5 else "pool"
            else:
                name = "code_eval" if u < 0.05 else "pool"
            files[name].write(line)
    with open(general, encoding="utf-8") as fh:
        for line in fh:
            files["general_eval" if bucket(json.loads(line)["id"]) < 0.05 else "general_train"].write(line)
    for f in files.values():
        f.close()
    return {n: folder / f"{n}.jsonl" for n in names}


def run_config(model: Path, out: Path, domain: Path, files: dict[str, Path], size: DemoSize, tokens: int,
               lr: float, cpt: bool) -> dict:
    # The domain eval set is the target area's held-out text (`area` in the table).
    general_eval = {"paths": [str(files["general_eval"])], "id_field": "id"}
    evals = {"domain": general_eval}
    if cpt:
        evals = {"domain": {"paths": [str(files["area"])], "id_field": "id"},
                 "code": {"paths": [str(files["code_eval"])], "id_field": "id"}, "general": general_eval}
    cfg = {
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"seq_len": size.seq_len, "domain": {"paths": [str(domain)], "id_field": "id"},
                 "eval": evals, "num_workers": 1},
        "train": {"lr": lr, "schedule": "cosine", "warmup_ratio": 0.05, "min_lr_ratio": 0.1, "weight_decay": 0.1,
                  "global_batch_tokens": size.batch_rows * size.seq_len, "micro_batch_size": size.micro,
                  "max_tokens": tokens, "log_every": 10},
        "checkpoint": {"every_steps": 10**6, "keep_last": 1, "keep_best": 0, "metric": "domain_ppl"},
        "eval": {"every_steps": 10**6, "max_tokens": size.eval_tokens, "probes": {}},  # before and after only
        "output_dir": str(out),
    }
    if cpt:
        cfg["data"]["general"] = {"paths": [str(files["general_train"])], "id_field": "id"}
        cfg["mix"] = {"replay_ratio": REPLAY}
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/selection")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from cptkit.config import load_config
    from cptkit.select.run import SelectOptions, select
    from cptkit.train.loop import train

    size, out = SIZES["quick" if args.quick else "full"], Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    general, code = build_corpora(out / "corpus", size)
    files = split_corpora(out / "corpus", general, code)
    init = build_base_init(out / "base-init", [general, code], size)
    train(load_config(None, raw=run_config(init, out / "base", files["general_train"], files, size,
                                           size.pretrain_tokens, PRETRAIN_LR, cpt=False)))
    base = out / "base" / "final"

    selections = {"all (100%)": files["pool"]}
    pool_cfg = load_config(None, raw=run_config(base, out / "select", files["pool"], files, size, 1, CPT_LR, cpt=True))
    picked = {}
    for label, by in (("similarity 10%", "similarity"), ("mix 10%", "mix"), ("random 10%", "random")):
        path = out / "select" / by / "selected.jsonl"
        manifest = select(pool_cfg, SelectOptions(fraction=FRACTION, by=by, out=path, target=files["target"]))
        selections[label], picked[label] = path, manifest
    rows = {}
    for label, path in selections.items():
        run = out / "cpt" / label.split()[0]
        summary = train(load_config(None, raw=run_config(base, run, path, files, size, size.cpt_tokens, CPT_LR, cpt=True)))
        manifest = json.loads((run / "data" / "domain" / "manifest.json").read_text())
        rows[label] = {"summary": summary, "train_tokens": manifest["tokens"]["train"],
                       "documents": manifest["documents"]["kept"],
                       "area_docs": sum(1 for line in open(path) if json.loads(line)["id"].split("/")[0] in AREA)}
    report(out, rows, picked, size, time.perf_counter() - t0)


def report(out: Path, rows: dict, picked: dict, size: DemoSize, wall: float) -> None:
    first = next(iter(rows.values()))["summary"]["base"]
    head = ("| training data | docs | area-package docs | train tokens | epochs | area ppl | code ppl | general ppl |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    lines = [f"| base model (before) | | | | | {first['domain_ppl']:.2f} | {first['code_ppl']:.2f} | "
             f"{first['general_ppl']:.2f} |"]
    for label, r in rows.items():
        f = r["summary"]["final"]
        epochs = r["summary"]["tokens_trained"] * (1 - REPLAY) / max(r["train_tokens"], 1)
        lines.append(f"| {label} | {r['documents']} | {r['area_docs']} | {r['train_tokens']:,} | {epochs:.2f} | "
                     f"{f['domain_ppl']:.2f} | {f['code_ppl']:.2f} | {f['general_ppl']:.2f} |")
    table = head + "\n".join(lines)
    note = (f"\n\nEqual steps: {next(iter(rows.values()))['summary']['tokens_trained']:,} training tokens per run "
            f"({REPLAY:.0%} general replay), lr {CPT_LR}, model hidden {size.hidden} x {size.layers} layers, "
            f"seq_len {size.seq_len}; wall {wall / 60:.1f} min.")
    (out / "selection.md").write_text(table + note + "\n")
    (out / "selection.json").write_text(json.dumps({"rows": rows, "selections": picked}, indent=2, default=str))
    print("\n" + table + note)


if __name__ == "__main__":
    main()
