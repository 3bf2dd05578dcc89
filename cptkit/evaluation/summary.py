"""The additions to summary.json beyond base/final/best: relative changes, probes, harness results.

All of it is computed from what the run wrote (eval records, probes.jsonl, harness results), so
`cptkit report` and summary.json always agree.

- `change`: for every eval set metric NAME_loss / NAME_ppl / NAME_bpb, (after / base - 1) for
  `best` and `final`; negative is better.
- `probes`: per probe set, the base, best and final aggregates, their differences (absolute, in
  the metric's own unit: a share of probes or nats), how many probes the model gained and lost
  under greedy exact match, and examples of answers that changed.
- `harness`: lm-evaluation-harness results per evaluated checkpoint folder name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from cptkit.durable import write_json

if TYPE_CHECKING:
    from cptkit.records import EvalRecord

EVAL_KINDS = ("_loss", "_ppl", "_bpb")
PROBE_METRICS = ("exact", "logprob", "logprob_tok", "choice")
CHANGED_EXAMPLES = 10


def is_eval_metric(key: str) -> bool:
    return key.endswith(EVAL_KINDS) and not key.startswith("probe_")


def relative_change(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return after / before - 1


def relative_changes(base: dict, other: dict) -> dict[str, float | None]:
    """{NAME_loss/ppl/bpb: other / base - 1} for the eval set metrics present in both."""
    return {k: relative_change(base.get(k), other.get(k)) for k in base if is_eval_metric(k) and k in other}


def probe_set_names(record: dict) -> list[str]:
    return [k[len("probe_") : -len("_exact")] for k in record if k.startswith("probe_") and k.endswith("_exact")]


def _probe_aggregates(record: dict, name: str) -> dict:
    return {m: record.get(f"probe_{name}_{m}") for m in PROBE_METRICS}


def _delta(a, b):
    return None if a is None or b is None else b - a


def changed_answers(base: list[dict], final: list[dict], limit: int = CHANGED_EXAMPLES) -> list[dict]:
    """Probes whose greedy exact match flipped or whose greedy text changed, flips first.

    Lost answers (right before, wrong after) lead: forgetting is what a user must see first.
    Within each group the largest change in the answer's log-likelihood per token comes first.
    """
    before = {r["id"]: r for r in base}
    out = []
    for r in final:
        b = before.get(r["id"])
        if b is None or (b["exact"] == r["exact"] and b["greedy"] == r["greedy"]):
            continue
        kind = "lost" if b["exact"] and not r["exact"] else "gained" if r["exact"] and not b["exact"] else "text"
        out.append({
            "id": r["id"], "prompt": r["prompt"], "answer": r["answer"], "kind": kind,
            "base_greedy": b["greedy"], "final_greedy": r["greedy"],
            "base_exact": b["exact"], "final_exact": r["exact"],
            "base_logprob_tok": b["logprob_tok"], "final_logprob_tok": r["logprob_tok"],
        })
    order = {"lost": 0, "gained": 1, "text": 2}
    out.sort(key=lambda c: (order[c["kind"]], -abs(c["final_logprob_tok"] - c["base_logprob_tok"]), c["id"]))
    return out[:limit]


def probe_summary(base: dict, best: dict, final: dict, rows: list[dict]) -> dict:
    """summary.json's `probes`: per set, aggregates at base/best/final and what changed.

    `base`, `best`, `final` are eval records (with `step`); `rows` the lines of probes.jsonl.
    """
    out = {}
    for name in probe_set_names(base):
        at = {which: _probe_aggregates(rec, name) for which, rec in (("base", base), ("best", best), ("final", final))}
        base_rows = [r for r in rows if r["set"] == name and r["step"] == base.get("step")]
        final_rows = [r for r in rows if r["set"] == name and r["step"] == final.get("step")]
        final_by_id = {r["id"]: r for r in final_rows}
        pairs = [(b, final_by_id[b["id"]]) for b in base_rows if b["id"] in final_by_id]
        out[name] = {
            "probes": len(base_rows),
            **at,
            "delta": {m: _delta(at["base"][m], at["final"][m]) for m in PROBE_METRICS},
            "gained": sum(1 for b, f in pairs if f["exact"] and not b["exact"]),
            "lost": sum(1 for b, f in pairs if b["exact"] and not f["exact"]),
            "changed": changed_answers(base_rows, final_rows),
        }
    return out


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def complete_summary(summary: dict, run_dir: Path, base: EvalRecord | None, best: EvalRecord | None,
                     final: EvalRecord | None) -> dict:
    """Add `change` and `probes` to a run's summary (keeps every existing key)."""
    base, best, final = (r.to_json() if r is not None else {} for r in (base, best, final))
    summary["change"] = {
        "best": relative_changes(summary.get("base", {}), summary.get("best", {})),
        "final": relative_changes(summary.get("base", {}), summary.get("final", {})),
    }
    summary["probes"] = probe_summary(base, best, final, read_jsonl(run_dir / "probes.jsonl"))
    # Harness results merged by `cptkit eval --harness` before this run ended are kept.
    previous = run_dir / "summary.json"
    kept = json.loads(previous.read_text()).get("harness", {}) if previous.is_file() else {}
    summary["harness"] = {**kept, **summary.get("harness", {})}
    return summary


def merge_harness(run_dir: Path, checkpoint_name: str, results: dict) -> Path:
    """Put one checkpoint's lm-evaluation-harness results into RUN_DIR/summary.json."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.setdefault("harness", {})[checkpoint_name] = results
    write_json(path, summary)
    return path
