"""Start-up: from `cptkit train` to the end of the first optimizer step, phase by phase.

The demo's small Llama (2.56M parameters) and corpora, shards already prepared (`cptkit
prepare` once, as a user does before training), default evaluation and probes. Each round
starts a fresh `python -m cptkit train` whose phases are timed from inside: the child wraps
the functions the command calls (config, the shard check, the model, the two start-up checks,
the step-0 evaluation, the first step) with wall-clock timers, then runs the command's own
`main`; the parent times the whole from starting the process to the first step's end.
"Imports" is the time until the training code is loaded; "other" is what no phase covers
(interpreter start, wrapping the model, building the run state).

Each round times two runs: "first", with no kept step-0 record (the first run of a sweep), and
"later", which reuses the record the first one kept (`eval.reuse_base`).

    python benchmarks/startup.py                 # 3 rounds, medians per phase
    python benchmarks/startup.py --repeats 5
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

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, sys, time
t0 = time.perf_counter()
phases = {}
import cptkit.cli as cli
import cptkit.train.loop as loop
import cptkit.train.setup as setup
phases["imports"] = time.perf_counter() - t0

def timed(module, name, phase):
    real = getattr(module, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - start
    setattr(module, name, wrapper)

import cptkit.config
timed(cli, "_config", "config")
timed(setup, "prepared_data", "shard check (prepare, up to date)")
timed(setup, "load_tokenizer", "tokenizer")
timed(setup, "load_model", "model load")
timed(setup, "chunked_head_is_exact", "check: fused head")
timed(setup, "ensure_document_masking", "check: packed attention")
timed(setup, "eval_sets", "eval sets")
timed(loop, "perplexity", "step-0 eval: perplexity")
timed(loop, "score_probe_sets", "step-0 eval: probes")
timed(setup.base_scores, "base_key", "step-0 key (weights, windows, code hashed)")
timed(loop.base_scores, "load", "step-0 record read")
real_step = loop.train_step
def first_step(run, rows):
    start = time.perf_counter()
    out = real_step(run, rows)
    phases["first step"] = time.perf_counter() - start
    print("FIRST_STEP " + json.dumps(phases), flush=True)
    sys.exit(0)
loop.train_step = first_step
cli.main(["train", sys.argv[1]])
'''


def build(folder: Path) -> Path:
    """The demo's corpora and starting model, a config, and its shards prepared once."""
    sys.path.insert(0, str(ROOT))
    from cptkit.demo import FULL, build_base_init, build_corpora

    general, code = build_corpora(folder / "corpus", FULL)
    model = build_base_init(folder / "model", [general, code], FULL)
    cfg = {
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"seq_len": 512, "domain": {"paths": [str(code)], "id_field": "id"},
                 "general": {"paths": [str(general)], "id_field": "id"}, "prepared_dir": str(folder / "shards")},
        "train": {"lr": 1e-3, "global_batch_tokens": 512 * 16, "micro_batch_size": 4, "max_steps": 10},
        "output_dir": str(folder / "run"),
    }
    path = folder / "startup.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = subprocess.run([sys.executable, "-m", "cptkit", "prepare", str(path)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"prepare failed:\n{done.stderr[-3000:]}")
    return path


def one_round(config: Path, folder: Path, first: bool) -> dict:
    script = folder / "startup_child.py"
    script.write_text(CHILD)
    if first:
        subprocess.run(["rm", "-rf", str(folder / "shards" / "base-scores")], check=True)
    for run in (folder / "run").glob("*"):  # a fresh run folder each round
        subprocess.run(["rm", "-rf", str(run)], check=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("FIRST_STEP "):
            total = time.perf_counter() - started
            phases = json.loads(line[len("FIRST_STEP "):])
            break
    else:
        sys.exit(f"the run ended before its first step:\n{proc.stderr.read()[-3000:]}")
    proc.wait()
    phases["other"] = total - sum(phases.values())
    phases["total"] = total
    return phases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = p.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="cptkit-startup-"))
    config = build(folder)
    rounds = [(one_round(config, folder, True), one_round(config, folder, False)) for _ in range(args.repeats)]
    names = list(dict.fromkeys([*rounds[0][0], *rounds[0][1]]))
    print(f"`cptkit train` to the end of its first optimizer step, {args.repeats} rounds (seconds, median; "
          "first run of a sweep | a later run reusing the step-0 record):")
    for name in names:
        cells = []
        for side in (0, 1):
            values = [r[side].get(name, 0.0) for r in rounds]
            cells.append(f"{statistics.median(values):6.2f} ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"  {name:44s} {cells[0]:28s} | {cells[1]}")

if __name__ == "__main__":
    main()
