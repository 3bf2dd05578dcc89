"""`cptkit prepare`: raw documents to tokenized, packed shards with a manifest, per source.

Data flows one way: readers -> (curation steps) -> held-out routing -> tokenizer workers ->
shards. Each source is built in a temporary folder and renamed into place only once its
manifest is written, so an interrupted prepare never leaves shards that look complete. A
fingerprint of the inputs (paths, sizes, modification times), the tokenizer files and the
settings decides whether existing shards can be reused as they are.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cptkit.config import Config, SourceConfig, expand_paths
from cptkit.data.documents import BadInput, Document
from cptkit.data.readers import read_file
from cptkit.data.shards import ShardWriter, token_dtype, windows_in
from cptkit.data.tokenize import TokenizerSpec, run_batches
from cptkit.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
BATCH_DOCS = 256
BATCH_BYTES = 1 << 20


@dataclass
class SourcePlan:
    """One prepared unit: a training source (maybe with a held-out split) or an eval set."""

    name: str  # folder name under the prepared dir
    role: str  # domain | general | eval
    source: SourceConfig
    heldout: bool  # route a slice of the documents to the eval split
    eval_only: bool = False  # every document goes to the eval split


def source_plans(cfg: Config) -> list[SourcePlan]:
    plans = []
    for role, sources in (("domain", cfg.domain_sources), ("general", cfg.general_sources)):
        heldout = role not in cfg.data.eval
        plans += [SourcePlan(s.name, role, s, heldout) for s in sources]
    plans += [
        SourcePlan(f"eval-{name}", "eval", src, heldout=False, eval_only=True)
        for name, src in cfg.data.eval.items()
    ]
    return plans


def save_tokenizer(cfg: Config, folder: Path) -> tuple[TokenizerSpec, str, int]:
    """Save the model's tokenizer where workers can load it; return spec, fingerprint, vocab size."""
    from cptkit.modeling import load_tokenizer

    tok = load_tokenizer(cfg.model)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    digest = hashlib.sha256()
    for f in sorted(tmp.iterdir()):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    use_backend = (folder / "tokenizer.json").is_file() and getattr(tok, "is_fast", False)
    spec = TokenizerSpec(str(folder), start, tok.eos_token_id, use_backend)
    if use_backend:
        use_backend = _backend_agrees(spec, tok)
        spec = TokenizerSpec(str(folder), start, tok.eos_token_id, use_backend)
    return spec, digest.hexdigest(), len(tok)


def _backend_agrees(spec: TokenizerSpec, tok) -> bool:
    """The raw tokenizers backend must give the same ids as the HF tokenizer on sample text."""
    from cptkit.data.tokenize import make_encoder

    sample = ["Hello world.\n  def f(x):\n\treturn x  # ünïcode 漢字 1234", " leading space"]
    return make_encoder(spec)(sample) == tok(sample, add_special_tokens=False)["input_ids"]


