"""Cost of KL-to-the-base regularization: time per token and peak memory against plain training.

Side by side, on the same data, model, batch geometry and thread count, with the defaults
of `regularizer` (KL on every token, every step) and the bar of the issue: float32 weights,
micro batch 4, sequence 512 (16 sequences, 8,192 tokens per step):

    plain      `cptkit train`, no regularizer (the baseline)
    kl         regularizer.kind kl, frozen float32 reference (the default)
    kl-bf16    the same with the reference held in bfloat16

Runs alternate (plain, kl, kl-bf16, plain, ...) in fresh processes so machine noise hits all
sides; ratios are taken per round against that round's plain run, and medians are printed.
Time per token counts optimizer steps after the first `--warmup` ones: wall time (from
metrics.jsonl, what a user sees) and, beside it, the process's CPU time over the same steps,
which another job on the machine disturbs far less. Memory is the process's peak resident set
size (ru_maxrss), printed whole and above the process's resident size before the model is
loaded (interpreter and libraries), which is the stricter ratio. Targets: time <= 1.3x and
peak memory <= 1.3x plain. Each KL side also times the reference decoder's forward (wall time
inside `KLToReference.reference`): 1 + its share of plain time per token is a floor no KL run
with that reference can go under, before its output layer and the KL's softmax work.

    python benchmarks/kl_overhead.py                     # the demo's model (vocab 4096, 4 layers, 2.56M parameters)
    python benchmarks/kl_overhead.py --steps 8 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIDES = {
    "plain": {"kind": "none"},
    "kl": {"kind": "kl", "weight": 0.1},
    "kl-bf16": {"kind": "kl", "weight": 0.1, "reference_dtype": "bfloat16"},
}


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


SEQ_LEN, MICRO, ROWS = 512, 4, 16  # the bar: float32 weights, micro batch 4, sequence 512


def config(paths: dict, out: Path, steps: int, regularizer: dict) -> dict:
    return {
        "model": {"name_or_path": paths["model"], "dtype": "float32"},
        "data": {"seq_len": SEQ_LEN, "domain": {"paths": [paths["code"]], "id_field": "id"},
                 "general": {"paths": [paths["general"]], "id_field": "id"}, "heldout_fraction": 0.02,
                 "prepared_dir": paths["shards"]},
        "mix": {"replay_ratio": 0.05},
        "train": {"lr": 1e-3, "warmup_steps": 2, "global_batch_tokens": SEQ_LEN * ROWS,
                  "micro_batch_size": MICRO, "max_steps": steps},
        "regularizer": regularizer,
        "checkpoint": {"every_steps": 10**6, "keep_last": 1, "keep_best": 0},
        "eval": {"every_steps": 10**6, "max_tokens": 2048},
        "output_dir": str(out),
    }


def build(folder: Path) -> dict:
    from cptkit.config import load_config
    from cptkit.data.prepare import prepare
    from cptkit.demo import FULL, build_base_init, build_corpora

    general, code = build_corpora(folder / "corpus", FULL)
    model = build_base_init(folder / "model", [general, code], FULL)
    paths = {"general": str(general), "code": str(code), "model": str(model), "shards": str(folder / "shards")}
    prepare(load_config(None, raw=config(paths, folder / "prep", 1, {"kind": "none"})))  # tokenized once
    return paths


def side(args) -> None:
    # Everything a run imports is loaded before the baseline is taken, so "above base" is the
    # memory of the run itself: weights, optimizer state, activations, logits chunks, caches.
    import accelerate  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401

    import cptkit.train.loop as loop
    from cptkit.config import load_config
    from cptkit.regularizers.kl import KLToReference

    cpu: list[float] = []  # CPU seconds of each optimizer step
    ref: list[float] = []  # wall seconds of each optimizer step spent in the reference's forward
    in_ref = [0.0]  # the same, for the step under way
    real_step, real_reference = loop.train_step, KLToReference.reference

    def timed_step(run, rows):
        start, in_ref[0] = time.process_time(), 0.0
        try:
            return real_step(run, rows)
        finally:
            cpu.append(time.process_time() - start)
            ref.append(in_ref[0])

    def timed_reference(self, *args):
        start = time.perf_counter()
        try:
            return real_reference(self, *args)
        finally:
            in_ref[0] += time.perf_counter() - start

    loop.train_step, KLToReference.reference = timed_step, timed_reference
    baseline = rss_kb()
    paths = json.loads(Path(args.paths).read_text())
    out = Path(args.out)
    loop.train(load_config(None, raw=config(paths, out, args.steps, SIDES[args.side])))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    timed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][args.warmup:]
    tokens = sum(m["target_tokens"] for m in timed)
    seconds = sum(m["tokens"] / m["step"] / m["tokens_per_s"] for m in timed)
    print("RESULT " + json.dumps({"s_per_token": seconds / tokens, "cpu_s_per_token": sum(cpu[args.warmup:]) / tokens,
                                  "ref_s_per_token": sum(ref[args.warmup:]) / tokens,
                                  "peak_kb": peak, "baseline_kb": baseline}))


def report(results: dict[str, list[dict]], args) -> None:
    print(f"{args.steps - args.warmup} timed steps per run, {args.repeats} alternating rounds, "
          f"sequence {SEQ_LEN}, micro batch {MICRO}, float32 weights, "
          f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'':10}{'us/token':>10}{'CPU us/token':>14}{'peak RSS MB':>13}{'above base MB':>15}"
          f"{'time x':>8}{'CPU x':>8}{'peak x':>8}{'above x':>9}")
    base = results["plain"]

    def ratios(rs: list[dict], key) -> list[float]:
        return [key(r) / key(b) for r, b in zip(rs, base)]

    for name in SIDES:
        rs = results[name]
        print(f"{name:10}{statistics.median(r['s_per_token'] for r in rs) * 1e6:10.1f}"
              f"{statistics.median(r['cpu_s_per_token'] for r in rs) * 1e6:14.1f}"
              f"{statistics.median(r['peak_kb'] for r in rs) / 1024:13.0f}"
              f"{statistics.median(r['peak_kb'] - r['baseline_kb'] for r in rs) / 1024:15.0f}"
              f"{statistics.median(ratios(rs, lambda r: r['s_per_token'])):8.2f}"
              f"{statistics.median(ratios(rs, lambda r: r['cpu_s_per_token'])):8.2f}"
              f"{statistics.median(ratios(rs, lambda r: r['peak_kb'])):8.2f}"
              f"{statistics.median(ratios(rs, lambda r: r['peak_kb'] - r['baseline_kb'])):9.2f}")
    for name in list(SIDES)[1:]:
        wall = ratios(results[name], lambda r: r["s_per_token"])
        cpu = ratios(results[name], lambda r: r["cpu_s_per_token"])
        print(f"{name} / plain per token, each round: time {', '.join(f'{x:.2f}' for x in wall)}; "
              f"CPU {', '.join(f'{x:.2f}' for x in cpu)}")
        floor = [r["ref_s_per_token"] / b["s_per_token"] for r, b in zip(results[name], base)]
        print(f"{name}: the reference decoder's forward alone, as a share of plain time per token: "
              f"{statistics.median(floor):.2f} ({', '.join(f'{x:.2f}' for x in floor)}); "
              f"so no {name} run can be under {1 + statistics.median(floor):.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=14)
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
                cmd = [sys.executable, __file__, "--side", name, "--paths", str(paths_file), "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--out", str(tmp / f"{name}-{r}")]
                done = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                if done.returncode or not line:
                    sys.exit(f"{name} run failed:\n{done.stderr[-3000:]}")
                results[name].append(json.loads(line[0][7:]))
        report(results, args)


if __name__ == "__main__":
    main()
