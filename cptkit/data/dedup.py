"""Corpus-wide decisions: deduplication, decontamination, perplexity selection.

These need every document of a source (or of all sources) at once, so they run in the main
process when sources are assembled, on small per-document arrays (an exact hash, one key per
MinHash band, a perplexity) that the workers computed. They are vectorised sorts over uint64
arrays, one band at a time: memory is a few times 8 bytes per document, not a hash table.

Semantics, in the order applied:
- decontaminate: a training document is dropped when its exact hash, or any of its band keys,
  equals that of an evaluation document (a data.eval set, or a held-out document of any source).
- dedup: among the remaining training documents, in config order (domain sources, then general
  sources, each in file order), a document is dropped when an earlier one has the same exact
  hash (exact_duplicate) or shares a band key (near_duplicate); the first of each group is kept,
  and the dropped record names it. Across sources when both enable across_sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cptkit.schema import option

KEEP, EXACT, NEAR = 0, 1, 2


@dataclass
class DedupParams:
    exact: bool = option(True, help="Drop documents whose normalised text equals an earlier one's.")
    near: bool = option(True, help="Drop near duplicates: documents sharing a MinHash LSH band (data.minhash).")
    across_sources: bool = option(
        True, help="Also against earlier sources with across_sources on (domain before general, in config order)."
    )


@dataclass
class DecontaminateParams:
    exact: bool = option(True, help="Drop training documents equal (after normalisation) to an eval document.")
    near: bool = option(True, help="Drop training documents sharing a MinHash LSH band with an eval document.")


def first_occurrence(keys: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row holding the same key."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group = np.cumsum(starts) - 1
    first = np.empty(len(keys), dtype=np.int64)
    first[order] = order[starts][group]  # stable sort: a group's first element has the lowest index
    return first


def duplicates(exact: np.ndarray | None, bands: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(kind, of): for each row KEEP / EXACT / NEAR, and the earlier row it duplicates (or -1)."""
    n = len(exact) if exact is not None else len(bands)
    index = np.arange(n)
    kind = np.zeros(n, dtype=np.int8)
    of = np.full(n, -1, dtype=np.int64)
    if exact is not None and n:
        first = first_occurrence(exact)
        dup = first < index
        kind[dup], of[dup] = EXACT, first[dup]
    if bands is not None and n and bands.shape[1]:
        best = np.full(n, n, dtype=np.int64)
        for b in range(bands.shape[1]):
            np.minimum(best, first_occurrence(np.ascontiguousarray(bands[:, b])), out=best)
        near = (best < index) & (kind == KEEP)
        kind[near], of[near] = NEAR, best[near]
    return kind, of


def contaminated(
    exact: np.ndarray | None, bands: np.ndarray | None, eval_exact: np.ndarray, eval_bands: np.ndarray
) -> np.ndarray:
    """KEEP / EXACT / NEAR for each row against the evaluation documents' hashes and band keys."""
    n = len(exact) if exact is not None else (len(bands) if bands is not None else 0)
    kind = np.zeros(n, dtype=np.int8)
    if exact is not None and len(eval_exact):
        kind[np.isin(exact, eval_exact)] = EXACT
    if bands is not None and bands.shape[1] and eval_bands.size:
        # Band keys mix in the band number, so one sorted set of all eval keys serves every band.
        pool = np.unique(eval_bands.ravel())
        near = np.isin(bands, pool).any(axis=1) & (kind == KEEP)
        kind[near] = NEAR
    return kind


def perplexity_select(
    ppl: np.ndarray, cuts: list[float], keep_buckets: list[str], keep_fraction: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(bucket per row: 0 head, 1 middle, 2 tail; drop reason code: 0 keep, 1 fraction, 2 bucket).

    Quantiles are over the scored rows (NaN rows are unscored and always kept, in bucket -1).
    keep_fraction keeps the lowest-perplexity ceil(fraction * n) rows, ties broken by order.
    """
    n = len(ppl)
    bucket = np.full(n, -1, dtype=np.int8)
    reason = np.zeros(n, dtype=np.int8)
    scored = ~np.isnan(ppl)
    if not scored.any():
        return bucket, reason
    q1, q2 = np.quantile(ppl[scored], cuts)
    bucket[scored] = np.where(ppl[scored] <= q1, 0, np.where(ppl[scored] <= q2, 1, 2))
    if keep_fraction is not None:
        idx = np.flatnonzero(scored)
        order = idx[np.argsort(ppl[idx], kind="stable")]
        keep = int(np.ceil(keep_fraction * len(idx)))
        reason[order[keep:]] = 1
    names = ("head", "middle", "tail")
    for b, name in enumerate(names):
        if name not in keep_buckets:
            reason[(bucket == b) & (reason == 0)] = 2
    return bucket, reason
