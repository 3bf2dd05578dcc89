"""One part of a source, in a worker: read, run the per-document steps, tokenize, sign, write.

`process_part` is the whole of a worker's job and needs nothing from the parent but its task,
so the same function runs in a local process pool or as a Ray task. It streams the part in
batches (bounded memory whatever the part's size) and writes, into a temporary folder that is
renamed to `part-NNNNN` only when complete:

    docs.jsonl.gz     kept documents {"id", "text", meta fields...} in input order
    dropped.jsonl.gz  documents dropped here, with the step and the reason (scrubbed by the
                      pipeline's pii step, if it has one, wherever they were dropped)
    tokens.bin        their token ids back to back ([start] + ids + [eos] each)
    arrays.npz        per kept document: token offsets, text bytes, held-out draw, reference-LM
                      perplexity and, when the task asks for signatures, exact hash and band keys
    stats.json        documents read, per-step counts, bad input

A crash leaves at most a temporary folder, which the next run removes and redoes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cptkit.data.config import MinHashConfig
from cptkit.data.documents import BadInput, Document
from cptkit.data.parts import Part, read_part
from cptkit.data.pii import Scrubber
from cptkit.data.pipelines import StepSpec, build_steps, document_steps, step_params
from cptkit.data.readers import Limits
from cptkit.data.signatures import MinHasher, exact_hash, normalize
from cptkit.data.steps import StepStats, run_steps
from cptkit.data.tokenize import TokenizerSpec, make_encoder

BATCH_DOCS = 256
BATCH_BYTES = 1 << 20


@dataclass(frozen=True)
class PartTask:
    part: Part
    source: Any  # SourceConfig
    name: str  # the prepared unit's name (source name or eval-NAME)
    where: str  # the source's dotted path in the config, for messages
    steps: tuple[StepSpec, ...]
    folder: str  # the source's work folder
    tokenizer: TokenizerSpec
    dtype: str
    minhash: MinHashConfig | None  # the run's MinHash shape, when signatures are needed
    max_bytes: int
    threads: int = 0


@dataclass
class StepContext:
    """What a step may use besides its parameters."""

    encode: Any  # list[str] -> list[list[int]] with the model's tokenizer
    threads: int


_cache: dict[str, Any] = {}  # per worker process: tokenizers, built pipelines, hashers


def _cached(key: str, make):
    if key not in _cache:
        _cache[key] = make()
    return _cache[key]


def heldout_draw(doc_id: str) -> float:
    """A stable uniform draw from the document's id, so the held-out set does not move between runs."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    return h / 2**64


def part_folder(folder: str | Path, index: int) -> Path:
    return Path(folder) / f"part-{index:05d}"


def process_part(task: PartTask) -> dict:
    """Run one part to completion; return its stats (also written to stats.json)."""
    final = part_folder(task.folder, task.part.index)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    encode = _cached(f"tok:{task.tokenizer}", lambda: make_encoder(task.tokenizer))
    ctx = StepContext(encode=encode, threads=task.threads)
    key = json.dumps([s.to_json() for s in task.steps], sort_keys=True) + f"|{task.threads}"
    steps = _cached(f"steps:{key}", lambda: build_steps(list(task.steps), ctx))
    hasher = MinHasher.from_config(task.minhash) if task.minhash else None
    stats = {s.name: StepStats(s.name) for s in document_steps(list(task.steps))}
    stats["tokenize"] = StepStats("tokenize")
    pii_params = step_params(list(task.steps), "pii")
    scrubber = _cached(f"scrub:{key}", lambda: Scrubber(pii_params)) if pii_params is not None else None
    writer = _PartWriter(tmp, np.dtype(task.dtype), task.tokenizer, hasher, scrubber)
    bad = BadInput()
    lim = Limits(task.source.text_field, task.source.id_field, task.max_bytes)
    docs = read_part(task.part, task.source, lim, bad, task.name, task.where)
    read = 0
    with writer:
        for batch in _batches(docs):
            read += len(batch)
            kept = run_steps(steps, batch, stats, writer.drop)
            if kept:
                writer.add(kept, encode([d.text for d in kept]), stats["tokenize"])
    result = {
        "part": task.part.index, "read": read, "kept": writer.n,
        "steps": [s.to_json() for s in stats.values()], "bad_input": bad.to_json(),
        "bad_counts": dict(bad.counts), "bad_samples": bad.samples,
    }
    (tmp / "stats.json").write_text(json.dumps(result))
    if final.exists():  # a retried task whose first attempt finished: same content, replace it
        shutil.rmtree(final)
    os.replace(tmp, final)  # the part now counts as finished
    return result


