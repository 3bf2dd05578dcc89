"""`cptkit select`: keep a fraction of the domain corpus, chosen by a score, in two passes.

Pass 1 reads the config's `data.domain` sources with cptkit's readers (bad input is counted
per reason, as in `cptkit prepare`) and keeps only numbers per document: its size and one
float per score. Pass 2 reads the sources again and writes the chosen documents. Texts are
never held beyond one novelty batch, so memory is about 8 bytes x (scores + 1) per document,
plus the hashed document-frequency table (2**18 int64, 2 MiB) and the target sample's vectors
when scoring similarity (which needs one extra pass first, to count document frequencies).

Writes the kept documents as JSONL with the domain source's text field (and id field, or "id")
and `selection.json` beside them: counts, score quantiles, the method and its parameters.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cptkit.config import Config, expand_paths
from cptkit.data.documents import BadInput, Document
from cptkit.data.readers import Limits, read_file
from cptkit.durable import replaced, write_json
from cptkit.errors import RunFailure, UserError
from cptkit.select import features
from cptkit.select.scores import METHODS, TargetProfile, choose, mix_scores, quantiles, random_score

log = logging.getLogger("cptkit")

BY = ("similarity", "novelty", "diversity", "mix", "random")


@dataclass
class SelectOptions:
    fraction: float  # share of the corpus to keep, in (0, 1]
    by: str  # one of BY
    out: Path
    target: Path | None = None  # JSONL of target text (similarity, and mix when given)
    unit: str = "bytes"  # bytes: the fraction is of UTF-8 bytes; documents: of documents
    similarity: str = "centroid"  # centroid | nearest
    weights: dict[str, float] = field(default_factory=dict)  # mix: method -> weight
    batch_size: int = 16  # novelty: documents per forward
    max_tokens: int = 512  # novelty: tokens scored from each document's beginning
    window: int = 256  # diversity: words per entropy window
    seed: int = 0  # random: the hash seed


def check_options(o: SelectOptions) -> None:
    problems = []
    if not 0 < o.fraction <= 1:
        problems.append(f"--fraction: must lie in (0, 1], got {o.fraction}")
    if o.by not in BY:
        problems.append(f"--by: one of {', '.join(BY)}, got {o.by!r}")
    if o.by == "similarity" and o.target is None:
        problems.append("--target: --by similarity needs a target sample (a JSONL file of the same text field)")
    if o.target is not None and not o.target.is_file():
        problems.append(f"--target: {o.target} is not a file")
    if o.unit not in ("bytes", "documents"):
        problems.append(f"--unit: bytes or documents, got {o.unit!r}")
    if o.similarity not in ("centroid", "nearest"):
        problems.append(f"--similarity: centroid or nearest, got {o.similarity!r}")
    for name, w in o.weights.items():
        if name not in METHODS:
            problems.append(f"--weights: unknown method {name!r} ({', '.join(METHODS)})")
        elif not w >= 0:
            problems.append(f"--weights: {name} must be >= 0, got {w}")
    if o.weights and o.by != "mix":
        problems.append("--weights: applies to --by mix only")
    if o.weights.get("similarity") and o.target is None:
        problems.append("--weights: similarity needs --target")
    if o.weights and not any(o.weights.values()):
        problems.append("--weights: at least one weight must be > 0")
    if o.batch_size <= 0 or o.max_tokens < 2 or o.window <= 0:
        problems.append("--batch-size and --window must be > 0 and --max-tokens >= 2")
    if o.out.suffix not in (".jsonl", ".gz") or (o.out.suffix == ".gz" and not o.out.name.endswith(".jsonl.gz")):
        problems.append(f"--out: a .jsonl or .jsonl.gz file, got {o.out}")
    if problems:
        raise UserError("select: bad options:", problems)


def parse_weights(text: str | None) -> dict[str, float]:
    """'similarity=0.5,novelty=0.25' -> {'similarity': 0.5, 'novelty': 0.25}."""
    out: dict[str, float] = {}
    for item in filter(None, (text or "").split(",")):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--weights: expected method=number pairs, got {item!r}") from None
        if not sep:
            raise UserError(f"--weights: expected method=number pairs, got {item!r}")
    return out


def methods_for(o: SelectOptions) -> dict[str, float]:
    """The scores to compute, with their mix weights (1 for a single method)."""
    if o.by == "random":
        return {}
    if o.by != "mix":
        return {o.by: 1.0}
    if o.weights:
        return {k: v for k, v in o.weights.items() if v > 0}
    # Default mix: equal weights; similarity only when there is a target to be similar to
    # (novelty + diversity alone is Xie et al.'s task-agnostic variant).
    names = METHODS if o.target is not None else ("novelty", "diversity")
    return dict.fromkeys(names, 1.0)


def domain_documents(cfg: Config, bad: BadInput) -> Iterator[Document]:
    """Every document of the config's domain sources, in a fixed order."""
    from cptkit.data import hfsource

    for i, src in enumerate(cfg.domain_sources):
        where = "data.domain" + (f"[{i}]" if len(cfg.domain_sources) > 1 else "")
        lim = Limits(src.text_field, src.id_field, cfg.data.max_document_bytes)
        if src.dataset is not None:
            for part in hfsource.plan(src.dataset, cfg.data.part_bytes, f"{where}.dataset"):
                yield from hfsource.read_part(src.dataset, part, lim, bad, src.name, f"{where}.dataset")
            continue
        files = expand_paths(src.paths)
        if not files:
            raise UserError(f"{where}.paths: {src.paths} match no file")
        for path in files:
            yield from read_file(path, src.text_field, src.id_field, src.format, bad, src.name,
                                 max_bytes=cfg.data.max_document_bytes)