def fingerprint(plan: SourcePlan, files: list[Path], tokenizer_hash: str, cfg: Config) -> str:
    stats = []
    for f in files:
        st = f.stat()
        stats.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    key = {
        "version": FORMAT_VERSION,
        "files": stats,
        "source": {k: v for k, v in vars(plan.source).items() if k != "name"},
        "heldout": [plan.heldout, plan.eval_only, cfg.data.heldout_fraction, cfg.data.heldout_max_docs],
        "tokenizer": tokenizer_hash,
        "shard_tokens": cfg.data.shard_tokens,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_manifest(folder: Path) -> dict | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def prepare(cfg: Config, force: bool = False) -> dict[str, dict]:
    """Prepare every source of the config; return {folder name: manifest}."""
    root = cfg.prepared_dir
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted prepare
    spec, tok_hash, vocab = save_tokenizer(cfg, root / "tokenizer")
    manifests = {}
    for plan in source_plans(cfg):
        files = expand_paths(plan.source.paths)
        if not files:
            raise UserError(f"{plan.name}: paths {plan.source.paths} match no file")
        key = fingerprint(plan, files, tok_hash, cfg)
        folder = root / plan.name
        existing = read_manifest(folder)
        if existing and existing.get("fingerprint") == key and not force:
            log.info("%s: shards up to date (%s tokens), reused", plan.name, f"{existing['tokens']['total']:,}")
            manifests[plan.name] = existing
            continue
        if existing:
            log.info("%s: inputs, tokenizer or settings changed; preparing again", plan.name)
        manifests[plan.name] = _prepare_source(cfg, plan, files, key, spec, vocab, root)
    return manifests


def _prepare_source(cfg, plan, files, key, spec, vocab, root) -> dict:
    started = time.time()
    tmp = root / f".tmp-{plan.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    dtype = token_dtype(vocab)
    writers = {s: ShardWriter(tmp / s, dtype, cfg.data.shard_tokens) for s in ("train", "eval")}
    bad = BadInput()
    counts = {"read": 0, "kept": 0, "dropped": 0, "train": 0, "eval": 0}
    tokens = {"train": 0, "eval": 0}
    text_bytes = {"train": 0, "eval": 0}
    steps = {"tokenize": {"in": 0, "kept": 0, "dropped": {}}}
    (tmp / "curated").mkdir(parents=True)
    (tmp / "dropped").mkdir(parents=True)
    curated = gzip.open(tmp / "curated" / "part-00000.jsonl.gz", "wt", encoding="utf-8", compresslevel=3)
    dropped = gzip.open(tmp / "dropped" / "part-00000.jsonl.gz", "wt", encoding="utf-8", compresslevel=3)
    workers = cfg.data.num_workers or min(os.cpu_count() or 1, 16)
    heldout_left = cfg.data.heldout_max_docs
    docs = _documents(plan, files, bad)
    with curated, dropped:
        for batch, encoded in run_batches(spec, _batches(docs), workers):
            for doc, ids in zip(batch, encoded):
                counts["read"] += 1
                steps["tokenize"]["in"] += 1
                if len(ids) <= 2:  # nothing between start and EOS
                    _drop(dropped, doc, "tokenize", "no_tokens", steps, counts)
                    continue
                split = "train"
                if plan.eval_only:
                    split = "eval"
                elif plan.heldout and heldout_left > 0 and _in_heldout(doc.id, cfg.data.heldout_fraction):
                    split, heldout_left = "eval", heldout_left - 1
                n_bytes = len(doc.text.encode("utf-8"))
                writers[split].add(ids, n_bytes)
                steps["tokenize"]["kept"] += 1
                counts["kept"] += 1
                counts[split] += 1
                tokens[split] += len(ids)
                text_bytes[split] += n_bytes
                curated.write(json.dumps({"id": doc.id, "text": doc.text, "split": split}, ensure_ascii=False) + "\n")
    shards = {s: w.close() for s, w in writers.items()}
    content = hashlib.sha256(b"".join(w.hasher.digest() for w in writers.values())).hexdigest()
    manifest = {
        "name": plan.name,
        "role": plan.role,
        "format_version": FORMAT_VERSION,
        "fingerprint": key,
        "content_hash": content,
        "inputs": [str(f) for f in files],
        "documents": counts,
        "steps": [{"name": name, **v} for name, v in steps.items()],
        "bad_input": bad.to_json(),
        "tokens": {**tokens, "total": tokens["train"] + tokens["eval"]},
        "text_bytes": text_bytes,
        "dtype": dtype.name,
        "vocab_size": vocab,
        "start_id": spec.start_id,
        "eos_id": spec.eos_id,
        "shards": shards,
        "wall_s": round(time.time() - started, 3),
    }
    _write_json(tmp / "manifest.json", manifest)
    _fsync_tree(tmp)
    final = root / plan.name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    log.info(
        "%s: %s documents read, %s kept (%s train, %s held out), %s tokens, %s bad input lines",
        plan.name, f"{counts['read']:,}", f"{counts['kept']:,}", f"{counts['train']:,}",
        f"{counts['eval']:,}", f"{manifest['tokens']['total']:,}", f"{bad.total:,}",
    )
    return manifest


def _documents(plan: SourcePlan, files: list[Path], bad: BadInput) -> Iterator[Document]:
    src = plan.source
    for f in files:
        yield from read_file(f, src.text_field, src.id_field, src.format, bad, source=plan.name)


def _batches(docs: Iterator[Document]) -> Iterator[list[Document]]:
    batch, size = [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text)
        if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _in_heldout(doc_id: str, fraction: float) -> bool:
    """A stable choice by the document's id, so the held-out set does not move between runs."""
    h = int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def _drop(fh, doc: Document, step: str, reason: str, steps: dict, counts: dict) -> None:
    counts["dropped"] += 1
    reasons = steps[step]["dropped"]
    reasons[reason] = reasons.get(reason, 0) + 1
    fh.write(json.dumps({"id": doc.id, "text": doc.text, "step": step, "reason": reason}, ensure_ascii=False) + "\n")


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    for path in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        _fsync_dir(path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def total_tokens(manifests: dict[str, dict], split: str = "train") -> dict[str, int]:
    return {name: m["tokens"][split] for name, m in manifests.items()}


def window_count(manifest: dict, split: str, seq_len: int) -> int:
    return sum(windows_in(s["n_tokens"], seq_len) for s in manifest["shards"][split])