def _batches(docs):
    batch, size = [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text)
        if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _PartWriter:
    """Appends a part's kept documents, their tokens and signatures; records its drops."""

    def __init__(self, folder: Path, dtype: np.dtype, spec: TokenizerSpec, hasher: MinHasher | None,
                 scrubber: Scrubber | None = None):
        self.folder, self.dtype, self.spec, self.hasher = folder, dtype, spec, hasher
        self.scrubber = scrubber
        self.docs = gzip.open(folder / "docs.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
        self.dropped = gzip.open(folder / "dropped.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
        self.tokens = open(folder / "tokens.bin", "wb")
        self.n = 0
        self.offsets, self.n_bytes, self.draws, self.exact, self.ppl = [0], [], [], [], []
        self.bands: list[np.ndarray] = []

    def __enter__(self) -> _PartWriter:
        return self

    def __exit__(self, *exc) -> None:
        for fh in (self.docs, self.dropped, self.tokens):
            fh.close()
        if exc[0] is not None:
            return
        width = self.hasher.bands if self.hasher else 0
        np.savez(
            self.folder / "arrays.npz",
            offsets=np.asarray(self.offsets, dtype=np.int64),
            n_bytes=np.asarray(self.n_bytes, dtype=np.int64),
            draw=np.asarray(self.draws, dtype=np.float64),
            exact=np.asarray(self.exact, dtype=np.uint64),
            bands=np.asarray(self.bands, dtype=np.uint64).reshape(len(self.bands), width),
            ppl=np.asarray(self.ppl, dtype=np.float64),
        )

    def drop(self, doc: Document, step: str, reason: str) -> None:
        # A document dropped before the pipeline's pii step is scrubbed all the same: personal
        # data and secrets reach no output file (these replacements are not counted).
        text = self.scrubber.scrub(doc.text, Counter()) if self.scrubber is not None else doc.text
        record = {"id": doc.id, "text": text, "step": step, "reason": reason}
        self.dropped.write(json.dumps(record, ensure_ascii=False) + "\n")

    def add(self, docs: list[Document], encoded: list[list[int]], tally: StepStats) -> None:
        for doc, ids in zip(docs, encoded):
            tally.seen += 1
            if not ids:  # nothing between start and EOS
                tally.dropped["no_tokens"] += 1
                self.drop(doc, "tokenize", "no_tokens")
                continue
            tally.kept += 1
            arr = np.empty(len(ids) + 2, dtype=self.dtype)
            arr[0], arr[1:-1], arr[-1] = self.spec.start_id, ids, self.spec.eos_id
            self.tokens.write(arr.tobytes())
            self.offsets.append(self.offsets[-1] + len(arr))
            self.n_bytes.append(len(doc.text.encode("utf-8", "surrogatepass")))
            self.draws.append(heldout_draw(doc.id))
            if self.hasher is not None:
                norm = normalize(doc.text)
                self.exact.append(exact_hash(norm))
                self.bands.append(self.hasher.band_keys(norm))
            self.ppl.append(doc.meta.get("perplexity", np.nan))
            # The line is already the curated record, less its split: assembly appends that
            # without decoding the text again.
            record = {"id": doc.id, "text": doc.text, **doc.meta}
            self.docs.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.n += 1