def _novelty_scorer(cfg: Config, o: SelectOptions):
    from cptkit.data.filters.perplexity import Scorer

    scorer = Scorer(cfg.model.name_or_path, o.max_tokens)
    # No tokenizer makes a token from more than this many characters in practice: cutting the
    # text here spares tokenizing a whole long document only to keep its first max_tokens.
    chars = o.max_tokens * 32

    def score(texts: list[str]) -> list[float]:
        # Similar lengths in one batch waste less padding; scores return in the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [0.0] * len(texts)
        for start in range(0, len(order), o.batch_size):
            chunk = order[start : start + o.batch_size]
            for i, ppl in zip(chunk, scorer.score([texts[i][:chars] for i in chunk])):
                out[i] = float(np.log(ppl)) if not math.isnan(ppl) else float("nan")
        return out

    return score


def score_corpus(cfg: Config, o: SelectOptions, bad: BadInput) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """(sizes, {method: scores}, extra manifest facts) over the domain corpus, streaming."""
    methods = methods_for(o)
    extra: dict = {}
    profile = _target_profile(cfg, o, extra) if "similarity" in methods else None
    novelty = _novelty_scorer(cfg, o) if "novelty" in methods else None
    sizes: list[int] = []
    scores: dict[str, list[float]] = {m: [] for m in methods}
    if o.by == "random":
        scores["random"] = []
    pending: list[str] = []

    def flush() -> None:
        scores["novelty"].extend(novelty(pending))
        pending.clear()

    for doc in domain_documents(cfg, bad):
        sizes.append(len(doc.text.encode("utf-8")) if o.unit == "bytes" else 1)
        if profile is not None:
            scores["similarity"].append(profile.score(features.term_counts(doc.text)))
        if "diversity" in methods:
            scores["diversity"].append(features.window_entropy(doc.text, o.window))
        if "random" in scores:
            scores["random"].append(random_score(doc.id, o.seed))
        if novelty is not None:
            pending.append(doc.text)
            if len(pending) >= o.batch_size * 16:
                flush()
        if len(sizes) % 10_000 == 0:
            log.info("select: scored %s documents", f"{len(sizes):,}")
    if novelty is not None and pending:
        flush()
    return np.array(sizes, dtype=np.int64), {k: np.array(v, dtype=np.float64) for k, v in scores.items()}, extra


