"""Writing one prepared unit from its parts and the corpus-wide decisions.

Streams the parts in order: each kept document's tokens go to the train or eval shards, its
final text to `curated/part-NNNNN.jsonl.gz` (held-out documents of a training source to
`curated/heldout.jsonl.gz`); each document dropped at assembly goes to `dropped/corpus.jsonl.gz`
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

from cptkit.data.documents import BadInput
from cptkit.data.pipelines import document_steps, step_params
from cptkit.data.shards import ShardWriter
from cptkit.data.splits import (
    ASSEMBLY_DROPS,
    BUCKET_NAMES,
    DROPPED,
    EVAL,
    TRAIN,
    DocumentTable,
    DropCode,
)
from cptkit.data.steps import StepStats


def _documents(unit: DocumentTable) -> Iterator[tuple[int, str, np.ndarray]]:
    """(row, JSON line, tokens) of every document the workers kept, in order."""
    row = 0
    for folder, size in zip(unit.parts, unit.part_sizes):
        if size == 0:
            continue
        with np.load(folder / "arrays.npz") as data:
            offsets = data["offsets"]
        tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(unit.dtype), mode="r")
        with gzip.open(folder / "docs.jsonl.gz", "rt", encoding="utf-8") as fh:
            for j, line in enumerate(fh):
                yield row + j, line, tokens[offsets[j] : offsets[j + 1]]
        del tokens
        row += size


def ids_of(unit: DocumentTable, rows: set[int]) -> dict[int, str]:
    """The ids of some of a unit's documents (to name what a dropped duplicate repeats)."""
    out: dict[int, str] = {}
    if not rows:
        return out
    last = max(rows)
    for row, line, _ in _documents(unit):
        if row in rows:
            out[row] = json.loads(line)["id"]
        if row >= last:
            break
    return out


def _with_fields(line: str, fields: dict) -> str:
    """A JSON object line with more fields, spliced in so the (long) text is not re-encoded."""
    extra = json.dumps(fields, ensure_ascii=False)
    return line.rstrip()[:-1] + ", " + extra[1:] + "\n"


def write_unit(unit: DocumentTable, units: dict[str, DocumentTable], tmp: Path, shard_tokens: int) -> dict:
    """Write shards, curated and dropped documents into `tmp`; return the manifest's counts.

    A part whose documents all go to the unit's main split (train; eval for an eval set) is
    copied: its token file in bulk into the shards, its document file as the curated file.
    Other parts are rewritten line by line.
    """
    writers = {s: ShardWriter(tmp / s, np.dtype(unit.dtype), shard_tokens) for s in ("train", "eval")}
    for sub in ("curated", "dropped"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    for folder in unit.parts:
        shutil.copyfile(folder / "dropped.jsonl.gz", tmp / "dropped" / f"{folder.name}.jsonl.gz")
    refs: dict[str, set[int]] = {}
    for name, row in unit.dup_of.values():
        refs.setdefault(name, set()).add(row)
    names = {(n, r): i for n, rows in refs.items() for r, i in ids_of(units[n], rows).items()}
    main = EVAL if unit.plan.eval_only else TRAIN
    tally = {"counts": {"train": 0, "eval": 0}, "tokens": {"train": 0, "eval": 0}, "text_bytes": {"train": 0, "eval": 0}}
    dropped = gzip.open(tmp / "dropped" / "corpus.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
    heldout = None
    row = 0
    with dropped:
        for folder, size in zip(unit.parts, unit.part_sizes):
            rows = slice(row, row + size)
            row += size
            if size == 0:
                continue
            with np.load(folder / "arrays.npz") as data:
                offsets = data["offsets"]
            tokens = np.memmap(folder / "tokens.bin", dtype=np.dtype(unit.dtype), mode="r")
            split_name = "eval" if main == EVAL else "train"
            if (unit.split[rows] == main).all() and (unit.bucket[rows] < 0).all():
                writers[split_name].add_many(tokens, offsets, unit.arrays["n_bytes"][rows])
                shutil.copyfile(folder / "docs.jsonl.gz", tmp / "curated" / f"{folder.name}.jsonl.gz")
                _count(tally, split_name, size, int(offsets[-1]), int(unit.arrays["n_bytes"][rows].sum()))
                continue
            if heldout is None and not unit.plan.eval_only and (unit.split[rows] == EVAL).any():
                heldout = gzip.open(tmp / "curated" / "heldout.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
            with gzip.open(tmp / "curated" / f"{folder.name}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as cur:
                _rewrite(unit, folder, rows.start, tokens, offsets, writers, cur, heldout, dropped, names, tally)
            del tokens
    if heldout is not None:
        heldout.close()
    shards = {s: w.close() for s, w in writers.items()}
    content = hashlib.sha256(b"".join(w.hasher.digest() for w in writers.values())).hexdigest()
    return {**tally, "shards": shards, "content_hash": content}


def _count(tally: dict, split: str, docs: int, tokens: int, text_bytes: int) -> None:
    tally["counts"][split] += docs
    tally["tokens"][split] += tokens
    tally["text_bytes"][split] += text_bytes


def _rewrite(unit, folder, first_row, tokens, offsets, writers, curated, heldout, dropped, names, tally) -> None:
    """One part, document by document: shards, curated (or held-out) lines, assembly drops."""
    with gzip.open(folder / "docs.jsonl.gz", "rt", encoding="utf-8") as fh:
        for j, line in enumerate(fh):
            row = first_row + j
            split = unit.split[row]
            if split == DROPPED:
                record = json.loads(line)
                code = DropCode(int(unit.code[row]))
                out = {"id": record["id"], "text": record["text"], "step": code.step, "reason": code.reason}
                if row in unit.dup_of:
                    name, first = unit.dup_of[row]
                    out["duplicate_of"] = names.get((name, first), f"{name}#{first}")
                dropped.write(json.dumps(out, ensure_ascii=False) + "\n")
                continue
            name = "eval" if split == EVAL else "train"
            ids = tokens[offsets[j] : offsets[j + 1]]
            n_bytes = int(unit.arrays["n_bytes"][row])
            writers[name].add(ids, n_bytes)
            _count(tally, name, 1, len(ids), n_bytes)
            if unit.bucket[row] >= 0:
                line = _with_fields(line, {"perplexity_bucket": BUCKET_NAMES[int(unit.bucket[row])]})
            target = heldout if (split == EVAL and not unit.plan.eval_only) else curated
            target.write(line)


def step_table(unit: DocumentTable) -> tuple[list[dict], dict, BadInput, int]:
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
        if step_params(unit.specs, "perplexity" if step == "perplexity_select" else step) is None:
            continue
        tally = StepStats(step, seen=alive)
        for code in ASSEMBLY_DROPS:
            if code.step == step:
                n = int((unit.code == code).sum())
                if n:
                    tally.dropped[code.reason] = n
        tally.kept = alive - sum(tally.dropped.values())
        alive = tally.kept
        stats[step] = tally
    pii = dict(stats["pii"].counts) if "pii" in stats else {}
    return [s.to_json() for s in stats.values()], pii, bad, read
