"""Writing one prepared unit from its parts and the corpus-wide decisions.

Streams the parts in order: each kept document's tokens go to the train or eval shards, its
final text to `curated/`; each document dropped at assembly goes to `dropped/corpus.jsonl.gz`
with its step and reason (and, for a duplicate, the id of the document it repeats); the
per-document steps' drops are the parts' own files, copied as they are. Then the manifest:
documents, per-step counts (each step's `in` is the previous step's `kept`), PII counts per
type, bad input, tokens, shards and a content hash of every token written.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cptkit.data.decide import BUCKET_NAMES, DROPPED, EVAL, REASONS, Unit
from cptkit.data.documents import BadInput
from cptkit.data.pipelines import document_steps, find
from cptkit.data.shards import ShardWriter
from cptkit.data.steps import StepStats

CURATED_PART_BYTES = 512 * 2**20


class _Rotating:
    """gzip JSON lines split into numbered files of about `limit` uncompressed bytes."""

    def __init__(self, folder: Path, limit: int = CURATED_PART_BYTES):
        self.folder, self.limit, self.index, self.size, self.fh = folder, limit, 0, 0, None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.fh is None or self.size >= self.limit:
            self.close()
            self.fh = gzip.open(self.folder / f"part-{self.index:05d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
            self.index, self.size = self.index + 1, 0
        line = json.dumps(record, ensure_ascii=False) + "\n"
        self.size += len(line)
        self.fh.write(line)

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _documents(unit: Unit) -> Iterator[tuple[int, dict, np.ndarray]]:
    """(row, record, tokens) of every document the workers kept, in order."""
    row = 0
    for folder, size in zip(unit.parts, unit.part_sizes):
        if size == 0:
            continue
        with np.load(folder / "arrays.npz") as data:
            offsets = data["offsets"]
        tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(unit.dtype), mode="r")
        with gzip.open(folder / "docs.jsonl.gz", "rt", encoding="utf-8") as fh:
            for j, line in enumerate(fh):
                yield row + j, json.loads(line), tokens[offsets[j] : offsets[j + 1]]
        del tokens
        row += size


def ids_of(unit: Unit, rows: set[int]) -> dict[int, str]:
    """The ids of some of a unit's documents (to name what a dropped duplicate repeats)."""
    out: dict[int, str] = {}
    if not rows:
        return out
    last = max(rows)
    for row, record, _ in _documents(unit):
        if row in rows:
            out[row] = record["id"]
        if row >= last:
            break
    return out


def write_unit(unit: Unit, units: dict[str, Unit], tmp: Path, shard_tokens: int) -> dict:
    """Write shards, curated and dropped documents into `tmp`; return the manifest's counts."""
    writers = {s: ShardWriter(tmp / s, np.dtype(unit.dtype), shard_tokens) for s in ("train", "eval")}
    curated = _Rotating(tmp / "curated")
    (tmp / "dropped").mkdir(parents=True, exist_ok=True)
    for folder in unit.parts:
        shutil.copyfile(folder / "dropped.jsonl.gz", tmp / "dropped" / f"{folder.name}.jsonl.gz")
    refs: dict[str, set[int]] = {}
    for name, row in unit.dup_of.values():
        refs.setdefault(name, set()).add(row)
    names = {(n, r): i for n, rows in refs.items() if n != unit.plan.name for r, i in ids_of(units[n], rows).items()}
    own = refs.get(unit.plan.name, set())
    counts = {"train": 0, "eval": 0}
    tokens = {"train": 0, "eval": 0}
    text_bytes = {"train": 0, "eval": 0}
    with gzip.open(tmp / "dropped" / "corpus.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as dropped:
        for row, record, ids in _documents(unit):
            if row in own:
                names[(unit.plan.name, row)] = record["id"]
            split = unit.split[row]
            if split == DROPPED:
                step, reason = REASONS[int(unit.code[row])]
                out = {"id": record["id"], "text": record["text"], "step": step, "reason": reason}
                if row in unit.dup_of:
                    name, first = unit.dup_of[row]
                    out["duplicate_of"] = names.get((name, first), f"{name}#{first}")
                dropped.write(json.dumps(out, ensure_ascii=False) + "\n")
                continue
            name = "eval" if split == EVAL else "train"
            n_bytes = int(unit.arrays["n_bytes"][row])
            writers[name].add(ids, n_bytes)
            counts[name] += 1
            tokens[name] += len(ids)
            text_bytes[name] += n_bytes
            out = {"id": record["id"], "text": record["text"], "split": name, **record.get("meta", {})}
            if unit.bucket[row] >= 0:
                out["perplexity_bucket"] = BUCKET_NAMES[int(unit.bucket[row])]
            curated.write(out)
    curated.close()
    shards = {s: w.close() for s, w in writers.items()}
    content = hashlib.sha256(b"".join(w.hasher.digest() for w in writers.values())).hexdigest()
    return {"counts": counts, "tokens": tokens, "text_bytes": text_bytes, "shards": shards, "content_hash": content}


def step_table(unit: Unit) -> tuple[list[dict], dict, BadInput, int]:
    """(steps, pii counts, bad input, documents read) merged over the parts and the decisions."""
    stats = {s.name: StepStats(s.name) for s in document_steps(unit.specs)}
    stats["tokenize"] = StepStats("tokenize")
    bad, read = BadInput(), 0
    for folder in unit.parts:
        part = json.loads((folder / "stats.json").read_text())
        read += part["read"]
        for entry in part["steps"]:
            stats[entry["name"]].merge(StepStats.from_json(entry))
        other = BadInput()
        other.counts.update(part["bad_counts"])
        other.samples = {k: list(v) for k, v in part["bad_samples"].items()}
        bad.merge(other)
    alive = unit.n
    for step in ("perplexity_select", "decontaminate", "dedup"):
        if find(unit.specs, "perplexity" if step == "perplexity_select" else step) is None:
            continue
        tally = StepStats(step, seen=alive)
        for code, (name, reason) in REASONS.items():
            if name == step:
                n = int((unit.code == code).sum())
                if n:
                    tally.dropped[reason] = n
        tally.kept = alive - sum(tally.dropped.values())
        alive = tally.kept
        stats[step] = tally
    pii = dict(stats["pii"].counts) if "pii" in stats else {}
    return [s.to_json() for s in stats.values()], pii, bad, read
