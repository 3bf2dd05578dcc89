"""Probe scoring cost: batched (cptkit) against one probe at a time (baseline), side by side.

Scores the shipped general-knowledge set (answer and distractor log-likelihoods plus a greedy
continuation per probe) on a model folder, alternating the two ways in the same process so
machine noise hits both, and prints median seconds and the ratio. Both must give the same numbers.

    python benchmarks/probes.py --model runs/demo/final
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a Hugging Face model folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cptkit.evaluation.probes import load_probe_sets, score_probe_sets
    from cptkit.train.checks import chunked_head_is_exact

    lm = AutoModelForCausalLM.from_pretrained(args.model).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    device = torch.device("cpu")
    chunk = 1024 if chunked_head_is_exact(lm, device) else None
    sets = load_probe_sets({"general": "builtin:general"})
    times: dict[str, list[float]] = {"one at a time": [], "cptkit batched": []}
    results = {}
    for _ in range(args.repeats):
        for name, batch in (("one at a time", 1), ("cptkit batched", args.batch_size)):
            started = time.perf_counter()
            scores, rows = score_probe_sets(lm, tok, sets, device, contextlib.nullcontext, chunk=chunk,
                                            batch_size=batch, new_tokens=args.new_tokens)
            times[name].append(time.perf_counter() - started)
            results[name] = (scores, [r["greedy"] for r in rows])
    a, b = results["one at a time"], results["cptkit batched"]
    same_text = a[1] == b[1]
    max_diff = max(abs(a[0][k] - b[0][k]) for k in a[0] if a[0][k] is not None)
    n = len(sets[0].probes)
    print(f"{n} probes, {sum(len(p.distractors) + 1 for p in sets[0].probes)} scored answers, "
          f"{args.new_tokens} greedy tokens each, torch threads {torch.get_num_threads()}")
    for name, ts in times.items():
        print(f"  {name:<16} median {statistics.median(ts):.2f} s  ({', '.join(f'{t:.2f}' for t in ts)})")
    ratio = statistics.median(times["one at a time"]) / statistics.median(times["cptkit batched"])
    print(f"  speed-up of batching: {ratio:.1f}x; same greedy text: {same_text}; "
          f"largest aggregate difference {max_diff:.2e}")


if __name__ == "__main__":
    main()
