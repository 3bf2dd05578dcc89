"""cptkit's bits per byte against lm-evaluation-harness's loglikelihood_rolling, on the same text.

Writes a local lm-eval task over a JSONL file of documents, evaluates a model folder with
`cptkit eval ... --harness` (which runs cptkit's own perplexity first, then lm-eval), and prints
both figures, their ratio, and the tokens each side predicted. cptkit scores [start] + text + EOS
per document; lm-eval scores the text after a start token, so cptkit predicts one more token per
document (its EOS) over the same byte count.

    python benchmarks/bpb_agreement.py --model runs/demo/final --text runs/demo/corpus/general.jsonl --docs 200
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a Hugging Face model folder")
    parser.add_argument("--text", required=True, help="JSONL with a 'text' field per line")
    parser.add_argument("--docs", type=int, default=200, help="documents taken from the start of --text")
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()

    from cptkit.config import load_config
    from cptkit.evaluation.harness import write_rolling_bpb_task
    from cptkit.evaluation.run import evaluate_checkpoint

    work = Path(tempfile.mkdtemp(prefix="bpb-agreement-"))
    docs = []
    with open(args.text, encoding="utf-8") as fh:
        for line in fh:
            if len(docs) == args.docs:
                break
            docs.append(json.loads(line)["text"])
    text = work / "text.jsonl"
    text.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    write_rolling_bpb_task(work / "tasks", "agreement_bpb", text)
    cfg = load_config(None, raw={
        "model": {"name_or_path": args.model, "dtype": "float32"},
        "data": {"seq_len": args.seq_len, "domain": {"paths": [str(text)]}, "eval": {"same": {"paths": [str(text)]}}, "heldout_fraction": 0.2,
                 "num_workers": 1},
        "train": {"global_batch_tokens": args.seq_len * 4, "micro_batch_size": 4},
        "eval": {"max_tokens": 10**9, "probes": {}},
        "output_dir": str(work / "run"),
    })
    r = evaluate_checkpoint(cfg, Path(args.model), harness=str(work / "tasks"))
    ours, theirs = r["same_bpb"], r["harness"]["tasks"]["agreement_bpb"]["bits_per_byte"]
    print(f"{len(docs)} documents, {sum(len(d.encode()) for d in docs):,} bytes, context {args.seq_len} tokens")
    print(f"  cptkit bits/byte  {ours:.4f}  ({r['same_tokens']:,} predicted tokens, EOS included)")
    print(f"  lm-eval bits/byte {theirs:.4f}  ({r['same_tokens'] - len(docs):,} predicted tokens, no EOS)")
    print(f"  ratio cptkit / lm-eval {ours / theirs:.4f} ({(ours / theirs - 1):+.2%})")


if __name__ == "__main__":
    main()