def _target_profile(cfg: Config, o: SelectOptions, extra: dict) -> TargetProfile:
    src = cfg.domain_sources[0]
    target_bad = BadInput()
    docs = read_file(o.target, src.text_field, None, "auto", target_bad, "target", max_bytes=cfg.data.max_document_bytes)
    target = [features.term_counts(d.text) for d in docs]
    if not target:
        raise UserError(f"--target: {o.target} holds no usable document with the text field "
                        f"{src.text_field!r} (bad input: {target_bad.to_json()['reasons']})")
    df = features.DocumentFrequency()
    for doc in domain_documents(cfg, BadInput()):  # bad input is counted once, in the scoring pass
        df.add(features.term_counts(doc.text))
    for counts in target:
        df.add(counts)
    extra["target"] = {"documents": len(target), "bad_input": target_bad.to_json()}
    return TargetProfile(target, df.idf(), o.similarity)


def write_kept(cfg: Config, keep: np.ndarray, out: Path) -> int:
    """Second pass: write the kept documents; returns how many were written."""
    src = cfg.domain_sources[0]
    id_key = src.id_field or "id"
    opener = gzip.open if out.name.endswith(".gz") else open
    written, seen = 0, 0
    with replaced(out) as tmp:
        with opener(tmp, "wt", encoding="utf-8") as fh:
            for i, doc in enumerate(domain_documents(cfg, BadInput())):
                seen = i + 1
                if i < len(keep) and keep[i]:
                    fh.write(json.dumps({id_key: doc.id, src.text_field: doc.text}, ensure_ascii=False) + "\n")
                    written += 1
        if seen != len(keep):
            raise RunFailure(f"select: the domain corpus changed while it was read ({len(keep)} documents "
                             f"scored, {seen} on the second pass); run it again")
    return written


def select(cfg: Config, o: SelectOptions, config_path: str | None = None) -> dict:
    """Score, choose, write; returns the manifest (also written as selection.json beside the output)."""
    check_options(o)
    t0 = time.perf_counter()
    o.out.parent.mkdir(parents=True, exist_ok=True)
    bad = BadInput()
    sizes, scores, extra = score_corpus(cfg, o, bad)
    if not len(sizes):
        raise UserError(f"select: the domain sources hold no usable document (bad input: {bad.to_json()['reasons']})")
    weights = methods_for(o)
    final = mix_scores(scores, weights) if o.by == "mix" else scores[o.by]
    keep = choose(final, sizes, o.fraction)
    written = write_kept(cfg, keep, o.out)
    byte_share = round(float(sizes[keep].sum() / sizes.sum()), 6) if o.unit == "bytes" else None
    manifest = {
        "method": o.by,
        "params": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
                   "mix_weights": weights if o.by == "mix" else None},
        "config": config_path,
        "model": cfg.model.name_or_path if "novelty" in weights else None,
        "output": str(o.out),
        "documents": {"read": int(len(sizes)), "kept": written, "unscorable": int(np.isnan(final).sum())},
        "kept_share": {"documents": round(written / len(sizes), 6), "bytes": byte_share},
        "scores": {name: {"all": quantiles(v), "kept": quantiles(v[keep])} for name, v in scores.items()},
        "bad_input": bad.to_json(),
        **extra,
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    if o.by == "mix":
        manifest["scores"]["mix"] = {"all": quantiles(final), "kept": quantiles(final[keep])}
    write_json(o.out.parent / "selection.json", manifest)
    return manifest


def table(manifest: dict) -> str:
    """A plain-text summary: kept share, and each score's median over all vs kept documents."""
    d, share = manifest["documents"], manifest["kept_share"]
    lines = [f"select by {manifest['method']}: kept {d['kept']:,} of {d['read']:,} documents"
             + (f" ({share['bytes']:.1%} of bytes)" if share["bytes"] is not None else f" ({share['documents']:.1%})"),
             f"{'score':<12} {'all p10':>10} {'all p50':>10} {'all p90':>10} {'kept p10':>10} {'kept p50':>10} {'kept p90':>10}"]
    for name, q in manifest["scores"].items():
        a, k = q["all"] or {}, q["kept"] or {}
        cells = [a.get("p10"), a.get("p50"), a.get("p90"), k.get("p10"), k.get("p50"), k.get("p90")]
        lines.append(f"{name:<12} " + " ".join(f"{c:>10.4f}" if c is not None else f"{'-':>10}" for c in cells))
    bad = manifest["bad_input"]["total"]
    lines.append(f"bad input lines: {bad:,}" + (f" {manifest['bad_input']['reasons']}" if bad else ""))
    lines.append(f"wrote {manifest['output']} and selection.json beside it")
    return "\n".join(lines)
